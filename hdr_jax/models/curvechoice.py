"""A blind choice of the curve that linearises a photo of an unknown camera.

One photo shows its camera's response only up to the exponent of its input
(:mod:`hdr_jax.camera.shapes`), but it shows the response's shape: a shoulder compresses the
steps between neighbouring codes near the clip, and two channels of one material under varying
shading stop rising together where the brighter one reaches it. :class:`CurveChoiceNet` reads
such cues (:func:`photo_cues`) and picks one of :data:`BENT` + K options:

* ``inverse sRGB``: inverse sRGB, the clipped pixels lifted by the blind lift at k = 0;
* ``bent``: inverse sRGB bent at the clip by the clip-level estimate k
  (:func:`cliplevel.warped_response`), lifted by the blind lift at k;
* K shape prototypes at their typical exponents (:func:`shapes.shape_prototypes`), lifted by the
  lift for a known response.

The network is a linear map of the standardised cues to one logit per option (a multinomial
logistic model); it is fitted (:func:`fit_choice`) to maximise the expected clipped-pixel gain
under its softmax over rendered training views whose every option was scored by the HDR
protocol (``experiments/fit_choice.py``), and the pipeline takes the most probable option. The
option curves are not part of the module: the bundle stores them beside the parameters
(collection ``options``, key ``curves``, shape (K, 1024)).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from hdr_jax.eval import protocol
from hdr_jax.models import cliplevel, level

#: The options before the prototypes, in order.
BENT = ("inverse sRGB", "bent")
#: Bounds of the code bands the step profile and the occupancy are measured in.
BAND_EDGES = np.linspace(0.02, 0.98, 13)
#: The bands whose steps the profile is relative to (the midtones).
MID_BANDS = slice(3, 8)
#: Pixel spacings of the step profiles.
STEPS = (1, 3)
#: A band with fewer pair samples than this keeps the midtones' value (no evidence).
MIN_PAIRS = 20
#: Bins of the brightest channel's histogram.
HIST_EDGES = np.linspace(0.0, 1.0, 17)
#: Side (px) of the patches of the material cue, and its bands of the brighter channel's code.
PATCH = 6
MATERIAL_BANDS = (0.04, 0.35, 0.65, 0.96)
#: Floor of the fractions whose log is a cue.
_FLOOR = 1e-4

FEATURES = (
    level.FEATURES
    + tuple(f"step{s}_{b}" for s in STEPS for b in range(len(BAND_EDGES) - 1))
    + tuple(f"occupancy_{b}" for b in range(len(BAND_EDGES) - 1))
    + tuple(f"histogram_{b}" for b in range(len(HIST_EDGES) - 1))
    + ("material_low", "material_mid", "material_high", "material_patches")
)


def step_profile(codes: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(log mean |code difference| of pixel pairs ``step`` px apart (rows and columns, every
    channel, neither at the clip) in each band of :data:`BAND_EDGES` of the pair's mean code,
    relative to the midtones' (:data:`MID_BANDS`); the share of the pairs in each band).

    A step between neighbours is d code = S(code) d ln E with S = d f / d ln E; where the
    scene's local contrast d ln E does not depend on its level, the profile over the bands is
    ln S relative to the midtones, the response's slope shape, which the exponent of the
    camera's input (it scales S by a constant) leaves unchanged."""
    nb = len(BAND_EDGES) - 1
    total, count = np.zeros(nb), np.zeros(nb)
    for a, b in ((codes[:, step:], codes[:, :-step]), (codes[step:], codes[:-step])):
        band = np.digitize(0.5 * (a + b), BAND_EDGES) - 1
        ok = (np.maximum(a, b) < protocol.CLIP_LEVEL - 1e-6) & (band >= 0) & (band < nb)
        total += np.bincount(band[ok], weights=np.abs(a - b)[ok], minlength=nb)[:nb]
        count += np.bincount(band[ok], minlength=nb)[:nb]
    profile = np.log(total / np.maximum(count, 1) + _FLOOR)
    mid = float(np.average(profile[MID_BANDS], weights=count[MID_BANDS] + 1e-9))
    profile = np.where(count >= MIN_PAIRS, profile, mid) - mid
    return profile, count / max(count.sum(), 1.0)


def material_cue(codes: np.ndarray) -> np.ndarray:
    """(4,): in :data:`PATCH`-px patches whose channels lie in (0.04, 0.96) and whose log codes
    of R and G (B and G) rise together (correlation above 0.95, each spread over more than
    0.04, means more than 0.1 apart), -ln(the brighter channel's spread over the darker's): 0 on
    a power law, above 0 where the brighter channel is on a shoulder. Its median in each band
    of :data:`MATERIAL_BANDS` of the brighter channel's code (0 with fewer than 5 patches
    there), and log(1 + the number of such patches)."""
    s = PATCH
    h, w = (codes.shape[0] // s) * s, (codes.shape[1] // s) * s
    p = codes[:h, :w].reshape(h // s, s, w // s, s, 3).transpose(0, 2, 1, 3, 4)
    p = p.reshape(-1, s * s, 3)
    lp = np.log(p[((p > 0.04) & (p < 0.96)).all((1, 2))] + 1e-6)
    cues: list[list[float]] = [[] for _ in MATERIAL_BANDS[1:]]
    for a, b in ((0, 1), (2, 1)):
        x, y = lp[..., a], lp[..., b]
        sx, sy = x.std(1), y.std(1)
        corr = ((x - x.mean(1, keepdims=True)) * (y - y.mean(1, keepdims=True))).mean(1) / (
            sx * sy + 1e-12)
        diff = x.mean(1) - y.mean(1)
        good = (corr > 0.95) & (sx > 0.04) & (sy > 0.04) & (np.abs(diff) > 0.1)
        ratio = np.where(diff > 0, sx / np.maximum(sy, 1e-9), sy / np.maximum(sx, 1e-9))
        bright = np.exp(np.maximum(x.mean(1), y.mean(1)))
        for j in range(len(cues)):
            m = good & (bright >= MATERIAL_BANDS[j]) & (bright < MATERIAL_BANDS[j + 1])
            cues[j].extend((-np.log(ratio[m])).tolist())
    medians = [float(np.median(c)) if len(c) >= 5 else 0.0 for c in cues]
    return np.array(medians + [np.log1p(sum(len(c) for c in cues))])


def photo_cues(image: np.ndarray, clip_level: float) -> np.ndarray:
    """(len(FEATURES),) float32 cues of one photo (H, W, 3) in [0, 1] with its clip-level
    estimate k: :func:`level.photo_features`, the :func:`step_profile` at each of :data:`STEPS`
    px, the bands' occupancy (log), the log histogram of the brightest channel and the
    :func:`material_cue`, all read at the pixel scale the clip level is estimated at
    (:func:`cliplevel.estimator_input`)."""
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"photo_cues: expected an (H, W, 3) photo, got {image.shape}")
    small = cliplevel.estimator_input(image)[0]
    profiles = [step_profile(small, s) for s in STEPS]
    hist = np.histogram(small.max(-1), HIST_EDGES)[0] / max(small[..., 0].size, 1)
    return np.concatenate([
        level.photo_features(image, clip_level), *(p for p, _ in profiles),
        np.log(profiles[0][1] + _FLOOR), np.log(hist + _FLOOR), material_cue(small),
    ]).astype(np.float32)


class CurveChoiceNet(nn.Module):
    """(N, F) :func:`photo_cues` -> (N, num_options) logits: a linear map of the cues
    standardised with ``mean`` and ``scale`` (the fitting set's). The weights and the biases
    start at zero (every option equally likely)."""

    mean: Sequence[float]
    scale: Sequence[float]
    num_options: int

    @nn.compact
    def __call__(self, features: jnp.ndarray) -> jnp.ndarray:
        if self.num_options < len(BENT):
            raise ValueError(f"num_options must be >= {len(BENT)}, got {self.num_options}")
        x = (features - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.scale,
                                                                            jnp.float32)
        return nn.Dense(self.num_options, kernel_init=nn.initializers.zeros, name="choice")(x)


def expected_gain(logits: jnp.ndarray, gains: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
    """The ``weights``-weighted mean over photos of the gain (N, K) expected under the softmax
    of ``logits`` (N, K): a smooth stand-in for the gain of the most probable option."""
    expected = (jax.nn.softmax(logits) * gains).sum(-1)
    return (weights * expected).sum() / weights.sum()


def fit_choice(features: np.ndarray, gains: np.ndarray, weights: np.ndarray, *,
               l2: float, steps: int = 3000, learning_rate: float = 0.03
               ) -> tuple[np.ndarray, np.ndarray, dict]:
    """(mean, scale, params) of the :class:`CurveChoiceNet` that maximises
    :func:`expected_gain` of the tabulated ``gains`` (N, K) on the ``features`` (N, F), with an
    L2 penalty ``l2`` on the weights (Adam, full batch, from zeros: deterministic)."""
    x = np.asarray(features, np.float64)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    module = CurveChoiceNet(mean=tuple(mean), scale=tuple(scale), num_options=gains.shape[1])
    xs = jnp.asarray(x, jnp.float32)
    g, w = jnp.asarray(gains, jnp.float32), jnp.asarray(weights, jnp.float32)
    params = module.init(jax.random.key(0), xs[:1])["params"]
    opt = optax.adam(learning_rate)

    def loss(p):
        kernel = p["choice"]["kernel"]
        return -expected_gain(module.apply({"params": p}, xs), g, w) + l2 * (kernel ** 2).sum()

    @jax.jit
    def step(p, state):
        grads = jax.grad(loss)(p)
        updates, state = opt.update(grads, state, p)
        return optax.apply_updates(p, updates), state

    state = opt.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return mean, scale, jax.device_get(params)
