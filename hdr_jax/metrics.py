"""Image-quality metrics, pure JAX.

Every metric takes images ``(..., H, W, C)`` (any number of leading batch axes, usually NHWC),
float32, and returns one value per image, i.e. an array of shape ``(...)`` (a scalar for a single
HWC image). Exposure stacks are ``(..., K, H, W, C)`` with K the exposure axis. All functions are
jit-compiled; configuration arguments (window sizes, flags) are static.

Conventions chosen here (the papers leave them open):

* ``psnr``/``ssim`` work on all channels (RGB variants): SSIM is computed per channel and averaged.
  ``psnr_y``/``ssim_y`` work on BT.601 luma as used in super-resolution papers (``rgb_to_y``).
* PSNR of identical images is ``+inf`` (no clipping to a finite value).
* MEF-SSIM converts RGB to grey with BT.601 weights (0.299, 0.587, 0.114), scaled to [0, 255].
* PU21 is applied to each RGB channel separately; ``pu21_psnr`` first fits one gain to the
  prediction (median log ratio of luminances) because single-image HDR is defined up to scale.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from hdr_jax.camera import crf as crf_lib

__all__ = [
    "align_gain",
    "bright_saturation",
    "ciede2000",
    "log_psnr",
    "luminance",
    "mean_ciede2000",
    "mef_ssim",
    "mef_ssim_c",
    "mef_ssim_filtered",
    "psnr",
    "psnr_y",
    "pu21_encode",
    "pu21_psnr",
    "rgb_to_y",
    "ssim",
    "srgb_to_lab",
    "ssim_y",
]

_HIGHEST = lax.Precision.HIGHEST


def _check_pair(a: jax.Array, b: jax.Array, name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name}: inputs must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim < 3:
        raise ValueError(f"{name}: expected images (..., H, W, C), got shape {a.shape}")


def _psnr_from_mse(mse: jax.Array, peak: ArrayLike) -> jax.Array:
    # mse == 0 gives peak^2 / 0 = inf, i.e. PSNR = +inf for identical images.
    return 10.0 * jnp.log10(jnp.square(jnp.asarray(peak, jnp.float32)) / mse)


# --------------------------------------------------------------------------------------------
# PSNR / SSIM
# --------------------------------------------------------------------------------------------


@jax.jit
def psnr(a: ArrayLike, b: ArrayLike, data_range: ArrayLike = 1.0) -> jax.Array:
    """PSNR = 10 log10(data_range^2 / MSE) per image, MSE over H, W and C; +inf if a == b."""
    a = jnp.asarray(a, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    _check_pair(a, b, "psnr")
    mse = jnp.mean(jnp.square(a - b), axis=(-3, -2, -1))
    return _psnr_from_mse(mse, data_range)


def _gaussian_1d(window: int, sigma: float) -> np.ndarray:
    x = np.arange(window, dtype=np.float64) - (window - 1) / 2.0
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _separable_filter(x: jax.Array, taps: np.ndarray, padding: str) -> jax.Array:
    """Depthwise 2-D filtering of (B, H, W, C) with the outer product of ``taps``."""
    c = x.shape[-1]
    r = (len(taps) - 1) // 2
    if padding == "SAME":
        # Half-sample symmetric padding, as scipy.ndimage's 'reflect' mode used by scikit-image.
        x = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="symmetric")
    t = jnp.asarray(taps, jnp.float32)
    kh = jnp.tile(t.reshape(-1, 1, 1, 1), (1, 1, 1, c))
    kw = jnp.tile(t.reshape(1, -1, 1, 1), (1, 1, 1, c))
    dn = ("NHWC", "HWIO", "NHWC")
    x = lax.conv_general_dilated(
        x, kh, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c, precision=_HIGHEST
    )
    return lax.conv_general_dilated(
        x, kw, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c, precision=_HIGHEST
    )


@functools.partial(
    jax.jit,
    static_argnames=("window", "sigma", "k1", "k2", "gaussian", "channel_average", "padding"),
)
def ssim(
    a: ArrayLike,
    b: ArrayLike,
    data_range: ArrayLike = 1.0,
    *,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    gaussian: bool = True,
    channel_average: bool = True,
    padding: str = "VALID",
) -> jax.Array:
    """SSIM (Wang et al. 2004, eq. 13) per image, mean of the SSIM map.

    Local statistics use a ``window`` x ``window`` Gaussian (std ``sigma``, normalised to sum 1)
    or, with ``gaussian=False``, a uniform window; population (biased) variances.
    ``padding='VALID'`` averages only positions where the window fits (scikit-image's cropped
    mean; CF-Net loss: window 7, sigma 1.5, data range 255, the public code); ``'SAME'`` pads
    symmetrically and averages the full map. Returns ``(...)``, or ``(..., C)`` per channel
    when ``channel_average=False``.
    """
    a = jnp.asarray(a, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    _check_pair(a, b, "ssim")
    if window % 2 != 1 or window < 1:
        raise ValueError(f"ssim: window must be a positive odd integer, got {window}")
    if padding not in ("VALID", "SAME"):
        raise ValueError(f"ssim: padding must be 'VALID' or 'SAME', got {padding!r}")
    *lead, h, w, c = a.shape
    if window > min(h, w):
        raise ValueError(f"ssim: window {window} larger than the image ({h}x{w})")
    taps = _gaussian_1d(window, sigma) if gaussian else np.full(window, 1.0 / window)

    a = a.reshape(-1, h, w, c)
    b = b.reshape(-1, h, w, c)
    # One depthwise filter call for all five moments.
    stats = _separable_filter(jnp.concatenate([a, b, a * a, b * b, a * b], -1), taps, padding)
    mu_a, mu_b, e_aa, e_bb, e_ab = jnp.split(stats, 5, axis=-1)
    var_a = e_aa - mu_a * mu_a
    var_b = e_bb - mu_b * mu_b
    cov = e_ab - mu_a * mu_b
    c1 = jnp.square(k1 * jnp.asarray(data_range, jnp.float32))
    c2 = jnp.square(k2 * jnp.asarray(data_range, jnp.float32))
    smap = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    )
    per_channel = jnp.mean(smap, axis=(1, 2)).reshape(*lead, c)
    return jnp.mean(per_channel, axis=-1) if channel_average else per_channel


# --------------------------------------------------------------------------------------------
# Colour conversions
# --------------------------------------------------------------------------------------------


def _check_rgb(x: jax.Array, name: str) -> None:
    if x.ndim < 3 or x.shape[-1] != 3:
        raise ValueError(f"{name}: expected RGB images (..., H, W, 3), got shape {x.shape}")


@jax.jit
def rgb_to_y(img: ArrayLike, data_range: ArrayLike = 1.0) -> jax.Array:
    """ITU-R BT.601 studio-swing luma, as in super-resolution evaluation (MATLAB ``rgb2ycbcr``).

    For RGB in [0, data_range]: Y = (16 * data_range + 65.481 R + 128.553 G + 24.966 B) / 255,
    so the output lies in [16, 235] / 255 * data_range (same units as the input). Shape
    ``(..., H, W, 1)``.
    """
    img = jnp.asarray(img, jnp.float32)
    _check_rgb(img, "rgb_to_y")
    coef = jnp.asarray([65.481, 128.553, 24.966], jnp.float32)
    y = jnp.einsum("...c,c->...", img, coef, precision=_HIGHEST)
    return ((16.0 * jnp.asarray(data_range, jnp.float32) + y) / 255.0)[..., None]


def _crop(x: jax.Array, border: int) -> jax.Array:
    if border < 0:
        raise ValueError(f"crop_border must be >= 0, got {border}")
    return x[..., border : x.shape[-3] - border, border : x.shape[-2] - border, :] if border else x


@functools.partial(jax.jit, static_argnames=("crop_border",))
def psnr_y(
    a: ArrayLike, b: ArrayLike, data_range: ArrayLike = 1.0, *, crop_border: int = 0
) -> jax.Array:
    """PSNR on BT.601 luma (``rgb_to_y``), optionally shaving ``crop_border`` pixels per side."""
    ya = _crop(rgb_to_y(a, data_range), crop_border)
    yb = _crop(rgb_to_y(b, data_range), crop_border)
    return psnr(ya, yb, data_range)


@functools.partial(
    jax.jit, static_argnames=("crop_border", "window", "sigma", "k1", "k2", "gaussian", "padding")
)
def ssim_y(
    a: ArrayLike,
    b: ArrayLike,
    data_range: ArrayLike = 1.0,
    *,
    crop_border: int = 0,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    gaussian: bool = True,
    padding: str = "VALID",
) -> jax.Array:
    """SSIM on BT.601 luma (``rgb_to_y``), optionally shaving ``crop_border`` pixels per side."""
    ya = _crop(rgb_to_y(a, data_range), crop_border)
    yb = _crop(rgb_to_y(b, data_range), crop_border)
    return ssim(
        ya,
        yb,
        data_range,
        window=window,
        sigma=sigma,
        k1=k1,
        k2=k2,
        gaussian=gaussian,
        padding=padding,
    )


@jax.jit
def luminance(rgb: ArrayLike) -> jax.Array:
    """Linear luminance, Rec. 709 / sRGB primaries: 0.2126 R + 0.7152 G + 0.0722 B.

    ``(..., H, W, 3) -> (..., H, W, 1)``; a single-channel input is returned unchanged.
    """
    rgb = jnp.asarray(rgb, jnp.float32)
    if rgb.ndim >= 3 and rgb.shape[-1] == 1:
        return rgb
    _check_rgb(rgb, "luminance")
    return crf_lib.luminance(rgb)[..., None]


# --------------------------------------------------------------------------------------------
# MEF-SSIM (Ma, Zeng, Wang, IEEE TIP 24(11) 2015)
# --------------------------------------------------------------------------------------------

_MEF_WINDOW = 11
_MEF_SIGMA = 1.5
_MEF_C = (0.03 * 255.0) ** 2
_MEF_SCALE_WEIGHTS = np.array([0.0448, 0.2856, 0.3001]) / (0.0448 + 0.2856 + 0.3001)
_MEF_P_CAP = 10.0
#: Smallest image side mef_ssim accepts: the coarsest of 3 scales must still hold a window.
MEF_SSIM_MIN_SIDE = _MEF_WINDOW * 2 ** (len(_MEF_SCALE_WEIGHTS) - 1) - 3
#: The smallest image side MEF-SSIMc (single scale) accepts.
MEF_SSIM_C_MIN_SIDE = _MEF_WINDOW
# Clamping R here keeps tan() away from its pole (float32 pi/2 * 1 would overshoot it);
# tan(pi/2 * R_cap) = 10, the same cap as the authors' code.
_MEF_R_CAP = 2.0 / math.pi * math.atan(_MEF_P_CAP)
# Added to the patch contrast (as in the authors' code) so flat patches have a finite structure.
_MEF_CONTRAST_EPS = 1e-3


def _grey255(x: jax.Array) -> jax.Array:
    """(..., H, W, C) in [0, 1] -> (..., H, W) in [0, 255]; BT.601 weights for RGB."""
    if x.shape[-1] == 3:
        w = jnp.asarray([0.299, 0.587, 0.114], jnp.float32)
        x = jnp.einsum("...c,c->...", x, w, precision=_HIGHEST)
    elif x.shape[-1] == 1:
        x = x[..., 0]
    else:
        raise ValueError(f"mef_ssim: expected 1 or 3 channels, got {x.shape[-1]}")
    return 255.0 * x


def _downsample2(x: jax.Array) -> jax.Array:
    """2x2 mean filter + decimation on the last two axes (MATLAB imfilter 'symmetric', 1:2:end).

    Odd sizes: the missing row/column is the edge repeated, so the output size is ceil(n/2).
    """
    h, w = x.shape[-2:]
    pad = [(0, 0)] * (x.ndim - 2) + [(0, h % 2), (0, w % 2)]
    x = jnp.pad(x, pad, mode="edge")
    h2, w2 = x.shape[-2] // 2, x.shape[-1] // 2
    return x.reshape(*x.shape[:-2], h2, 2, w2, 2).mean(axis=(-3, -1))


def _patches(x: jax.Array, rows: int, cols: int) -> jax.Array:
    """All 11x11 patches, stride 1: (..., rows + 10, cols + 10) -> (..., rows, cols, 121).

    One gather (not a one-hot convolution) keeps the values bit-exact on any backend and
    compiles quickly (121 separate slices make XLA compile for tens of seconds).
    """
    n = _MEF_WINDOW
    ri = (np.arange(rows)[:, None] + np.arange(n)[None, :])[:, None, :, None]
    ci = (np.arange(cols)[:, None] + np.arange(n)[None, :])[None, :, None, :]
    return x[..., ri, ci].reshape(*x.shape[:-2], rows, cols, n * n)


def _mef_qmap_strip(src: jax.Array, fused: jax.Array, rows: int) -> jax.Array:
    """MEF-SSIM quality map for ``rows`` output rows ('valid' positions, Ma et al. 2015 Sec. III).

    src: (N, K, rows + 10, W) grey sources; fused: (N, rows + 10, W). Returns (N, rows, W - 10).
    """
    cols = src.shape[-1] - _MEF_WINDOW + 1
    g1 = _gaussian_1d(_MEF_WINDOW, _MEF_SIGMA)
    g = jnp.asarray(np.outer(g1, g1).reshape(-1), jnp.float32)
    return _mef_structure_contrast(_patches(src, rows, cols), _patches(fused, rows, cols), g)


def _mef_structure_contrast(xs: jax.Array, y: jax.Array, g: jax.Array) -> jax.Array:
    """The MEF-SSIM patch score from vectorised patches: sources xs (N, K, r, c, P), fused y
    (N, r, c, P), window weights g (P,) summing to 1. Returns (N, r, c)."""
    # Patch decomposition x_k = c_k * s_k + mu_k (uniform patch mean, Euclidean norm).
    xt = xs - jnp.mean(xs, axis=-1, keepdims=True)
    norm_k = jnp.sqrt(jnp.sum(jnp.square(xt), axis=-1))  # (N, K, r, c)
    c_k = norm_k + _MEF_CONTRAST_EPS
    c_hat = jnp.max(c_k, axis=1)  # desired contrast

    # Structure consistency R -> exponent p = tan(pi/2 R), capped.
    num = jnp.sqrt(jnp.sum(jnp.square(jnp.sum(xt, axis=1)), axis=-1))
    den = jnp.sum(norm_k, axis=1)
    r = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 1.0)
    p = jnp.minimum(jnp.tan(0.5 * math.pi * jnp.clip(r, 0.0, _MEF_R_CAP)), _MEF_P_CAP)

    # Weights w_k = c_k^p, normalised over k in the log domain: c_k^p spans up to ~60 decades
    # across patches, too close to float32's range limits to form it directly.
    w_k = jax.nn.softmax(p[:, None] * jnp.log(c_k), axis=1)
    s_bar = jnp.sum((w_k / c_k)[..., None] * xt, axis=1)  # desired structure
    s_norm = jnp.sqrt(jnp.sum(jnp.square(s_bar), axis=-1, keepdims=True))
    safe = jnp.where(s_norm > 0, s_norm, 1.0)
    x_hat = jnp.where(s_norm > 0, s_bar / safe, 0.0) * c_hat[..., None]

    # SSIM without the luminance term between x_hat and the fused patch, Gaussian window.
    dx = x_hat - jnp.einsum("...p,p->...", x_hat, g, precision=_HIGHEST)[..., None]
    dy = y - jnp.einsum("...p,p->...", y, g, precision=_HIGHEST)[..., None]
    var_x = jnp.einsum("...p,p->...", dx * dx, g, precision=_HIGHEST)
    var_y = jnp.einsum("...p,p->...", dy * dy, g, precision=_HIGHEST)
    cov = jnp.einsum("...p,p->...", dx * dy, g, precision=_HIGHEST)
    return (2.0 * cov + _MEF_C) / (var_x + var_y + _MEF_C)


def _mef_single_scale(src: jax.Array, fused: jax.Array, max_chunk_elems: int,
                      strip=_mef_qmap_strip) -> jax.Array:
    """Mean quality map at one scale -> (N,). src (N, A, H, W), fused (N, [B,] H, W): H and W
    are the last two axes; ``strip(src, fused, rows)`` computes the map of ``rows`` rows."""
    n, a, h, w = src.shape
    rows_out, cols_out = h - _MEF_WINDOW + 1, w - _MEF_WINDOW + 1
    per_row = n * (a + math.prod(fused.shape[1:-2])) * cols_out * _MEF_WINDOW**2
    rows = int(max(1, min(rows_out, max_chunk_elems // per_row)))
    n_blocks = -(-rows_out // rows)
    if n_blocks == 1:
        q = strip(src, fused, rows_out)
        return jnp.mean(q, axis=(-2, -1))

    # Row blocks bound memory to ~max_chunk_elems patch values per block (1-2 MP images).
    extra = n_blocks * rows - rows_out

    def pad_rows(x):
        return jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, extra), (0, 0)], mode="edge")

    src, fused = pad_rows(src), pad_rows(fused)
    span = rows + _MEF_WINDOW - 1

    def block(i: jax.Array) -> jax.Array:
        s = lax.dynamic_slice_in_dim(src, i * rows, span, axis=src.ndim - 2)
        f = lax.dynamic_slice_in_dim(fused, i * rows, span, axis=fused.ndim - 2)
        return strip(s, f, rows)  # (N, rows, cols)

    q = lax.map(block, jnp.arange(n_blocks))  # (B, N, rows, cols)
    q = jnp.moveaxis(q, 0, 1).reshape(n, n_blocks * rows, cols_out)[:, :rows_out]
    return jnp.mean(q, axis=(-2, -1))


def _mef_inputs(fused: ArrayLike, stack: ArrayLike, name: str,
                channels: str) -> tuple[jax.Array, jax.Array]:
    """float32 (fused (..., H, W, C), stack (..., K, H, W, C)), checked; ``channels``: 'C' (any)
    or '3' (RGB only)."""
    fused = jnp.asarray(fused, jnp.float32)
    stack = jnp.asarray(stack, jnp.float32)
    if (fused.ndim < 3 or stack.ndim != fused.ndim + 1
            or (channels == "3" and fused.shape[-1] != 3)):
        raise ValueError(
            f"{name}: expected fused (..., H, W, {channels}) and stack (..., K, H, W, {channels}), "
            f"got {fused.shape} and {stack.shape}"
        )
    if stack.shape[:-4] + stack.shape[-3:] != fused.shape:
        raise ValueError(f"{name}: stack {stack.shape} does not match fused {fused.shape}")
    return fused, stack


def _mef_scale_scores(fused, stack, n_scales, score) -> list[jax.Array]:
    """`score(sources (N, K, h, w), fused (N, h, w))` at each of `n_scales` dyadic scales."""
    h, w = fused.shape[-3:-1]
    y = _grey255(fused).reshape(-1, h, w)
    x = _grey255(stack).reshape(y.shape[0], -1, h, w)
    scores = []
    for level in range(n_scales):
        if level:
            x, y = _downsample2(x), _downsample2(y)
        scores.append(score(x, y))
    return scores


@functools.partial(jax.jit, static_argnames=("return_per_scale", "max_chunk_elems"))
def mef_ssim(
    fused: ArrayLike,
    stack: ArrayLike,
    *,
    return_per_scale: bool = False,
    max_chunk_elems: int = 1 << 23,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Multi-scale MEF-SSIM (Ma, Zeng, Wang, IEEE TIP 2015).

    fused: (..., H, W, C) in [0, 1]; stack: (..., K, H, W, C) source exposures in [0, 1]; C is 1
    or 3 (RGB -> grey with BT.601 weights 0.299, 0.587, 0.114, then x255).

    Per 11x11 patch (stride 1, 'valid'): x_k = c_k s_k + mu_k with mu_k the patch mean and
    c_k = ||x_k - mu_k|| + 1e-3 (Euclidean norm; the 1e-3 as in the authors' code);
    c_hat = max_k c_k; s_bar = sum_k w_k s_k / sum_k w_k, w_k = c_k^p, p = tan(pi/2 R) capped at 10,
    R = ||sum_k (x_k - mu_k)|| / sum_k ||x_k - mu_k||; x_hat = c_hat s_bar / ||s_bar|| (0 if
    s_bar = 0). Patch score (2 sigma_{x_hat y} + C) / (sigma_x_hat^2 + sigma_y^2 + C) with
    Gaussian-weighted (sigma 1.5) statistics and C = (0.03 * 255)^2. Scale score = mean patch
    score; 3 scales (2x2 mean + decimation of fused and sources); overall
    prod_l Q_l^{beta_l}, beta = (0.0448, 0.2856, 0.3001) / sum. The smallest scale must be
    >= 11 px (e.g. H, W >= 41). A negative per-scale score gives NaN (as the product is
    undefined). Returns ``(...)``; with ``return_per_scale`` also the ``(..., 3)`` scale scores.
    """
    fused, stack = _mef_inputs(fused, stack, "mef_ssim", "C")
    lead = fused.shape[:-3]
    h, w = fused.shape[-3:-1]
    n_scales = len(_MEF_SCALE_WEIGHTS)
    if -(-min(h, w) // 2 ** (n_scales - 1)) < _MEF_WINDOW:
        raise ValueError(
            f"mef_ssim: image {h}x{w} too small for {n_scales} scales "
            f"with an {_MEF_WINDOW}x{_MEF_WINDOW} window"
        )

    scores = _mef_scale_scores(
        fused, stack, n_scales, lambda x, y: _mef_single_scale(x, y, max_chunk_elems)
    )
    per_scale = jnp.stack(scores, -1)  # (N, 3)
    beta = jnp.asarray(_MEF_SCALE_WEIGHTS, jnp.float32)
    score = jnp.prod(jnp.power(per_scale, beta), axis=-1).reshape(lead)
    if return_per_scale:
        return score, per_scale.reshape(*lead, n_scales)
    return score


# Colour MEF-SSIM: the mean-intensity weights' spreads (global image mean, local patch mean)
# and the luminance constant, on [0, 1] intensities, as in the authors' public MEF-Net code.
_MEF_C_SIGMA_G = 0.2
_MEF_C_SIGMA_L = 0.2
_MEF_C_C1 = (0.01 * 255.0) ** 2


def _mef_c_qmap_strip(src: jax.Array, fused: jax.Array, rows: int, *,
                      global_weight: jax.Array) -> jax.Array:
    """MEF-SSIMc map of ``rows`` rows. src (N, K*C, rows + 10, W) and fused (N, C, rows + 10, W)
    in [0, 255]; global_weight (N, K) = exp(-(mu_k - 0.5)^2 / (2 sigma_g^2))."""
    n, k = global_weight.shape
    c = fused.shape[1]
    cols = src.shape[-1] - _MEF_WINDOW + 1

    def colour_patches(x, lead):  # (N, lead*C, r', W) -> (N, lead, r, c, C*121)
        pt = _patches(x, rows, cols).reshape(n, lead, c, rows, cols, -1)
        return jnp.moveaxis(pt, 2, -2).reshape(n, lead, rows, cols, -1)

    xs = colour_patches(src, k)
    y = colour_patches(fused, 1)[:, 0]
    g1 = _gaussian_1d(_MEF_WINDOW, _MEF_SIGMA)
    g = jnp.asarray(np.tile(np.outer(g1, g1).reshape(-1), c) / c, jnp.float32)
    cs = _mef_structure_contrast(xs, y, g)

    # Desired mean intensity: source patch means weighted by how well exposed the source is,
    # globally (its image mean) and locally (the patch mean), both near mid-grey preferred.
    l_k = jnp.einsum("...p,p->...", xs, g, precision=_HIGHEST)  # (N, K, r, c)
    w_l = jnp.exp(-jnp.square(l_k / 255.0 - 0.5) / (2.0 * _MEF_C_SIGMA_L**2))
    w = global_weight[:, :, None, None] * w_l
    l_hat = jnp.sum(w * l_k, axis=1) / jnp.sum(w, axis=1)
    mu_y = jnp.einsum("...p,p->...", y, g, precision=_HIGHEST)
    lum = (2.0 * mu_y * l_hat + _MEF_C_C1) / (jnp.square(mu_y) + jnp.square(l_hat) + _MEF_C_C1)
    return lum * cs


@functools.partial(jax.jit, static_argnames=("max_chunk_elems",))
def mef_ssim_c(fused: ArrayLike, stack: ArrayLike, *, max_chunk_elems: int = 1 << 23) -> jax.Array:
    """Colour MEF-SSIM, MEF-SSIMc (Ma, Duanmu, Yeganeh, Wang, IEEE TCI 2018), single scale.

    fused: (..., H, W, 3) in [0, 1]; stack: (..., K, H, W, 3). As :func:`mef_ssim` per 11x11
    patch, but on colour patches (the 11x11x3 values of a patch form one vector, so the
    desired contrast and structure are those of the RGB patch) and with a luminance term:
    the desired mean l_hat = sum_k L_k l_k / sum_k L_k of the source patch means l_k
    (Gaussian-weighted), L_k = exp(-(mu_k - 0.5)^2 / (2 sigma_g^2) - (l_k - 0.5)^2 /
    (2 sigma_l^2)) with mu_k the mean of source k, sigma_g = sigma_l = 0.2 (intensities in
    [0, 1]); patch score (2 mu_y l_hat + C1) / (mu_y^2 + l_hat^2 + C1) times the MEF-SSIM
    structure-contrast score, C1 = (0.01 * 255)^2, on [0, 255] values. Unlike the grey index it
    sees a fused image whose colours or brightness drift from the sources'. Returns ``(...)``.
    """
    fused, stack = _mef_inputs(fused, stack, "mef_ssim_c", "3")
    lead = fused.shape[:-3]
    h, w = fused.shape[-3:-1]
    if min(h, w) < _MEF_WINDOW:
        raise ValueError(f"mef_ssim_c: image {h}x{w} smaller than the {_MEF_WINDOW}-px window")
    k = stack.shape[-4]
    y = 255.0 * jnp.clip(fused, 0.0, 1.0).reshape(-1, h, w, 3)
    x = 255.0 * jnp.clip(stack, 0.0, 1.0).reshape(y.shape[0], k, h, w, 3)
    mu = jnp.mean(x, axis=(2, 3, 4)) / 255.0  # (N, K)
    global_weight = jnp.exp(-jnp.square(mu - 0.5) / (2.0 * _MEF_C_SIGMA_G**2))
    src = jnp.moveaxis(x, -1, 2).reshape(y.shape[0], k * 3, h, w)  # channel-major per source
    strip = functools.partial(_mef_c_qmap_strip, global_weight=global_weight)
    score = _mef_single_scale(src, jnp.moveaxis(y, -1, 1), max_chunk_elems, strip)
    return score.reshape(lead)


# CIE L*a*b* of linear sRGB (D65 white; IEC 61966-2-1 primaries), CIE 15:2004.
_SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375],
     [0.2126729, 0.7151522, 0.0721750],
     [0.0193339, 0.1191920, 0.9503041]], np.float64)
_D65 = np.array([0.95047, 1.0, 1.08883], np.float64)


@jax.jit
def srgb_to_lab(rgb: ArrayLike) -> jax.Array:
    """sRGB-encoded (..., 3) in [0, 1] -> CIE L*a*b* (D65), float32."""
    lin = crf_lib.srgb_decode(jnp.asarray(rgb, jnp.float32))
    xyz = jnp.einsum("...c,dc->...d", lin, jnp.asarray(_SRGB_TO_XYZ / _D65[:, None], jnp.float32),
                     precision=_HIGHEST)
    eps, kappa = (6.0 / 29.0) ** 3, (29.0 / 6.0) ** 2 / 3.0
    f = jnp.where(xyz > eps, jnp.cbrt(jnp.maximum(xyz, eps)), kappa * xyz + 4.0 / 29.0)
    return jnp.stack(
        [116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )


@jax.jit
def ciede2000(lab1: ArrayLike, lab2: ArrayLike) -> jax.Array:
    """CIEDE2000 colour difference (Sharma, Wu, Dalal, Color Res. Appl. 2005, eq. 1-17),
    kL = kC = kH = 1: (..., 3) L*a*b* pairs -> (...)."""
    lab1 = jnp.asarray(lab1, jnp.float32)
    lab2 = jnp.asarray(lab2, jnp.float32)
    l1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    l2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]
    c_bar = 0.5 * (jnp.hypot(a1, b1) + jnp.hypot(a2, b2))
    c7 = c_bar**7
    g = 0.5 * (1.0 - jnp.sqrt(c7 / (c7 + 25.0**7)))
    a1p, a2p = (1.0 + g) * a1, (1.0 + g) * a2
    c1p, c2p = jnp.hypot(a1p, b1), jnp.hypot(a2p, b2)
    h1p = jnp.where(c1p == 0, 0.0, jnp.mod(jnp.degrees(jnp.arctan2(b1, a1p)), 360.0))
    h2p = jnp.where(c2p == 0, 0.0, jnp.mod(jnp.degrees(jnp.arctan2(b2, a2p)), 360.0))
    dl = l2 - l1
    dc = c2p - c1p
    dh = h2p - h1p
    dh = jnp.where(dh > 180.0, dh - 360.0, jnp.where(dh < -180.0, dh + 360.0, dh))
    dh = jnp.where(c1p * c2p == 0, 0.0, dh)
    dhh = 2.0 * jnp.sqrt(c1p * c2p) * jnp.sin(jnp.radians(dh) / 2.0)
    lp = 0.5 * (l1 + l2)
    cp = 0.5 * (c1p + c2p)
    hsum = h1p + h2p
    hp = jnp.where(jnp.abs(h1p - h2p) <= 180.0, 0.5 * hsum,
                   jnp.where(hsum < 360.0, 0.5 * (hsum + 360.0), 0.5 * (hsum - 360.0)))
    hp = jnp.where(c1p * c2p == 0, hsum, hp)
    t = (1.0 - 0.17 * jnp.cos(jnp.radians(hp - 30.0)) + 0.24 * jnp.cos(jnp.radians(2.0 * hp))
         + 0.32 * jnp.cos(jnp.radians(3.0 * hp + 6.0)) - 0.20 * jnp.cos(jnp.radians(4.0 * hp - 63.0)))
    d_theta = 30.0 * jnp.exp(-jnp.square((hp - 275.0) / 25.0))
    cp7 = cp**7
    rc = 2.0 * jnp.sqrt(cp7 / (cp7 + 25.0**7))
    sl = 1.0 + 0.015 * jnp.square(lp - 50.0) / jnp.sqrt(20.0 + jnp.square(lp - 50.0))
    sc = 1.0 + 0.045 * cp
    sh = 1.0 + 0.015 * cp * t
    rt = -jnp.sin(jnp.radians(2.0 * d_theta)) * rc
    return jnp.sqrt(jnp.square(dl / sl) + jnp.square(dc / sc) + jnp.square(dhh / sh)
                    + rt * (dc / sc) * (dhh / sh))


@jax.jit
def mean_ciede2000(pred: ArrayLike, ref: ArrayLike) -> jax.Array:
    """Mean CIEDE2000 between two sRGB images (..., H, W, 3) in [0, 1] -> (...)."""
    pred, ref = jnp.asarray(pred, jnp.float32), jnp.asarray(ref, jnp.float32)
    _check_pair(pred, ref, "mean_ciede2000")
    _check_rgb(pred, "mean_ciede2000")
    return jnp.mean(ciede2000(srgb_to_lab(pred), srgb_to_lab(ref)), axis=(-2, -1))


#: A pixel is "bright" when its largest channel exceeds this (display values in [0, 1]).
BRIGHT_THRESHOLD = 0.6


@jax.jit
def bright_saturation(img: ArrayLike, region: ArrayLike | None = None) -> jax.Array:
    """Mean HSV saturation (max - min) / max over the bright pixels, max channel >
    :data:`BRIGHT_THRESHOLD` (or over ``region`` (..., H, W) where given): how colourful the
    bright half of an image is. (..., H, W, 3) -> (...); NaN where no pixel qualifies."""
    img = jnp.asarray(img, jnp.float32)
    _check_rgb(img, "bright_saturation")
    hi, lo = jnp.max(img, axis=-1), jnp.min(img, axis=-1)
    sat = jnp.where(hi > 0, (hi - lo) / jnp.where(hi > 0, hi, 1.0), 0.0)
    sel = hi > BRIGHT_THRESHOLD if region is None else jnp.asarray(region, bool)
    n = jnp.sum(sel, axis=(-2, -1))
    return jnp.where(n > 0, jnp.sum(jnp.where(sel, sat, 0.0), axis=(-2, -1)) / jnp.maximum(n, 1),
                     jnp.nan)


def _mef_qmap_filtered(src: jax.Array, fused: jax.Array) -> jax.Array:
    """The MEF-SSIM quality map of `_mef_qmap_strip` from local moments (no patch tensor).

    Every patch statistic is a bilinear form in the patch pixels, so it is a local mean of a
    product of two images: with U the 11x11 box mean and G the Gaussian-weighted mean,
    sum_p (x_j - mu_j)(x_k - mu_k) = 121 (U(x_j x_k) - U(x_j) U(x_k)), and since x_hat =
    alpha sum_k beta_k (x_k - mu_k) with per-patch scalars alpha = c_hat / ||s_bar||,
    beta_k = w_k / c_k, its Gaussian variance and covariance with y are quadratic forms in
    G(x_j x_k) - G(x_j) G(x_k) and G(x_k y) - G(x_k) G(y). src (N, K, H, W), fused (N, H, W).
    """
    k = src.shape[1]
    imgs = jnp.concatenate([src, fused[:, None]], axis=1)  # (N, K+1, H, W)
    # Centring each image first keeps the E[ab] - E[a]E[b] cancellation small in float32.
    imgs = imgs - jnp.mean(imgs, axis=(-2, -1), keepdims=True)
    pairs = [(a, b) for a in range(k + 1) for b in range(a, k + 1)]
    prods = jnp.stack([imgs[:, a] * imgs[:, b] for a, b in pairs], axis=1)
    stack = jnp.concatenate([imgs, prods], axis=1).transpose(0, 2, 3, 1)  # (N, H, W, M)
    box = _separable_filter(stack, np.full(_MEF_WINDOW, 1.0 / _MEF_WINDOW), "VALID")
    gauss = _separable_filter(stack, _gaussian_1d(_MEF_WINDOW, _MEF_SIGMA), "VALID")
    npix = float(_MEF_WINDOW**2)

    def moment(filt, a, b):  # centred local second moment of images a and b
        ab = filt[..., k + 1 + pairs.index((min(a, b), max(a, b)))]
        return ab - filt[..., a] * filt[..., b]

    uc = jnp.stack(
        [jnp.stack([npix * moment(box, a, b) for b in range(k)], -1) for a in range(k)], -1
    )  # (N, r, c, K, K): sum_p (x_a - mu_a)(x_b - mu_b)
    gc = jnp.stack([jnp.stack([moment(gauss, a, b) for b in range(k)], -1) for a in range(k)], -1)
    gcy = jnp.stack([moment(gauss, a, k) for a in range(k)], -1)  # (N, r, c, K)
    var_y = jnp.maximum(moment(gauss, k, k), 0.0)

    def safe_sqrt(v):  # zero gradient where the moment vanishes (flat or clipped patches)
        v = jnp.maximum(v, 0.0)
        return jnp.where(v > 1e-8, jnp.sqrt(jnp.where(v > 1e-8, v, 1.0)), 0.0)

    norm_k = safe_sqrt(jnp.diagonal(uc, axis1=-2, axis2=-1))  # (N, r, c, K)
    c_k = norm_k + _MEF_CONTRAST_EPS
    c_hat = jnp.max(c_k, axis=-1)
    num = safe_sqrt(jnp.sum(uc, axis=(-2, -1)))
    den = jnp.sum(norm_k, axis=-1)
    r = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 1.0)
    p = jnp.minimum(jnp.tan(0.5 * math.pi * jnp.clip(r, 0.0, _MEF_R_CAP)), _MEF_P_CAP)
    beta = jax.nn.softmax(p[..., None] * jnp.log(c_k), axis=-1) / c_k
    s_norm = safe_sqrt(jnp.einsum("...a,...ab,...b->...", beta, uc, beta, precision=_HIGHEST))
    alpha = jnp.where(s_norm > 0, c_hat / jnp.where(s_norm > 0, s_norm, 1.0), 0.0)
    var_x = alpha**2 * jnp.maximum(
        jnp.einsum("...a,...ab,...b->...", beta, gc, beta, precision=_HIGHEST), 0.0
    )
    cov = alpha * jnp.sum(beta * gcy, axis=-1)
    return (2.0 * cov + _MEF_C) / (var_x + var_y + _MEF_C)


def mef_ssim_filtered(
    fused: ArrayLike, stack: ArrayLike, *, num_scales: int | None = None
) -> jax.Array:
    """MEF-SSIM as :func:`mef_ssim`, computed from local moments: differentiable, memory O(HW).

    For training losses (CF-Net's optional MEF-SSIM term). Agrees with :func:`mef_ssim` to
    ~1e-4 (float32 moments instead of explicit patch vectors). ``num_scales`` (default: as many
    of the 3 as the size allows, at least 1) lets small training patches use fewer scales, the
    weights beta renormalised; negative scale scores are clipped to 1e-6 instead of NaN.
    """
    fused = jnp.asarray(fused, jnp.float32)
    stack = jnp.asarray(stack, jnp.float32)
    if fused.ndim < 3 or stack.shape[:-4] + stack.shape[-3:] != fused.shape:
        raise ValueError(
            f"mef_ssim_filtered: fused (..., H, W, C) {fused.shape} does not match "
            f"stack (..., K, H, W, C) {stack.shape}"
        )
    lead = fused.shape[:-3]
    h, w = fused.shape[-3:-1]
    fit = 0
    while fit < len(_MEF_SCALE_WEIGHTS) and -(-min(h, w) // 2**fit) >= _MEF_WINDOW:
        fit += 1
    n_scales = fit if num_scales is None else int(num_scales)
    if not 1 <= n_scales <= fit:
        raise ValueError(f"mef_ssim_filtered: {h}x{w} allows 1..{fit} scales, got {num_scales}")
    scores = _mef_scale_scores(
        fused, stack, n_scales, lambda x, y: jnp.mean(_mef_qmap_filtered(x, y), axis=(-2, -1))
    )
    per_scale = jnp.maximum(jnp.stack(scores, -1), 1e-6)
    beta = jnp.asarray(_MEF_SCALE_WEIGHTS[:n_scales], jnp.float32)
    beta = beta / jnp.sum(beta)
    return jnp.prod(jnp.power(per_scale, beta), axis=-1).reshape(lead)


# --------------------------------------------------------------------------------------------
# HDR metrics: PU21 (Mantiuk and Azimi 2021), gain alignment, log-PSNR
# --------------------------------------------------------------------------------------------

# 'banding_glare' parameters p1..p7 (Mantiuk and Azimi 2021).
_PU21_P = (
    0.353487901,
    0.3734658629,
    8.277049286e-05,
    0.9062562627,
    0.09150303166,
    0.9099517204,
    596.3148142,
)
_PU21_Y_MIN, _PU21_Y_MAX = 0.005, 10000.0


@jax.jit
def pu21_encode(y: ArrayLike) -> jax.Array:
    """PU21 encoding: V = max(p7 * (((p1 + p2 Y^p4) / (1 + p3 Y^p4))^p5 - p6), 0).

    Y in cd/m^2, clamped to [0.005, 10000]; 100 cd/m^2 -> ~256. Elementwise.
    """
    p1, p2, p3, p4, p5, p6, p7 = _PU21_P
    y = jnp.clip(jnp.asarray(y, jnp.float32), _PU21_Y_MIN, _PU21_Y_MAX)
    yp = jnp.power(y, p4)
    return jnp.maximum(p7 * (jnp.power((p1 + p2 * yp) / (1.0 + p3 * yp), p5) - p6), 0.0)


def _pixel_mask(mask: ArrayLike | None, x: jax.Array, name: str) -> jax.Array | None:
    """Normalise a per-pixel mask to shape (..., H, W) bool."""
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    if mask.shape == x.shape[:-1] + (1,):
        mask = mask[..., 0]
    if mask.shape != x.shape[:-1]:
        raise ValueError(
            f"{name}: mask must have shape {x.shape[:-1]} (or with a trailing 1), got {mask.shape}"
        )
    return mask.astype(bool)


def _masked_median(v: jax.Array, valid: jax.Array) -> jax.Array:
    """Median over the last axis of the entries where ``valid``; 0 where none is valid."""
    n = jnp.sum(valid, axis=-1)
    s = jnp.sort(jnp.where(valid, v, jnp.inf), axis=-1)
    lo = jnp.take_along_axis(s, jnp.maximum((n - 1) // 2, 0)[..., None], -1)[..., 0]
    hi = jnp.take_along_axis(s, jnp.minimum(n // 2, v.shape[-1] - 1)[..., None], -1)[..., 0]
    return jnp.where(n > 0, 0.5 * (lo + hi), 0.0)


def _fit_gain(pred: jax.Array, ref: jax.Array, mask: jax.Array | None) -> jax.Array:
    lp = luminance(pred)[..., 0]
    lr = luminance(ref)[..., 0]
    valid = (lp > 0) & (lr > 0) & jnp.isfinite(lp) & jnp.isfinite(lr)
    if mask is not None:
        valid &= mask
    lead = lp.shape[:-2]
    ratio = jnp.log(jnp.where(valid, lr, 1.0)) - jnp.log(jnp.where(valid, lp, 1.0))
    med = _masked_median(ratio.reshape(*lead, -1), valid.reshape(*lead, -1))
    return jnp.exp(med)


@jax.jit
def align_gain(pred: ArrayLike, ref: ArrayLike, mask: ArrayLike | None = None) -> jax.Array:
    """Scalar gain per image, exp(median(log(lum(ref) / lum(pred)))), so ``gain * pred ~ ref``.

    Luminance is Rec. 709 for RGB (the channel itself for C = 1); only pixels with both
    luminances positive and finite (and inside ``mask``, shape (..., H, W)) count. Returns 1 for
    an image without any such pixel. Shape ``(...)``.
    """
    pred = jnp.asarray(pred, jnp.float32)
    ref = jnp.asarray(ref, jnp.float32)
    _check_pair(pred, ref, "align_gain")
    return _fit_gain(pred, ref, _pixel_mask(mask, pred, "align_gain"))


def _masked_mse(d2: jax.Array, mask: jax.Array | None) -> jax.Array:
    if mask is None:
        return jnp.mean(d2, axis=(-3, -2, -1))
    m = mask[..., None].astype(d2.dtype)
    # An empty mask gives 0/0 = NaN.
    return jnp.sum(d2 * m, axis=(-3, -2, -1)) / (jnp.sum(m, axis=(-3, -2, -1)) * d2.shape[-1])


@functools.partial(jax.jit, static_argnames=("align_gain",))
def pu21_psnr(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    align_gain: bool = True,
    mask: ArrayLike | None = None,
    peak: ArrayLike = 256.0,
) -> jax.Array:
    """PU21-PSNR per image: PSNR with peak 256 between PU21-encoded pred and ref (Mantiuk and Azimi 2021).

    pred/ref: linear RGB or luminance (..., H, W, C) with ref in cd/m^2. With ``align_gain``
    pred is first multiplied by ``align_gain(pred, ref, mask)``. PU21 is applied to every
    channel separately; the MSE runs over the pixels in ``mask`` (all if None) and channels.
    Identical encodings give +inf.
    """
    pred = jnp.asarray(pred, jnp.float32)
    ref = jnp.asarray(ref, jnp.float32)
    _check_pair(pred, ref, "pu21_psnr")
    mask = _pixel_mask(mask, pred, "pu21_psnr")
    if align_gain:
        pred = pred * _fit_gain(pred, ref, mask)[..., None, None, None]
    d2 = jnp.square(pu21_encode(pred) - pu21_encode(ref))
    return _psnr_from_mse(_masked_mse(d2, mask), peak)


@functools.partial(jax.jit, static_argnames=("align_gain",))
def log_psnr(
    pred: ArrayLike, ref: ArrayLike, eps: ArrayLike = 1e-6, *, align_gain: bool = False
) -> jax.Array:
    """PSNR in the log2 domain per image.

    L(x) = log2(max(x, eps)) per channel; peak = max L(ref) - min L(ref) over the image (the
    reference's dynamic range in stops); PSNR = 10 log10(peak^2 / mean((L(pred) - L(ref))^2)).
    With ``align_gain`` pred is first scaled by ``align_gain(pred, ref)``. +inf if equal.
    """
    pred = jnp.asarray(pred, jnp.float32)
    ref = jnp.asarray(ref, jnp.float32)
    _check_pair(pred, ref, "log_psnr")
    if align_gain:
        pred = pred * _fit_gain(pred, ref, None)[..., None, None, None]
    p = jnp.maximum(pred, eps)
    r = jnp.maximum(ref, eps)
    lr = jnp.log2(r)
    peak = jnp.max(lr, axis=(-3, -2, -1)) - jnp.min(lr, axis=(-3, -2, -1))
    # log2 of the ratio, not a difference of logs: exact 0 for equal inputs (XLA may evaluate
    # log2 differently in different fusions) and no cancellation.
    mse = jnp.mean(jnp.square(jnp.log2(p / r)), axis=(-3, -2, -1))
    return 10.0 * jnp.log10(jnp.square(peak) / mse)
