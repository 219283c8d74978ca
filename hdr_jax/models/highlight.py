"""Highlight head: the camera's linearisation and the radiance of what a photo clipped.

A photo from an unknown camera is usually linearised with the inverse sRGB curve. Below the clip
level that is exact only for an sRGB camera: another tone curve bends every value, and the
clipped pixels, whose level is scored relative to the unclipped ones, inherit that error. Where
the photo clipped, the input-anchored merge can only guess a level from the generated exposures,
which barely see how bright a clipped region is. This network looks at the whole photo (its
histogram and tone, blob sizes, glare and bloom around a source, the colour of the unclipped
neighbours) and predicts both:

* an inverse response g (monotone, g(0) = 0, g(1) = 1, one per photo), as ``CURVE_KNOTS`` + 1
  samples of a piecewise-linear curve whose increments are a softmax, initialised to the
  inverse sRGB curve;
* a log radiance ratio r per pixel and channel over the linearised photo,

      E_hat = g(photo) * exp(w * r),   w = :func:`region_weight` (0 below ``REGION_LOW``, 1 at
      the clip level),

  so pixels well below the clip keep their linearised values exactly. The pipeline shrinks
  this level towards the input-anchored merge's (:func:`combine`).

At initialisation (the output layers are zero) the HDR *is* the photo linearised with inverse
sRGB: training starts from the blind baseline and is scored against it. Both outputs are
trained on the HDR protocol's error itself, so where the photo does not tell the curve the
estimate stays near the curve that is right on average.

Inputs (NHWC): the photo in [0, 1], the region weight w, and a flag channel that is 1 where the
linearisation is the camera's true response (a user who gave it; the curve estimate is then not
used) and 0 otherwise.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hdr_jax.camera import crf as crf_lib

#: The head acts on pixels whose brightest channel is above REGION_LOW, fully from REGION_HIGH
#: (the protocol's clip level is 254/255; JPEG moves clipped values a few levels down).
REGION_LOW = 224.0 / 255.0
REGION_HIGH = 250.0 / 255.0
#: Largest |r|: e^8 ~ 3000x the clip level, beyond any 8-bit scene's highlight in the data.
MAX_LOG_RATIO = 8.0
#: Inputs per pixel: RGB, region weight, known-response flag.
NUM_INPUTS = 5
#: Segments of the piecewise-linear inverse response (its error on inverse sRGB is ~1e-4).
CURVE_KNOTS = 64
#: Weight of the head's log radiance in :func:`combine` (the merge's gets the rest). Equal
#: weights, fixed rather than fitted: renders of the head's own training scenes would favour
#: the head, which does much better on those scenes than on others.
HEAD_WEIGHT = 0.5


def region_weight(photo: jax.Array) -> jax.Array:
    """(..., H, W, 3) photo in [0, 1] -> (..., H, W, 1) weight: a linear ramp of the brightest
    channel from REGION_LOW (0) to REGION_HIGH (1)."""
    peak = jnp.max(photo, axis=-1, keepdims=True)
    return jnp.clip((peak - REGION_LOW) / (REGION_HIGH - REGION_LOW), 0.0, 1.0)


def input_features(photo: jax.Array, known_response: jax.Array | float = 0.0) -> jax.Array:
    """(N, H, W, 3) photo -> (N, H, W, NUM_INPUTS) network input; ``known_response`` is a
    scalar or (N,) 0/1 flag."""
    flag = jnp.broadcast_to(
        jnp.asarray(known_response, photo.dtype).reshape(-1, 1, 1, 1), photo.shape[:-1] + (1,)
    )
    return jnp.concatenate([photo, region_weight(photo), flag], axis=-1)


def expand(linear: jax.Array, photo: jax.Array, log_ratio: jax.Array) -> jax.Array:
    """E_hat = lin * exp(w * r) (module docstring); ``linear`` the linearised photo, all
    (..., H, W, 3)."""
    return linear * jnp.exp(region_weight(photo) * log_ratio)


def combine(head: jax.Array, merged: jax.Array, photo: jax.Array,
            weight: float = HEAD_WEIGHT) -> jax.Array:
    """The photo's HDR from two estimates of its highlights, all (..., H, W, 3): where
    :func:`region_weight` is positive, the weighted geometric mean
    exp(weight log head + (1 - weight) log merged) (a shrinkage of the head's level towards the
    input-anchored merge's); elsewhere ``merged``."""
    tiny = jnp.finfo(jnp.float32).tiny
    mixed = jnp.exp(weight * jnp.log(jnp.maximum(head, tiny))
                    + (1.0 - weight) * jnp.log(jnp.maximum(merged, tiny)))
    return jnp.where(region_weight(photo) > 0, mixed, merged)


def srgb_knots(knots: int = CURVE_KNOTS) -> np.ndarray:
    """The inverse sRGB curve at ``knots`` + 1 evenly spaced levels: the curve estimate's
    starting point."""
    return np.asarray(crf_lib.srgb_decode(np.linspace(0.0, 1.0, knots + 1)), np.float32)


def apply_knots(curve: jax.Array, z: jax.Array) -> jax.Array:
    """g(z) for a piecewise-linear inverse response per image: ``curve`` (N, K + 1) samples at
    evenly spaced levels, ``z`` (N, H, W, C) in [0, 1]."""
    k = curve.shape[-1] - 1
    t = jnp.clip(z, 0.0, 1.0) * k
    i0 = jnp.clip(jnp.floor(t), 0, k - 1).astype(jnp.int32)
    frac = t - i0
    flat = i0.reshape(i0.shape[0], -1)
    lo = jnp.take_along_axis(curve, flat, axis=1).reshape(z.shape)
    hi = jnp.take_along_axis(curve, flat + 1, axis=1).reshape(z.shape)
    return lo * (1.0 - frac) + hi * frac


def response_from_knots(curve: np.ndarray) -> np.ndarray:
    """The camera response f (1024 samples, :mod:`hdr_jax.camera.crf`) whose inverse is the
    piecewise-linear ``curve`` ((K + 1,) samples of g)."""
    g = np.interp(crf_lib.GRID, np.linspace(0.0, 1.0, len(curve)), np.asarray(curve, np.float64))
    return crf_lib.invert_crf(np.maximum.accumulate(g).astype(np.float32))


class _ConvBlock(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        for _ in range(2):
            x = nn.gelu(nn.Conv(self.features, (3, 3))(x))
        return x


class HighlightNet(nn.Module):
    """U-Net (``features`` per level, stride-2 down, nearest up, skip concatenation) with a
    global pooled branch at the bottleneck. Maps (N, H, W, NUM_INPUTS) to
    ``{'log_ratio': (N, H, W, 3)`` bounded to +-MAX_LOG_RATIO, ``'curve': (N, CURVE_KNOTS + 1)}``
    (the inverse response; only with ``estimate_curve``). H and W must be multiples of
    :attr:`multiple`.

    The U-Net runs at half resolution on a space-to-depth input (every input sample kept, a
    quarter of the cost) and its ratio is upsampled bilinearly: the ratio varies smoothly inside
    a highlight, and the full-resolution region weight of :func:`expand` keeps its edges."""

    features: tuple[int, ...] = (16, 32, 64, 96)
    estimate_curve: bool = True

    @property
    def multiple(self) -> int:
        """H and W of an input must be multiples of this."""
        return 2 ** len(self.features)

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        n, h, w, c = x.shape
        x = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
        x = x.reshape(n, h // 2, w // 2, 4 * c)
        skips = []
        for i, f in enumerate(self.features):
            if i:
                x = nn.Conv(f, (3, 3), strides=(2, 2))(x)
            x = _ConvBlock(f)(x)
            skips.append(x)
        g = jnp.concatenate([x.mean(axis=(1, 2)), x.max(axis=(1, 2))], axis=-1)
        g = nn.gelu(nn.Dense(self.features[-1])(nn.gelu(nn.Dense(self.features[-1])(g))))
        out = {}
        if self.estimate_curve:
            # Increments of g: softmax of the inverse sRGB curve's log increments plus a
            # zero-initialised correction, so the estimate starts at inverse sRGB and stays
            # monotone with g(0) = 0, g(1) = 1.
            base = jnp.log(jnp.maximum(jnp.diff(jnp.asarray(srgb_knots())), 1e-8))
            delta = nn.Dense(CURVE_KNOTS, kernel_init=nn.initializers.zeros)(g)
            inc = jax.nn.softmax(base + delta, axis=-1)
            out["curve"] = jnp.concatenate([jnp.zeros((n, 1)), jnp.cumsum(inc, axis=-1)], -1)
        x = x + nn.Dense(self.features[-1])(g)[:, None, None, :]
        for f, skip in zip(self.features[-2::-1], skips[-2::-1]):
            _, hi, wi, ci = x.shape
            x = jax.image.resize(x, (n, 2 * hi, 2 * wi, ci), "nearest")
            x = _ConvBlock(f)(jnp.concatenate([x, skip], axis=-1))
        # Zero last layer: training starts from the linearised photo (r = 0).
        r = nn.Conv(3, (3, 3), kernel_init=nn.initializers.zeros)(x)
        r = jax.image.resize(r, (n, h, w, 3), "linear")
        out["log_ratio"] = MAX_LOG_RATIO * jnp.tanh(r / MAX_LOG_RATIO)
        return out


def linearise(outputs: dict[str, jax.Array], photo: jax.Array, known_linear: jax.Array,
              known: jax.Array) -> jax.Array:
    """The head's linearisation of a batch: ``known_linear`` (the true response's) where
    ``known`` (N,) is 1, else the estimated curve's (inverse sRGB without one)."""
    if "curve" in outputs:
        estimate = apply_knots(outputs["curve"], photo)
    else:
        estimate = crf_lib.srgb_decode(photo)
    return jnp.where(known.reshape(-1, 1, 1, 1) > 0.5, known_linear, estimate)
