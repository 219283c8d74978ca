"""Tests for hdr_jax.metrics against independent references (scikit-image, SciPy, NumPy loops,
OpenCV's Mertens fusion)."""

from __future__ import annotations

import glob
import math
import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from hdr_jax import metrics as M

HDRI_DIR = "/work/shared/data/hdri"


def _pair(seed: int, shape: tuple[int, ...], noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    b = np.clip(a + noise * rng.standard_normal(shape), 0.0, 1.0)
    return a.astype(np.float32), b.astype(np.float32)


def _sk_ssim(a, b, data_range, **kw):
    kw.setdefault("gaussian_weights", True)
    kw.setdefault("sigma", 1.5)
    return structural_similarity(
        a.astype(np.float64),
        b.astype(np.float64),
        data_range=data_range,
        use_sample_covariance=False,
        **kw,
    )


# ------------------------------------------------------------------------------------------
# PSNR / SSIM
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_psnr_matches_skimage(data_range):
    a, b = _pair(0, (3, 20, 23, 3))
    a, b = a * data_range, b * data_range
    got = np.asarray(M.psnr(a, b, data_range))
    assert got.shape == (3,)
    want = [
        peak_signal_noise_ratio(
            a[i].astype(np.float64), b[i].astype(np.float64), data_range=data_range
        )
        for i in range(3)
    ]
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.asarray(M.psnr(a[0], b[0], data_range)).shape == ()


def test_psnr_identical_is_inf():
    a, _ = _pair(1, (2, 8, 8, 3))
    assert np.all(np.isposinf(np.asarray(M.psnr(a, a))))


@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_ssim_valid_matches_skimage(data_range):
    a, b = _pair(2, (2, 24, 29, 3), noise=0.2)
    a, b = a * data_range, b * data_range
    got = np.asarray(M.ssim(a, b, data_range))
    want = [_sk_ssim(a[i], b[i], data_range, channel_axis=-1) for i in range(2)]
    np.testing.assert_allclose(got, want, atol=1e-4)
    # Per channel: skimage on each channel separately.
    per_c = np.asarray(M.ssim(a, b, data_range, channel_average=False))
    assert per_c.shape == (2, 3)
    want_c = [
        [_sk_ssim(a[i, ..., c], b[i, ..., c], data_range) for c in range(3)] for i in range(2)
    ]
    np.testing.assert_allclose(per_c, want_c, atol=1e-4)


def test_ssim_same_padding_matches_skimage_full_map():
    a, b = _pair(3, (20, 21, 3), noise=0.3)
    _, smap = _sk_ssim(a, b, 1.0, channel_axis=-1, full=True)
    got = float(M.ssim(a, b, 1.0, padding="SAME"))
    np.testing.assert_allclose(got, smap.mean(), atol=1e-4)
    assert abs(got - float(M.ssim(a, b, 1.0))) > 1e-4  # the border positions do count


def test_ssim_uniform_window_matches_skimage():
    a, b = _pair(4, (18, 19, 1), noise=0.2)
    got = float(M.ssim(a, b, 1.0, window=7, gaussian=False))
    want = _sk_ssim(a[..., 0], b[..., 0], 1.0, gaussian_weights=False, win_size=7)
    np.testing.assert_allclose(got, want, atol=1e-4)


def _ssim_scipy(
    x: np.ndarray, y: np.ndarray, window: int, sigma: float, data_range: float
) -> float:
    """Wang et al. 2004 with scipy's 'valid' 2-D correlation; mean over channels and pixels."""
    t = np.arange(window) - window // 2
    k = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma**2))
    k /= k.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    maps = []
    for c in range(x.shape[-1]):
        p, q = x[..., c].astype(np.float64), y[..., c].astype(np.float64)
        f = lambda z: signal.correlate2d(z, k, mode="valid")
        mp, mq = f(p), f(q)
        vp, vq, cpq = f(p * p) - mp**2, f(q * q) - mq**2, f(p * q) - mp * mq
        maps.append((2 * mp * mq + c1) * (2 * cpq + c2) / ((mp**2 + mq**2 + c1) * (vp + vq + c2)))
    return float(np.mean(maps))


def test_ssim_cfnet_loss_config_matches_scipy():
    # CF-Net's public code: window 7, sigma 1.5, K = (0.01, 0.03), data range 255, valid.
    a, b = _pair(5, (2, 16, 18, 3), noise=0.15)
    a, b = 255.0 * a, 255.0 * b
    got = np.asarray(M.ssim(a, b, 255.0, window=7, sigma=1.5))
    want = [_ssim_scipy(a[i], b[i], 7, 1.5, 255.0) for i in range(2)]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_ssim_bad_input_raises():
    a, b = _pair(6, (8, 8, 3))
    with pytest.raises(ValueError, match="same shape"):
        M.ssim(a, b[:7])
    with pytest.raises(ValueError, match="odd"):
        M.ssim(a, b, window=6)
    with pytest.raises(ValueError, match="larger than the image"):
        M.ssim(a, b, window=11)
    with pytest.raises(ValueError, match="padding"):
        M.ssim(a, b, window=3, padding="FULL")


# ------------------------------------------------------------------------------------------
# Y channel, luminance
# ------------------------------------------------------------------------------------------


def test_rgb_to_y_matches_skimage_ycbcr():
    a, _ = _pair(7, (2, 9, 10, 3))
    y = np.asarray(M.rgb_to_y(a))
    assert y.shape == (2, 9, 10, 1)
    want = rgb2ycbcr(a.astype(np.float64))[..., :1] / 255.0
    np.testing.assert_allclose(y, want, atol=1e-6)
    np.testing.assert_allclose(np.asarray(M.rgb_to_y(255.0 * a, 255.0)), 255.0 * want, atol=1e-3)


def test_psnr_y_and_ssim_y_match_skimage():
    a, b = _pair(8, (2, 24, 26, 3))
    ya = rgb2ycbcr(a.astype(np.float64))[..., 0] / 255.0
    yb = rgb2ycbcr(b.astype(np.float64))[..., 0] / 255.0
    got_p = np.asarray(M.psnr_y(a, b, crop_border=2))
    want_p = [
        peak_signal_noise_ratio(ya[i, 2:-2, 2:-2], yb[i, 2:-2, 2:-2], data_range=1.0)
        for i in range(2)
    ]
    np.testing.assert_allclose(got_p, want_p, atol=1e-4)
    got_s = np.asarray(M.ssim_y(a, b))
    want_s = [_sk_ssim(ya[i], yb[i], 1.0) for i in range(2)]
    np.testing.assert_allclose(got_s, want_s, atol=1e-4)


def test_luminance():
    a, _ = _pair(9, (2, 5, 6, 3))
    want = a[..., 0:1] * 0.2126 + a[..., 1:2] * 0.7152 + a[..., 2:3] * 0.0722
    np.testing.assert_allclose(np.asarray(M.luminance(a)), want, rtol=1e-6)
    with pytest.raises(ValueError, match="RGB"):
        M.luminance(np.zeros((4, 4, 4), np.float32))


# ------------------------------------------------------------------------------------------
# MEF-SSIM
# ------------------------------------------------------------------------------------------


def _mef_patch_cs(pk: np.ndarray, yp: np.ndarray, g: np.ndarray, big_c: float) -> float:
    """MEF-SSIM's structure-contrast score of one patch: sources pk (K, P), fused yp (P,),
    window weights g (P,), from the paper's desired-patch construction."""
    xt = pk - pk.mean(axis=1, keepdims=True)
    nrm = np.linalg.norm(xt, axis=1)
    ck = nrm + 1e-3
    r = np.linalg.norm(xt.sum(axis=0)) / nrm.sum() if nrm.sum() > 0 else 1.0
    p = 10.0 if r >= 1.0 else min(math.tan(math.pi / 2 * r), 10.0)
    wk = ck**p
    s_bar = ((wk / ck) @ xt) / wk.sum()
    ns = np.linalg.norm(s_bar)
    x_hat = ck.max() * s_bar / ns if ns > 0 else np.zeros_like(s_bar)
    dx, dy = x_hat - g @ x_hat, yp - g @ yp
    return (2 * g @ (dx * dy) + big_c) / (g @ dx**2 + g @ dy**2 + big_c)


def _mef_ssim_loops(fused: np.ndarray, stack: np.ndarray) -> tuple[float, np.ndarray]:
    """Ma, Zeng, Wang 2015 written from the paper, patch by patch, in float64.

    fused (H, W, 3), stack (K, H, W, 3) in [0, 1]; BT.601 grey x255; conventions of
    hdr_jax.metrics.mef_ssim (c_k = ||x_k - mu_k|| + 1e-3, p capped at 10).
    """
    bt601 = np.array([0.299, 0.587, 0.114])
    y = 255.0 * fused.astype(np.float64) @ bt601
    xs = 255.0 * stack.astype(np.float64) @ bt601
    t = np.arange(11) - 5.0
    g = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.5**2)).ravel()
    g /= g.sum()
    big_c = (0.03 * 255) ** 2

    def down(z):  # MATLAB imfilter(z, ones(2)/4, 'symmetric', 'same'), then z(1:2:end, 1:2:end)
        zp = np.pad(z, ((0, 1), (0, 1)), mode="symmetric")
        return ((zp[:-1, :-1] + zp[1:, :-1] + zp[:-1, 1:] + zp[1:, 1:]) / 4.0)[::2, ::2]

    scores = []
    for level in range(3):
        if level:
            y = down(y)
            xs = np.stack([down(x) for x in xs])
        h, w = y.shape
        q = []
        for i in range(h - 10):
            for j in range(w - 10):
                pk = xs[:, i : i + 11, j : j + 11].reshape(len(xs), -1)
                yp = y[i : i + 11, j : j + 11].ravel()
                q.append(_mef_patch_cs(pk, yp, g, big_c))
        scores.append(np.mean(q))
    scores = np.array(scores)
    beta = np.array([0.0448, 0.2856, 0.3001])
    return float(np.prod(scores ** (beta / beta.sum()))), scores


def _hdr_scene(h: int, w: int, seed: int) -> np.ndarray:
    """Synthetic linear radiance: smooth ~14-stop gradients times texture, slightly tinted."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    stops = 12.0 * xx - 6.0 + 2.0 * np.sin(2 * np.pi * yy)
    stops += 3.0 * np.exp(-((xx - 0.3) ** 2 + (yy - 0.6) ** 2) / 0.01)  # a bright blob
    noise = cv2.GaussianBlur(rng.standard_normal((h, w)), (0, 0), 1.0)
    texture = 1.0 + 0.3 * np.sin(2 * np.pi * 7 * xx) * np.sin(2 * np.pi * 5 * yy) + 0.3 * noise
    lum = 2.0**stops * np.clip(texture, 0.1, None)
    lum[4:20, 26:42] = 0.5  # a flat area: zero contrast in every exposure
    return lum[..., None] * np.array([1.0, 0.9, 0.8])


def _bracket(radiance: np.ndarray, stops=(-3.0, 0.0, 3.0)) -> np.ndarray:
    """Expose around the median luminance, gamma 2.2, clip, 8-bit quantise: (K, H, W, 3)."""
    base = 0.18 / np.median(radiance.mean(-1))
    ldr = [np.clip((radiance * base * 2.0**s) ** (1 / 2.2), 0, 1) for s in stops]
    return (np.round(255 * np.stack(ldr)) / 255).astype(np.float32)


def _mertens(stack: np.ndarray) -> np.ndarray:
    imgs = [cv2.cvtColor(np.round(255 * s).astype(np.uint8), cv2.COLOR_RGB2BGR) for s in stack]
    out = cv2.createMergeMertens().process(imgs)
    return np.clip(cv2.cvtColor(out, cv2.COLOR_BGR2RGB), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def mef_case():
    # 46x45 -> 23x23 -> 12x12: odd sizes exercise the symmetric border of the 2x2 mean filter.
    stacks = np.stack([_bracket(_hdr_scene(46, 45, s)) for s in (0, 1)])  # (2, 3, H, W, 3)
    rng = np.random.default_rng(10)
    fused = np.clip(
        stacks.mean(1) + 0.05 * rng.standard_normal(stacks.shape[:1] + stacks.shape[2:]), 0, 1
    ).astype(np.float32)
    return fused, stacks


def test_mef_ssim_matches_patch_loops(mef_case):
    fused, stacks = mef_case
    # Guards get exercised: clipped highlights, and patches flat in every source.
    assert np.mean(stacks == 1.0) > 0.05 and np.all(
        np.ptp(stacks[:, :, 4:20, 26:42], axis=(2, 3)) == 0
    )
    # Two leading axes (2, 1): per-image outputs keep them.
    got, got_scales = M.mef_ssim(fused[:, None], stacks[:, None], return_per_scale=True)
    assert got.shape == (2, 1) and got_scales.shape == (2, 1, 3)
    got, got_scales = got[:, 0], got_scales[:, 0]
    for i in range(2):
        want, want_scales = _mef_ssim_loops(fused[i], stacks[i])
        np.testing.assert_allclose(np.asarray(got_scales[i]), want_scales, atol=1e-4)
        np.testing.assert_allclose(float(got[i]), want, atol=1e-4)


def test_mef_ssim_batch_and_chunks(mef_case):
    # Jitted results are checked against the loops above; eager mode is checked on the cheaper
    # metrics in test_jit_eager_and_batch_consistency (op-by-op MEF-SSIM takes many seconds).
    fused, stacks = mef_case
    batched = np.asarray(M.mef_ssim(fused[:, None], stacks[:, None]))[:, 0]  # cached compile
    # One unbatched image through the row-chunked path (lax.map, ragged last block).
    single = [float(M.mef_ssim(fused[i], stacks[i], max_chunk_elems=40_000)) for i in range(2)]
    np.testing.assert_allclose(single, batched, atol=1e-6)


def test_mef_ssim_filtered_matches_patch_version_and_has_gradients(mef_case):
    fused, stacks = mef_case  # 3 sources, clipped and flat patches, odd sizes
    want = np.asarray(M.mef_ssim(fused, stacks))
    got = np.asarray(jax.jit(M.mef_ssim_filtered)(fused, stacks))
    np.testing.assert_allclose(got, want, atol=2e-4)
    # Fewer scales for small training patches: one scale equals the finest scale score.
    _, per_scale = M.mef_ssim(fused, stacks, return_per_scale=True)
    one = M.mef_ssim_filtered(fused, stacks, num_scales=1)
    np.testing.assert_allclose(np.asarray(one), np.asarray(per_scale[:, 0]), atol=2e-4)
    with pytest.raises(ValueError, match="allows 1..3 scales"):
        M.mef_ssim_filtered(fused, stacks, num_scales=4)
    grad = jax.grad(lambda f: jnp.sum(M.mef_ssim_filtered(f, stacks)))(jnp.asarray(fused))
    assert np.all(np.isfinite(np.asarray(grad))) and float(jnp.abs(grad).max()) > 0
    # Moving the fused image towards the better-scoring sources' structure raises the score.
    step = np.asarray(M.mef_ssim_filtered(fused + 20.0 * np.asarray(grad), stacks))
    assert np.all(step > got), (step, got)


def test_mef_ssim_identical_stack_is_one(mef_case):
    fused, _ = mef_case
    stacks = np.repeat(fused[:, None, None], 3, axis=2)  # (2, 1, 3, H, W, C): cached compile
    np.testing.assert_allclose(np.asarray(M.mef_ssim(fused[:, None], stacks)), 1.0, atol=1e-5)


def test_mef_ssim_mertens_beats_flat_grey_synthetic():
    stack = _bracket(_hdr_scene(64, 64, 3))
    fused = _mertens(stack)
    flat = np.full_like(fused, 0.5)
    s_mertens, s_flat = (float(M.mef_ssim(f, stack)) for f in (fused, flat))
    assert s_mertens > 0.85, s_mertens
    assert s_flat < s_mertens - 0.3, (s_flat, s_mertens)


def _read_exr(path: str) -> np.ndarray:
    import OpenEXR

    with OpenEXR.File(path) as f:
        ch = f.channels()
        rgb = ch["RGB"].pixels if "RGB" in ch else np.stack([ch[c].pixels for c in "RGB"], -1)
    return np.maximum(np.asarray(rgb, np.float32), 0.0)


def test_mef_ssim_mertens_beats_flat_grey_real():
    files = sorted(glob.glob(os.path.join(HDRI_DIR, "*.exr")))
    if not files:
        pytest.skip(f"no real HDR images in {HDRI_DIR}")
    rad = _read_exr(
        next(p for p in files if "sunset" in p) if any("sunset" in p for p in files) else files[0]
    )
    # 4x4 box-downsampled centre crop, 64x96.
    h, w = rad.shape[:2]
    crop = rad[h // 2 - 128 : h // 2 + 128, w // 2 - 192 : w // 2 + 192]
    crop = crop.reshape(64, 4, 96, 4, 3).mean((1, 3))
    stack = _bracket(crop)
    fused = _mertens(stack)
    s_mertens = float(M.mef_ssim(fused, stack))
    s_flat = float(M.mef_ssim(np.full_like(fused, 0.5), stack))
    assert s_mertens > 0.8 and s_flat < s_mertens - 0.2, (s_mertens, s_flat)


def test_mef_ssim_bad_input_raises():
    with pytest.raises(ValueError, match="too small"):
        M.mef_ssim(np.zeros((40, 48, 3)), np.zeros((2, 40, 48, 3)))
    with pytest.raises(ValueError, match="does not match"):
        M.mef_ssim(np.zeros((48, 48, 3)), np.zeros((2, 48, 47, 3)))


# ------------------------------------------------------------------------------------------
# PU21, gain alignment, log-PSNR
# ------------------------------------------------------------------------------------------

PU21 = (
    0.353487901,
    0.3734658629,
    8.277049286e-05,
    0.9062562627,
    0.09150303166,
    0.9099517204,
    596.3148142,
)


def _pu21_np(y: np.ndarray) -> np.ndarray:
    p1, p2, p3, p4, p5, p6, p7 = PU21
    y = np.clip(np.asarray(y, np.float64), 0.005, 10000.0)
    return np.maximum(p7 * (((p1 + p2 * y**p4) / (1 + p3 * y**p4)) ** p5 - p6), 0.0)


def _hdr_pair(seed: int, shape=(2, 12, 13, 3)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = 10.0 ** rng.uniform(-2.5, 3.7, shape)
    pred = ref * np.exp(0.3 * rng.standard_normal(shape))
    return pred.astype(np.float32), ref.astype(np.float32)


def test_pu21_encode_values_monotone_and_clamped():
    assert abs(float(M.pu21_encode(100.0)) - 256.0) < 0.01 * 256.0
    grid = np.logspace(np.log10(0.005), 4, 300)
    v = np.asarray(M.pu21_encode(grid))
    assert np.all(np.diff(v) > 0)
    np.testing.assert_allclose(v, _pu21_np(grid), rtol=1e-5, atol=1e-4)
    lo = np.asarray(M.pu21_encode(np.array([-1.0, 0.0, 1e-4, 0.005])))
    hi = np.asarray(M.pu21_encode(np.array([1e4, 2e4, 1e6])))
    assert np.all(lo == lo[-1]) and np.all(hi == hi[0])


def test_align_gain_is_median_log_ratio():
    pred, ref = _hdr_pair(11)
    np.testing.assert_allclose(np.asarray(M.align_gain(ref / 3.0, ref)), 3.0, rtol=1e-5)
    lum = lambda x: x @ np.array([0.2126, 0.7152, 0.0722])
    mask = np.random.default_rng(12).random(pred.shape[:-1]) < 0.5
    got = np.asarray(M.align_gain(pred, ref, mask))
    for i in range(2):
        ratio = np.log(lum(ref[i].astype(np.float64)) / lum(pred[i].astype(np.float64)))
        want = np.exp(np.median(ratio[mask[i]]))  # np.median averages the middle pair if even
        np.testing.assert_allclose(got[i], want, rtol=1e-5)
    # No usable pixel -> gain 1.
    np.testing.assert_allclose(np.asarray(M.align_gain(np.zeros_like(ref), ref)), 1.0)


def test_pu21_psnr_matches_numpy_with_mask():
    pred, ref = _hdr_pair(13)
    mask = np.random.default_rng(14).random(pred.shape[:-1]) < 0.6
    gain = np.asarray(M.align_gain(pred, ref, mask), np.float64)
    got = np.asarray(M.pu21_psnr(pred, ref, mask=mask))
    got_nogain = np.asarray(M.pu21_psnr(pred, ref, align_gain=False))
    for i in range(2):
        d = _pu21_np(gain[i] * pred[i]) - _pu21_np(ref[i])
        want = 10 * np.log10(256.0**2 / np.mean(d[mask[i]] ** 2))
        np.testing.assert_allclose(got[i], want, atol=1e-3)
        d0 = _pu21_np(pred[i]) - _pu21_np(ref[i])
        np.testing.assert_allclose(
            got_nogain[i], 10 * np.log10(256.0**2 / np.mean(d0**2)), atol=1e-3
        )


def test_pu21_psnr_gain_invariance_and_identity():
    pred, ref = _hdr_pair(15)
    base = np.asarray(M.pu21_psnr(pred, ref))
    np.testing.assert_allclose(np.asarray(M.pu21_psnr(37.0 * pred, ref)), base, atol=1e-3)
    np.testing.assert_allclose(np.asarray(M.pu21_psnr(0.02 * pred, ref)), base, atol=1e-3)
    assert np.all(np.asarray(M.pu21_psnr(37.0 * pred, ref, align_gain=False)) < base - 1.0)
    # Identical inputs (with or without gain fit) -> +inf.
    assert np.all(np.isposinf(np.asarray(M.pu21_psnr(ref, ref))))
    assert np.all(np.isposinf(np.asarray(M.pu21_psnr(ref, ref, align_gain=False))))
    # Luminance-only input works too.
    lum = np.asarray(M.luminance(ref))
    assert np.all(np.isposinf(np.asarray(M.pu21_psnr(4.0 * lum, lum))))


def test_log_psnr_matches_numpy():
    pred, ref = _hdr_pair(16)
    pred[0, 0, 0, 0] = 0.0  # exercises the eps floor
    eps = 1e-4
    got = np.asarray(M.log_psnr(pred, ref, eps))
    for i in range(2):
        lp = np.log2(np.maximum(pred[i].astype(np.float64), eps))
        lr = np.log2(np.maximum(ref[i].astype(np.float64), eps))
        want = 10 * np.log10((lr.max() - lr.min()) ** 2 / np.mean((lp - lr) ** 2))
        np.testing.assert_allclose(got[i], want, atol=1e-3)
    assert np.all(np.isposinf(np.asarray(M.log_psnr(ref, ref))))
    np.testing.assert_allclose(
        np.asarray(M.log_psnr(5.0 * pred, ref, eps, align_gain=True)),
        np.asarray(M.log_psnr(pred, ref, eps, align_gain=True)),
        atol=1e-2,
    )


# ------------------------------------------------------------------------------------------
# jit vs eager, batch vs per image
# ------------------------------------------------------------------------------------------


def test_jit_eager_and_batch_consistency():
    a, b = _pair(17, (2, 16, 17, 3))
    pred, ref = _hdr_pair(18, (2, 16, 17, 3))
    fns = {
        "psnr": lambda x, y: M.psnr(x, y),
        "ssim": lambda x, y: M.ssim(x, y, window=7),
        "ssim_y": lambda x, y: M.ssim_y(x, y),
        "psnr_y": lambda x, y: M.psnr_y(x, y),
    }
    hdr_fns = {
        "pu21_psnr": lambda x, y: M.pu21_psnr(x, y),
        "log_psnr": lambda x, y: M.log_psnr(x, y),
        "align_gain": lambda x, y: M.align_gain(x, y),
    }
    for name, (fn, x, y) in {
        **{k: (f, a, b) for k, f in fns.items()},
        **{k: (f, pred, ref) for k, f in hdr_fns.items()},
    }.items():
        batched = np.asarray(fn(x, y))
        assert batched.shape == (2,), name
        with jax.disable_jit():
            eager = np.asarray(fn(x, y))
        np.testing.assert_allclose(eager, batched, rtol=1e-5, atol=1e-5, err_msg=name)
        single = [float(fn(x[i], y[i])) for i in range(2)]
        np.testing.assert_allclose(single, batched, rtol=1e-5, atol=1e-5, err_msg=name)
        if name in ("ssim", "pu21_psnr"):
            nested = np.asarray(fn(x.reshape(1, 2, *x.shape[1:]), y.reshape(1, 2, *y.shape[1:])))
            np.testing.assert_allclose(nested[0], batched, rtol=1e-5, atol=1e-5, err_msg=name)


# --------------------------------------------------------------------------------------------
# Colour metrics
# --------------------------------------------------------------------------------------------


def _mef_ssim_c_loops(fused: np.ndarray, stack: np.ndarray) -> float:
    """MEF-SSIMc (Ma, Duanmu, Yeganeh, Wang 2018) written from its definition, patch by patch,
    in float64: colour 11x11x3 patches as vectors, MEF-SSIM's desired contrast and structure,
    and the luminance term of the exposedness-weighted mean (sigma_g = sigma_l = 0.2)."""
    y = 255.0 * fused.astype(np.float64)
    xs = 255.0 * stack.astype(np.float64)
    t = np.arange(11) - 5.0
    g2 = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.5**2))
    g = np.repeat((g2 / g2.sum())[..., None], 3, axis=-1).ravel() / 3.0  # over (11, 11, 3)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_glob = xs.mean(axis=(1, 2, 3)) / 255.0
    h, w = y.shape[:2]
    q = []
    for i in range(h - 10):
        for j in range(w - 10):
            pk = xs[:, i : i + 11, j : j + 11, :].reshape(len(xs), -1)
            yp = y[i : i + 11, j : j + 11, :].ravel()
            cs = _mef_patch_cs(pk, yp, g, c2)
            lk = pk @ g
            wl = np.exp(-((mu_glob - 0.5) ** 2) / 0.08 - ((lk / 255 - 0.5) ** 2) / 0.08)
            l_hat = wl @ lk / wl.sum()
            mu_y = g @ yp
            q.append(cs * (2 * mu_y * l_hat + c1) / (mu_y**2 + l_hat**2 + c1))
    return float(np.mean(q))


def test_mef_ssim_c_matches_patch_loops_and_chunks(mef_case):
    fused, stacks = mef_case
    fused, stacks = fused[:, :22, :21], stacks[:, :, :22, :21]  # clipped and flat areas kept
    got = np.asarray(M.mef_ssim_c(fused, stacks))
    assert got.shape == (2,)
    for i in range(2):
        np.testing.assert_allclose(got[i], _mef_ssim_c_loops(fused[i], stacks[i]), atol=1e-4)
    # Row blocks (bounded memory) give the same score.
    np.testing.assert_allclose(np.asarray(M.mef_ssim_c(fused, stacks, max_chunk_elems=5000)),
                               got, atol=1e-6)


def test_mef_ssim_c_sees_colour_that_grey_mef_ssim_cannot(mef_case):
    """A fused image replaced by its own grey (same BT.601 grey, no colour) keeps the grey
    MEF-SSIM exactly but loses MEF-SSIMc; so does one shifted in brightness."""
    _, stacks = mef_case
    tint = np.array([1.0, 0.55, 0.25], np.float32)  # strongly coloured scene
    stacks = np.clip(stacks * tint, 0, 1).astype(np.float32)
    fused = stacks.mean(1)
    grey = np.repeat((fused @ np.array([0.299, 0.587, 0.114], np.float32))[..., None], 3, -1)
    a, b = np.asarray(M.mef_ssim(fused, stacks)), np.asarray(M.mef_ssim(grey, stacks))
    np.testing.assert_allclose(a, b, atol=1e-5)
    ca, cb = np.asarray(M.mef_ssim_c(fused, stacks)), np.asarray(M.mef_ssim_c(grey, stacks))
    assert np.all(cb < ca - 0.05), (ca, cb)
    dark = np.asarray(M.mef_ssim_c(0.5 * fused, stacks))
    assert np.all(dark < ca - 0.02), (ca, dark)


def test_mef_ssim_c_bad_input_raises():
    with pytest.raises(ValueError, match="expected fused"):
        M.mef_ssim_c(np.zeros((16, 16, 1)), np.zeros((2, 16, 16, 1)))
    with pytest.raises(ValueError, match="smaller than"):
        M.mef_ssim_c(np.zeros((8, 16, 3)), np.zeros((2, 8, 16, 3)))


def test_lab_and_ciede2000_match_scikit_image():
    from skimage.color import deltaE_ciede2000, rgb2lab

    rng = np.random.default_rng(3)
    rgb = rng.uniform(0, 1, (2, 17, 19, 3))
    lab = np.asarray(M.srgb_to_lab(rgb.astype(np.float32)))
    # scikit-image rounds the sRGB -> XYZ matrix to 6 digits (IEC 61966-2-1's printed values):
    # up to ~0.005 L*a*b* units apart.
    np.testing.assert_allclose(lab, rgb2lab(rgb), atol=1e-2)
    # Random pairs, identical pairs, grey (zero-chroma) pairs and near-opposite hues.
    lab1, lab2 = rgb2lab(rgb[0]), rgb2lab(rgb[1])
    lab2[0, :3] = lab1[0, :3]
    lab1[1, :4, 1:] = 0.0
    lab2[2, :4, 1] = -lab1[2, :4, 1]
    got = np.asarray(M.ciede2000(lab1.astype(np.float32), lab2.astype(np.float32)))
    np.testing.assert_allclose(got, deltaE_ciede2000(lab1, lab2), atol=2e-3)
    assert np.all(got[0, :3] == 0)
    mean = float(M.mean_ciede2000(rgb[0].astype(np.float32), rgb[1].astype(np.float32)))
    np.testing.assert_allclose(mean, deltaE_ciede2000(rgb2lab(rgb[0]), rgb2lab(rgb[1])).mean(),
                               rtol=1e-4)


def test_bright_saturation_matches_hsv():
    from skimage.color import rgb2hsv

    rng = np.random.default_rng(4)
    img = rng.uniform(0, 1, (2, 12, 13, 3)).astype(np.float32)
    got = np.asarray(M.bright_saturation(img))
    for i in range(2):
        hsv = rgb2hsv(img[i])
        sel = hsv[..., 2] > M.BRIGHT_THRESHOLD
        np.testing.assert_allclose(got[i], hsv[..., 1][sel].mean(), rtol=1e-5)
    region = np.zeros((2, 12, 13), bool)
    region[:, :3] = True
    got = np.asarray(M.bright_saturation(img, region))
    np.testing.assert_allclose(got[1], rgb2hsv(img[1])[:3, :, 1].mean(), rtol=1e-5)
    assert np.isnan(float(M.bright_saturation(np.zeros((4, 4, 3), np.float32))))
