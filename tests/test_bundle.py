"""Exported weights (hdr_jax.bundle): the msgpack + manifest round trip and every way a weights
directory can be wrong, each a WeightsError with a one-line message."""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import flax.serialization
import jax
import numpy as np
import pytest

from hdr_jax import bundle


def _variables(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "params": {
            "conv": {
                # Values f16 cannot hold exactly, and some beyond its precision/range edges.
                "kernel": rng.normal(0, 1, (3, 3, 2, 4)).astype(np.float32) * 1e-2,
                "bias": np.array([1.0 / 3.0, -2.5e-5, 1234.567, 0.0], np.float32),
            },
            "prelu": {"slope": np.full((4,), 0.25, np.float32)},
        },
        "batch_stats": {"bn": {"mean": rng.normal(0, 1, (4,)).astype(np.float32)}},
    }


def _template(variables: dict):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.float32), variables)


CONFIG = {"features": 4, "num_groups": 1}


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg, msg
    return msg


@pytest.fixture()
def saved(tmp_path) -> tuple[Path, dict]:
    v = _variables()
    bundle.save_network(tmp_path, "net", v, CONFIG, info={"steps": 7})
    return tmp_path, v


def test_round_trip_float16_storage(saved):
    directory, v = saved
    loaded, entry = bundle.load_network(directory, "net")
    expected = jax.tree.map(lambda x: x.astype(np.float16).astype(np.float32), v)
    assert jax.tree.structure(loaded) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(expected)):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    # float16 storage really is lossy for these values (the check above is not trivially true).
    assert not np.array_equal(loaded["params"]["conv"]["bias"], v["params"]["conv"]["bias"])
    stored = flax.serialization.msgpack_restore((directory / "net.msgpack").read_bytes())
    assert stored["params"]["conv"]["kernel"].dtype == np.float16
    assert entry["config"] == CONFIG and entry["dtype"] == "float16" and entry["steps"] == 7
    assert entry["sha256"] == hashlib.sha256((directory / "net.msgpack").read_bytes()).hexdigest()


def test_round_trip_float32_with_template(tmp_path):
    v = _variables(1)
    bundle.save_network(tmp_path, "a", v, CONFIG, dtype="float32")
    bundle.save_network(tmp_path, "b", _variables(2), {"other": 1})
    manifest = bundle.read_manifest(tmp_path)
    assert set(manifest) == {"a", "b"}  # the second save adds to the manifest
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporaries
    loaded, _ = bundle.load_network(tmp_path, "a", _template(v))
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(v)):
        np.testing.assert_array_equal(a, b)


def test_compressed_round_trip_replaces_and_rejects_garbage(saved):
    directory, v = saved  # net.msgpack exists from the fixture
    plain = (directory / "net.msgpack").read_bytes()
    bundle.save_network(directory, "net", v, CONFIG, compress=True)
    packed = directory / "net.msgpack.zlib"
    assert packed.exists() and not (directory / "net.msgpack").exists()  # no stale file left
    assert zlib.decompress(packed.read_bytes()) == plain and packed.stat().st_size < len(plain)
    loaded, entry = bundle.load_network(directory, "net")
    assert entry["file"] == "net.msgpack.zlib"
    expected = jax.tree.map(lambda x: x.astype(np.float16).astype(np.float32), v)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(a, b)
    # A truncated stream with a matching checksum is a one-line error, not a zlib traceback.
    data = packed.read_bytes()[:-20]
    packed.write_bytes(data)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["net"]["sha256"] = hashlib.sha256(data).hexdigest()
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(bundle.WeightsError, match="not a weights file") as e:
        bundle.load_network(directory, "net")
    _one_line_error(e)


def test_sha_mismatch(saved):
    directory, _ = saved
    path = directory / "net.msgpack"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(bundle.WeightsError, match="SHA-256") as e:
        bundle.load_network(directory, "net")
    _one_line_error(e)


def test_missing_file(saved):
    directory, _ = saved
    (directory / "net.msgpack").unlink()
    with pytest.raises(bundle.WeightsError, match="missing") as e:
        bundle.load_network(directory, "net")
    _one_line_error(e)


def _replace_file(directory: Path, data: bytes) -> None:
    """Writes `data` as net.msgpack with a matching checksum: only the content is wrong."""
    (directory / "net.msgpack").write_bytes(data)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["net"]["sha256"] = hashlib.sha256(data).hexdigest()
    (directory / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "data",
    [b"this is not msgpack at all", b"\x93\x01\x02\x03", b""],
    ids=["garbage", "msgpack-list", "empty"],
)
def test_not_a_weights_file(saved, data):
    directory, _ = saved
    _replace_file(directory, data)
    with pytest.raises(bundle.WeightsError, match="not a weights file") as e:
        bundle.load_network(directory, "net")
    _one_line_error(e)


def test_template_shape_mismatch(saved):
    directory, v = saved
    template = _template(v)
    template["params"]["conv"]["kernel"] = jax.ShapeDtypeStruct((3, 3, 2, 8), np.float32)
    with pytest.raises(bundle.WeightsError, match="do not match the model config") as e:
        bundle.load_network(directory, "net", template)
    assert "kernel" in _one_line_error(e)


def test_template_structure_mismatch(saved):
    directory, v = saved
    template = _template(v)
    template["params"]["extra"] = {"kernel": jax.ShapeDtypeStruct((1,), np.float32)}
    with pytest.raises(bundle.WeightsError, match="do not match") as e:
        bundle.load_network(directory, "net", template)
    _one_line_error(e)


def test_manifest_errors(tmp_path, saved):
    with pytest.raises(bundle.WeightsError, match="no such directory") as e:
        bundle.load_network(tmp_path / "nowhere", "net")
    _one_line_error(e)
    (tmp_path / "empty").mkdir()
    with pytest.raises(bundle.WeightsError, match="no manifest.json") as e:
        bundle.load_network(tmp_path / "empty", "net")
    _one_line_error(e)
    directory, _ = saved
    with pytest.raises(bundle.WeightsError, match="no network 'other'") as e:
        bundle.load_network(directory, "other")
    _one_line_error(e)
    for text, match in [("{not json", "unreadable manifest"), ("[1, 2]", "not a JSON object")]:
        (directory / "manifest.json").write_text(text)
        with pytest.raises(bundle.WeightsError, match=match) as e:
            bundle.load_network(directory, "net")
        _one_line_error(e)
    (directory / "manifest.json").write_text(json.dumps({"net": {"config": {}}}))
    with pytest.raises(bundle.WeightsError, match="lacks 'file'") as e:
        bundle.load_network(directory, "net")
    _one_line_error(e)


def test_an_interrupted_export_leaves_the_directory_as_it_was(tmp_path, monkeypatch):
    """A SIGINT between the two renames (weights, manifest) is held until both are done; one
    while the files are written leaves the previous export whole and no temporary file."""
    import os
    import signal

    from hdr_jax import interrupts

    bundle.save_network(tmp_path, "net", _variables(1), CONFIG)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    replace = os.replace

    def interrupted_replace(src, dst):
        replace(src, dst)
        if Path(dst).name == "net.msgpack":
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(bundle.os, "replace", interrupted_replace)
    with interrupts.handled(), pytest.raises(interrupts.Interrupted):
        bundle.save_network(tmp_path, "net", _variables(2), CONFIG)
    monkeypatch.setattr(bundle.os, "replace", replace)
    loaded, _ = bundle.load_network(tmp_path, "net")  # the manifest agrees with the new file
    np.testing.assert_array_equal(
        loaded["params"]["conv"]["kernel"],
        np.asarray(_variables(2)["params"]["conv"]["kernel"], np.float16).astype(np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)

    def failing_write(self, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", failing_write)
    with pytest.raises(KeyboardInterrupt):
        bundle.save_network(tmp_path, "net", _variables(3), CONFIG)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)
    loaded, _ = bundle.load_network(tmp_path, "net")
    np.testing.assert_array_equal(
        loaded["params"]["conv"]["kernel"],
        np.asarray(_variables(2)["params"]["conv"]["kernel"], np.float16).astype(np.float32))
