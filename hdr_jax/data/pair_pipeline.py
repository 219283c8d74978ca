"""grain input pipeline for stage-2 pairs ('sice' / 'synthetic_pairs' data sources; CF-Net training pairs).

Training: ``source.shuffle(seed).repeat().random_map(patch + augmentation).batch(B)``. grain's
``repeat`` passes the global index through and ``shuffle`` derives its permutation from
``seed + index // len``, so every epoch is shuffled differently; ``random_map`` seeds its
generator from (seed, global index), so crops and flips differ per epoch too. Everything is a
pure function of (seed, step): an iterator's ``get_state()`` is just the next index, and
``set_state()`` on a fresh iterator resumes exactly.

Augmentation: a random LR patch (p x p) with the matching HR patches (sp x sp, aligned: LR pixel
(i, j) covers HR pixels [si, si + s) x [sj, sj + s)); then one of the 8 dihedral transforms
(horizontal/vertical flip, 90-degree rotations), the same for all five images of a pair.

Batches: 'under_lr', 'over_lr' (B, p, p, 3) and 'under_hr', 'over_hr', 'label_hr'
(B, sp, sp, 3), float32 in [0, 1] (NHWC). Evaluation yields the same keys; with
``eval_mode='full'`` one whole image per batch (B = 1, variable size), with ``'center'`` the
central p x p LR patch and its HR counterpart. Evaluation also passes through 'sequence' (str)
and, when the source has it, 'hdr' (float32).
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence

import grain
import numpy as np

from hdr_jax.data import sharding

__all__ = ["IMAGE_KEYS", "LR_KEYS", "HR_KEYS", "dihedral", "make_dataset", "make_train_iterator", "random_patch"]

LR_KEYS = ("under_lr", "over_lr")
HR_KEYS = ("under_hr", "over_hr", "label_hr")
IMAGE_KEYS = LR_KEYS + HR_KEYS

Example = Mapping[str, Any]


def _check_example(ex: Example, scale: int) -> tuple[int, int]:
    missing = [k for k in IMAGE_KEYS if k not in ex]
    if missing:
        raise KeyError(f"pair example lacks {missing}; has {sorted(ex)}")
    h, w = np.shape(ex["under_lr"])[:2]
    for k in LR_KEYS:
        if np.shape(ex[k])[:2] != (h, w):
            raise ValueError(f"{k} has shape {np.shape(ex[k])}, expected LR size {(h, w)}")
    for k in HR_KEYS:
        if np.shape(ex[k])[:2] != (h * scale, w * scale):
            raise ValueError(f"{k} has shape {np.shape(ex[k])}, expected HR size {(h * scale, w * scale)} at x{scale}")
    return h, w


def _crop(ex: Example, y: int, x: int, p: int, scale: int) -> dict[str, np.ndarray]:
    s = scale
    out = {k: np.asarray(ex[k])[y : y + p, x : x + p] for k in LR_KEYS}
    out.update({k: np.asarray(ex[k])[s * y : s * (y + p), s * x : s * (x + p)] for k in HR_KEYS})
    if "hdr" in ex:
        out["hdr"] = np.asarray(ex["hdr"])[s * y : s * (y + p), s * x : s * (x + p)]
    return out


def random_patch(ex: Example, rng: np.random.Generator, *, scale: int, patch_size: int) -> dict[str, np.ndarray]:
    """Aligned random LR/HR patches of one pair (uint8 kept)."""
    h, w = _check_example(ex, scale)
    p = patch_size
    if h < p or w < p:
        raise ValueError(f"LR image {(h, w)} of {_name(ex)} is smaller than the patch size {p}")
    y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
    return {k: v for k, v in _crop(ex, y, x, p, scale).items() if k in IMAGE_KEYS}


def dihedral(images: Mapping[str, np.ndarray], k: int, flip: bool) -> dict[str, np.ndarray]:
    """Rotate every HWC image by k * 90 degrees after an optional horizontal flip.

    The 8 (k, flip) pairs give all compositions of h/v flips and 90-degree rotations.
    """
    out = {}
    for name, img in images.items():
        a = img[:, ::-1] if flip else img
        out[name] = np.ascontiguousarray(np.rot90(a, k=k % 4, axes=(0, 1)))
    return out


def _name(ex: Example) -> str:
    seq = ex.get("sequence", "?")
    return repr(seq.decode() if isinstance(seq, bytes) else str(seq))


def _to_float(images: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in images.items():
        if k in IMAGE_KEYS:
            out[k] = np.asarray(v, np.float32) / np.float32(255.0)  # exactly as io.read_ldr
        elif k == "hdr":
            out[k] = np.asarray(v, np.float32)
        elif k == "sequence":
            out[k] = np.asarray(v.decode() if isinstance(v, bytes) else str(v))
    return out


def _train_transform(scale: int, patch_size: int):
    def fn(ex: Example, rng: np.random.Generator) -> dict[str, np.ndarray]:
        patch = random_patch(ex, rng, scale=scale, patch_size=patch_size)
        aug = dihedral(patch, k=int(rng.integers(4)), flip=bool(rng.integers(2)))
        return _to_float(aug)

    return fn


def _eval_transform(scale: int, patch_size: int, eval_mode: str):
    def fn(ex: Example) -> dict[str, Any]:
        h, w = _check_example(ex, scale)
        if eval_mode == "center":
            p = patch_size
            if h < p or w < p:
                raise ValueError(f"LR image {(h, w)} of {_name(ex)} is smaller than the patch size {p}")
            images = _crop(ex, (h - p) // 2, (w - p) // 2, p, scale)
        else:
            images = {k: ex[k] for k in (*IMAGE_KEYS, "hdr") if k in ex}
        out = _to_float(images)
        out["sequence"] = _to_float({"sequence": ex.get("sequence", "")})["sequence"]
        return out

    return fn


def make_dataset(
    data_source: Sequence[Example],
    *,
    scale: int,
    patch_size: int = 64,
    train: bool,
    seed: int,
    batch_size: int,
    eval_mode: Literal["full", "center"] = "full",
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """Random-access dataset of batches (see the module docstring).

    ``data_source``: anything with ``__len__`` and ``__getitem__`` returning pair dicts, e.g.
    ``tfds.builder('sice/x2', ...).as_data_source('train')``. Training is infinite; evaluation
    is one pass in source order (``eval_mode='full'`` forces batch size 1). Training batches are
    this process's rows of the global batch of ``batch_size``
    (:func:`hdr_jax.data.sharding.batch_for_process`).
    """
    if scale < 1 or patch_size < 1 or batch_size < 1:
        raise ValueError(f"scale, patch_size and batch_size must be >= 1, got {scale}, {patch_size}, {batch_size}")
    if len(data_source) == 0:
        raise ValueError("data_source is empty")
    ds = grain.MapDataset.source(data_source)
    if train:
        ds = ds.shuffle(seed=seed).repeat()
        ds = ds.random_map(_train_transform(scale, patch_size), seed=seed)
        return sharding.batch_for_process(ds, batch_size, process_index, process_count)
    if eval_mode not in ("full", "center"):
        raise ValueError(f"eval_mode must be 'full' or 'center', got {eval_mode!r}")
    ds = ds.map(_eval_transform(scale, patch_size, eval_mode))
    return ds.batch(1 if eval_mode == "full" else batch_size, drop_remainder=False)


def make_train_iterator(
    data_source: Sequence[Example],
    *,
    scale: int,
    patch_size: int = 64,
    seed: int,
    batch_size: int,
    num_threads: int = 2,
    prefetch: int = 4,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.DatasetIterator:
    """Infinite training batch iterator with exact ``get_state()`` / ``set_state()`` resumption.

    ``num_threads`` reader threads (the decode + crop work releases the GIL in NumPy/zlib);
    ``prefetch`` batches are buffered ahead.
    """
    ds = make_dataset(data_source, scale=scale, patch_size=patch_size, train=True, seed=seed, batch_size=batch_size,
                      process_index=process_index, process_count=process_count)
    opts = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    return iter(ds.to_iter_dataset(opts))
