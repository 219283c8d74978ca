"""Where the clip level of a photo sits above its midtones: a blind, per-photo linearisation.

Inverse sRGB is exact below the clip for an sRGB camera and bends every value of a photo from
another camera. Most of what the bend costs on the clipped pixels is one number per photo, the
log2 ratio k between the gains that fit the true and the inverse-sRGB linearisation to the
scene on the unclipped pixels. :class:`ClipLevelNet` estimates it from the 8-bit codes alone,
and the photo is linearised with inverse sRGB bent from its median code to 2^k at the clip
(:func:`hdr_jax.eval.protocol.warp_codes`; :func:`warped_response` gives that as a response
curve for the merge).

A power response on one scene is the same photo as another power on a scene of other contrast,
so only the non-power parts of a curve (toe, shoulder) can be read from a photo. The network is
therefore local: a small CNN (receptive field ~31 px) estimates k per position, and the
estimates are averaged with weights that are the share of positions near a code in the shoulder
range, shrunk towards 0, so a photo without such codes keeps inverse sRGB
(:class:`ShoulderPooledEstimator`). An exported estimator is the mean of such networks, trained
on the HDR protocol's PU21 error of the bent linearisation (``experiments/clip_scalar.py``),
optionally bounded (:func:`bounded`); the bundled one bends down only.
"""

from __future__ import annotations

import math

import cv2
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from hdr_jax.camera import crf as crf_lib
from hdr_jax.eval import protocol

#: Codes whose neighbourhood the estimate is averaged over: where a shoulder can show.
SHOULDER_LO, SHOULDER_HI = 0.75, 0.98
#: Neighbourhood (px) of a position that counts as near a shoulder code; stride of the estimate.
WINDOW, STRIDE = 22, 4
#: Weight of the prior k = 0 in the average, in positions of weight 1.
SHRINK = 20.0
#: Short side (px) photos are estimated at: the pixel scale the networks were trained at.
ESTIMATE_SIDE = 256


def shoulder_weight(z: jnp.ndarray) -> jnp.ndarray:
    """(N, H, W, 3) codes -> (N, H/STRIDE, W/STRIDE): the share of positions whose WINDOW-px
    neighbourhood holds a code in [SHOULDER_LO, SHOULDER_HI) in any channel."""
    s = jnp.any((z >= SHOULDER_LO) & (z < SHOULDER_HI), axis=-1, keepdims=True)
    s = nn.max_pool(s.astype(jnp.float32), (WINDOW, WINDOW), strides=(1, 1), padding="SAME")
    return nn.avg_pool(s, (STRIDE, STRIDE), strides=(STRIDE, STRIDE))[..., 0]


class ShoulderPooledEstimator(nn.Module):
    """(N, H, W, 3) codes in [0, 1] -> (N,) estimated k: seven 3x3 conv + GELU layers (two of
    stride 2), a zero-initialised 1x1 estimate per position, its shoulder-weighted shrunk mean."""

    features: tuple[int, ...] = (32, 64, 128)
    shrink: float = SHRINK

    @nn.compact
    def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
        x = 2.0 * z - 1.0
        f1, f2, f3 = self.features
        for i, (f, stride) in enumerate(((f1, 1), (f1, 1), (f2, 2), (f2, 1), (f3, 2), (f3, 1),
                                         (f3, 1))):
            x = nn.gelu(nn.Conv(f, (3, 3), strides=stride, name=f"conv{i}")(x))
        m = nn.Conv(1, (1, 1), kernel_init=nn.initializers.zeros, name="estimate")(x)[..., 0]
        w = shoulder_weight(z)
        # A side that is not a multiple of STRIDE gives the convs one more (partial) block than
        # the pooled weights, which keep whole blocks only: both cover the whole blocks.
        h, wd = w.shape[1], w.shape[2]
        m = m[:, :h, :wd]
        return (m * w).sum((1, 2)) / (w.sum((1, 2)) + self.shrink)


def bounded(k: jnp.ndarray, ceiling: float | None, offset: float = 0.0) -> jnp.ndarray:
    """``k + offset``, at most ``ceiling`` (None: unbounded). A ceiling of 0 bends inverse sRGB
    down only: a shoulder lowers the clip level, while a bend up, where the cue is absent (an
    sRGB photo), rests on the scene prior alone. A positive offset with it leaves photos whose
    estimate is within ``offset`` of 0 at inverse sRGB and moves the rest that much towards it."""
    k = k + offset
    return k if ceiling is None else jnp.minimum(k, ceiling)


class ClipLevelNet(nn.Module):
    """The mean estimate of ``members`` :class:`ShoulderPooledEstimator` s (``member0``, ...),
    plus ``offset``, at most ``ceiling`` (:func:`bounded`)."""

    features: tuple[int, ...] = (32, 64, 128)
    members: int = 2
    ceiling: float | None = None
    offset: float = 0.0

    @nn.compact
    def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
        k = jnp.mean(jnp.stack([ShoulderPooledEstimator(self.features, name=f"member{i}")(z)
                                for i in range(self.members)]), axis=0)
        return bounded(k, self.ceiling, self.offset)


def estimator_input(image: np.ndarray) -> np.ndarray:
    """(1, h, w, 3) float32: the photo (H, W, 3) area-resized so its short side is at most
    :data:`ESTIMATE_SIDE` (the networks read codes at the pixel scale they were trained at)."""
    image = np.asarray(image, np.float32)
    h, w = image.shape[:2]
    s = ESTIMATE_SIDE / min(h, w)
    if s < 1.0:
        size = (max(1, round(w * s)), max(1, round(h * s)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image[None]


def warped_response(image: np.ndarray, k: float) -> tuple[np.ndarray, float]:
    """(curve, gain): the (1024,) response whose inverse is the bent linearisation of ``image``
    (:func:`protocol.warp_codes` with the photo's median code) divided by its value at the clip,
    and that value, 2^k as bounded by the warp. ``gain * apply_inverse_crf(curve, image)`` is
    :func:`protocol.linearise_warped` (``image``, ``k``) up to the curve's sampling."""
    zm = protocol.warp_median_code(image)
    codes = np.linspace(0.0, 1.0, crf_lib.N_SAMPLES, dtype=np.float32)
    inverse = np.asarray(protocol.warp_codes(codes[None, None, :, None], np.float32(k),
                                             np.float32(zm)), np.float64)[0, 0, :, 0]
    gain = float(inverse[-1])
    if not (math.isfinite(gain) and gain > 0):
        raise ValueError(f"warped_response: invalid scalar {k!r}")
    # invert_crf clips, makes the samples non-decreasing and pins both ends itself.
    return np.asarray(crf_lib.invert_crf((inverse / gain).astype(np.float32))), gain
