"""Tests for the stage-1 data: the HdrBrackets TFDS builder and the grain bracket pipeline.

The builder is checked on synthetic HDR files the test writes (two 64x32 equirectangular
panoramas, one ordinary photo): shapes, the bracket against an independent re-simulation
(np.interp of the stored curve), monotonicity, scene-disjoint splits, determinism. The
pipeline is checked on records whose pixels encode (exposure, row, column, record), so targets,
masks, crops and flips can be read back exactly (DrTMO eq. 3/4). The naive baseline is checked
against scikit-image's sRGB conversions and closed-form gamma curves.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from hdr_jax import io as hdr_io
from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera import panorama
from hdr_jax.data import bracket_pipeline as bp
from hdr_jax.data import hdr_brackets as hb

SHARED = Path("/work/shared/data")
HDRI_DIR = SHARED / "hdri"
CRF_DIR = SHARED / "crf"
T, S, TAU = 8, 32, math.sqrt(2.0)
SCENES = ("pano_a", "pano_b", "photo_c")


# --------------------------------------------------------------------------------------------
# Builder fixtures
# --------------------------------------------------------------------------------------------


def _synthetic_hdr(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth, horizontally periodic radiance spanning ~10 stops, plus a small very bright sun."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    y, x = (y + 0.5) / h, (x + 0.5) / w
    base = np.exp(2.5 * np.sin(2 * np.pi * (x + rng.random())) * np.cos(np.pi * (y - 0.5)) - 1.5 * y)
    img = base[..., None] * rng.uniform(0.5, 1.5, 3)
    cy, cx = rng.integers(0, h), rng.integers(0, w)
    img[max(cy - 1, 0):cy + 1, max(cx - 1, 0):cx + 1] *= 300.0
    return img.astype(np.float32)


@pytest.fixture(scope="module")
def hdr_folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hdr_in")
    hdr_io.write_hdr(d / "pano_a.exr", _synthetic_hdr(32, 64, 1))
    hdr_io.write_hdr(d / "pano_b.exr", _synthetic_hdr(32, 64, 2))
    hdr_io.write_hdr(d / "photo_c.hdr", _synthetic_hdr(40, 56, 3))  # Radiance, not 2:1
    return d


def _build(manual_dir: Path, data_dir: Path, config="tiny", **kwargs) -> hb.HdrBrackets:
    builder = hb.HdrBrackets(config=config, data_dir=str(data_dir), **kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def _records(builder: hb.HdrBrackets) -> dict[str, list[dict]]:
    return {split: [dict(r) for r in builder.as_data_source(split=split)] for split in builder.info.splits}


@pytest.fixture(scope="module")
def built(hdr_folder, tmp_path_factory) -> hb.HdrBrackets:
    return _build(hdr_folder, tmp_path_factory.mktemp("tfds"))


def _by_key(records: dict[str, list[dict]]) -> dict[tuple, dict]:
    return {(r["scene"], int(r["view_index"]), r["crf"]): r for rs in records.values() for r in rs}


# --------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------


def test_example_shapes_and_dtypes(built):
    records = _records(built)
    cfg = built.builder_config
    n_crfs = cfg.num_crfs
    assert sum(len(v) for v in records.values()) == (2 * cfg.views_per_panorama + cfg.crops_per_photo) * n_crfs
    for r in (r for rs in records.values() for r in rs):
        assert r["bracket"].dtype == np.uint8 and r["bracket"].shape == (T + 1, S, S, 3)
        assert r["hdr"].dtype == np.float16 and r["hdr"].shape == (S, S, 3)
        assert r["view"].dtype == np.float32 and r["view"].shape == (3,)
        assert 0 <= int(r["view_index"]) < 2
        assert r["crf_curve"].dtype == np.float32 and r["crf_curve"].shape == (1024,)
        assert crf_lib.is_valid_crf(r["crf_curve"])
        scene = r["scene"].decode()
        assert scene in SCENES
        fov, el, az = r["view"]
        if scene.startswith("pano"):
            assert 60 <= fov <= 90 and -20 <= el <= 30 and -180 <= az < 180
        else:
            assert (fov, el, az) == (0, 0, 0)
    assert len({r["crf"] for rs in records.values() for r in rs}) == n_crfs


def test_bracket_is_the_simulation_of_the_stored_radiance(built):
    """Independent re-simulation: Z_k = round(255 f(clip(E tau^k))), k = -T/2..T/2."""
    dts = TAU ** np.arange(-T // 2, T // 2 + 1)
    grid = np.linspace(0.0, 1.0, 1024)
    n_levels_off = []
    for r in (r for rs in _records(built).values() for r in rs):
        hdr = r["hdr"].astype(np.float64)
        assert abs(hdr.mean() - 0.5) < 2e-3  # normalised at dt = 1 (float16 storage)
        ref = np.round(255 * np.interp(np.clip(hdr[None] * dts[:, None, None, None], 0, 1), grid,
                                       r["crf_curve"].astype(np.float64)))
        diff = np.abs(ref - r["bracket"].astype(np.float64))
        # float16 storage of E can move a value across a quantisation boundary: at most 1 level.
        assert diff.max() <= 1
        n_levels_off.append((diff > 0).mean())
        # Monotone in exposure, pixelwise; darkest first.
        assert np.all(np.diff(r["bracket"].astype(np.int16), axis=0) >= 0)
        assert r["bracket"][0].mean() < r["bracket"][-1].mean()
    assert np.mean(n_levels_off) < 0.02


def test_splits_are_scene_disjoint(built):
    records = _records(built)
    assert set(records) == {"train", "validation"}
    scenes = {split: {r["scene"].decode() for r in rs} for split, rs in records.items()}
    assert scenes["train"] and scenes["validation"]
    assert not scenes["train"] & scenes["validation"]
    assert scenes["train"] | scenes["validation"] == set(SCENES)
    # One example per (scene, view, crf).
    keys = [(r["scene"], int(r["view_index"]), r["crf"]) for rs in records.values() for r in rs]
    assert len(set(keys)) == len(keys)


def test_build_is_deterministic_and_per_scene(built, hdr_folder, tmp_path):
    again = _records(_build(hdr_folder, tmp_path / "again"))
    first = _records(built)
    assert set(again) == set(first)
    for split in first:
        assert len(first[split]) == len(again[split])
        for a, b in zip(first[split], again[split]):
            assert a.keys() == b.keys()
            for k in a:
                assert np.array_equal(np.asarray(a[k]), np.asarray(b[k])), (split, k)
    # A scene's views do not depend on the other files in the folder.
    sub = tmp_path / "subset"
    sub.mkdir()
    for name in ("pano_a.exr", "photo_c.hdr"):
        shutil.copy(hdr_folder / name, sub / name)
    subset = _by_key(_records(_build(sub, tmp_path / "subset_tfds")))
    full = _by_key(first)
    assert {k[0] for k in subset} == {b"pano_a", b"photo_c"}
    for key, rec in subset.items():
        assert np.array_equal(rec["bracket"], full[key]["bracket"])


def test_split_scenes_rules():
    names = [f"scene_{i:03d}" for i in range(200)]
    train, val = hb.split_scenes(names, 0.2)
    assert not set(train) & set(val) and sorted(train + val) == sorted(names)
    assert 20 <= len(val) <= 60  # a hash, so about 40
    # Adding scenes never moves an existing scene.
    train2, val2 = hb.split_scenes(names + [f"extra_{i}" for i in range(50)], 0.2)
    assert set(val) <= set(val2) and set(train) <= set(train2)
    # Never empty on either side with two or more scenes.
    for pair in (["a", "b"], ["x", "y"], ["only1", "only2"]):
        t, v = hb.split_scenes(pair, 0.5)
        assert len(t) == 1 and len(v) == 1
    assert hb.split_scenes(["a", "b", "c"], validation_scenes=["b"]) == (["a", "c"], ["b"])
    with pytest.raises(ValueError, match="not found"):
        hb.split_scenes(["a", "b"], validation_scenes=["zzz"])
    with pytest.raises(ValueError, match="validation_fraction"):
        hb.split_scenes(["a", "b"], 1.5)


def test_explicit_validation_scenes_config(hdr_folder, tmp_path):
    cfg = hb.HdrBracketsConfig(name="tiny_explicit", crop_size=16, views_per_panorama=1, crops_per_photo=1,
                               num_crfs=1, validation_scenes=("pano_b",))
    records = _records(_build(hdr_folder, tmp_path, config=cfg))
    assert {r["scene"] for r in records["validation"]} == {b"pano_b"}
    assert {r["scene"] for r in records["train"]} == {b"pano_a", b"photo_c"}
    assert records["train"][0]["bracket"].shape == (T + 1, 16, 16, 3)


def test_panorama_detection_and_views():
    assert panorama.is_panorama(32, 64) and panorama.is_panorama(512, 1024) and panorama.is_panorama(256, 511)
    assert not panorama.is_panorama(40, 56) and not panorama.is_panorama(64, 64) and not panorama.is_panorama(100, 190)
    # A constant panorama gives a constant view; a smooth one is unchanged by anti-aliasing.
    pano = np.full((90, 180, 3), 0.25, np.float32)
    assert np.allclose(hb.panorama_view(pano, 60, 10, 30, 16), 0.25, atol=1e-6)
    smooth = _synthetic_hdr(360, 720, 4)
    smooth = np.broadcast_to(smooth.mean(-1, keepdims=True), smooth.shape)
    aa = hb.panorama_view(smooth, 60, 0, 0, 24)  # 2 px/deg panorama, 0.4 px/deg view: supersampled
    direct = panorama.perspective_crop(smooth, 60, 0, 0, 24)
    assert aa.shape == (24, 24, 3) and np.median(np.abs(aa / direct - 1)) < 0.05


def test_photo_crops_resize_short_side():
    photo = np.broadcast_to(np.arange(60, dtype=np.float32)[None, :, None], (40, 60, 3))
    crops = hb.photo_crops(photo, 3, 20, np.random.default_rng(0))
    for crop, top, left in crops:
        assert crop.shape == (20, 20, 3)
        # Short side 40 -> 20 halves the image: column c of the crop is the mean of columns
        # 2 (left + c) and 2 (left + c) + 1 of the photo.
        expect = 2 * (left + np.arange(20)) + 0.5
        assert np.allclose(crop[0, :, 0], expect, atol=1e-4)


def test_emor_config_arguments(hdr_folder, tmp_path):
    with pytest.raises(ValueError, match="emor_dir"):
        _build(hdr_folder, tmp_path / "a", config="tiny_emor")
    with pytest.raises(ValueError, match="emor"):
        hb.HdrBrackets(config="tiny", data_dir=str(tmp_path / "b"), emor_dir="/nonexistent")


@pytest.mark.skipif(not (CRF_DIR / "emor.txt").is_file(), reason="EMoR data not present")
def test_emor_build(hdr_folder, tmp_path):
    cfg = hb.HdrBracketsConfig(name="tiny_emor_test", crop_size=16, views_per_panorama=1, crops_per_photo=1,
                               num_crfs=2, crf_source="emor")
    records = _records(_build(hdr_folder, tmp_path, config=cfg, emor_dir=CRF_DIR))
    recs = [r for rs in records.values() for r in rs]
    assert {r["crf"] for r in recs} == {b"emor-0", b"emor-1"}
    assert all(crf_lib.is_valid_crf(r["crf_curve"]) for r in recs)


@pytest.mark.skipif(not HDRI_DIR.is_dir() or len(list(HDRI_DIR.glob("*.exr"))) < 2, reason="HDRI data not present")
def test_build_from_real_panoramas(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for f in sorted(HDRI_DIR.glob("*.exr"))[:2]:
        (src / f.name).symlink_to(f)
    records = _records(_build(src, tmp_path / "tfds"))
    recs = [r for rs in records.values() for r in rs]
    assert len(recs) == 2 * 2 * 2 and set(records) == {"train", "validation"}
    for r in recs:
        assert np.isfinite(r["hdr"].astype(np.float32)).all()
        assert abs(r["hdr"].astype(np.float64).mean() - 0.5) < 5e-3
        assert 60 <= r["view"][0] <= 90
        assert np.all(np.diff(r["bracket"].astype(np.int16), axis=0) >= 0)


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------

H = W = 8


def _coded_record(record_id: int) -> dict:
    """bracket[k, y, x] = (16 x + k, 16 y + k, record_id): exposure, position and record readable."""
    k, y, x = np.meshgrid(np.arange(T + 1), np.arange(H), np.arange(W), indexing="ij")
    bracket = np.stack([16 * x + k, 16 * y + k, np.full_like(k, record_id)], -1).astype(np.uint8)
    hdr = np.stack([x[0], y[0], np.full_like(x[0], record_id)], -1).astype(np.float16)
    return {"bracket": bracket, "hdr": hdr, "crf_curve": np.linspace(0, 1, 1024, dtype=np.float32)}


def _coded_source(n: int) -> list[dict]:
    return [_coded_record(i) for i in range(n)]


def _decode(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(k, xs, ys, record) from one coded (h, w, 3) image in [0, 1]."""
    v = np.round(img * 255).astype(int)
    return v[..., 0] % 16, v[0, :, 0] // 16, v[:, 0, 1] // 16, v[..., 2]


def _reference_targets(bracket: np.ndarray, j: int, direction: str, n: int):
    """DrTMO eq. 3/4 by a plain loop."""
    target = np.zeros((n,) + bracket.shape[1:], np.float32)
    mask = np.zeros(n, np.float32)
    for k in range(n):
        idx = j + 1 + k if direction == "up" else j - 1 - k
        if 0 <= idx <= bracket.shape[0] - 1:
            target[k], mask[k] = bracket[idx] / 255.0, 1.0
    return target, mask


@pytest.mark.parametrize("direction", ["up", "down"])
@pytest.mark.parametrize("n", [8, 3])
def test_targets_and_mask_follow_eq_3_4(direction, n):
    rec = _coded_record(0)
    for j in range(T + 1):
        ex = bp.make_example(rec, j, direction=direction, num_exposures=n)
        target, mask = _reference_targets(rec["bracket"], j, direction, n)
        np.testing.assert_array_equal(ex["mask"], mask)
        np.testing.assert_allclose(ex["target"], target, atol=1e-7)
        np.testing.assert_allclose(ex["input"], rec["bracket"][j] / 255.0, atol=1e-7)
        sign = 1 if direction == "up" else -1
        np.testing.assert_array_equal(ex["exposure_step"], sign * np.arange(1, n + 1))
        assert ex["input_index"] == j
    # The boundaries spelled out (T = 8, N = 8).
    up0 = bp.make_example(rec, 0, direction="up")
    assert up0["mask"].tolist() == [1] * 8 and _decode(up0["target"][7])[0].max() == 8
    assert bp.make_example(rec, T, direction="up")["mask"].sum() == 0
    assert bp.make_example(rec, 3, direction="up")["mask"].tolist() == [1] * 5 + [0] * 3
    down8 = bp.make_example(rec, T, direction="down")
    assert down8["mask"].tolist() == [1] * 8 and _decode(down8["target"][7])[0].max() == 0
    assert bp.make_example(rec, 0, direction="down")["mask"].sum() == 0
    assert not bp.make_example(rec, 0, direction="down")["target"].any()


@pytest.mark.parametrize("direction", ["up", "down"])
def test_training_crops_and_flips_are_consistent(direction):
    it = bp.make_train_iterator(_coded_source(5), direction=direction, crop_size=6, seed=3, batch_size=4)
    flips, lefts, js = set(), set(), set()
    for _ in range(40):
        b = next(it)
        assert b["input"].shape == (4, 6, 6, 3) and b["target"].shape == (4, 8, 6, 6, 3)
        assert b["input"].dtype == b["target"].dtype == b["mask"].dtype == np.float32
        assert b["input_index"].dtype == b["exposure_step"].dtype == np.int32
        for i in range(4):
            k, xs, ys, _ = _decode(b["input"][i])
            j = int(b["input_index"][i])
            js.add(j)
            assert np.all(k == j)
            flipped = xs[0] > xs[-1]
            flips.add(bool(flipped))
            lefts.add(int(xs.min()))
            assert np.array_equal(np.sort(xs), np.arange(xs.min(), xs.min() + 6))
            assert np.array_equal(ys, np.arange(ys[0], ys[0] + 6))
            _, mask = _reference_targets(np.zeros((T + 1, 1, 1, 1)), j, direction, 8)
            np.testing.assert_array_equal(b["mask"][i], mask)
            for t in range(8):
                if mask[t]:
                    kt, xt, yt, _ = _decode(b["target"][i, t])
                    assert np.all(kt == j + b["exposure_step"][i, t])
                    assert np.array_equal(xt, xs) and np.array_equal(yt, ys)  # same crop and flip
                else:
                    assert not b["target"][i, t].any()
    assert flips == {True, False} and len(lefts) == 3 and js == set(range(T + 1))


def test_training_reshuffles_each_epoch_and_is_seeded():
    n = 7

    def record_stream(seed: int, count: int) -> list[int]:
        it = bp.make_train_iterator(_coded_source(n), direction="up", seed=seed, batch_size=1)
        return [int(_decode(next(it)["input"][0])[3][0, 0]) for _ in range(count)]

    stream = record_stream(0, 3 * n)
    epochs = [stream[e * n:(e + 1) * n] for e in range(3)]
    for e in epochs:
        assert sorted(e) == list(range(n))  # each epoch is a permutation
    assert epochs[0] != epochs[1] != epochs[2]
    assert record_stream(0, 3 * n) == stream
    assert record_stream(1, 3 * n) != stream


def test_iterator_state_resumes_exactly():
    kw = dict(direction="down", crop_size=5, seed=11, batch_size=2)
    it = bp.make_train_iterator(_coded_source(4), **kw)
    for _ in range(5):
        next(it)
    state = it.get_state()
    after = [next(it) for _ in range(3)]
    fresh = bp.make_train_iterator(_coded_source(4), **kw)
    fresh.set_state(state)
    for a, b in zip(after, (next(fresh) for _ in range(3))):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    # The first batches after a restart are not the restored ones (the state did something).
    restart = next(bp.make_train_iterator(_coded_source(4), **kw))
    assert not all(np.array_equal(restart[k], after[0][k]) for k in restart)


def test_validation_is_one_ordered_pass():
    n, bsz = 5, 2
    ds = bp.make_dataset(_coded_source(n), direction="up", crop_size=4, train=False, seed=0, batch_size=bsz,
                         include_hdr=True)
    batches = list(ds)
    assert [len(b["input"]) for b in batches] == [2, 2, 1]  # drop_remainder=False
    ids = [int(_decode(x)[3][0, 0]) for b in batches for x in b["input"]]
    assert ids == list(range(n))
    for b in batches:
        for i in range(len(b["input"])):
            k, xs, ys, _ = _decode(b["input"][i])
            assert xs.tolist() == [2, 3, 4, 5] and ys.tolist() == [2, 3, 4, 5]  # centre crop, no flip
            assert np.all(k == b["input_index"][i])
            np.testing.assert_array_equal(b["hdr"][i][..., 0], np.broadcast_to(xs, (4, 4)))
    # The per-example index is fixed: a second pass gives the same j.
    again = [b["input_index"] for b in ds]
    np.testing.assert_array_equal(np.concatenate(again), np.concatenate([b["input_index"] for b in batches]))

    every = list(bp.make_dataset(_coded_source(n), direction="down", train=False, seed=0, batch_size=4,
                                 input_index="all"))
    js = np.concatenate([b["input_index"] for b in every])
    assert js.tolist() == list(range(T + 1)) * n
    fixed = list(bp.make_dataset(_coded_source(n), direction="down", train=False, seed=0, batch_size=8,
                                 input_index=4))
    assert np.concatenate([b["input_index"] for b in fixed]).tolist() == [4] * n


def test_pipeline_argument_errors():
    src = _coded_source(2)
    common = dict(seed=0, batch_size=1)
    with pytest.raises(ValueError, match="direction"):
        bp.make_dataset(src, direction="sideways", train=True, **common)
    with pytest.raises(ValueError, match="crop_size"):
        bp.make_dataset(src, direction="up", train=True, crop_size=9, **common)
    with pytest.raises(ValueError, match="input_index"):
        bp.make_dataset(src, direction="up", train=False, input_index=9, **common)
    with pytest.raises(ValueError, match="evaluation"):
        bp.make_dataset(src, direction="up", train=True, input_index="all", **common)
    with pytest.raises(ValueError, match="empty"):
        bp.make_dataset([], direction="up", train=True, **common)


def test_pipeline_on_built_data_keeps_radiance_aligned(built):
    """Crop/flip hit input and radiance alike: the input is f(E dt_j), re-simulated from E."""
    it = bp.make_train_iterator(built.as_data_source(split="train"), direction="up", crop_size=24, seed=0,
                                batch_size=4, include_hdr=True)
    grid = np.linspace(0.0, 1.0, 1024)
    for _ in range(3):
        b = next(it)
        for i in range(4):
            dt = TAU ** (int(b["input_index"][i]) - T // 2)
            ref = np.interp(np.clip(b["hdr"][i] * dt, 0, 1), grid, b["crf_curve"][i])
            assert np.abs(np.round(ref * 255) - np.round(b["input"][i] * 255)).max() <= 1
