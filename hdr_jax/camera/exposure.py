"""Exposure-bracket simulation (DrTMO, Endo et al. 2017): Z_j = f(E * dt_j), dt_j = tau^k, k = -T/2..T/2.

Two paths with the same arithmetic: :func:`simulate_bracket` (NumPy, optional JPEG round trip,
for building data sets) and :func:`simulate_bracket_jax` (pure JAX, jit/vmap-able, no JPEG).
Images are HWC float32; a bracket is DHWC with D = T + 1 exposures, darkest first.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera.crf import _xp, apply_crf

Array = Any  # np.ndarray | jax.Array

#: Exposure ratio between neighbouring images of a DrTMO bracket (half a stop).
TAU = math.sqrt(2.0)
TARGET_MEAN = 0.5


def exposure_times(T: int = 8, tau: float = TAU) -> np.ndarray:
    """dt_k = tau^k for k = -T/2 .. T/2, shape (T+1,) float32 (DrTMO: T = 8, tau = sqrt 2)."""
    if int(T) != T or T < 0 or T % 2:
        raise ValueError(f"T must be a non-negative even integer, got {T}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    k = np.arange(-(T // 2), T // 2 + 1, dtype=np.float64)
    return (float(tau) ** k).astype(np.float32)


def normalise_radiance(hdr: Array) -> Array:
    """Scales E so that the mean of the linear E * dt at dt = 1 is 0.5 (the DrTMO data normalisation).

    The mean is over all pixels and channels; negative values (lossy EXR) are clamped to 0 first.
    NumPy input raises ValueError for an all-zero/non-finite image; JAX input is returned
    unscaled in that case (no value-dependent errors under jit).
    """
    xp = _xp(hdr)
    e = xp.maximum(xp.asarray(hdr, xp.float32), 0.0)
    m = xp.mean(e)
    if xp is np:
        if not (np.isfinite(m) and m > 0):
            raise ValueError(f"cannot normalise radiance with mean {m}")
        return (e * np.float32(TARGET_MEAN / m)).astype(np.float32)
    return jnp.where(m > 0, e * (TARGET_MEAN / jnp.where(m > 0, m, 1.0)), e)


def quantize_8bit(z: Array) -> Array:
    """Rounds [0, 1] values to the 256 levels of an 8-bit image."""
    xp = _xp(z)
    return xp.round(z * 255.0) / 255.0


def expose(hdr: Array, dt: float | Array, crf: Array, quantize: bool = True) -> Array:
    """One LDR image Z = f(clip(E * dt, 0, 1)), 8-bit quantised by default. E is used as given
    (see :func:`normalise_radiance`)."""
    xp = _xp(hdr, dt, crf)
    z = apply_crf(crf, xp.asarray(hdr, xp.float32) * xp.asarray(dt, xp.float32))
    return quantize_8bit(z) if quantize else z


def jpeg_roundtrip(ldr: np.ndarray, quality: int) -> np.ndarray:
    """Encodes an RGB image in [0, 1] as a baseline JPEG (OpenCV, 4:2:0) and decodes it."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"jpeg_roundtrip: quality must lie in [1, 100], got {quality}")
    u8 = np.rint(np.clip(ldr, 0.0, 1.0) * 255.0).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0


def simulate_bracket(
    hdr: np.ndarray,
    crf: np.ndarray,
    T: int = 8,
    tau: float = TAU,
    *,
    normalise: bool = True,
    quantize: bool = True,
    jpeg_quality: int | Sequence[int] | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """The T+1 LDR exposures of an HDR image (H, W, 3) -> (T+1, H, W, 3) float32 in [0, 1].

    ``normalise`` applies :func:`normalise_radiance` first. ``jpeg_quality`` (an int, or a
    (low, high) range sampled once per bracket with ``rng``) adds a JPEG round trip per image,
    which implies 8-bit quantisation.
    """
    hdr = np.asarray(hdr, np.float32)
    if hdr.ndim != 3 or hdr.shape[-1] != 3:
        raise ValueError(f"hdr must have shape (H, W, 3), got {hdr.shape}")
    crf = np.asarray(crf, np.float32)
    e = normalise_radiance(hdr) if normalise else np.maximum(hdr, 0.0)
    quality = None
    if jpeg_quality is not None:
        if np.ndim(jpeg_quality) == 0:
            quality = int(jpeg_quality)
        else:
            lo, hi = (int(q) for q in jpeg_quality)
            quality = int((rng if rng is not None else np.random.default_rng()).integers(lo, hi + 1))
        if not 1 <= quality <= 100:
            raise ValueError(f"jpeg_quality must lie in [1, 100], got {quality}")
    times = exposure_times(T, tau)
    out = np.empty((len(times),) + hdr.shape, np.float32)
    for j, dt in enumerate(times):
        z = expose(e, dt, crf, quantize=quantize or quality is not None)
        out[j] = jpeg_roundtrip(z, quality) if quality is not None else z
    return out


def simulate_bracket_jax(hdr: jax.Array, crf: jax.Array, times: jax.Array, quantize: bool = True,
                         *, normalise: bool = False) -> jax.Array:
    """JAX bracket: (H, W, C) radiance -> (D, H, W, C) for D exposure ``times``; jit/vmap-able.

    ``hdr`` is used as given unless ``normalise`` (then :func:`normalise_radiance`); negative
    values clip to 0 through the CRF. ``quantize`` must be static under jit.
    """
    e = jnp.asarray(hdr, jnp.float32)
    if normalise:
        e = normalise_radiance(e)
    times = jnp.asarray(times, jnp.float32)
    dt = times.reshape(times.shape + (1,) * e.ndim)
    return expose(e[None], dt, jnp.asarray(crf, jnp.float32), quantize=quantize)


def naive_bracket_baseline(
    input: Any,
    exposure_steps: Any,
    tau: float = TAU,
    crf: str | Any = "srgb",
) -> Any:
    """Re-exposes an LDR image without a network (DrTMO eq. 1 with a known response f):
    Z_k = f(clip(f^-1(Z) tau^step_k)).

    ``input`` (..., H, W, 3) in [0, 1]; ``exposure_steps`` (..., N) (or (N,), broadcast against
    the leading axes); result (..., N, H, W, 3) float32. ``crf`` is ``'srgb'`` (exact formula) or
    a (1024,) response curve sampled on k/1023 (see :mod:`hdr_jax.camera.crf`). NumPy in, NumPy
    out; JAX arrays in, JAX out (jit-safe).
    """
    xp = _xp(input, exposure_steps, crf) if not isinstance(crf, str) else _xp(input, exposure_steps)
    z = xp.asarray(input, xp.float32)
    if z.ndim < 3 or z.shape[-1] != 3:
        raise ValueError(f"input must have shape (..., H, W, 3), got {z.shape}")
    steps = xp.asarray(exposure_steps, xp.float32)
    if isinstance(crf, str):
        if crf.lower() != "srgb":
            raise ValueError(f"crf must be 'srgb' or a (1024,) curve, got {crf!r}")
        linear, encode = crf_lib.srgb_decode(z), crf_lib.srgb_encode
    else:
        curve = xp.asarray(crf, xp.float32)
        if curve.shape != (crf_lib.N_SAMPLES,):
            raise ValueError(f"crf curve must have shape ({crf_lib.N_SAMPLES},), got {curve.shape}")
        linear = crf_lib.apply_inverse_crf(curve, z)

        def encode(x):
            return crf_lib.apply_crf(curve, x)

    gain = xp.power(xp.float32(tau), steps)[..., None, None, None]  # (..., N, 1, 1, 1)
    exposed = linear[..., None, :, :, :] * gain  # (..., N, H, W, 3)
    return xp.clip(encode(xp.clip(exposed, 0.0, 1.0)), 0.0, 1.0).astype(xp.float32)
