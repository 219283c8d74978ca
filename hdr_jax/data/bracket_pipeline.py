"""Grain input pipeline for the stage-1 (DrTMO) up-/down-exposure networks.

Records come from :class:`hdr_jax.data.hdr_brackets.HdrBrackets` (any random-access source of
dicts with a ``'bracket'`` (T+1, H, W, 3) uint8 array, darkest first). For an input exposure j
the targets follow DrTMO eq. 3 (up) and eq. 4 (down):

    up:   target[k] = bracket[j + 1 + k],  k = 0..N-1, zero (mask 0) where j + 1 + k > T
    down: target[k] = bracket[j - 1 - k],  k = 0..N-1, zero (mask 0) where j - 1 - k < 0

Batches are dicts of NumPy arrays: ``input`` (B, H, W, 3) float32 in [0, 1], ``target``
(B, N, H, W, 3) float32, ``mask`` (B, N) float32, ``input_index`` (B,) int32 and
``exposure_step`` (B, N) int32 (+1..+N up, -1..-N down: target k has exposure tau^step times
the input's). With ``include_hdr`` also ``hdr`` (B, H, W, 3) float32 (radiance at dt = 1,
cropped and flipped like the images) and ``crf_curve`` (B, 1024) float32.

Randomness (training): the record order is a grain global shuffle, re-drawn every epoch
(``MapDataset.shuffle`` seeds epoch e with seed + e); j, the crop and the flip come from
``random_map``, whose generator is seeded by (seed, position in the repeated stream), so every
epoch draws new augmentations and the stream is a pure function of ``seed``. Iterators
checkpoint with ``get_state()`` / ``set_state()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import grain
import numpy as np

from hdr_jax.data import sharding

Direction = Literal["up", "down"]
InputIndex = int | Literal["all"] | None


def target_exposure_steps(direction: Direction, num_exposures: int) -> np.ndarray:
    """Exposure offsets of the N targets relative to the input: +1..+N (up) or -1..-N (down)."""
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
    if num_exposures < 1:
        raise ValueError(f"num_exposures must be >= 1, got {num_exposures}")
    k = np.arange(1, num_exposures + 1, dtype=np.int32)
    return k if direction == "up" else -k


def make_example(
    record: Mapping[str, Any],
    input_index: int,
    *,
    direction: Direction,
    num_exposures: int = 8,
    crop: tuple[int, int, int] | None = None,
    flip: bool = False,
    include_hdr: bool = False,
    include_targets: bool = True,
) -> dict[str, np.ndarray]:
    """One training pair from a bracket record (DrTMO eq. 3/4).

    ``crop`` = (top, left, size) is applied, then ``flip`` (horizontal), identically to the input,
    the targets and the radiance. ``include_targets=False`` leaves out 'target' and 'mask' (for
    models that need the input and its response only).
    """
    bracket = np.asarray(record["bracket"])
    if bracket.ndim != 4 or bracket.shape[-1] != 3:
        raise ValueError(f"bracket must have shape (T+1, H, W, 3), got {bracket.shape}")
    d = bracket.shape[0]
    j = int(input_index)
    if not 0 <= j < d:
        raise ValueError(f"input_index must lie in [0, {d - 1}], got {j}")
    steps = target_exposure_steps(direction, num_exposures)

    def geometry(x: np.ndarray) -> np.ndarray:  # (..., H, W, C)
        if crop is not None:
            top, left, size = crop
            x = x[..., top:top + size, left:left + size, :]
        return x[..., :, ::-1, :] if flip else x

    idx = j + steps
    valid = (idx >= 0) & (idx < d)
    scale = np.float32(1.0 / 255.0)
    out = {
        "input": np.ascontiguousarray(geometry(bracket[j])).astype(np.float32) * scale,
        "input_index": np.int32(j),
        "exposure_step": steps,
    }
    if include_targets:
        target = np.zeros((num_exposures,) + bracket.shape[1:], np.uint8)
        target[valid] = bracket[idx[valid]]
        out["target"] = np.ascontiguousarray(geometry(target)).astype(np.float32) * scale
        out["mask"] = valid.astype(np.float32)
    if include_hdr:
        out["hdr"] = np.ascontiguousarray(geometry(np.asarray(record["hdr"]))).astype(np.float32)
        out["crf_curve"] = np.asarray(record["crf_curve"], np.float32)
    return out


def _check_crop(crop_size: int | None, height: int, width: int) -> None:
    if crop_size is not None and not 0 < crop_size <= min(height, width):
        raise ValueError(f"crop_size must lie in [1, {min(height, width)}], got {crop_size}")


def make_dataset(
    data_source: Any,
    *,
    direction: Direction,
    num_exposures: int = 8,
    crop_size: int | None = None,
    train: bool,
    seed: int,
    batch_size: int,
    input_index: InputIndex = None,
    include_hdr: bool = False,
    include_targets: bool = True,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """Batched stage-1 dataset over a random-access source of bracket records.

    Training (``train=True``): shuffled, reshuffled each epoch, repeated forever; per example a
    uniform input index j in 0..T (or the fixed ``input_index``), a uniform random
    ``crop_size`` crop and a horizontal flip with probability 1/2; ``drop_remainder=True``;
    the batches are this process's rows of the global batch of ``batch_size``
    (:func:`hdr_jax.data.sharding.batch_for_process`).

    Evaluation: one pass in source order, centre crops, ``drop_remainder=False``; the input index
    is ``input_index`` when an int, every j = 0..T in turn (example-major) when ``'all'``, and
    otherwise a fixed pseudo-random j per example drawn from ``seed``.
    """
    n = len(data_source)
    if n == 0:
        raise ValueError("data_source is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    target_exposure_steps(direction, num_exposures)  # validates both
    d, h, w, _ = np.shape(data_source[0]["bracket"])
    _check_crop(crop_size, h, w)
    if input_index is not None and input_index != "all" and not 0 <= int(input_index) < d:
        raise ValueError(f"input_index must be None, 'all' or an int in [0, {d - 1}], got {input_index!r}")
    opts = dict(direction=direction, num_exposures=num_exposures, include_hdr=include_hdr,
                include_targets=include_targets)
    source = grain.MapDataset.source(data_source)

    if train:
        if input_index == "all":
            raise ValueError("input_index='all' is for evaluation; use None (random) or an int for training")

        def augment(record: Mapping[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
            # Draw order fixed (j, crop, flip) so a given seed always yields the same stream.
            j = int(rng.integers(0, d)) if input_index is None else int(input_index)
            crop = None
            if crop_size is not None:
                crop = (int(rng.integers(0, h - crop_size + 1)), int(rng.integers(0, w - crop_size + 1)), crop_size)
            flip = bool(rng.random() < 0.5)
            return make_example(record, j, crop=crop, flip=flip, **opts)

        ds = source.shuffle(seed=sharding.derive_seed(seed, sharding.SHUFFLE_STREAM)).repeat()
        ds = ds.random_map(augment, seed=sharding.derive_seed(seed, sharding.AUGMENT_STREAM))
        return sharding.batch_for_process(ds, batch_size, process_index, process_count)

    crop = None
    if crop_size is not None:
        crop = ((h - crop_size) // 2, (w - crop_size) // 2, crop_size)
    if input_index == "all":
        ds = grain.MapDataset.range(n * d).map(lambda i: make_example(source[i // d], i % d, crop=crop, **opts))
    else:
        if input_index is None:
            eval_rng = np.random.default_rng(sharding.derive_seed(seed, sharding.EVAL_STREAM))
            js = eval_rng.integers(0, d, size=n)
        else:
            js = np.full(n, int(input_index))
        ds = source.map_with_index(lambda i, record: make_example(record, int(js[i]), crop=crop, **opts))
    return ds.batch(batch_size, drop_remainder=False)


def make_train_iterator(
    data_source: Any,
    *,
    direction: Direction,
    num_exposures: int = 8,
    crop_size: int | None = None,
    seed: int,
    batch_size: int,
    input_index: int | None = None,
    include_hdr: bool = False,
    include_targets: bool = True,
    num_threads: int = 2,
    prefetch_buffer_size: int = 4,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.DatasetIterator:
    """Endless training iterator (see :func:`make_dataset`) with ``get_state()``/``set_state()``.

    The stream is a function of ``seed`` only; ``set_state`` on a fresh iterator resumes exactly.
    ``num_threads`` / ``prefetch_buffer_size`` (in examples) bound grain's read-ahead threads.
    """
    ds = make_dataset(data_source, direction=direction, num_exposures=num_exposures, crop_size=crop_size,
                      train=True, seed=seed, batch_size=batch_size, input_index=input_index,
                      include_hdr=include_hdr, include_targets=include_targets,
                      process_index=process_index, process_count=process_count)
    read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size)
    return iter(ds.to_iter_dataset(read))
