"""On-the-fly training data of the highlight head (:mod:`hdr_jax.models.highlight`).

Nothing is stored per view: every example is rendered from a scene's linear radiance when it is
drawn, so the set is as large as the stream (thousands of distinct views per scene).

One example: a random view of a scene (a panorama: field of view, pitch and yaw at random; an
ordinary HDR image: a random square crop, resized), white-balance jitter, a random camera
response (sRGB; gamma; gamma + S-curve; EMoR samples when the model is given), an exposure
that clips a random fraction of the pixels (log-uniform), signal-dependent sensor noise, an
8-bit quantisation, a JPEG round trip at a random quality (or none) and a flip. The photo is
linearised as the pipeline does for a photo of an unknown camera (inverse sRGB, or the ``blind``
linearisation given, e.g. inverse sRGB bent by the clip-level estimate), or, for a share of the
examples, with the true response (the flag of the network's input says which). The reference
is scaled as the HDR protocol scales it (:mod:`hdr_jax.eval.protocol`: the 99.9th-percentile
luminance at PEAK_LUMINANCE), so the loss can be the protocol's PU21 error itself.

Randomness: examples are ``random_map`` draws seeded by (seed, position in the stream), the
scene order a grain shuffle re-drawn every epoch, so the stream is a pure function of the seed
and iterators checkpoint with ``get_state()`` / ``set_state()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import grain
import numpy as np

from hdr_jax import io as hdr_io
from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera.panorama import is_panorama
from hdr_jax.data import hdr_brackets, sharding
from hdr_jax.eval import protocol

__all__ = ["CurveSampler", "load_scenes", "make_dataset", "make_example", "make_train_iterator"]

#: 8-bit level from which a pixel counts as clipped (protocol.CLIP_LEVEL) before rounding.
_CLIP_Z = (protocol.CLIP_LEVEL * 255.0 - 0.5) / 255.0


def load_scenes(hdr_dir: str | Path, split: str) -> list[tuple[str, np.ndarray]]:
    """(stem, radiance) of the 'train' or 'validation' scenes of ``hdr_dir``: the scene split
    every stage trains with (:func:`hdr_brackets.split_scenes`), so the held-out scenes of the
    evaluations are never training data."""
    files = hdr_io.list_images(Path(hdr_dir), kinds=("hdr",))
    by_stem = {f.stem: f for f in files}
    train, held = hdr_brackets.split_scenes(list(by_stem))
    stems = {"train": train, "validation": held}[split]
    out = []
    for stem in stems:
        img = hdr_brackets.read_source_hdr(by_stem[stem], strict=False, builder="highlight")
        if img is not None and float(np.max(img)) > 0:
            out.append((stem, np.ascontiguousarray(img, np.float32)))
    if not out:
        raise ValueError(f"{hdr_dir}: no readable {split} scene")
    return out


class CurveSampler:
    """Random camera responses, one family per draw with equal odds: sRGB; gamma x^(1/g),
    g ~ U(1.6, 2.8); the same followed by an S-curve (:func:`crf.s_curve_crf`, contrast
    ~ U(2, 10), pivot ~ U(0.4, 0.6)); and, with ``emor_curves`` (n, 1024), one of those."""

    def __init__(self, emor_curves: np.ndarray | None = None):
        self.emor = None if emor_curves is None or not len(emor_curves) else np.asarray(emor_curves)
        self.srgb = crf_lib.srgb_crf()
        self.families = ("sRGB", "gamma", "gamma+S") + (("EMoR",) if self.emor is not None else ())

    def __call__(self, rng: np.random.Generator) -> tuple[str, np.ndarray]:
        family = self.families[int(rng.integers(len(self.families)))]
        g = float(rng.uniform(1.6, 2.8))
        if family == "sRGB":
            return family, self.srgb
        if family == "gamma":
            return family, crf_lib.gamma_crf(g)
        if family == "gamma+S":
            return family, crf_lib.s_curve_crf(float(rng.uniform(2.0, 10.0)),
                                               pivot=float(rng.uniform(0.4, 0.6)), gamma=g)
        return family, self.emor[int(rng.integers(len(self.emor)))]


def _random_view(radiance: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    h, w = radiance.shape[:2]
    if is_panorama(h, w):
        fov = float(rng.uniform(40.0, 110.0))
        view = hdr_brackets.panorama_view(radiance, fov, float(rng.uniform(-25.0, 45.0)),
                                          float(rng.uniform(-180.0, 180.0)), size)
    else:
        side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = radiance[top : top + side, left : left + side]
        interp = cv2.INTER_AREA if side >= size else cv2.INTER_LINEAR
        view = cv2.resize(crop, (size, size), interpolation=interp)
    return np.maximum(view, 0.0).astype(np.float32)


def make_example(
    radiance: np.ndarray,
    rng: np.random.Generator,
    curves: CurveSampler,
    *,
    size: int,
    clip_range: tuple[float, float] = (0.01, 0.30),
    jpeg_probability: float = 0.6,
    known_probability: float = 0.2,
    blind: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """One training example of a scene's radiance (module docstring): ``photo`` (S, S, 3) in
    [0, 1]; ``linear`` its linearisation (the true response's inverse, else ``blind`` (photo),
    else inverse sRGB); ``reference`` the protocol-scaled radiance;
    ``clipped`` (S, S) the protocol's clipped mask (before the JPEG step); ``known`` (1,) 1 when
    ``linear`` used the true response. Draw order is fixed, so a generator state gives one
    example."""
    view = _random_view(radiance, size, rng)
    for _ in range(8):  # a view must have enough positive pixels to clip the fraction
        if np.mean(view.max(-1) > 0) > 0.5:
            break
        view = _random_view(radiance, size, rng)
    view = view * np.exp(rng.normal(0.0, 0.15, 3)).astype(np.float32)
    _family, curve = curves(rng)
    lo, hi = clip_range
    fraction = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    peak = view.max(-1)
    level = float(np.quantile(peak, 1.0 - fraction))
    if not level > 0:
        level = float(peak.max()) or 1.0
    a = float(crf_lib.apply_inverse_crf(curve, np.float32(_CLIP_Z))) / level
    noise = float(rng.uniform(0.0, 0.01))
    exposed = view * np.float32(a)
    exposed = exposed + rng.normal(0.0, 1.0, exposed.shape).astype(np.float32) * (
        noise * np.sqrt(np.minimum(exposed, 1.0))
    )
    clean = protocol.render_srgb8(np.maximum(exposed, 0.0), 1.0, curve)
    clipped = protocol.clipped_mask(clean)
    photo = clean
    if rng.random() < jpeg_probability:
        photo = protocol.jpeg_roundtrip(clean, int(rng.integers(60, 99)))
    known = rng.random() < known_probability
    if rng.random() < 0.5:
        photo, view, clipped = photo[:, ::-1], view[:, ::-1], clipped[:, ::-1]
    if known or blind is None:
        linear = protocol.linearise_srgb(photo, curve if known else None)
    else:
        linear = blind(np.ascontiguousarray(photo, np.float32))
    lum = 0.2126 * view[..., 0] + 0.7152 * view[..., 1] + 0.0722 * view[..., 2]
    top = float(np.percentile(lum, protocol.PEAK_PERCENTILE))
    reference = view * np.float32(protocol.PEAK_LUMINANCE / max(top, 1e-12))
    return {
        "photo": np.ascontiguousarray(photo, np.float32),
        "linear": np.ascontiguousarray(linear, np.float32),
        "reference": np.ascontiguousarray(reference, np.float32),
        "clipped": np.ascontiguousarray(clipped, np.float32),
        "known": np.array([float(known)], np.float32),
    }


def make_dataset(
    scenes: Sequence[np.ndarray],
    curves: CurveSampler,
    *,
    size: int,
    seed: int,
    batch_size: int,
    train: bool = True,
    num_eval: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    **example_kw: Any,
) -> grain.MapDataset:
    """Training: scenes shuffled each epoch, repeated forever, one random example per draw,
    this process's rows of each global batch (:func:`sharding.batch_for_process`).
    Evaluation: ``num_eval`` fixed examples (seeded by ``seed`` and their index, scenes in
    turn), batches of ``batch_size``, the last one partial."""
    if not scenes:
        raise ValueError("no scenes")
    if size % 16:
        raise ValueError(f"size must be a multiple of 16, got {size}")
    scenes = list(scenes)

    def draw(i: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return make_example(scenes[int(i)], rng, curves, size=size, **example_kw)

    if train:
        order = sharding.derive_seed(seed, sharding.SHUFFLE_STREAM)
        ds = grain.MapDataset.range(len(scenes)).shuffle(seed=order).repeat()
        ds = ds.random_map(draw, seed=sharding.derive_seed(seed, sharding.AUGMENT_STREAM))
        return sharding.batch_for_process(ds, batch_size, process_index, process_count)
    base = sharding.derive_seed(seed, sharding.EVAL_STREAM)
    ds = grain.MapDataset.range(int(num_eval)).map(
        lambda i: draw(i % len(scenes), np.random.default_rng([base, int(i)]))
    )
    return ds.batch(batch_size, drop_remainder=False)


def make_train_iterator(
    scenes: Sequence[np.ndarray],
    curves: CurveSampler,
    *,
    num_threads: int = 2,
    prefetch_buffer_size: int = 8,
    **kw: Any,
) -> grain.DatasetIterator:
    """Endless training iterator of :func:`make_dataset` with ``get_state()``/``set_state()``."""
    ds = make_dataset(scenes, curves, train=True, **kw)
    read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size)
    return iter(ds.to_iter_dataset(read))


def emor_training_curves(emor_dir: str | Path | None, n: int = 256) -> np.ndarray | None:
    """The EMoR curves training draws from: ``n`` samples with seed 0 (the evaluation's
    responses are drawn with another seed), or None without the model."""
    if not emor_dir:
        return None
    return crf_lib.sample_emor_crfs(crf_lib.load_emor(emor_dir), n, np.random.default_rng(0))

