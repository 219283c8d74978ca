"""How far above the clip level a photo's clipped highlights lie: a per-photo highlight lift.

Below the clip a photo says how bright the scene is; above it nothing does pixel by pixel, and
the anchored merge leaves clipped pixels close to the clip level. Statistics of the whole photo
carry a weak cue: how much of it clipped (how far the exposure pushed the scene past the clip),
whether clipped regions have every channel or only one at the clip (a saturated colour is
usually close to the clip), how many pixels crowd just below it, and the clip-level estimate (a
shoulder that bends the curve down has already brightened the clipped values).
:class:`LevelNet` maps them (:func:`photo_features`) to one log2 lift lambda, and :func:`lift`
raises the HDR's clipped pixels by 2^(lambda w), where the per-channel weight w
(:func:`lift_weight`) rises with the code above :data:`RAMP_CODE` (a channel that did not clip
keeps most of its value), with the distance from the border of the clipped region (no step
where a clipped region meets its unclipped surround) and with how much darker that surround is
than the clip (:func:`border_gate`: a region whose surround sits at the clip continues a smooth
gradient and is barely clipped; one bordered by much darker pixels is a source with an edge).

The network is a linear model over standardised features (the standardisation is part of its
config), fitted to the HDR protocol's PU21 error on the clipped pixels of rendered training
views (``experiments/fit_level.py``); lambda is bounded to [:data:`LOWEST`, :data:`HIGHEST`].
The same model is fitted twice: on the pipeline's blind linearisation (network ``level``, for a
photo of an unknown camera, whose lift also makes up for part of the linearisation's error) and
on the photo linearised with its camera's true response (``level_known``, used when the user
gives the response; its clip-level feature is 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from scipy import optimize

from hdr_jax.camera import crf as crf_lib
from hdr_jax.eval import protocol

#: Names of :func:`photo_features`, in order.
FEATURES = ("clip_level", "log_clipped", "all_channels", "one_channel", "log_near_clip")
#: Code from which a channel's lift weight rises linearly to 1 at the clip.
RAMP_CODE = 0.9
#: Distance (px at :data:`LIFT_SIDE`) over which the lift weight rises from a region's border.
RAMP_DISTANCE = 3.0
#: Short side (px) that :data:`RAMP_DISTANCE` is measured at (the protocol's view size).
LIFT_SIDE = 256
#: Bounds of the log2 lift.
LOWEST, HIGHEST = -1.0, 6.0
#: Luminance (inverse sRGB) from which a pixel counts as near the clip in ``log_near_clip``.
NEAR_CLIP = 0.95
#: Floor of the fractions whose log is a feature (a photo without such pixels).
_FLOOR = 1e-4
#: The grid of log2 lifts scores are tabulated on for fitting (the lift's bounds).
GRID = np.arange(LOWEST, HIGHEST + 1e-6, 0.25)


def photo_features(image: np.ndarray, clip_level: float) -> np.ndarray:
    """(len(FEATURES),) float32 statistics of one photo (H, W, 3) in [0, 1] with its
    clip-level estimate k (:mod:`hdr_jax.models.cliplevel`; 0 without one): k, log of the
    fraction of clipped pixels (:func:`protocol.clipped_mask`), the fractions of clipped pixels
    with every channel and with exactly one channel at the clip, log of the fraction of pixels
    whose inverse-sRGB luminance is at least :data:`NEAR_CLIP`."""
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"photo_features: expected an (H, W, 3) photo, got {image.shape}")
    at_clip = image >= protocol.CLIP_LEVEL - 1e-6
    clipped = at_clip.any(-1)
    n = at_clip[clipped].sum(-1)
    # Luminance is at most the brightest channel, so only pixels whose brightest code decodes
    # above NEAR_CLIP can count: decode those alone (a 12-MP photo decoded whole takes seconds).
    bright = image[image.max(-1) >= crf_lib.srgb_encode(np.float32(NEAR_CLIP)) - 1e-3]
    lum = crf_lib.luminance(crf_lib.apply_inverse_crf(crf_lib.srgb_crf(), bright))
    return np.array([
        clip_level,
        np.log(max(float(clipped.mean()), _FLOOR)),
        float(np.mean(n == 3)) if n.size else 0.0,
        float(np.mean(n == 1)) if n.size else 0.0,
        np.log(max(float(np.sum(lum >= NEAR_CLIP)) / clipped.size, _FLOOR)),
    ], np.float32)


class LevelNet(nn.Module):
    """(N, F) :func:`photo_features` -> (N,) log2 lift: a linear map of the features
    standardised with ``mean`` and ``scale`` (the fitting set's), bounded to [LOWEST, HIGHEST].
    The weights start at zero and the bias at ``bias_init``."""

    mean: Sequence[float]
    scale: Sequence[float]
    bias_init: float = 0.0

    @nn.compact
    def __call__(self, features: jnp.ndarray) -> jnp.ndarray:
        x = (features - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.scale,
                                                                            jnp.float32)
        lam = nn.Dense(1, kernel_init=nn.initializers.zeros,
                       bias_init=nn.initializers.constant(self.bias_init), name="lift")(x)[..., 0]
        return jnp.clip(lam, LOWEST, HIGHEST)


def lift_weight(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]: per channel, clip((z - RAMP_CODE) / (1 - RAMP_CODE)) times
    1 - exp(-d / RAMP_DISTANCE) times the region's :func:`border_gate` inside the photo's clipped
    region (0 outside), d the distance (px, scaled to a :data:`LIFT_SIDE`-px short side) to the
    nearest unclipped pixel."""
    image = np.asarray(image, np.float32)
    clipped = protocol.clipped_mask(image)
    ramp = np.clip((image - RAMP_CODE) / (1.0 - RAMP_CODE), 0.0, 1.0)
    if not clipped.any():
        return np.zeros_like(ramp)
    if clipped.all():  # no unclipped pixel to measure from: every distance is infinite
        d = np.full(clipped.shape, np.inf, np.float32)
    else:
        d = cv2.distanceTransform(clipped.astype(np.uint8), cv2.DIST_L2, 3)
        d *= LIFT_SIDE / min(image.shape[:2])
    return (ramp * ((1.0 - np.exp(-d / RAMP_DISTANCE)) * border_gate(image))[..., None]).astype(
        np.float32)


#: Border darkness at which a clipped region gets the whole lift.
GATE_DARKNESS = 0.5


def border_gate(image: np.ndarray) -> np.ndarray:
    """(H, W) per clipped region min(1, D / GATE_DARKNESS), D = 1 - the mean brightest-channel
    code of the region's unclipped surround (a 2-px ring at LIFT_SIDE); 0 off the regions."""
    clipped = protocol.clipped_mask(image).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(clipped)
    top = image.max(-1)
    r = max(1, round(2 * min(image.shape[:2]) / LIFT_SIDE))
    kernel = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    gate = np.zeros(clipped.shape, np.float32)
    h, w = clipped.shape
    for i in range(1, n):
        # Each region's ring lies within r px of its bounding box: dilate that window only, so
        # a photo with many small clipped regions costs their area, not regions x photo.
        x, y, bw, bh = stats[i, :4]
        win = (slice(max(0, y - r), min(h, y + bh + r)), slice(max(0, x - r), min(w, x + bw + r)))
        region = labels[win] == i
        ring = (cv2.dilate(region.astype(np.uint8), kernel) > 0) & (clipped[win] == 0)
        dark = 1.0 - float(top[win][ring].mean()) if ring.any() else 0.5
        gate[win][region] = min(1.0, dark / GATE_DARKNESS)
    return gate


def lift(hdr: np.ndarray, image: np.ndarray, log2_lift: float, floor: float = 0.0) -> np.ndarray:
    """The HDR (H, W, 3) of ``image`` with its clipped pixels raised by 2^(log2_lift w)
    (:func:`lift_weight`). A lift below 0 lowers no value below min(value, ``floor``): with
    ``floor`` the HDR's value of the clip code, a clipped channel stays at least as bright as
    every channel the photo measured (the response is monotone) and a measured channel keeps
    its value; ``floor`` 0 sets no bound."""
    hdr = np.asarray(hdr, np.float32)
    out = hdr * np.exp2(np.float32(log2_lift) * lift_weight(image))
    if log2_lift < 0:
        out = np.maximum(out, np.minimum(hdr, np.float32(floor)))
    return out.astype(np.float32)


def score_at(scores: np.ndarray, lifts: np.ndarray) -> np.ndarray:
    """(N,) each row of ``scores`` (N, len(GRID)), tabulated on :data:`GRID`, at its lift
    (bounded as the network bounds it), interpolated linearly between grid points."""
    x = (np.clip(lifts, LOWEST, HIGHEST) - GRID[0]) / (GRID[1] - GRID[0])
    x = np.clip(x, 0.0, len(GRID) - 1.0 - 1e-6)
    i = x.astype(int)
    t = x - i
    rows = np.arange(len(scores))
    return scores[rows, i] * (1.0 - t) + scores[rows, i + 1] * t


def fit_linear(features: np.ndarray, gains: np.ndarray, weights: np.ndarray,
               starts: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, scale, theta = [bias, weights]) of the :class:`LevelNet` that maximises the
    ``weights``-weighted mean of the tabulated ``gains`` (N, len(GRID)) at its lifts for the
    ``features`` (N, F). The objective is piecewise linear in the parameters, so it is maximised
    by Powell's derivative-free search (scipy) from ``starts`` starts (the first: no lift), not by
    gradient steps; the result is never worse on these data than no lift."""
    x = np.asarray(features, np.float64)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / scale
    w = np.asarray(weights, np.float64)

    def loss(theta):
        return -np.sum(w * score_at(gains, theta[0] + z @ theta[1:])) / w.sum()

    best = None
    for start in range(starts):
        theta0 = np.zeros(1 + z.shape[1])
        if start:
            theta0 += np.random.default_rng(start).normal(0.0, 0.3, theta0.shape)
        r = optimize.minimize(loss, theta0, method="Powell",
                              options={"maxiter": 20000, "xtol": 1e-3, "ftol": 1e-6})
        if best is None or r.fun < best.fun:
            best = r
    return mean, scale, best.x
