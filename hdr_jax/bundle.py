"""Exported model weights: one msgpack file per network plus a manifest.json.

A weights directory holds `manifest.json` ({name: {config, file, sha256, dtype, ...}}) and the
files it names: `name.msgpack`, or `name.msgpack.zlib` (zlib-compressed, ~8% smaller for float16
weights). Parameters may be stored in float16 to keep the bundled set small; they are cast
back to float32 on load. The manifest's model config rebuilds the module, so a checkpoint can
never be silently applied to a model of another shape: shapes are checked on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from hdr_jax import interrupts

DEFAULT_DIR = Path(__file__).parent / "weights"
NETWORKS = ("drtmo_up", "drtmo_down", "response", "highlight", "cliplevel", "level",
            "level_known", "curvechoice", "cfnet_x2", "cfnet_x4")


class WeightsError(ValueError):
    """Missing, corrupt, or mismatching weights (one-line message)."""


def save_network(
    directory: str | os.PathLike,
    name: str,
    variables: dict,
    model_config: dict,
    *,
    dtype: str = "float16",
    info: dict | None = None,
    compress: bool = False,
) -> Path:
    """Writes `name.msgpack` (`name.msgpack.zlib` with `compress`) and records it in the
    manifest, as one change: both are written under temporary names first and renamed into place
    together with SIGINT/SIGTERM held, so an interrupted export leaves the directory as it was
    (no file that disagrees with its manifest entry, no temporary file)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cast = jax.tree.map(lambda x: np.asarray(x, dtype), jax.device_get(variables))
    data = flax.serialization.msgpack_serialize(flax.serialization.to_state_dict(cast))
    data = zlib.compress(data, 9) if compress else data
    path = directory / (f"{name}.msgpack.zlib" if compress else f"{name}.msgpack")
    manifest = read_manifest(directory, missing_ok=True)
    manifest[name] = {
        "file": path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "dtype": dtype,
        "config": model_config,
        **(info or {}),
    }
    tmp, manifest_tmp = directory / f"{path.name}.tmp", directory / "manifest.json.tmp"
    try:
        tmp.write_bytes(data)
        manifest_tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        with interrupts.deferred():
            os.replace(tmp, path)
            os.replace(manifest_tmp, directory / "manifest.json")
    except BaseException:
        for t in (tmp, manifest_tmp):
            t.unlink(missing_ok=True)
        raise
    # A network saved in the other format before is left behind, unreferenced.
    stale = directory / (f"{name}.msgpack" if compress else f"{name}.msgpack.zlib")
    stale.unlink(missing_ok=True)
    return path


def read_manifest(directory: str | os.PathLike, *, missing_ok: bool = False) -> dict:
    path = Path(directory) / "manifest.json"
    if not missing_ok and not Path(directory).is_dir():
        what = "not a directory" if os.path.lexists(directory) else "no such directory"
        raise WeightsError(f"{directory}: {what} (expected a weights directory)")
    if not path.exists():
        if missing_ok:
            return {}
        raise WeightsError(f"{directory}: no manifest.json (not a weights directory)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"{path}: unreadable manifest ({type(e).__name__})") from e
    if not isinstance(manifest, dict):
        raise WeightsError(f"{path}: manifest is not a JSON object")
    return manifest


def _weights_file(directory: Path, name: str, file: str) -> Path:
    """The manifest's file name, which must name a regular file inside the weights directory
    (never an absolute path or one that climbs out with '..' or a symlink)."""
    root = directory.resolve()
    path = (directory / file).resolve()
    if not file or path == root or not path.is_relative_to(root):
        raise WeightsError(
            f"{directory}: manifest entry {name!r} names {file!r}, not a file in the directory"
        )
    if not path.exists():
        raise WeightsError(f"{directory / file}: weights file missing")
    if not path.is_file():
        raise WeightsError(f"{directory / file}: weights file is not a regular file")
    return path


def load_network(
    directory: str | os.PathLike, name: str, template: Any | None = None
) -> tuple[dict, dict]:
    """Returns (variables as float32 numpy, manifest entry). Verifies the SHA-256 and, given a
    template pytree (e.g. from `jax.eval_shape(model.init, ...)`), every shape."""
    directory = Path(directory)
    entry = read_manifest(directory).get(name)
    if entry is None:
        raise WeightsError(f"{directory}: manifest has no network {name!r}")
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("file"), str)
        or "sha256" not in entry
    ):
        raise WeightsError(f"{directory}: manifest entry {name!r} lacks 'file' or 'sha256'")
    path = _weights_file(directory, name, entry["file"])
    try:
        data = path.read_bytes()
    except OSError as e:
        raise WeightsError(f"{path}: cannot read the weights file ({e.strerror or e})") from e
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise WeightsError(
            f"{path}: SHA-256 does not match the manifest (corrupt or replaced file)"
        )
    try:
        if path.suffix == ".zlib":
            data = zlib.decompress(data)
        state = flax.serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise WeightsError(f"{path}: not a weights file ({type(e).__name__})") from e
    if not isinstance(state, dict):  # valid msgpack, but not a variables dict
        raise WeightsError(f"{path}: not a weights file (holds a {type(state).__name__})")
    try:
        variables = jax.tree.map(lambda x: np.asarray(x, np.float32), state)
    except (TypeError, ValueError) as e:  # e.g. strings where arrays belong
        raise WeightsError(f"{path}: not a weights file (non-numeric entries)") from e
    if template is not None:
        t_flat = {
            jax.tree_util.keystr(k): np.shape(v)
            for k, v in jax.tree_util.tree_leaves_with_path(template)
        }
        v_flat = {
            jax.tree_util.keystr(k): np.shape(v)
            for k, v in jax.tree_util.tree_leaves_with_path(variables)
        }
        if t_flat != v_flat:
            diff = sorted(set(t_flat.items()) ^ set(v_flat.items()))
            raise WeightsError(
                f"{path}: weights do not match the model config "
                f"(first difference: {diff[0][0]} {diff[0][1]})"
            )
        variables = flax.serialization.from_state_dict(
            jax.tree.map(np.asarray, template), variables
        )
    return variables, entry
