"""Held-out evaluation protocols of stage 1 and of the two-stage system (issues 3 and 5).

Shared by ``experiments/eval_drtmo.py``, ``experiments/eval_reconstruct.py`` and
``experiments/make_figure.py``; the per-item evaluators here are pure functions of a loaded
:class:`hdr_jax.pipeline.Pipeline` and arrays, the scripts only loop, aggregate and write.

HDR protocol (SPEC section 7; issue 5). Single-image HDR is defined up to scale, and the
absolute scale of the reference is arbitrary too, so before PU21:

1. one gain is fitted to the prediction on the pixels *not clipped in the input* (median log
   luminance ratio, :func:`hdr_jax.metrics.align_gain`): clipped pixels are exactly where the
   methods differ, so they must not steer the alignment;
2. prediction and reference are both scaled so that the reference's 99.9th-percentile luminance
   is 1000 cd/m^2 (a bright HDR display), which puts the scene in PU21's working range;
3. PU21 is applied to each RGB channel, PSNR with peak 256, over all pixels and over the pixels
   clipped in the input (any channel >= 254/255).

Inputs of the two-stage evaluation are sRGB 8-bit renderings of a linear view, exposed so that
5% of the pixels clip (:func:`clipping_exposure`), optionally through a JPEG round trip.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hdr_jax import io as hdr_io
from hdr_jax import merge, metrics
from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera import exposure

__all__ = [
    "CLIP_FRACTION",
    "CLIP_LEVEL",
    "HELDOUT_VIEWS",
    "MAX_PSNR_DB",
    "Averager",
    "ViewResult",
    "bracket_psnr",
    "clipped_fraction",
    "clipped_mask",
    "clipping_exposure",
    "evaluate_bracket_record",
    "evaluate_view",
    "heldout_scenes",
    "heldout_views",
    "jpeg_roundtrip",
    "linearise_srgb",
    "markdown_table",
    "pu21_protocol",
    "render_srgb8",
    "render_view",
]

#: An input pixel counts as clipped when any channel reaches this 8-bit level.
CLIP_LEVEL = 254.0 / 255.0
#: Fraction of clipped pixels the two-stage evaluation exposes its inputs for.
CLIP_FRACTION = 0.05
#: Reference luminance percentile mapped to PEAK_LUMINANCE before PU21.
PEAK_PERCENTILE = 99.9
PEAK_LUMINANCE = 1000.0  # cd/m^2
#: Cap of the bracket PSNR (the training evaluation's MSE floor of 1e-10): a prediction equal to
#: an 8-bit target (e.g. an all-white exposure) would otherwise make the mean infinite.
MAX_PSNR_DB = 100.0
#: Deterministic (fov, elevation, azimuth) views per held-out panorama, degrees: DrTMO's sample
#: scenes are named like 'scene_80_10_120' (fov 80, elevation 10); three azimuths 120 apart.
HELDOUT_VIEWS: tuple[tuple[float, float, float], ...] = (
    (80.0, 10.0, 0.0),
    (80.0, 10.0, 120.0),
    (80.0, 10.0, 240.0),
)

_SRGB = crf_lib.srgb_crf()


# -- inputs -------------------------------------------------------------------------------------


def render_srgb8(radiance: np.ndarray, exposure_scale: float = 1.0) -> np.ndarray:
    """sRGB 8-bit rendering f(clip(E * a)) as float32 in [0, 1] (the camera model of SPEC 2)."""
    return exposure.expose(np.asarray(radiance, np.float32), exposure_scale, _SRGB, quantize=True)


def linearise_srgb(ldr: np.ndarray) -> np.ndarray:
    """Inverse sRGB of an LDR image: the 'linearised LDR input' baseline (SPEC section 7)."""
    return crf_lib.apply_inverse_crf(_SRGB, np.asarray(ldr, np.float32))


def clipped_mask(ldr: np.ndarray, level: float = CLIP_LEVEL) -> np.ndarray:
    """(H, W) bool: pixels of an LDR image (H, W, C) in [0, 1] with any channel >= ``level``."""
    ldr = np.asarray(ldr)
    if ldr.ndim != 3:
        raise ValueError(f"clipped_mask: expected an (H, W, C) image, got shape {ldr.shape}")
    # Slack for 254/255 rounded to float32 (it may land just below the float64 level).
    return np.any(ldr >= level - 1e-6, axis=-1)


def clipped_fraction(radiance: np.ndarray, exposure_scale: float) -> float:
    """Fraction of pixels of ``render_srgb8(radiance, exposure_scale)`` that :func:`clipped_mask`
    marks; the CRF is monotone, so rendering the per-pixel maximum channel is enough."""
    peak = np.max(np.asarray(radiance, np.float32), axis=-1, keepdims=True)
    return float(np.mean(clipped_mask(render_srgb8(peak, exposure_scale))))


def clipping_exposure(
    radiance: np.ndarray, fraction: float = CLIP_FRACTION, *, iterations: int = 60
) -> float:
    """Exposure scale a such that ``fraction`` of the pixels of f(E a) clip (bisection on log a).

    The clipped fraction is a non-decreasing step function of a; the result is the end of the
    final bracket whose fraction is closer to the target (ties in the radiance can make the
    exact target unreachable).
    """
    e = np.asarray(radiance, np.float32)
    if e.ndim != 3 or e.shape[-1] != 3:
        raise ValueError(f"clipping_exposure: radiance must be (H, W, 3), got {e.shape}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"clipping_exposure: fraction must lie in (0, 1), got {fraction}")
    peak = np.max(e, axis=-1)
    if not np.all(np.isfinite(peak)):
        raise ValueError("clipping_exposure: radiance has NaN or Inf values")
    if np.mean(peak > 0) < fraction:
        raise ValueError(
            f"clipping_exposure: only {np.mean(peak > 0):.1%} of the pixels are positive, "
            f"cannot clip {fraction:.1%}"
        )
    # Start from the closed form a = 1 / quantile and widen until the target is bracketed.
    guess = 1.0 / float(np.quantile(peak[peak > 0], 1.0 - fraction))
    lo, hi = math.log(guess) - 1.0, math.log(guess) + 1.0
    while clipped_fraction(e, math.exp(lo)) >= fraction:
        lo -= 2.0
    while clipped_fraction(e, math.exp(hi)) < fraction:
        hi += 2.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if clipped_fraction(e, math.exp(mid)) < fraction:
            lo = mid
        else:
            hi = mid
    f_lo, f_hi = clipped_fraction(e, math.exp(lo)), clipped_fraction(e, math.exp(hi))
    return math.exp(lo if abs(f_lo - fraction) < abs(f_hi - fraction) else hi)


def jpeg_roundtrip(ldr: np.ndarray, quality: int) -> np.ndarray:
    """Encodes an RGB image in [0, 1] as a baseline JPEG (OpenCV, 4:2:0) and decodes it."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"jpeg_roundtrip: quality must lie in [1, 100], got {quality}")
    u8 = np.rint(np.clip(ldr, 0.0, 1.0) * 255.0).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0


def heldout_scenes(hdr_dir: str | Path) -> list[Path]:
    """HDR files of the held-out scenes: the split both stages train with
    (:func:`hdr_jax.data.hdr_brackets.split_scenes` on the file stems of ``hdr_dir``)."""
    from hdr_jax.data import hdr_brackets

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
    from hdr_jax.data import hdr_brackets

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
    from hdr_jax.data import hdr_brackets

    for path in files:
        img = hdr_io.read_hdr(path)
        if not hdr_brackets.is_panorama(*img.shape[:2]):
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


# -- metrics ------------------------------------------------------------------------------------


def pu21_protocol(
    pred: np.ndarray,
    ref: np.ndarray,
    clipped: np.ndarray,
    *,
    peak_luminance: float = PEAK_LUMINANCE,
    peak_percentile: float = PEAK_PERCENTILE,
) -> dict[str, float]:
    """PU21-PSNR of a linear HDR prediction (H, W, 3), overall and on ``clipped`` (H, W) pixels.

    Gain fitted on ~clipped, then both scaled so that the reference's ``peak_percentile``
    luminance is ``peak_luminance`` cd/m^2 (module docstring). 'pu21_clipped' is NaN when no
    pixel is clipped. Returns also the fitted 'gain'.
    """
    pred = np.asarray(pred, np.float32)
    ref = np.asarray(ref, np.float32)
    clipped = np.asarray(clipped, bool)
    if pred.shape != ref.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"pu21_protocol: need two (H, W, 3) images, got {pred.shape}, {ref.shape}")
    if clipped.shape != pred.shape[:2]:
        raise ValueError(f"pu21_protocol: mask {clipped.shape} does not match {pred.shape[:2]}")
    if clipped.all():
        raise ValueError("pu21_protocol: every pixel is clipped, no pixel to fit the gain on")
    gain = float(metrics.align_gain(pred, ref, ~clipped))
    lum = np.asarray(metrics.luminance(ref))[..., 0]
    top = float(np.percentile(lum, peak_percentile))
    if not top > 0:
        raise ValueError("pu21_protocol: the reference is black")
    s = peak_luminance / top
    p, r = pred * np.float32(gain * s), ref * np.float32(s)
    overall = float(metrics.pu21_psnr(p, r, align_gain=False))
    on_clipped = (
        float(metrics.pu21_psnr(p, r, align_gain=False, mask=clipped))
        if clipped.any()
        else float("nan")
    )
    return {"pu21": overall, "pu21_clipped": on_clipped, "gain": gain}


def bracket_psnr(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """PSNR (RGB, [0, 1]) per image over the last three axes, capped at MAX_PSNR_DB."""
    return np.minimum(np.asarray(metrics.psnr(pred, target)), MAX_PSNR_DB)


# -- aggregation and tables ---------------------------------------------------------------------


class Averager:
    """Means of named values over items; NaN values are left out of both sum and count."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, ...], list[float]] = {}

    def add(self, key: tuple[str, ...] | str, value: float) -> None:
        key = (key,) if isinstance(key, str) else tuple(key)
        self._values.setdefault(key, []).append(float(value))

    def mean(self, key: tuple[str, ...] | str) -> float:
        v = self.values(key)
        return float(np.mean(v)) if len(v) else float("nan")

    def count(self, key: tuple[str, ...] | str) -> int:
        return len(self.values(key))

    def values(self, key: tuple[str, ...] | str) -> np.ndarray:
        key = (key,) if isinstance(key, str) else tuple(key)
        v = np.asarray(self._values.get(key, []), np.float64)
        return v[~np.isnan(v)]

    def names(self) -> list[tuple[str, ...]]:
        return list(self._values)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 2) -> str:
    """A Markdown table; floats are printed with ``digits`` decimals, NaN as an en dash."""

    def cell(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "–" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# -- stage 1 (issue 3) --------------------------------------------------------------------------

#: Row names of the stage-1 merge comparison, in table order.
MERGE_ROWS = (
    "linearised LDR input (inverse sRGB)",
    "linearised LDR input (true inverse CRF)",
    "ours + Debevec merge, linear response (public code)",
    "ours + robust merge, sRGB inverse CRF",
    "ours + robust merge, true inverse CRF (reference)",
    "ours + input-anchored merge, sRGB (the pipeline's default)",
    "ours + input-anchored merge, true inverse CRF (reference)",
)


def merge_candidates(
    stack: np.ndarray, image: np.ndarray, curve: np.ndarray
) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
    """The HDRs of the stage-1 merge comparison, one per :data:`MERGE_ROWS` entry, from a
    (2N+1, H, W, 3) stack around the input ``image`` whose true response is ``curve``; and the
    index range the monotone selection kept."""
    from hdr_jax import pipeline

    debevec, kept = merge.merge_stack(stack, method="debevec", tau=pipeline.TAU)
    hdrs = (
        linearise_srgb(image),
        crf_lib.apply_inverse_crf(curve, image),
        debevec,
        merge.merge_stack(stack, method="robust", tau=pipeline.TAU)[0],
        merge.merge_stack(stack, method="robust", tau=pipeline.TAU, curve=curve)[0],
        merge.merge_stack(stack, method="anchored", tau=pipeline.TAU)[0],
        merge.merge_stack(stack, method="anchored", tau=pipeline.TAU, curve=curve)[0],
    )
    return dict(zip(MERGE_ROWS, hdrs, strict=True)), kept


def evaluate_bracket_record(
    pipe: Any, record: dict, input_indices: Sequence[int] | None = None
) -> dict[str, Any]:
    """Stage-1 scores of one ``hdr_brackets`` record (keys 'bracket' (T+1, H, W, 3) uint8, 'hdr',
    'crf_curve').

    For every input index j in ``input_indices`` (default all) the pipeline predicts N exposures
    each way (up: re-exposure with the recognised response when the weights have a classifier,
    see :func:`pipeline.up_brackets`; down: the DownExposureNet); each prediction with a target
    inside the bracket is scored by PSNR against the true exposure, as are two naive re-exposures
    (inverse CRF, x tau^step, CRF, clip) with the sRGB curve and with the true curve, and the
    DrTMO network of that direction alone. Returns
    ``{'psnr': [(step, j, ours, naive_srgb, naive_true, network)...],
    'merge': {row: pu21 dict}, 'kept': (lo, hi), 'clipped_fraction': float}``; the merge
    comparison uses the middle exposure j = T/2 as the input.
    """
    from hdr_jax import pipeline
    from hdr_jax.data.bracket_pipeline import naive_bracket_baseline

    bracket = np.asarray(record["bracket"], np.float32) / 255.0
    d = bracket.shape[0]
    middle = (d - 1) // 2
    js = list(range(d)) if input_indices is None else sorted({int(j) for j in input_indices})
    if any(not 0 <= j < d for j in js):
        raise ValueError(f"input indices must lie in [0, {d - 1}], got {js}")
    curve = np.asarray(record["crf_curve"], np.float32)
    # All d inputs in one batch whatever the subset: one compiled shape, and j = T/2 is needed
    # for the merge rows anyway.
    x = bracket
    n = pipe.up.module.num_exposures
    steps = {"up": np.arange(1, n + 1), "down": -np.arange(1, n + 1)}
    networks = {
        "up": np.asarray(pipe.up.apply(pipe.up.variables, x)),
        "down": np.asarray(pipe.down.apply(pipe.down.variables, x)),
    }
    preds = dict(networks)
    if pipe.response is not None:
        preds["up"] = pipeline.up_brackets(pipe, x, "response")
    rows = []
    for direction, pred in preds.items():
        st = steps[direction]
        naive_s = naive_bracket_baseline(x, st, pipeline.TAU, "srgb")
        naive_t = naive_bracket_baseline(x, st, pipeline.TAU, curve)
        for j in js:
            idx = j + st
            ok = (idx >= 0) & (idx < d)
            if not ok.any():
                continue
            target = bracket[idx[ok]]
            scores = [
                bracket_psnr(p[j][ok], target)
                for p in (pred, naive_s, naive_t, networks[direction])
            ]
            for k, step in enumerate(st[ok]):
                rows.append((int(step), j, *(float(s[k]) for s in scores)))

    b = middle
    stack = np.concatenate([preds["down"][b][::-1], x[b : b + 1], preds["up"][b]], axis=0)
    ref = np.asarray(record["hdr"], np.float32)
    clipped = clipped_mask(x[b])
    candidates, kept = merge_candidates(stack, x[b], curve)
    if clipped.all():
        merged = {name: {"pu21": float("nan"), "pu21_clipped": float("nan")} for name in MERGE_ROWS}
    else:
        merged = {name: pu21_protocol(hdr, ref, clipped) for name, hdr in candidates.items()}
    return {
        "psnr": rows,
        "merge": merged,
        "kept": kept,
        "clipped_fraction": float(clipped.mean()),
    }


# -- the two-stage system (issue 5) -------------------------------------------------------------

#: Row names of the two-stage HDR table and the fused-image table, in table order.
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


@dataclasses.dataclass
class ViewResult:
    """Scores of one view and the images a figure needs (HWC float32)."""

    hdr_scores: dict[str, dict[str, float]]
    fused_scores: dict[str, dict[str, float]]
    info: dict[str, Any]
    images: dict[str, np.ndarray]


def _fused_scores(pred: np.ndarray, label: np.ndarray, pair_hr: np.ndarray) -> dict[str, float]:
    return {
        "psnr": float(metrics.psnr(pred, label)),
        "ssim": float(metrics.ssim(pred, label)),
        "mef_ssim": float(metrics.mef_ssim(pred, pair_hr)),
    }


def evaluate_view(
    pipe: Any,
    lr: np.ndarray,
    hr: np.ndarray,
    *,
    scale: int = 2,
    jpeg_quality: int | None = None,
    clip_fraction: float = CLIP_FRACTION,
) -> ViewResult:
    """The whole pipeline on one view given its LR and HR linear radiance (:func:`render_view`).

    Input: sRGB 8-bit rendering of ``lr`` exposed so that ``clip_fraction`` of the pixels clip,
    then a JPEG round trip if ``jpeg_quality``. The clipped mask is taken before the JPEG step,
    so both variants are scored on the same pixels. HDR rows are scored against ``lr`` with
    :func:`pu21_protocol`. The fused x``scale`` output is scored against the label of the
    synthetic stage-2 data (:func:`hdr_jax.data.synthetic_pairs.fuse_bracket` of the
    key-normalised ``hr``) by PSNR/SSIM (RGB), and by MEF-SSIM against the true HR under/over
    pair: ``hr`` rendered at the exposures of the pair that ``pipeline.pick_pair`` chose.
    """
    from hdr_jax import evaluation, pipeline
    from hdr_jax.data import synthetic_pairs

    if hr.shape[:2] != (lr.shape[0] * scale, lr.shape[1] * scale):
        raise ValueError(f"evaluate_view: HR {hr.shape} is not {scale}x LR {lr.shape}")
    a = clipping_exposure(lr, clip_fraction)
    clean = render_srgb8(lr, a)
    clipped = clipped_mask(clean)
    ldr = jpeg_roundtrip(clean, jpeg_quality) if jpeg_quality else clean
    res = pipeline.reconstruct(pipe, ldr, scale=scale)
    debevec, _ = merge.merge_stack(res.stack, method="debevec", tau=pipeline.TAU)
    robust, _ = merge.merge_stack(res.stack, method="robust", tau=pipeline.TAU)
    hdr_preds = dict(zip(HDR_ROWS, (res.hdr, linearise_srgb(ldr), debevec, robust)))
    hdr_scores = {name: pu21_protocol(p, lr, clipped) for name, p in hdr_preds.items()}

    centre = (len(res.stack) - 1) // 2
    steps = tuple(i - centre for i in res.pair)
    pair_hr = np.stack([render_srgb8(hr, a * pipeline.TAU**s) for s in steps])
    pair_lr_true = [render_srgb8(lr, a * pipeline.TAU**s) for s in steps]
    label = synthetic_pairs.fuse_bracket(synthetic_pairs.key_normalise(hr)).astype(np.float32)
    label /= 255.0
    fused_preds = dict(
        zip(
            FUSED_ROWS,
            (
                np.clip(res.fused, 0.0, 1.0),
                evaluation.bicubic_up(
                    evaluation.mertens(res.stack[res.pair[0]], res.stack[res.pair[1]]), scale
                ),
                evaluation.bicubic_up(evaluation.mertens(*pair_lr_true), scale),
            ),
        )
    )
    fused_scores = {name: _fused_scores(p, label, pair_hr) for name, p in fused_preds.items()}
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


# -- result files -------------------------------------------------------------------------------

RESULT_FILES = ("results.json", "results.md")


def nan_to_none(x: Any) -> Any:
    """A results tree with NaN/inf floats as None (strict JSON)."""
    if isinstance(x, dict):
        return {k: nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [nan_to_none(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def existing_results(out_dir: str | Path) -> list[Path]:
    """The result files already in `out_dir` (checked before a long evaluation starts)."""
    return [p for p in (Path(out_dir) / n for n in RESULT_FILES) if p.exists()]


def write_results(
    out_dir: str | Path, res: dict, markdown: str, *, overwrite: bool
) -> tuple[Path, Path]:
    """Writes results.json (NaN as null) and results.md atomically into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = tuple(out_dir / n for n in RESULT_FILES)
    for path, text in zip(paths, (json.dumps(nan_to_none(res), indent=2) + "\n", markdown)):
        with hdr_io.atomic_output(path, overwrite=overwrite) as tmp:
            Path(tmp).write_text(text)
    return paths
