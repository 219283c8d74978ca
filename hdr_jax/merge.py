"""Merging a generated exposure stack into an HDR radiance map (DrTMO inference, Endo et al. 2017).

Stack layout: (D, H, W, 3) with D = 2N + 1 exposures ordered dark to bright,
[d_N .. d_1, input, u_1 .. u_N], relative exposure times tau^i for i = -N..N (input at dt = 1).

Output scale convention: radiance is expressed so that the *input* exposure (dt = 1) maps back to
itself through the response, i.e. a mid-grey pixel of the input keeps its linearised value.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage

from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera.exposure import TAU, exposure_times

MONOTONICITY_THRESHOLD = 64.0 / 255.0
#: merge_anchored's (low, high): estimate from the first exposure whose brightest channel is
#: below low; an input channel at or above high is clipped.
ANCHORED_THRESHOLDS = (250.0 / 255.0, 254.0 / 255.0)


#: OpenCV's default Mertens weight exponents (contrast, saturation, well-exposedness): note
#: that its well-exposedness measure is off by default.
MERTENS_WEIGHTS = (1.0, 1.0, 0.0)


def mertens_fusion(images, weights: tuple[float, float, float] = MERTENS_WEIGHTS) -> np.ndarray:
    """Mertens exposure fusion (Mertens, Kautz, Van Reeth 2007; OpenCV) of 8-bit RGB images
    (uint8, HWC) with (contrast, saturation, well-exposedness) weight exponents (default:
    OpenCV's) -> float32 RGB, about [0, 1] (unclipped). One OpenCV thread: the threaded fusion sums its pyramids in a
    varying order, so the same input gave results that differ from call to call."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        fused = cv2.createMergeMertens(*weights).process(
            [np.ascontiguousarray(np.asarray(im, np.uint8)[..., ::-1]) for im in images]
        )
    finally:
        cv2.setNumThreads(threads)
    return np.ascontiguousarray(fused[..., ::-1], dtype=np.float32)


def select_monotone(
    stack: np.ndarray, input_index: int, threshold: float = MONOTONICITY_THRESHOLD
) -> tuple[int, int]:
    """DrTMO's selection: walk outward from the input and stop at the first generated image that
    breaks monotonicity by more than `threshold` at any pixel (a brighter exposure darker than its
    darker neighbour, or the reverse). Returns the kept index range [lo, hi] (inclusive)."""
    hi = input_index
    while hi + 1 < len(stack) and not np.any(stack[hi + 1] < stack[hi] - threshold):
        hi += 1
    lo = input_index
    while lo - 1 >= 0 and not np.any(stack[lo - 1] > stack[lo] + threshold):
        lo -= 1
    return lo, hi


def merge_debevec_linear(images: np.ndarray, times: Sequence[float]) -> np.ndarray:
    """The public code's merge: OpenCV's Debevec merge with no response curve (linear response,
    triangle weights averaged over channels, log-domain weighted mean)."""
    ldr = [
        cv2.cvtColor(np.clip(np.rint(im * 255.0), 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
        for im in images
    ]
    hdr = cv2.createMergeDebevec().process(ldr, np.asarray(times, np.float32))
    return cv2.cvtColor(hdr, cv2.COLOR_BGR2RGB).astype(np.float32)


def _hat_weight(z: np.ndarray, low: float, high: float) -> np.ndarray:
    """Smooth weight on [low, high]: 0 at the ends (noise floor / clipping), 1 in the middle."""
    t = np.clip((z - low) / (high - low), 0.0, 1.0)
    return np.sin(np.pi * t) ** 2


def merge_robust(
    images: np.ndarray,
    times: Sequence[float],
    curve: np.ndarray | None = None,
    *,
    low: float = 0.02,
    high: float = 0.97,
) -> np.ndarray:
    """Our default merge: linearise each exposure with the known inverse response, divide by its
    exposure time, and average with weights that vanish near the noise floor and near clipping.

    The weight of a pixel is the minimum over its channels, so a pixel with one clipped channel is
    not used for any channel (that avoids the hue shifts of per-channel weights). Pixels that no
    exposure sees well fall back to the darkest exposure (if bright) or the brightest (if dark),
    which bounds the estimate instead of leaving holes.
    """
    images = np.asarray(images, np.float32)
    times = np.asarray(times, np.float32)
    curve = crf_lib.srgb_crf() if curve is None else curve
    linear = crf_lib.apply_inverse_crf(curve, images)
    radiance = linear / times[:, None, None, None]
    w = _hat_weight(images, low, high).min(axis=-1, keepdims=True)
    wsum = w.sum(axis=0)
    merged = (w * radiance).sum(axis=0) / np.maximum(wsum, 1e-8)
    darkest = radiance[int(np.argmin(times))]
    brightest = radiance[int(np.argmax(times))]
    mean_level = images.mean(axis=(0, -1))[..., None]
    fallback = np.where(mean_level > 0.5, darkest, brightest)
    # Blend towards the fallback where the total weight is small, continuously.
    alpha = np.clip(wsum / 1e-2, 0.0, 1.0)
    return np.maximum(alpha * merged + (1 - alpha) * fallback, 0.0).astype(np.float32)


def _anchored_block(
    images: np.ndarray,
    times: Sequence[float],
    input_index: int,
    curve: np.ndarray,
    low: float,
    high: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`merge_anchored` of one block with every fully clipped pixel still at its own
    estimate (level 1). Returns (hdr, level (H, W, 1), informative (H, W), fully clipped (H, W))."""
    images = np.asarray(images, np.float32)
    times = np.asarray(times, np.float32)
    down = images[: input_index + 1][::-1]  # input first, then darker and darker
    lin_input = crf_lib.apply_inverse_crf(curve, down[0])
    ok = down.max(axis=-1) < low  # (k, H, W)
    first = np.where(ok.any(axis=0), np.argmax(ok, axis=0), len(down) - 1)
    z = np.take_along_axis(down, first[None, ..., None], axis=0)[0]
    t = times[: input_index + 1][::-1][first][..., None]
    estimate = np.maximum(crf_lib.apply_inverse_crf(curve, z) / t, lin_input)
    clipped = down[0] >= high
    # Level of the estimate relative to the photo: the mean ratio over the pixel's measured
    # channels (<= 1, as the estimate is never below the input); 1 where none is measured.
    ratio = lin_input / np.maximum(estimate, 1e-12)
    measured = (~clipped).sum(axis=-1, keepdims=True)
    level = np.where(
        measured > 0,
        np.where(clipped, 0.0, ratio).sum(axis=-1, keepdims=True) / np.maximum(measured, 1),
        1.0,
    ).astype(np.float32)
    # Pixels whose level says something about the network: a measured channel to compare with,
    # and an estimate that came from a generated exposure (brightest channel >= low).
    informative = (measured[..., 0] > 0) & (first > 0)
    hdr = np.where(clipped, np.maximum(estimate * level, lin_input), lin_input)
    return hdr.astype(np.float32), level, informative, clipped.all(axis=-1)


def fill_levels(
    level: np.ndarray, informative: np.ndarray, fully_clipped: np.ndarray
) -> np.ndarray:
    """The level of each fully clipped pixel taken from the nearest informative pixel (Euclidean);
    1 where the image has no informative pixel. level: (H, W, 1); masks: (H, W)."""
    if not fully_clipped.any() or not informative.any():
        return level
    iy, ix = ndimage.distance_transform_edt(
        ~informative, return_distances=False, return_indices=True
    )
    return np.where(fully_clipped[..., None], level[iy, ix], level).astype(np.float32)


def _spread_levels(
    hdr: np.ndarray,
    level: np.ndarray,
    informative: np.ndarray,
    fully_clipped: np.ndarray,
    image: np.ndarray,
    curve: np.ndarray,
) -> np.ndarray:
    """Scales the fully clipped pixels of `hdr` (at their own estimate) by :func:`fill_levels`,
    never below the linearised input `image`; in place, in row blocks (bounded temporaries)."""
    if not fully_clipped.any() or not informative.any():
        return hdr
    level = fill_levels(level, informative, fully_clipped)
    rows = max(1, MERGE_BLOCK_PIXELS // max(hdr.shape[1], 1))
    for r in range(0, len(hdr), rows):
        sel, out = fully_clipped[r : r + rows], hdr[r : r + rows]
        if sel.any():
            lin = crf_lib.apply_inverse_crf(curve, np.asarray(image[r : r + rows], np.float32)[sel])
            out[sel] = np.maximum(out[sel] * level[r : r + rows][sel], lin)
    return hdr


def merge_anchored(
    images: np.ndarray,
    times: Sequence[float],
    input_index: int,
    curve: np.ndarray | None = None,
    *,
    low: float = ANCHORED_THRESHOLDS[0],
    high: float = ANCHORED_THRESHOLDS[1],
) -> np.ndarray:
    """Input-anchored merge (the pipeline's default): the linearised input photo in every channel
    it measured, generated exposures only in the channels it clipped.

    The input is the one exposure that was measured; every other image of the stack is a network
    prediction made from it. So every input channel below `high` keeps its linear value. A
    clipped channel takes the radiance of the least-darkened generated exposure in which the
    pixel's brightest channel is below `low` (the smallest extrapolation from the photo; the
    darkest exposure if none is), times a level: the mean ratio photo / estimate over the
    pixel's measured channels, so the network supplies the colour ratios and the photo the
    level. A pixel clipped in every channel has nothing to compare with and takes the level of
    the nearest bright pixel that does (:func:`fill_levels`): where the network over-estimates a
    highlight's surroundings it is not trusted inside it either. Never below the input's value.
    """
    curve = crf_lib.srgb_crf() if curve is None else curve
    hdr, level, informative, fully = _anchored_block(images, times, input_index, curve, low, high)
    image = np.asarray(images)[input_index]
    return _spread_levels(hdr, level, informative, fully, image, curve)


#: Pixels merged at a time by merge_stack (bounds its temporary memory).
MERGE_BLOCK_PIXELS = 1 << 20
MERGE_METHODS = ("anchored", "robust", "debevec")


def merge_stack(
    stack: np.ndarray,
    *,
    method: str = "robust",
    tau: float = TAU,
    curve: np.ndarray | None = None,
    select: bool = True,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Selects the monotone part of a (2N+1, H, W, 3) stack and merges it. Returns (hdr, (lo, hi))."""
    n = (len(stack) - 1) // 2
    lo, hi = select_monotone(stack, n) if select else (0, len(stack) - 1)
    times = exposure_times(2 * n, tau)[lo : hi + 1]
    if method not in MERGE_METHODS:
        raise ValueError(f"merge method must be one of {MERGE_METHODS}, got {method!r}")
    # The merges are per pixel (the anchored one then spreads levels over the whole image), so
    # row blocks give the same result with bounded temporaries (the float32 intermediates of a
    # whole 12-MP stack would take several GB).
    h, w = stack.shape[1:3]
    rows = max(1, MERGE_BLOCK_PIXELS // max(w, 1))
    hdr = np.empty((h, w, 3), np.float32)
    if method == "anchored":
        curve = crf_lib.srgb_crf() if curve is None else curve
        # Fully clipped pixels take the level of their nearest informative pixel anywhere in the
        # image, so the blocks' levels are gathered and spread once all blocks are merged.
        level = np.empty((h, w, 1), np.float32)
        informative = np.empty((h, w), bool)
        fully_clipped = np.empty((h, w), bool)
        for r in range(0, h, rows):
            block = slice(r, r + rows)
            hdr[block], level[block], informative[block], fully_clipped[block] = _anchored_block(
                stack[lo : hi + 1, block], times, n - lo, curve, *ANCHORED_THRESHOLDS
            )
        return _spread_levels(hdr, level, informative, fully_clipped, stack[n], curve), (lo, hi)
    for r in range(0, h, rows):
        images = stack[lo : hi + 1, r : r + rows]
        if method == "robust":
            hdr[r : r + rows] = merge_robust(images, times, curve)
        else:
            hdr[r : r + rows] = merge_debevec_linear(images, times)
    return hdr, (lo, hi)
