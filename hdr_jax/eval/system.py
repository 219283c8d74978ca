"""The two-stage system (DrTMO stack + merge, then CF-Net on a pair of the stack) on held-out
panorama views.

Scenes: the held-out split both stages train with
(:func:`hdr_jax.data.hdr_brackets.split_scenes`), :data:`HELDOUT_VIEWS` of each. Per view the linear radiance is rendered at
``size * scale`` (HR) and box-averaged to ``size`` (LR); the input is the LR radiance through
sRGB, 8-bit, exposed so that :data:`protocol.CLIP_FRACTION` of the pixels clip, optionally
through a JPEG round trip. HDR rows are scored with :func:`protocol.pu21_protocol`, the fused
image with :func:`stage2.fused_scores`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hdr_jax import io as hdr_io
from hdr_jax import merge, metrics, pipeline
from hdr_jax.camera.exposure import TAU
from hdr_jax.camera.panorama import is_panorama
from hdr_jax.data import hdr_brackets, synthetic_pairs
from hdr_jax.eval import baselines, protocol, stage2

__all__ = [
    "FUSED_ROWS",
    "HDR_ROWS",
    "HELDOUT_VIEWS",
    "ViewResult",
    "evaluate_view",
    "heldout_scenes",
    "heldout_views",
    "render_view",
]

#: Deterministic (fov, elevation, azimuth) views per held-out panorama, degrees: DrTMO's sample
#: scenes are named like 'scene_80_10_120' (fov 80, elevation 10); three azimuths 120 apart.
HELDOUT_VIEWS: tuple[tuple[float, float, float], ...] = (
    (80.0, 10.0, 0.0),
    (80.0, 10.0, 120.0),
    (80.0, 10.0, 240.0),
)
#: Row names of the HDR table and the fused-image table, in table order.
HDR_ROWS = (
    "ours (DrTMO stack + input-anchored merge, default)",
    "linearised LDR input (inverse sRGB)",
    "ours + Debevec merge, linear response (public code)",
    "ours + robust merge of the whole stack",
)
FUSED_ROWS = (
    "ours (CF-Net on the stack's pair)",
    "Mertens + bicubic (the stack's LR pair)",
    "Mertens + bicubic (true LR pair, oracle)",
)


def heldout_scenes(hdr_dir: str | Path) -> list[Path]:
    """HDR files of the held-out scenes: the split both stages train with
    (:func:`hdr_jax.data.hdr_brackets.split_scenes` on the file stems of ``hdr_dir``)."""
    files = hdr_io.list_images(Path(hdr_dir), kinds=("hdr",))
    if not files:
        raise hdr_io.ImageIOError(f"{hdr_dir}: no HDR files (.exr/.hdr)")
    by_stem = {f.stem: f for f in files}
    return [by_stem[s] for s in hdr_brackets.split_scenes(list(by_stem))[1]]


def render_view(
    panorama: np.ndarray, view: Sequence[float], size: int, scale: int
) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR) linear radiance of one perspective view: HR is ``size * scale`` px (anti-aliased
    like the stage-1 data), LR its ``scale`` x ``scale`` box average (a sensor of coarser pixels),
    so the two are the same scene at the same radiance scale."""
    fov, elevation, azimuth = view
    hr = np.maximum(hdr_brackets.panorama_view(panorama, fov, elevation, azimuth, size * scale), 0)
    lr = hr.reshape(size, scale, size, scale, 3).mean(axis=(1, 3))
    return lr.astype(np.float32), hr.astype(np.float32)


def heldout_views(
    hdr_dir: str | Path,
    *,
    size: int,
    scale: int,
    views: Sequence[Sequence[float]] = HELDOUT_VIEWS,
    scenes: Sequence[str] | None = None,
) -> Iterable[tuple[str, tuple[float, ...] | None, np.ndarray, np.ndarray]]:
    """(scene, view angles, LR, HR) radiance of every view of every held-out panorama in
    ``hdr_dir`` (or of the held-out ``scenes`` named), in scene order. A held-out file that is
    not a panorama gives one view, its centre square (angles None)."""
    files = heldout_scenes(hdr_dir)
    if scenes is not None:
        unknown = sorted(set(scenes) - {f.stem for f in files})
        if unknown:
            raise ValueError(f"not held-out scenes of {hdr_dir}: {unknown}")
        files = [f for f in files if f.stem in set(scenes)]
    for path in files:
        img = hdr_io.read_hdr(path)
        if not is_panorama(*img.shape[:2]):
            # An ordinary photo: one centre square, area-resized to the HR size.
            h, w = img.shape[:2]
            side = min(h, w)
            sq = img[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 :][:, :side]
            n = size * scale
            hr = cv2.resize(
                sq, (n, n), interpolation=cv2.INTER_AREA if side >= n else cv2.INTER_CUBIC
            )
            hr = np.maximum(hr, 0.0).astype(np.float32)
            yield path.stem, None, hr.reshape(size, scale, size, scale, 3).mean(axis=(1, 3)), hr
            continue
        for view in views:
            lr, hr = render_view(img, view, size, scale)
            yield path.stem, tuple(float(a) for a in view), lr, hr


@dataclasses.dataclass
class ViewResult:
    """Scores of one view and the images a figure needs (HWC float32)."""

    hdr_scores: dict[str, dict[str, float]]
    fused_scores: dict[str, dict[str, float]]
    info: dict[str, Any]
    images: dict[str, np.ndarray]


def evaluate_view(
    pipe: Any,
    lr: np.ndarray,
    hr: np.ndarray,
    *,
    scale: int = 2,
    jpeg_quality: int | None = None,
    clip_fraction: float = protocol.CLIP_FRACTION,
) -> ViewResult:
    """The whole pipeline on one view given its LR and HR linear radiance (:func:`render_view`).

    Input: sRGB 8-bit rendering of ``lr`` exposed so that ``clip_fraction`` of the pixels clip,
    then a JPEG round trip if ``jpeg_quality``. The clipped mask is taken before the JPEG step,
    so both variants are scored on the same pixels. HDR rows are scored against ``lr``. The
    fused x``scale`` output is scored against the label of the synthetic stage-2 data
    (:func:`hdr_jax.data.synthetic_pairs.fuse_bracket` of the key-normalised ``hr``) by
    PSNR/SSIM (RGB), and by MEF-SSIM against the true HR under/over pair: ``hr`` rendered at the
    exposures of the pair that ``pipeline.pick_pair`` chose.
    """
    if hr.shape[:2] != (lr.shape[0] * scale, lr.shape[1] * scale):
        raise ValueError(f"evaluate_view: HR {hr.shape} is not {scale}x LR {lr.shape}")
    a = protocol.clipping_exposure(lr, clip_fraction)
    clean = protocol.render_srgb8(lr, a)
    clipped = protocol.clipped_mask(clean)
    ldr = protocol.jpeg_roundtrip(clean, jpeg_quality) if jpeg_quality else clean
    res = pipeline.reconstruct(pipe, ldr, scale=scale)
    debevec, _ = merge.merge_stack(res.stack, method="debevec", tau=TAU)
    robust, _ = merge.merge_stack(res.stack, method="robust", tau=TAU)
    hdr_preds = dict(zip(HDR_ROWS, (res.hdr, protocol.linearise_srgb(ldr), debevec, robust)))
    hdr_scores = {name: protocol.pu21_protocol(p, lr, clipped) for name, p in hdr_preds.items()}

    centre = (len(res.stack) - 1) // 2
    steps = tuple(i - centre for i in res.pair)
    under_hr, over_hr = (protocol.render_srgb8(hr, a * TAU**s) for s in steps)
    pair_lr_true = [protocol.render_srgb8(lr, a * TAU**s) for s in steps]
    label = synthetic_pairs.fuse_bracket(synthetic_pairs.key_normalise(hr)).astype(np.float32)
    label /= 255.0
    fused_preds = dict(
        zip(
            FUSED_ROWS,
            (
                np.clip(res.fused, 0.0, 1.0),
                baselines.bicubic_up(
                    baselines.mertens(res.stack[res.pair[0]], res.stack[res.pair[1]]), scale
                ),
                baselines.bicubic_up(baselines.mertens(*pair_lr_true), scale),
            ),
        )
    )
    fused_scores = {
        name: {k: float(v) for k, v in stage2.fused_scores(p, label, under_hr, over_hr).items()}
        for name, p in fused_preds.items()
    }
    # Where the photo itself is bright and holds its colour (no channel clipped), the fused
    # image should be no less colourful than the photo.
    region = (ldr.max(axis=-1) > metrics.BRIGHT_THRESHOLD) & ~clipped
    region_hr = np.repeat(np.repeat(region, scale, axis=0), scale, axis=1)
    photo_saturation = float(metrics.bright_saturation(ldr, region))
    for name, p in fused_preds.items():
        fused_scores[name]["photo_region_saturation"] = float(
            metrics.bright_saturation(p, region_hr)
        )
        fused_scores[name]["photo_saturation"] = photo_saturation
    info = {
        "exposure": a,
        "clipped_fraction": float(clipped.mean()),
        "kept": [int(i) for i in res.kept],
        "pair_steps": [int(s) for s in steps],
        "timings": res.timings,
    }
    images = {
        "input": ldr,
        "preview": res.preview,
        "fused": fused_preds[FUSED_ROWS[0]],
        "true_preview": pipeline.tonemap_preview(lr),
        "label": label,
    }
    return ViewResult(hdr_scores, fused_scores, info, images)
