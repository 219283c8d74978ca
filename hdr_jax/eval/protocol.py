"""Evaluation protocol shared by both stages: input rendering, the PU21 protocol, capped PSNR.

HDR protocol. Single-image HDR is defined up to scale, and the absolute scale of the reference is
arbitrary too, so before PU21 (Mantiuk & Azimi 2021, the perceptually uniform encoding of
absolute luminance):

1. one gain is fitted to the prediction on the pixels *not clipped in the input* (median log
   luminance ratio, :func:`hdr_jax.metrics.align_gain`): clipped pixels are exactly where the
   methods differ, so they must not steer the alignment;
2. prediction and reference are both scaled so that the reference's 99.9th-percentile luminance
   is 1000 cd/m^2 (a bright HDR display), which puts the scene in PU21's working range;
3. PU21 is applied to each RGB channel, PSNR with peak 256, over all pixels and over the pixels
   clipped in the input (any channel >= 254/255).

Inputs are sRGB 8-bit renderings f(clip(E a)) of a linear radiance E (the camera model of
DrTMO, Endo et al. 2017, eq. 1), exposed so that a given fraction of the pixels clip
(:func:`clipping_exposure`), optionally through a JPEG round trip.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from hdr_jax import metrics
from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera import exposure
from hdr_jax.camera.exposure import jpeg_roundtrip

__all__ = [
    "CLIP_FRACTION",
    "CLIP_LEVEL",
    "clip_level_scalar",
    "MAX_PSNR_DB",
    "PEAK_LUMINANCE",
    "PEAK_PERCENTILE",
    "clipped_fraction",
    "clipped_mask",
    "clipping_exposure",
    "jpeg_roundtrip",
    "highlight_levels",
    "linearise_srgb",
    "linearise_warped",
    "psnr",
    "pu21_protocol",
    "render_srgb8",
    "spread_indices",
    "warp_codes",
    "warp_median_code",
]

#: An input pixel counts as clipped when any channel reaches this 8-bit level.
CLIP_LEVEL = 254.0 / 255.0
#: Fraction of clipped pixels the two-stage evaluation exposes its inputs for.
CLIP_FRACTION = 0.05
#: Reference luminance percentile mapped to PEAK_LUMINANCE before PU21.
PEAK_PERCENTILE = 99.9
PEAK_LUMINANCE = 1000.0  # cd/m^2
#: Cap of every evaluation PSNR (an MSE floor of 1e-10 on [0, 1] images): a prediction equal to
#: an 8-bit target (e.g. an all-white exposure) would otherwise make a mean infinite.
MAX_PSNR_DB = 100.0

_SRGB = crf_lib.srgb_crf()


def psnr(pred: ArrayLike, target: ArrayLike) -> jnp.ndarray:
    """PSNR (RGB, [0, 1]) per image over the last three axes, capped at :data:`MAX_PSNR_DB`."""
    return jnp.minimum(metrics.psnr(pred, target), MAX_PSNR_DB)


def spread_indices(n: int, limit: int = 0) -> list[int]:
    """``limit`` indices spread evenly over range(n) (all of them when limit is 0 or >= n): a
    limited evaluation still covers every held-out scene instead of the first few."""
    if not limit or limit >= n:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, limit)})


# -- inputs -------------------------------------------------------------------------------------


def render_srgb8(
    radiance: np.ndarray, exposure_scale: float = 1.0, curve: np.ndarray | None = None
) -> np.ndarray:
    """8-bit rendering f(clip(E a)) as float32 in [0, 1]; f is sRGB unless ``curve`` (a
    (1024,) response, :mod:`hdr_jax.camera.crf`) is given."""
    f = _SRGB if curve is None else curve
    return exposure.expose(np.asarray(radiance, np.float32), exposure_scale, f, quantize=True)


def linearise_srgb(ldr: np.ndarray, curve: np.ndarray | None = None) -> np.ndarray:
    """Inverse sRGB (or inverse ``curve``) of an LDR image: the 'linearised LDR input'
    baseline (with the true curve: the oracle that knows the camera)."""
    f = _SRGB if curve is None else curve
    return crf_lib.apply_inverse_crf(f, np.asarray(ldr, np.float32))


#: Slope of log(inverse sRGB) per unit code at the clip, d/dz e log((z + a) / (1 + a)) at z = 1
#: (e, a: the sRGB exponent and offset): the bound that keeps :func:`linearise_warped` rising.
_SRGB_LOG_SLOPE_AT_CLIP = crf_lib.SRGB_EXPONENT / (1.0 + crf_lib.SRGB_OFFSET)


def warp_median_code(ldr: np.ndarray) -> float:
    """The code from which :func:`linearise_warped` bends inverse sRGB: the median over the
    unclipped pixels of ``ldr`` (H, W, C) of their channel mean, at most 0.95 (a photo of almost
    only clipped pixels leaves no room to bend the curve); 0.5 when every pixel is clipped."""
    ldr = np.asarray(ldr, np.float32)
    unclipped = ~clipped_mask(ldr)
    zm = float(np.median(ldr.mean(-1)[unclipped])) if unclipped.any() else 0.5
    return min(zm, 0.95)


def warp_codes(ldr: ArrayLike, log2_scalar: ArrayLike, median_code: ArrayLike) -> ArrayLike:
    """Inverse sRGB of codes ``ldr`` (..., H, W, C) bent by 2^``log2_scalar`` at the clip
    relative to ``median_code`` (both of shape (...)); NumPy or JAX (differentiable in the
    scalar). The formula of :func:`linearise_warped`, which computes the median code itself."""
    xp = jnp if any(isinstance(a, jnp.ndarray) for a in (ldr, log2_scalar, median_code)) else np
    z = xp.asarray(ldr, xp.float32)
    zm = xp.asarray(median_code, xp.float32)[..., None, None, None]
    k = xp.asarray(log2_scalar, xp.float32)[..., None, None, None]
    lower = -0.9 * _SRGB_LOG_SLOPE_AT_CLIP * (1.0 - zm) / math.log(2.0)
    w = xp.clip((z - zm) / (1.0 - zm), 0.0, 1.0)
    return crf_lib.apply_inverse_crf(_SRGB, z) * xp.exp2(xp.maximum(k, lower) * w)


def linearise_warped(ldr: np.ndarray, log2_scalar: float) -> np.ndarray:
    """Inverse sRGB of ``ldr`` (H, W, C) moved at the clip level by 2^``log2_scalar`` relative
    to the median: a two-point correction of the linearisation for a camera that is not sRGB.

    Per channel code z the inverse sRGB value is multiplied by 2^(log2_scalar w(z)), with w
    rising linearly from 0 at the median code of the unclipped pixels (their channel mean,
    :func:`warp_median_code`) to 1 at the clip, so codes below the median keep inverse sRGB, the
    curve stays continuous (no step at the border of a clipped region) and, with
    ``log2_scalar`` bounded below by 90 % of the slope of log inverse sRGB at the clip,
    increasing.
    """
    ldr = np.asarray(ldr, np.float32)
    return np.asarray(warp_codes(ldr, np.float32(log2_scalar), np.float32(warp_median_code(ldr))),
                      np.float32)


def clip_level_scalar(ldr: np.ndarray, radiance: np.ndarray, curve: np.ndarray,
                      clipped: np.ndarray) -> float:
    """log2(gain of the true linearisation / gain of inverse sRGB) of a photo ``ldr`` of
    ``radiance`` through ``curve``, both gains fitted on the pixels not ``clipped``
    (:func:`metrics.align_gain`): where the clip level sits above the midtones relative to
    inverse sRGB, the scalar :func:`linearise_warped` bends the curve by (0 for sRGB)."""
    gains = [float(metrics.align_gain(linearise_srgb(ldr, c), radiance, ~np.asarray(clipped)))
             for c in (curve, None)]
    return math.log2(gains[0] / gains[1])


def clipped_mask(ldr: np.ndarray, level: float = CLIP_LEVEL) -> np.ndarray:
    """(H, W) bool: pixels of an LDR image (H, W, C) in [0, 1] with any channel >= ``level``."""
    ldr = np.asarray(ldr)
    if ldr.ndim != 3:
        raise ValueError(f"clipped_mask: expected an (H, W, C) image, got shape {ldr.shape}")
    # Slack for 254/255 rounded to float32 (it may land just below the float64 level).
    return np.any(ldr >= level - 1e-6, axis=-1)


def clipped_fraction(
    radiance: np.ndarray, exposure_scale: float, curve: np.ndarray | None = None
) -> float:
    """Fraction of pixels of ``render_srgb8(radiance, exposure_scale, curve)`` that
    :func:`clipped_mask` marks; the CRF is monotone, so rendering the per-pixel maximum
    channel is enough."""
    peak = np.max(np.asarray(radiance, np.float32), axis=-1, keepdims=True)
    return float(np.mean(clipped_mask(render_srgb8(peak, exposure_scale, curve))))


def clipping_exposure(
    radiance: np.ndarray,
    fraction: float = CLIP_FRACTION,
    *,
    iterations: int = 60,
    curve: np.ndarray | None = None,
) -> float:
    """Exposure scale a such that ``fraction`` of the pixels of f(E a) clip (bisection on log a;
    f sRGB unless ``curve``).

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
    def frac(log_a: float) -> float:
        return clipped_fraction(e, math.exp(log_a), curve)

    while frac(lo) >= fraction:
        lo -= 2.0
    while frac(hi) < fraction:
        hi += 2.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if frac(mid) < fraction:
            lo = mid
        else:
            hi = mid
    f_lo, f_hi = frac(lo), frac(hi)
    return math.exp(lo if abs(f_lo - fraction) < abs(f_hi - fraction) else hi)


# -- the HDR metric -----------------------------------------------------------------------------


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


def pu21_clipped_lifted(
    pred: np.ndarray, ref: np.ndarray, clipped: np.ndarray, weight: np.ndarray,
    log2_lifts: ArrayLike,
) -> np.ndarray:
    """(M,) :func:`pu21_protocol` 'pu21_clipped' of ``pred * 2^(l * weight)`` (weight (H, W, 3))
    for each l of ``log2_lifts``, in one pass: the gain is fitted once, on ``pred``, which is
    exact when ``weight`` is 0 off the ``clipped`` pixels (the lift leaves the pixels the gain is
    fitted on alone) and moves the gain's median little otherwise."""
    pred = np.asarray(pred, np.float32)
    ref = np.asarray(ref, np.float32)
    clipped = np.asarray(clipped, bool)
    s = pu21_protocol(pred, ref, clipped)
    lum = np.asarray(metrics.luminance(ref))[..., 0]
    scale = PEAK_LUMINANCE / float(np.percentile(lum, PEAK_PERCENTILE))
    p = jnp.asarray(pred[clipped] * np.float32(s["gain"] * scale))[None, :, None]
    r = jnp.asarray(ref[clipped] * np.float32(scale))[None, :, None]
    w = jnp.asarray(np.asarray(weight, np.float32)[clipped])[None, :, None]
    lifts = jnp.asarray(log2_lifts, jnp.float32)[:, None, None, None]
    # Rows of one pixel per clipped pixel: pu21_psnr's (..., H, W, C) with H = 1.
    return np.asarray(metrics.pu21_psnr(p * jnp.exp2(lifts * w), jnp.broadcast_to(r, (
        lifts.shape[0],) + r.shape[1:]), align_gain=False), np.float64)


def highlight_levels(
    pred: np.ndarray, ref: np.ndarray, clipped: np.ndarray, gain: float, clip_radiance: float
) -> dict[str, float]:
    """How bright the prediction makes what the photo clipped, on the ``clipped`` pixels:
    the median log2 of predicted / true luminance (the prediction scaled by the protocol's
    ``gain``; 0 is right, negative too dark), and the 90th percentiles of predicted and true
    luminance over the level at which the photo clips (``clip_radiance`` = 1 / a for an input
    f(clip(E a))). NaN when no pixel is clipped."""
    mask = np.asarray(clipped, bool)
    if not mask.any():
        nan = float("nan")
        return {"log2_ratio_median": nan, "p90_pred_over_clip": nan, "p90_true_over_clip": nan}
    lp = np.asarray(metrics.luminance(np.asarray(pred, np.float32) * np.float32(gain)))[..., 0]
    lr = np.asarray(metrics.luminance(np.asarray(ref, np.float32)))[..., 0]
    lp, lr = np.maximum(lp[mask], 1e-12), np.maximum(lr[mask], 1e-12)
    return {
        "log2_ratio_median": float(np.median(np.log2(lp / lr))),
        "p90_pred_over_clip": float(np.percentile(lp, 90) / clip_radiance),
        "p90_true_over_clip": float(np.percentile(lr, 90) / clip_radiance),
    }
