"""Camera response functions (CRFs), the f of the camera model Z = f(E dt).

A CRF is a float32 array of 1024 samples of f on the grid ``GRID = k / 1023``: monotone
non-decreasing, f(0) = 0, f(1) = 1. Sources:

* a parametric set (gamma, sRGB, film-like S-curves) that needs no data file;
* the EMoR model of Grossberg and Nayar (TPAMI 2004): f = f0 + sum_i c_i h_i;
* the DoRF database (201 measured curves, ``dorfCurves.txt``) when a user has it.

DrTMO (Endo et al. 2017, section 3.1.1) trains on 5 representative curves chosen by k-means over
DoRF and interpolated by splines; :func:`select_representative_crfs` does the same on any set.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from scipy.interpolate import PchipInterpolator

N_SAMPLES = 1024
GRID: np.ndarray = np.linspace(0.0, 1.0, N_SAMPLES, dtype=np.float32)
_GRID64 = np.linspace(0.0, 1.0, N_SAMPLES)
#: Rec. 709 luminance weights of linear R, G, B.
REC709 = np.array([0.2126, 0.7152, 0.0722], np.float32)
#: IEC 61966-2-1 sRGB transfer function: z = 12.92 x up to SRGB_LINEAR_MAX, else
#: (1 + SRGB_OFFSET) x^(1 / SRGB_EXPONENT) - SRGB_OFFSET.
SRGB_EXPONENT = 2.4
SRGB_OFFSET = 0.055
SRGB_TOE_SLOPE = 12.92
SRGB_LINEAR_MAX = 0.0031308
SRGB_CODE_MAX = 0.04045  # the code of SRGB_LINEAR_MAX: where the decoder's toe ends

Array = Any  # np.ndarray | jax.Array


def _xp(*arrays: Any):
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def srgb_encode(x: Array) -> Array:
    """Linear -> sRGB (IEC 61966-2-1): 12.92 x below 0.0031308, else 1.055 x^(1/2.4) - 0.055.

    The input is clipped to [0, 1]; NumPy in, NumPy out; JAX in, JAX out (jit-safe, finite
    gradients: the power is taken of a value kept away from 0).
    """
    xp = _xp(x)
    x = xp.clip(x, 0.0, 1.0)
    power = xp.power(xp.maximum(x, SRGB_LINEAR_MAX), 1.0 / SRGB_EXPONENT)
    power = (1.0 + SRGB_OFFSET) * power - SRGB_OFFSET
    return xp.where(x <= SRGB_LINEAR_MAX, SRGB_TOE_SLOPE * x, power)


def srgb_decode(z: Array) -> Array:
    """sRGB -> linear (IEC 61966-2-1), the inverse of :func:`srgb_encode`; input clipped to [0, 1]."""
    xp = _xp(z)
    z = xp.clip(z, 0.0, 1.0)
    base = (xp.maximum(z, SRGB_CODE_MAX) + SRGB_OFFSET) / (1.0 + SRGB_OFFSET)
    power = xp.power(base, SRGB_EXPONENT)
    return xp.where(z <= SRGB_CODE_MAX, z / SRGB_TOE_SLOPE, power)


def luminance(rgb: Array) -> Array:
    """Rec. 709 / sRGB-primaries relative luminance of linear RGB, (..., 3) -> (...).

    NumPy in, NumPy out (float32 matmul); JAX in, JAX out (full-precision einsum).
    """
    xp = _xp(rgb)
    if xp is np:
        return np.asarray(rgb, np.float32) @ REC709
    return jnp.einsum("...c,c->...", jnp.asarray(rgb, jnp.float32), jnp.asarray(REC709),
                      precision=jax.lax.Precision.HIGHEST)


# --------------------------------------------------------------------------------------------
# Parametric curves
# --------------------------------------------------------------------------------------------


def _finish(f: np.ndarray) -> np.ndarray:
    """Pins the endpoints and removes round-off non-monotonicity."""
    f = np.clip(np.asarray(f, np.float64), 0.0, 1.0)
    f[0], f[-1] = 0.0, 1.0
    return np.maximum.accumulate(f).astype(np.float32)


def gamma_crf(g: float) -> np.ndarray:
    """f(x) = x^(1/g): the encoding gamma of a display-referred camera (g = 2.2 is typical)."""
    if not g > 0:
        raise ValueError(f"gamma must be > 0, got {g}")
    return _finish(_GRID64 ** (1.0 / g))


def srgb_crf() -> np.ndarray:
    """The sRGB transfer function sampled on :data:`GRID` (see :func:`srgb_encode`)."""
    return _finish(srgb_encode(_GRID64))


def s_curve_crf(contrast: float, pivot: float = 0.5, gamma: float = 2.2) -> np.ndarray:
    """A film-like S-shaped response.

    y = x^(1/gamma) is passed through a logistic of slope ``contrast`` centred on ``pivot`` and
    rescaled so that 0 -> 0 and 1 -> 1:  f = (s(y) - s(0)) / (s(1) - s(0)),
    s(y) = 1 / (1 + exp(-contrast (y - pivot))). contrast -> 0 recovers the plain gamma curve; large
    contrast gives a toe and a shoulder as in film characteristic curves.
    """
    if not contrast > 0:
        raise ValueError(f"contrast must be > 0, got {contrast}")
    if not 0.0 < pivot < 1.0:
        raise ValueError(f"pivot must lie in (0, 1), got {pivot}")
    y = gamma_crf(gamma).astype(np.float64)

    def s(v):
        return 1.0 / (1.0 + np.exp(-contrast * (v - pivot)))

    return _finish((s(y) - s(0.0)) / (s(1.0) - s(0.0)))


def resample_crf(values: np.ndarray) -> np.ndarray:
    """A response given as N >= 2 samples of f at evenly spaced normalised irradiance 0..1
    (non-decreasing, f(0) = 0, f(1) = 1, each within 1e-3) -> the (1024,) curve, by linear
    interpolation. Raises ValueError naming what is wrong."""
    kind = np.asarray(values).dtype.kind
    if kind not in "fiu":  # a cast would drop an imaginary part or read booleans as 0 / 1
        raise ValueError(f"a response must hold real numbers, got {np.asarray(values).dtype}")
    arr = np.asarray(values, np.float64)
    if arr.ndim > 2 or (arr.ndim == 2 and 1 not in arr.shape):
        raise ValueError(f"a response must be one column or row of values, got shape {arr.shape}")
    f = arr.reshape(-1)
    if f.size < 2:
        raise ValueError(f"a response needs at least 2 samples, got {f.size}")
    if not np.all(np.isfinite(f)):
        raise ValueError("a response holds non-finite values")
    if abs(f[0]) > 1e-3 or abs(f[-1] - 1.0) > 1e-3:
        raise ValueError(f"a response must run from 0 to 1 (normalised), got {f[0]:g} .. {f[-1]:g}")
    if np.diff(f).min() < -1e-3:
        raise ValueError("a response must be non-decreasing")
    return _finish(np.interp(_GRID64, np.linspace(0.0, 1.0, f.size), f))


#: What :func:`parse_response` accepts besides a file.
RESPONSE_NAMES = ("srgb", "gamma:G")


def parse_response(spec: str) -> np.ndarray:
    """The (1024,) response a user names: ``srgb``, ``gamma:G`` (x^(1/G)), or a file of N >= 2
    samples of f (:func:`resample_crf`): ``.npy``, or text with one value per line or
    comma/whitespace-separated. Raises ValueError with a one-line reason."""
    text = spec.strip()
    if text.lower() == "srgb":
        return srgb_crf()
    if text.lower().startswith("gamma:"):
        try:
            g = float(text.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"{spec!r}: gamma:G needs a number G, e.g. gamma:2.2") from None
        if not (np.isfinite(g) and 0.2 <= g <= 10.0):
            raise ValueError(f"{spec!r}: the gamma must lie in [0.2, 10]")
        return gamma_crf(g)
    path = Path(os.path.expanduser(text))
    if not path.is_file():
        raise ValueError(f"{spec!r} is neither {' nor '.join(RESPONSE_NAMES)} nor a file")
    try:
        if path.suffix.lower() == ".npy":
            values = np.load(path, allow_pickle=False)
        else:
            # utf-8-sig: a byte-order mark that an editor wrote is not a number.
            text = path.read_text(encoding="utf-8-sig")
            values = np.array(text.replace(",", " ").split(), np.float64)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a list of numbers ({e})") from None
    try:
        return resample_crf(values)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


#: Pixels :func:`calibrate_response` solves for (spread over the reference photo's codes).
CALIBRATION_SAMPLES = 512
#: Weight of the smoothness term g'' of :func:`calibrate_response` (Debevec and Malik's lambda,
#: for codes 0..255 and hat weights up to 128).
CALIBRATION_SMOOTHNESS = 20.0
#: In a lossy photo (JPEG), pixels this close (px) to a channel at CALIBRATION_CLIP_CODE do not
#: count for that photo: a JPEG rings around a clipped region, which reads as the curve bending
#: there. A lossless photo keeps them: its codes just below the clip are what pins down a
#: shoulder, which the smoothness term alone would extrapolate too flat.
CALIBRATION_CLIP_RADIUS = 2
CALIBRATION_CLIP_CODE = 255
#: Least exposure span (stops) of a calibration set: below it the codes of the photos overlap
#: almost entirely and say little about the curve's shape.
CALIBRATION_MIN_SPAN = 1.0
#: Largest exposure step (stops) between two photos of a calibration set that are next to each
#: other in exposure: an 8-bit photo records well under 16 stops between its darkest and its
#: clipped codes, so photos further apart share no pixel the solve could compare.
CALIBRATION_MAX_STEP = 16.0
#: Irradiance (relative to the clip) that code 0.5 of a calibrated response may decode to:
#: sRGB gives 0.214, x^(1/3) 0.125, a linear sensor 0.5; far outside, the solve has failed.
CALIBRATION_MID_RANGE = (1e-3, 0.95)
#: How far (relative, and at least CALIBRATION_STEP_SLACK stops) the step between two
#: neighbouring photos, measured through the solved response, may differ from the step their
#: exposures give. A consistent set agrees up to what nominal shutter times, JPEG ringing and
#: little texture bend the solve; one exposure that is stops off bends it much further.
CALIBRATION_STEP_TOLERANCE = 0.5
CALIBRATION_STEP_SLACK = 0.5
#: Below this :func:`bracket_overlap` a calibration rests on too few pixels to be trusted: the
#: solve still converges and passes the checks, but, with a heavily clipped bracket, can be a stop
#: or more off (``hdr-jax calibrate`` warns). Chosen on brackets of training-scene views.
CALIBRATION_MIN_OVERLAP = 0.01
#: Least :func:`rank_agreement` of two exposures of one scene (neighbouring photos of a
#: calibration set, the pair ``fuse`` takes): below it they are not one still scene (another
#: scene, or a camera or scene that moved far), and a curve solved from them, or their fusion,
#: fits nothing. Chosen on exposures of panorama views, between those of one view (also JPEG,
#: noisy, or shifted a few pixels) and pairs of views of two scenes.
MIN_RANK_AGREEMENT = 0.3


def response_from_inverse(irradiance: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The (1024,) response f from samples of its inverse: the relative ``irradiance`` of each of
    the increasing ``codes`` (0..1), made non-decreasing and then rising by 1e-9 per sample (so
    that it can be interpolated as a function of irradiance), normalised to 1 at the last code."""
    e = np.maximum.accumulate(np.asarray(irradiance, np.float64))
    e = e + np.arange(len(e)) * 1e-9
    return _finish(np.interp(_GRID64, e / e[-1], np.asarray(codes, np.float64), left=0.0))


def _debevec_system(z: np.ndarray, w: np.ndarray, log_t: np.ndarray, smoothness: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) of Debevec and Malik's least squares (SIGGRAPH 1997, eq. 3) for one channel, over
    the unknowns [g (256), ln E_i (N)]: rows w_ij (g(z_ij) - ln E_i) = w_ij ln t_j for the (N, P)
    codes ``z`` with weights ``w``, ``smoothness`` w(z) g''(z) = 0, and g(128) = 0."""
    n, p = z.shape
    hat = np.minimum(np.arange(256), 255 - np.arange(256)).astype(np.float64)
    rows = n * p + 254 + 1
    a = np.zeros((rows, 256 + n))
    b = np.zeros(rows)
    i, j = np.indices(z.shape)
    k = np.arange(n * p)
    a[k, z.ravel()] = w.ravel()
    a[k, 256 + i.ravel()] = -w.ravel()
    b[k] = (w * log_t[None, :]).ravel()
    c = np.arange(1, 255)
    r = n * p + c - 1
    a[r, c - 1], a[r, c], a[r, c + 1] = (smoothness * hat[c], -2 * smoothness * hat[c],
                                         smoothness * hat[c])
    a[-1, 128] = 1.0
    return a, b


def _debevec_solve(z: np.ndarray, w: np.ndarray, log_t: np.ndarray, smoothness: float
                   ) -> np.ndarray:
    """g (256,): the least squares of :func:`_debevec_system`.

    Each ln E_i enters only its own pixel's P rows, so it is eliminated in closed form (at the
    optimum it is the w^2-weighted mean of g(z_ij) - ln t_j) and the normal equations shrink to
    a 256 x 256 system in g (the Schur complement) instead of the dense (N P + 255) x (256 + N)
    one, whose factorisation was the whole cost of a calibration. Both give the one solution
    the least squares has when some pixel is weighed at two different codes (which fixes the
    slope of g that the smoothness term leaves free); when none is, g is not determined and the
    dense solve's minimum-norm solution is returned (the checks of :func:`calibrate_response`
    then judge it)."""
    n, p = z.shape
    # Some pixel weighed at two different codes: its highest weighed code above its lowest.
    if np.any(np.where(w > 0, z, -1).max(1) > np.where(w > 0, z, 256).min(1)):
        rows, _ = _debevec_system(np.zeros((0, p), int), np.zeros((0, p)), log_t, smoothness)
        rows = rows[:, :256]  # the smoothness terms and the row g(128) = 0, which do not touch E
        w2 = np.square(w)
        gram = rows.T @ rows
        np.add.at(gram, (z.ravel(), z.ravel()), w2.ravel())
        rhs = np.zeros(256)
        np.add.at(rhs, z.ravel(), (w2 * log_t[None, :]).ravel())
        # The coupling of g and ln E: per pixel, the w^2 its codes put on each g value.
        coupling = np.zeros((n, 256))
        np.add.at(coupling, (np.repeat(np.arange(n), p), z.ravel()), w2.ravel())
        d = w2.sum(1)
        keep = d > 0  # a pixel with no weight in any photo drops out of both solves
        coupling, d = coupling[keep], d[keep]
        gram -= (coupling.T / d) @ coupling
        rhs -= coupling.T @ ((w2[keep] @ log_t) / d)
        try:
            return np.linalg.solve(gram, rhs)
        except np.linalg.LinAlgError:  # singular in floating point after all: the dense solve
            pass
    a, b = _debevec_system(z, w, log_t, smoothness)
    return np.linalg.lstsq(a, b, rcond=None)[0][:256]


def calibrate_response(images: list[np.ndarray], log2_exposures: list[float], *,
                       lossy: bool = True) -> np.ndarray:
    """The (1024,) response of the camera that took ``images`` (8-bit HWC arrays, uint8 or
    [0, 1] floats, of one static scene) at the relative exposures 2^``log2_exposures``: Debevec
    and Malik's least-squares solve for g = ln f^-1 (SIGGRAPH 1997, eq. 3, hat weights and a
    smoothness term on g'') per channel, on :data:`CALIBRATION_SAMPLES` pixels spread evenly
    over the codes of the middle photo; in ``lossy`` (JPEG) photos a pixel near a clipped one
    does not count for that photo (:data:`CALIBRATION_CLIP_RADIUS`). Each channel's g is
    normalised to g(255) = 0 (the clip) and the channels averaged in the log domain (a white
    balance is a per-channel offset of g), then inverted to f on :data:`GRID`. Written by hand
    rather than with OpenCV's ``CalibrateDebevec``, which samples pixels at random and cannot
    leave out the ringing of a JPEG around clipped regions (it bends the recovered curve there).
    Deterministic. Raises ValueError with a one-line reason."""
    if len(images) < 2 or len(images) != len(log2_exposures):
        raise ValueError(f"calibration needs at least 2 photos, each with its exposure "
                         f"(got {len(images)} photos, {len(log2_exposures)} exposures)")
    ev = np.asarray(log2_exposures, np.float64)
    if not np.all(np.isfinite(ev)):
        raise ValueError("the exposures must be finite numbers")
    # Far beyond any camera (a 1 s and a 1/8000 s shot are 13 stops apart); bounding them keeps
    # the arithmetic below finite.
    if np.abs(ev).max() > 1e4:
        raise ValueError(f"an exposure of {ev[np.abs(ev).argmax()]:.3g} stops is not a photo's "
                         "(give exposures in stops, e.g. -2 0 2)")
    if len(np.unique(np.round(ev, 6))) != len(ev):
        raise ValueError("two photos have the same exposure")
    if ev.max() - ev.min() < CALIBRATION_MIN_SPAN:
        raise ValueError(f"the exposures span {ev.max() - ev.min():.2g} stops; at least "
                         f"{CALIBRATION_MIN_SPAN:g} are needed")
    by_ev = np.argsort(ev)
    if np.diff(ev[by_ev]).max() > CALIBRATION_MAX_STEP:
        raise ValueError(f"two exposures next to each other are {np.diff(ev[by_ev]).max():.3g} "
                         f"stops apart; at most {CALIBRATION_MAX_STEP:g} can share any pixel")
    shapes = {np.shape(im) for im in images}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[-1] != 3:
        raise ValueError(f"the photos must be RGB images of one size, got {sorted(shapes)}")
    codes, near_clip = _bracket_codes(images, lossy)
    step = _check_step(codes)
    if np.mean(_well_exposed(codes[:, ::step, ::step], near_clip[:, ::step, ::step])) < 0.02:
        raise ValueError("the photos are almost all black or clipped; nothing to calibrate on")
    _check_exposure_order(codes[:, ::step, ::step], ev)
    ref = codes[int(np.argsort(ev)[len(ev) // 2])].reshape(-1, 3)
    flat_codes = codes.reshape(len(codes), -1, 3)
    flat_near = near_clip.reshape(len(codes), -1)
    log_t = ev * np.log(2.0)
    g = []
    for ch in range(3):
        # Pixels at evenly spaced ranks of the middle photo's codes: every part of the curve
        # gets samples, however the scene's histogram is shaped.
        order = np.argsort(ref[:, ch], kind="stable")
        pick = order[np.linspace(0, len(order) - 1, CALIBRATION_SAMPLES).astype(int)]
        z = flat_codes[:, pick, ch].T.astype(int)  # (N, P)
        w = np.minimum(z, 255 - z) * ~flat_near[:, pick].T  # hat weights, 0 near the clip
        g.append(_debevec_solve(z, w.astype(np.float64), log_t, CALIBRATION_SMOOTHNESS))
    g = np.stack(g, 1)
    if not np.all(np.isfinite(g)):
        raise ValueError("the calibration did not converge (too little texture in the photos?)")
    g = (g - g[-1]).mean(1)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(g)  # irradiance of each code, 1 at the clip
        curve = response_from_inverse(e, np.arange(256) / 255.0)
    mid = float(apply_inverse_crf(curve, np.float32(0.5))) if np.all(np.isfinite(e)) else np.nan
    # A solve driven by exposures that do not match the photos can end in a step (every code
    # linearised to the clip) instead of failing: refuse any curve that maps mid-grey there.
    if not (np.isfinite(mid) and CALIBRATION_MID_RANGE[0] < mid < CALIBRATION_MID_RANGE[1]):
        raise ValueError(f"the calibrated response is degenerate (code 0.5 linearises to {mid:.3g}"
                         "); check that each exposure belongs to its photo")
    _check_exposure_steps(curve, codes[:, ::step, ::step], near_clip[:, ::step, ::step], ev)
    return curve


#: Short side (px) a raw file and its camera's photo are compared at (area-averaged): enough
#: flat patches at every tone, and a few pixels of crop difference between them blur away.
PAIR_SIDE = 384
#: Share of each side left out at the borders (a camera's lens corrections move them most).
PAIR_MARGIN = 0.05
#: Largest local spread (log2 of the raw luminance, 3x3 at PAIR_SIDE) of a pixel that counts:
#: flat patches, where averaging codes and averaging irradiance agree and misregistration
#: does not matter.
PAIR_FLAT_STOPS = 0.15
#: Pixels (of the photo) around its clipped regions that do not count on either side of the
#: clip: a JPEG's ringing reaches across an 8x8 block's half.
PAIR_RING = 4
#: Pixels a code needs for its irradiance to be read (a median of fewer is noise).
PAIR_MIN_PIXELS = 8
#: Codes the pair must reach at both ends of the tonal range: the curve is read, not guessed.
PAIR_CODE_SPAN = (80, 216)
#: Median absolute difference (codes, 0..1) between the photo and the raw data rendered through
#: the recovered curve above which the two are not the same shot.
PAIR_MAX_MISMATCH = 0.04


def response_from_raw_pair(linear: np.ndarray, photo: np.ndarray) -> np.ndarray:
    """The (1024,) response of a camera's own rendering (its JPEG engine), from one shot saved
    both as a raw file (``linear``: (H, W, 3) linear RGB, the sensor's saturation at 1, e.g.
    ``hdr_jax.io.read_ldr`` of the raw file decoded with ``srgb_decode``) and as the camera's
    photo (``photo``: (h, w, 3) codes in [0, 1], the same field of view at any size).

    Both are area-averaged to a :data:`PAIR_SIDE` short side; on flat patches away from the
    borders and below the sensor's saturation, the irradiance of each code is the median raw
    value of the pixels showing it, per channel (the channels aligned by their median log ratio
    over the codes they share, which absorbs a white balance that differs from the raw
    decoder's), joined over the channels by their median. Irradiance 1 (as for
    :func:`calibrate_response`) is where the photo clips: where the blocks it clipped entirely
    begin. The inverse response is the table interpolated in log code up to there, and below
    the darkest code read the power its darkest codes follow. Debevec and Malik's
    reciprocity (eq. 2: a code is f of irradiance times exposure) with the irradiance measured
    per pixel by the sensor instead of solved for from a bracket. Raises ValueError with a
    one-line reason: framings that differ, too few tones, or a photo that the raw data through
    the recovered curve does not reproduce (another shot)."""
    linear = np.asarray(linear, np.float32)
    photo = np.asarray(photo, np.float32)
    for name, im in (("raw data", linear), ("photo", photo)):
        if im.ndim != 3 or im.shape[-1] != 3 or min(im.shape[:2]) < 16:
            raise ValueError(f"the {name} must be an RGB image of at least 16x16 px, got shape "
                             f"{im.shape}")
        if not np.all(np.isfinite(im)):
            raise ValueError(f"the {name} holds values that are not finite numbers")
    (hr, wr), (hp, wp) = linear.shape[:2], photo.shape[:2]
    if abs(np.log((hr / wr) / (hp / wp))) > 0.03:
        raise ValueError(f"the raw file is {wr}x{hr} and the photo {wp}x{hp}: not the same "
                         "framing (a different shot, a crop or a turn)")
    scale = min(1.0, PAIR_SIDE / min(hp, wp, hr, wr))
    size = (max(16, round(wp * scale)), max(16, round(hp * scale)))
    lin = cv2.resize(np.maximum(linear, 0.0), size, interpolation=cv2.INTER_AREA)
    codes = cv2.resize(np.clip(photo, 0.0, 1.0), size, interpolation=cv2.INTER_AREA)
    log_l = np.log2(np.maximum(lin @ REC709, 1e-6))
    spread = np.sqrt(np.maximum(cv2.blur(log_l ** 2, (3, 3)) - cv2.blur(log_l, (3, 3)) ** 2, 0))
    # Away from the raw file's saturation and from the photo's clipped pixels: a block that
    # averages clipped codes with others pairs a code below the clip with irradiance above it
    # (and a JPEG rings around clipped regions).
    ring = np.ones((2 * PAIR_RING + 1,) * 2, np.uint8)
    at_clip = (photo >= CALIBRATION_CLIP_CODE / 255 - 1e-6).astype(np.uint8)
    clipped = cv2.resize(cv2.dilate(at_clip.max(-1), ring).astype(np.float32), size,
                         interpolation=cv2.INTER_AREA) > 0
    unsaturated = lin.max(-1) < 0.95
    keep = unsaturated & ~clipped
    keep = cv2.erode(keep.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    mask = (spread < PAIR_FLAT_STOPS) & keep
    my, mx = round(PAIR_MARGIN * size[1]), round(PAIR_MARGIN * size[0])
    mask[:my], mask[-my:], mask[:, :mx], mask[:, -mx:] = False, False, False, False
    z = np.round(codes * 255).astype(int)
    table = np.full((3, 256), np.nan)
    for ch in range(3):
        ok = mask & (lin[..., ch] > 0)
        x, zc = np.log(lin[..., ch][ok]), z[..., ch][ok]
        counts = np.bincount(zc, minlength=256)
        for k in np.flatnonzero(counts >= PAIR_MIN_PIXELS):
            table[ch, k] = np.median(x[zc == k])
    ref = int(np.argmax(np.isfinite(table[:, 1:255]).sum(1)))
    offset = np.full(3, np.nan)  # log ratio of each channel's irradiance to the reference's
    for ch in range(3):
        shared = np.isfinite(table[ch]) & np.isfinite(table[ref])
        shared[:PAIR_CODE_SPAN[0]] = shared[PAIR_CODE_SPAN[1]:] = False
        if shared.sum() >= 8:
            offset[ch] = np.median(table[ch, shared] - table[ref, shared])
    with warnings.catch_warnings():  # codes no channel read are all-NaN columns: left NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        log_e = np.nanmedian(table - offset[:, None], 0)
    log_e[[0, 255]] = np.nan  # black and the clip: what lies beyond them is not one irradiance
    known = np.flatnonzero(np.isfinite(log_e))
    if known.size < 16 or known[0] > PAIR_CODE_SPAN[0] or known[-1] < PAIR_CODE_SPAN[1]:
        span = f"{known[0]}..{known[-1]}" if known.size else "none"
        raise ValueError(f"the shot shows codes {span} on flat areas below the sensor's "
                         f"saturation; a curve needs {PAIR_CODE_SPAN[0]}..{PAIR_CODE_SPAN[1]} "
                         "(a shot with more tones, not clipped in the raw file)")
    # The medians are noisy where few pixels share a code: a running median over 5 codes, then
    # the least non-decreasing envelope.
    vals = log_e[known]
    pad = np.pad(vals, 2, mode="edge")
    vals = np.maximum.accumulate(np.median(np.lib.stride_tricks.sliding_window_view(pad, 5), 1))
    # The clip: where a channel's blocks that the photo clipped entirely begin, where the raw
    # file did not saturate (a scene is continuous, so the least irradiance of a clipped region
    # is the clip's); the 1st percentile per channel, and the largest over the channels, since
    # demosaicing and a JPEG's ringing spread each channel's lower tail downwards. Without such
    # blocks, a line in log irradiance against log code through the top 24 codes read (a power
    # response is such a line).
    starts = []
    for ch in np.flatnonzero(np.isfinite(offset)):
        full = cv2.resize(at_clip[..., ch].astype(np.float32), size,
                          interpolation=cv2.INTER_AREA) >= 1.0
        inside = full & unsaturated & (lin[..., ch] > 0)
        if inside.sum() >= PAIR_MIN_PIXELS:
            starts.append(np.percentile(np.log(lin[..., ch][inside]), 1) - offset[ch])
    top = known[-24:]
    slope, icpt = np.polyfit(np.log(top), vals[-24:], 1)
    log_clip = float(max(starts)) if starts else float(slope * np.log(255) + icpt)
    log_clip = max(log_clip, float(vals[-1]))
    # Between the codes read and up to the clip, interpolated in log code (exact for a power);
    # below the darkest code read, the power that the darkest 16 follow, down to code 1.
    ks = np.arange(256)
    log_k = np.log(np.maximum(ks, 1))
    log_full = np.interp(log_k, np.log(np.r_[known, 255]), np.r_[vals, log_clip])
    low = known[:16]
    toe = np.polyfit(np.log(low), vals[:16], 1)[0] if np.ptp(low) > 0 else 1.0
    below = ks < known[0]
    log_full[below] = vals[0] + max(toe, 1.0) * (log_k[below] - np.log(known[0]))
    e = np.exp(log_full - log_clip)
    e[0], e[255] = 0.0, 1.0
    curve = response_from_inverse(e, ks / 255.0)
    mid = float(apply_inverse_crf(curve, np.float32(0.5)))
    if not CALIBRATION_MID_RANGE[0] < mid < CALIBRATION_MID_RANGE[1]:
        raise ValueError(f"the recovered response is degenerate (code 0.5 linearises to "
                         f"{mid:.3g}); are the raw file and the photo the same shot?")
    used = np.isfinite(offset)
    gain = np.exp(-log_clip - offset[used])
    rendered = np.asarray(apply_crf(curve, np.clip(lin[..., used] * gain, 0.0, 1.0)))
    miss = float(np.median(np.abs(rendered - codes[..., used])[mask]))
    if miss > PAIR_MAX_MISMATCH:
        raise ValueError(f"the photo differs from the raw data rendered through the recovered "
                         f"curve by {miss * 255:.0f} codes (median): not the same shot, or a "
                         "rendering that is not one curve (e.g. local tone mapping)")
    return curve


def _bracket_codes(images: list[np.ndarray], lossy: bool) -> tuple[np.ndarray, np.ndarray]:
    """((P, H, W, 3) uint8 codes, (P, H, W) bool near a clipped code (only when ``lossy``))."""
    codes = np.stack([np.asarray(im) if np.asarray(im).dtype == np.uint8 else
                      np.round(np.clip(np.asarray(im, np.float64), 0.0, 1.0) * 255).astype(
                          np.uint8) for im in images])  # (P, H, W, 3)
    if lossy:
        kernel = np.ones((2 * CALIBRATION_CLIP_RADIUS + 1,) * 2, np.uint8)
        near_clip = np.stack([cv2.dilate((c.max(-1) >= CALIBRATION_CLIP_CODE).astype(np.uint8),
                                         kernel) > 0 for c in codes])
    else:
        near_clip = np.zeros(codes.shape[:3], bool)
    return codes, near_clip


def _check_step(codes: np.ndarray) -> int:
    """Pixel stride that leaves about 1 MP of (P, H, W, 3) ``codes`` for the checks."""
    return max(1, round((codes.shape[1] * codes.shape[2] / 1e6) ** 0.5))


def _well_exposed(codes: np.ndarray, near_clip: np.ndarray) -> np.ndarray:
    """(P, H, W, 3) bool: codes the solve trusts (11-244, not near a clipped code)."""
    return (codes > 10) & (codes < 245) & ~near_clip[..., None]


def bracket_overlap(images: list[np.ndarray], *, lossy: bool = True) -> float:
    """The least share, over the channels, of the pixels that are well exposed (codes 11-244;
    in ``lossy`` photos not within :data:`CALIBRATION_CLIP_RADIUS` px of a clipped code) in two
    or more of ``images`` (as for :func:`calibrate_response`): the pixels whose codes the solve
    can compare between photos. Below :data:`CALIBRATION_MIN_OVERLAP` a calibration from them is
    not to be trusted."""
    codes, near_clip = _bracket_codes(images, lossy)
    step = _check_step(codes)
    well = _well_exposed(codes[:, ::step, ::step], near_clip[:, ::step, ::step])
    return float(np.mean(well.sum(0) >= 2, axis=(0, 1)).min())


def almost_identical(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two photos of one size (uint8 codes, or floats in [0, 1]) differ in fewer than
    1 % of their 8-bit codes: one photo twice (a copy, or re-encoded), not two exposures."""
    a, b = _bracket_codes([a, b], lossy=False)[0]
    return bool(np.mean(a != b) < 0.01)


def rank_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two photos of one size (uint8 codes, or floats in [0, 1])
    over the channels well exposed in both (codes 11-244): a response and an exposure change
    keep the order of a still scene's pixels, so two exposures of it agree near 1 and photos of
    two scenes do not. 1.0 where fewer than 100 codes are shared (nothing to compare)."""
    a, b = _bracket_codes([a, b], lossy=False)[0]
    both = (a > 10) & (a < 245) & (b > 10) & (b < 245)
    if both.sum() < 100:
        return 1.0
    ra, rb = (scipy.stats.rankdata(x[both]) for x in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _check_exposure_order(codes: np.ndarray, ev: np.ndarray) -> None:
    """ValueError unless each photo of (P, H, W, 3) ``codes`` is brighter than the one below it
    in exposure ``ev`` on most of the pixels where the two differ (a set given in the wrong
    order, or with an exposure swapped, fails; sensor and JPEG noise do not), and shows the same
    still scene (:func:`rank_agreement` at least :data:`MIN_RANK_AGREEMENT`)."""
    order = np.argsort(ev)
    for lo, hi in zip(order[:-1], order[1:]):
        if almost_identical(codes[lo], codes[hi]):
            raise ValueError(f"photos {lo + 1} and {hi + 1} are almost identical, though their "
                             f"exposures differ by {ev[hi] - ev[lo]:.3g} stops")
        a, b = codes[lo].astype(np.int16), codes[hi].astype(np.int16)
        differ = a != b
        if np.mean(b[differ] > a[differ]) < 0.5:
            raise ValueError(f"photo {hi + 1} (EV {ev[hi]:+.3g}) is darker than photo {lo + 1} "
                             f"(EV {ev[lo]:+.3g}): the exposures do not match the photos")
        agree = rank_agreement(codes[lo], codes[hi])
        if agree < MIN_RANK_AGREEMENT:
            raise ValueError(f"photos {lo + 1} and {hi + 1} do not show one still scene: where "
                             f"both are well exposed their codes order the pixels alike at only "
                             f"{agree:.2f} (rank correlation; a bracket of a still scene from a "
                             f"still camera is near 1)")


def _check_exposure_steps(curve: np.ndarray, codes: np.ndarray, near_clip: np.ndarray,
                          ev: np.ndarray) -> None:
    """ValueError when the solved ``curve`` puts two photos next to each other in exposure
    ``ev`` a different number of stops apart (median over the channels of the pixels well
    exposed in both) than their exposures say: one wrong exposure in a set does not stop the
    solve, it bends the curve so that the steps no longer agree. Scaling every exposure by one
    factor is not always seen this way (it is the same photos under another power)."""
    order = np.argsort(ev)
    for lo, hi in zip(order[:-1], order[1:]):
        a, b = codes[lo], codes[hi]
        both = ((a > 10) & (a < 245) & (b > 10) & (b < 245)
                & ~near_clip[lo][..., None] & ~near_clip[hi][..., None])
        if both.sum() < 100:  # too few shared pixels to measure the step
            continue
        lin_a = apply_inverse_crf(curve, a[both].astype(np.float32) / 255.0)
        lin_b = apply_inverse_crf(curve, b[both].astype(np.float32) / 255.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            steps = np.log2(lin_b / lin_a)
        measured = float(np.median(steps[np.isfinite(steps)])) if np.isfinite(steps).any() else 0.0
        given = float(ev[hi] - ev[lo])
        if abs(measured - given) > max(CALIBRATION_STEP_SLACK, CALIBRATION_STEP_TOLERANCE * given):
            raise ValueError(f"photos {lo + 1} and {hi + 1} are {measured:.2g} stops apart "
                             f"through the solved response, not the {given:.3g} their exposures "
                             "say: the exposures do not match the photos")


def parametric_crfs() -> dict[str, np.ndarray]:
    """The default named set that needs no data file.

    Names: ``gamma+G`` is x^(1/G); ``sRGB``; ``scurve+C@P`` is :func:`s_curve_crf` (C, P).
    """
    crfs = {f"gamma+{g}": gamma_crf(g) for g in (1.4, 1.8, 2.2, 2.6, 3.0)}
    crfs["sRGB"] = srgb_crf()
    for c, p in ((4.0, 0.5), (6.0, 0.45), (8.0, 0.55), (10.0, 0.5), (6.0, 0.65)):
        crfs[f"scurve+{c:g}@{p:g}"] = s_curve_crf(c, p)
    return crfs


# --------------------------------------------------------------------------------------------
# EMoR and DoRF files
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EMoR:
    """Empirical Model of Response: f = f0 + sum_i c_i basis[i] (orthonormal basis over GRID).

    ``g0`` / ``inv_basis`` hold the inverse model (invemor.txt) when it was available.
    """

    f0: np.ndarray  # (1024,)
    basis: np.ndarray  # (n_basis, 1024), 25 in the published model
    g0: np.ndarray | None = None
    inv_basis: np.ndarray | None = None

    def curve(self, coeffs: np.ndarray) -> np.ndarray:
        """f0 + c @ basis[:len(c)] for coefficient vectors of shape (..., n)."""
        coeffs = np.asarray(coeffs, np.float64)
        n = coeffs.shape[-1]
        if n > self.basis.shape[0]:
            raise ValueError(f"{n} coefficients for a model with {self.basis.shape[0]} basis curves")
        return (self.f0.astype(np.float64) + coeffs @ self.basis[:n].astype(np.float64)).astype(np.float32)


_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _parse_blocks(path: Path) -> list[tuple[str, np.ndarray]]:
    """Splits an EMoR-style text file into (header, values) blocks; a header line contains '='."""
    blocks: list[tuple[str, list[float]]] = []
    with open(path, encoding="ascii", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if "=" in line:
                name, rest = line.split("=", 1)
                blocks.append((name.strip(), []))
                tokens = rest.split()
            else:
                tokens = line.split()
                if tokens and not blocks:
                    raise ValueError(f"{path}:{lineno}: values before the first 'name =' header")
            for tok in tokens:
                if not _FLOAT.match(tok):
                    raise ValueError(f"{path}:{lineno}: not a number: {tok!r}")
                blocks[-1][1].append(float(tok))
    return [(name, np.asarray(vals)) for name, vals in blocks]


def _read_model(path: Path, grid_name: str, mean_name: str,
                basis_prefix: str) -> tuple[np.ndarray, np.ndarray]:
    blocks = _parse_blocks(path)
    if len(blocks) < 3:
        raise ValueError(f"{path}: expected '{grid_name} =', '{mean_name} =' and basis blocks, "
                         f"got {len(blocks)} blocks")
    expected = [grid_name, mean_name] + [f"{basis_prefix}({i})" for i in range(1, len(blocks) - 1)]
    for (name, vals), want in zip(blocks, expected):
        if name.replace(" ", "") != want:
            raise ValueError(f"{path}: expected block '{want} =', got '{name} ='")
        if vals.size != N_SAMPLES:
            raise ValueError(f"{path}: block '{name}' has {vals.size} values, expected {N_SAMPLES}")
    if not np.allclose(blocks[0][1], _GRID64, atol=1e-5):
        raise ValueError(f"{path}: block '{grid_name}' is not the grid k/{N_SAMPLES - 1}")
    mean = blocks[1][1].astype(np.float32)
    basis = np.stack([v for _, v in blocks[2:]]).astype(np.float32)
    return mean, basis


def load_emor(path_or_dir: str | os.PathLike) -> EMoR:
    """Parses ``emor.txt`` (and ``invemor.txt`` beside it, when present).

    Format (data/crf/SOURCES.md): blocks of 1024 values on k/1023, each after a header line
    (``E =``, ``f0 =``, ``h(1)=`` ... ``h(25)=``; inverse: ``B =``, ``g0 =``, ``hinv(i)=``).
    """
    p = Path(path_or_dir)
    emor_file = p / "emor.txt" if p.is_dir() else p
    if not emor_file.is_file():
        raise FileNotFoundError(f"EMoR file not found: {emor_file}")
    f0, basis = _read_model(emor_file, "E", "f0", "h")
    g0 = inv_basis = None
    inv_file = emor_file.with_name("invemor.txt")
    if inv_file.is_file():
        g0, inv_basis = _read_model(inv_file, "B", "g0", "hinv")
    return EMoR(f0=f0, basis=basis, g0=g0, inv_basis=inv_basis)


def sample_emor_crfs(
    emor: EMoR,
    n: int,
    rng: np.random.Generator,
    n_coeffs: int = 5,
    scale: float = 2.0,
    decay: float = 0.5,
    tol: float = 1e-4,
    max_draws: int = 100_000,
) -> np.ndarray:
    """Draws ``n`` random valid CRFs from the EMoR model, shape (n, 1024).

    Coefficient distribution: c_i ~ N(0, (scale * decay^(i-1))^2) independently, i = 1..n_coeffs.
    The basis is orthonormal over the 1024 samples; for reference, gamma curves x^(1/g) with
    g = 1..3 have c_1 in [-2.2, 6.5] and c_2 in [-1.9, -0.4], so scale = 2 spans common cameras.
    Rejection: a draw is kept when it is monotone up to ``tol`` per sample (the basis curves
    vanish at 0 and 1, so f(0) = 0, f(1) = 1 already); kept curves are then clipped to [0, 1],
    endpoint-pinned and made exactly monotone by a running maximum.
    """
    if n < 0 or n_coeffs < 1 or n_coeffs > emor.basis.shape[0]:
        raise ValueError(f"need n >= 0 and 1 <= n_coeffs <= {emor.basis.shape[0]}, "
                         f"got n={n}, n_coeffs={n_coeffs}")
    sigma = scale * decay ** np.arange(n_coeffs)
    kept: list[np.ndarray] = []
    count = drawn = 0
    while count < n:
        if drawn >= max_draws:
            raise RuntimeError(f"only {count}/{n} monotone EMoR curves in {drawn} draws; lower scale")
        batch = max(64, 2 * (n - count))
        f = emor.curve(rng.normal(size=(batch, n_coeffs)) * sigma).astype(np.float64)
        drawn += batch
        ok = np.diff(f, axis=1).min(axis=1) >= -tol
        ok &= (f.min(axis=1) >= -tol) & (f.max(axis=1) <= 1 + tol)
        kept.append(f[ok])
        count += int(ok.sum())
    out = np.concatenate(kept)[:n]
    return np.stack([_finish(f) for f in out]) if n else np.zeros((0, N_SAMPLES), np.float32)


def load_dorf(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Parses DoRF ``dorfCurves.txt`` into {name: curve on GRID}.

    Per curve six lines: name, curve type, ``I =``, irradiance values, ``B =``, brightness values.
    B(I) is resampled to GRID by linear interpolation and pinned/monotonised (:func:`_finish`);
    a repeated name gets a ``#2``, ``#3``... suffix.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"DoRF file not found: {p}")
    lines = [ln.strip() for ln in p.read_text(encoding="ascii", errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or len(lines) % 6:
        raise ValueError(f"{p}: expected 6 non-empty lines per curve, got {len(lines)} lines")
    curves: dict[str, np.ndarray] = {}
    for start in range(0, len(lines), 6):
        name, _ctype, i_hdr, i_vals, b_hdr, b_vals = lines[start:start + 6]
        where = f"{p}: curve {name!r} (line {start + 1})"
        if i_hdr.replace(" ", "") != "I=" or b_hdr.replace(" ", "") != "B=":
            raise ValueError(f"{where}: expected 'I =' and 'B =' header lines")
        try:
            irr = np.array(i_vals.split(), np.float64)
            bri = np.array(b_vals.split(), np.float64)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if irr.size != bri.size or irr.size < 2:
            raise ValueError(f"{where}: {irr.size} irradiance vs {bri.size} brightness values")
        if np.any(np.diff(irr) < 0):
            raise ValueError(f"{where}: irradiance values are not increasing")
        key, k = name, 1
        while key in curves:
            k += 1
            key = f"{name}#{k}"
        curves[key] = _finish(np.interp(_GRID64, irr, bri))
    return curves


# --------------------------------------------------------------------------------------------
# Representative curves (DrTMO 3.1.1: k-means, then spline interpolation)
# --------------------------------------------------------------------------------------------


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator,
            n_iter: int = 100) -> tuple[np.ndarray, np.ndarray, float]:
    """One k-means++ seeded Lloyd run; returns (centroids, labels, inertia)."""
    m = x.shape[0]
    centres = [x[rng.integers(m)]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(m, 1.0 / m)
        centres.append(x[rng.choice(m, p=p)])
        d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
    c = np.stack(centres)
    labels = np.full(m, -1)
    for _ in range(n_iter):
        dist = ((x[:, None, :] - c[None]) ** 2).sum(-1)
        new = dist.argmin(1)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            members = x[labels == j]
            # An empty cluster restarts at the point worst served by its centre.
            c[j] = members.mean(0) if len(members) else x[dist.min(1).argmax()]
    dist = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    labels = dist.argmin(1)
    return c, labels, float(dist.min(1).sum())


def _spline_knots(n_knots: int) -> np.ndarray:
    """Grid indices of the spline knots: half log-spaced (CRFs bend most near 0, where gamma-like
    curves are steepest), half uniform."""
    log_part = np.geomspace(1, N_SAMPLES - 1, n_knots // 2)
    lin_part = np.linspace(0, N_SAMPLES - 1, n_knots - n_knots // 2)
    return np.unique(np.round(np.concatenate([[0.0], log_part, lin_part])).astype(int))


def smooth_crf(curve: np.ndarray, n_knots: int = 32) -> np.ndarray:
    """Monotone cubic (PCHIP) interpolation of a curve through ``n_knots`` of its samples."""
    idx = _spline_knots(n_knots)
    c = np.maximum.accumulate(np.asarray(curve, np.float64))
    return _finish(PchipInterpolator(_GRID64[idx], c[idx])(_GRID64))


def select_representative_crfs(
    curves: np.ndarray,
    k: int,
    seed: int = 0,
    *,
    use_centroid: bool = False,
    n_knots: int = 32,
    n_init: int = 4,
    return_indices: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Picks ``k`` representative CRFs from (M, 1024) curves, shape (k, 1024).

    k-means (k-means++ init + Lloyd, best of ``n_init``) in the 1024-sample Euclidean space; each
    cluster is represented by its member nearest the centroid (default: a real, measured or
    sampled curve, as DrTMO's curve names suggest) or by the centroid itself (``use_centroid``;
    an average of monotone curves is monotone). The result is smoothed by monotone PCHIP spline
    interpolation through ``n_knots`` samples (DrTMO 3.1.1). Clusters are ordered by the mean of
    their curve (darkest response first). With ``return_indices`` also returns the (k,) index of
    each nearest member.
    """
    x = np.asarray(curves, np.float64)
    if x.ndim != 2 or x.shape[1] != N_SAMPLES:
        raise ValueError(f"curves must have shape (M, {N_SAMPLES}), got {x.shape}")
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k must lie in [1, {x.shape[0]}], got {k}")
    rng = np.random.default_rng(seed)
    best = min((_kmeans(x, k, rng) for _ in range(n_init)), key=lambda r: r[2])
    centroids, labels, _ = best
    nearest = np.empty(k, int)
    for j in range(k):
        members = np.flatnonzero(labels == j)
        nearest[j] = members[((x[members] - centroids[j]) ** 2).sum(1).argmin()]
    reps = centroids if use_centroid else x[nearest]
    order = np.argsort(reps.mean(1), kind="stable")
    out = np.stack([smooth_crf(reps[j], n_knots) for j in order])
    return (out, nearest[order]) if return_indices else out


def default_training_crfs(emor_path: str | os.PathLike | None = None, k: int = 5, seed: int = 0,
                          n_samples: int = 400) -> dict[str, np.ndarray]:
    """The ``k`` training CRFs (DrTMO section 3.1.1), darkest response first.

    With ``emor_path``: ``n_samples`` EMoR draws (:func:`sample_emor_crfs`, rng seeded by
    ``seed``), reduced by :func:`select_representative_crfs`; named ``emor-j``. Without it:
    representatives of :func:`parametric_crfs`, keeping their names.
    """
    if emor_path is not None:
        emor = load_emor(emor_path)
        pool = sample_emor_crfs(emor, n_samples, np.random.default_rng(seed))
        reps = select_representative_crfs(pool, k, seed)
        return {f"emor-{j}": c for j, c in enumerate(reps)}
    params = parametric_crfs()
    names = list(params)
    reps, idx = select_representative_crfs(np.stack(list(params.values())), k, seed, return_indices=True)
    return {names[i]: c for i, c in zip(idx, reps)}


# --------------------------------------------------------------------------------------------
# Application and inversion (NumPy or JAX, jit-safe)
# --------------------------------------------------------------------------------------------


def _interp_grid(values: Array, x: Array) -> Array:
    """Linear interpolation of samples on the uniform GRID: exactly np.interp, but a gather
    instead of a search, and the same code runs in NumPy and under jit."""
    xp = _xp(values, x)
    values = xp.asarray(values, xp.float32)
    t = xp.clip(xp.asarray(x, xp.float32), 0.0, 1.0) * (N_SAMPLES - 1)
    i0 = xp.clip(xp.floor(t), 0, N_SAMPLES - 2).astype(xp.int32)
    w = t - i0.astype(xp.float32)
    return values[i0] * (1.0 - w) + values[i0 + 1] * w


def apply_crf(curve: Array, x: Array) -> Array:
    """Z = f(x) with x clipped to [0, 1]; NumPy in, NumPy out; JAX otherwise."""
    return _interp_grid(curve, x)


def invert_crf(curve: Array) -> Array:
    """Samples of f^-1 on GRID (monotone, f^-1(0) = 0, f^-1(1) = 1).

    Flat parts of f (toe, saturation) make f^-1 multivalued: a level on a flat run maps to the
    end of the run (searchsorted side='right'), the endpoints are then pinned. The same code runs
    on NumPy arrays and, under jit, on JAX arrays.
    """
    xp = _xp(curve)
    f = xp.clip(xp.asarray(curve, xp.float32), 0.0, 1.0)
    if f.shape != (N_SAMPLES,):
        raise ValueError(f"a CRF has shape ({N_SAMPLES},), got {f.shape}")
    # Tolerates round-off dips, which would break the sorted search.
    f = np.maximum.accumulate(f) if xp is np else jax.lax.cummax(f)
    grid = xp.asarray(GRID)
    i = xp.clip(xp.searchsorted(f, grid, side="right"), 1, N_SAMPLES - 1)
    f_lo, f_hi = f[i - 1], f[i]
    x_lo = grid[i - 1]
    df = f_hi - f_lo
    safe = xp.where(df > 0, df, 1.0)
    g = xp.where(df > 0, x_lo + (grid - f_lo) / safe * (1.0 / (N_SAMPLES - 1)), x_lo)
    g = xp.clip(g, 0.0, 1.0)
    g = xp.concatenate([xp.zeros(1, xp.float32), g[1:-1], xp.ones(1, xp.float32)])
    return g.astype(xp.float32)


def apply_inverse_crf(curve: Array, z: Array) -> Array:
    """E = f^-1(Z) (linearisation of an LDR image), via :func:`invert_crf`."""
    return _interp_grid(invert_crf(curve), z)


def inverse_error(curve: np.ndarray, truth: np.ndarray,
                  codes: tuple[float, float] = (0.05, 1.0)) -> float:
    """RMS log2 difference (stops) of the inverses of two responses over 256 codes evenly
    spaced in ``codes``: how far a recovered curve linearises the photo from the true one."""
    z = np.linspace(*codes, 256, dtype=np.float32)
    a = np.log2(np.maximum(np.asarray(apply_inverse_crf(curve, z)), 1e-6))
    b = np.log2(np.maximum(np.asarray(apply_inverse_crf(truth, z)), 1e-6))
    return float(np.sqrt(np.mean((a - b) ** 2)))


def is_valid_crf(curve: np.ndarray, tol: float = 1e-6) -> bool:
    """Whether ``curve`` is a (1024,) monotone non-decreasing curve with f(0)=0, f(1)=1."""
    f = np.asarray(curve, np.float64)
    return (f.shape == (N_SAMPLES,) and bool(np.all(np.isfinite(f)))
            and abs(f[0]) <= tol and abs(f[-1] - 1) <= tol and bool(np.diff(f).min() >= -tol))
