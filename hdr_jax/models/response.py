"""Camera-response recognition for the up-exposure bracket (not in DrTMO).

Images are NHWC float32 in [0, 1]. An up-exposure of an unclipped pixel needs no hallucination:
with the true response f it is exactly ``f(clip(f^-1(Z) tau^k))`` (DrTMO eq. 1 with a longer
exposure time). What one photo does not tell is f. :class:`ResponseClassifier` recognises which of
a bank of K training responses (DrTMO's K = 5 representatives) produced an image;
:func:`reexpose_with_responses` then re-exposes the image analytically with the recognised curve.

Measured on the held-out scenes (docs/results/drtmo): the paper's up network loses to the
sRGB re-exposure at every step, this wins at every step, because the right curve reproduces
unclipped pixels to quantisation accuracy (~47-56 dB) while a wrong one costs 17-40 dB.

Features (:func:`response_features`, F = 76 per image; computed in the module, jit-safe):
  - 32-bin histogram of all channel values (fraction of samples per bin);
  - log mean |horizontal| and |vertical| gradient of the channel mean, in 16 bins of the local
    channel mean (-9 where a bin holds <= 4 samples): a response's slope f'(f^-1(z)) scales the
    gradients of the scene by intensity;
  - mean saturation (max - min over channels) in 8 bins of the channel mean (0 where empty):
    a per-channel curve compresses colour ratios by intensity;
  - mean, standard deviation, fraction of zeros, fraction of ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera.exposure import TAU, naive_bracket_baseline

Array = jax.Array

HIST_BINS = 32
GRAD_BINS = 16
SAT_BINS = 8
MIN_BIN_COUNT = 4  # a gradient/saturation bin with fewer samples is reported as empty
EMPTY_LOG_GRADIENT = -9.0
NUM_FEATURES = HIST_BINS + 2 * GRAD_BINS + SAT_BINS + 4
#: Tile size the classifier was trained at (the 'small' hdr_brackets views).
TILE = 128


def _binned_mean(values: Array, keys: Array, num_bins: int) -> tuple[Array, Array]:
    """Per-image mean of ``values`` (N, P) grouped by integer ``keys`` (N, P) in [0, num_bins)."""

    def one(v, k):
        s = jax.ops.segment_sum(v, k, num_segments=num_bins)
        c = jax.ops.segment_sum(jnp.ones_like(v), k, num_segments=num_bins)
        return s, c

    sums, counts = jax.vmap(one)(values, keys)
    return sums / jnp.maximum(counts, 1.0), counts


def _bin(x: Array, num_bins: int) -> Array:
    return jnp.clip(jnp.floor(x * num_bins), 0, num_bins - 1).astype(jnp.int32)


def response_features(x: Array) -> Array:
    """(N, H, W, 3) in [0, 1] -> (N, NUM_FEATURES) float32 (see the module docstring)."""
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected an NHWC RGB batch (N, H, W, 3), got shape {x.shape}")
    if x.shape[1] < 2 or x.shape[2] < 2:
        raise ValueError(f"images must be at least 2x2, got {x.shape[1:3]}")
    x = x.astype(jnp.float32)
    n = x.shape[0]
    flat = x.reshape(n, -1)
    hist = _binned_mean(jnp.ones_like(flat), _bin(flat, HIST_BINS), HIST_BINS)[1] / flat.shape[1]

    lum = x.mean(-1)
    grads = []
    for axis in (2, 1):  # horizontal, then vertical differences
        g = jnp.abs(jnp.diff(x, axis=axis)).mean(-1)
        a, b = (lum[:, :, 1:], lum[:, :, :-1]) if axis == 2 else (lum[:, 1:], lum[:, :-1])
        mean, count = _binned_mean(
            g.reshape(n, -1), _bin(0.5 * (a + b), GRAD_BINS).reshape(n, -1), GRAD_BINS
        )
        grads.append(jnp.where(count > MIN_BIN_COUNT, jnp.log(mean + 1e-4), EMPTY_LOG_GRADIENT))

    sat = (x.max(-1) - x.min(-1)).reshape(n, -1)
    sat_mean, sat_count = _binned_mean(sat, _bin(lum, SAT_BINS).reshape(n, -1), SAT_BINS)
    sat_mean = jnp.where(sat_count > MIN_BIN_COUNT, sat_mean, 0.0)

    moments = jnp.stack(
        [
            flat.mean(1),
            flat.std(1),
            (flat < 0.5 / 255).mean(1),
            (flat > 254.5 / 255).mean(1),
        ],
        axis=1,
    )
    return jnp.concatenate([hist, *grads, sat_mean, moments], axis=1)


class ResponseClassifier(nn.Module):
    """(N, H, W, 3) images -> (N, K) logits over a bank of K camera responses.

    Features (:func:`response_features`) -> batch norm (feature standardisation; running
    averages at inference) -> an MLP with GELU hidden layers ``hidden``. The bank's curves are
    not part of the module: the bundle stores them beside the parameters (collection
    ``responses``, key ``curves``, shape (K, 1024)).
    """

    num_responses: int = 5
    hidden: Sequence[int] = (64,)

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        if self.num_responses < 2:
            raise ValueError(f"num_responses must be >= 2, got {self.num_responses}")
        h = nn.BatchNorm(use_running_average=not train, momentum=0.99, name="standardise")(
            response_features(x)
        )
        for i, width in enumerate(self.hidden):
            h = nn.gelu(nn.Dense(width, name=f"hidden{i + 1}")(h))
        return nn.Dense(self.num_responses, kernel_init=nn.initializers.zeros, name="logits")(h)


def nearest_response(bank: Array, curves: Array) -> Array:
    """Index (N,) of the bank curve (K, 1024) nearest in mean |difference| to each of ``curves``
    (N, 1024): the training label of a record rendered with one of the bank's responses."""
    return jnp.argmin(jnp.abs(curves[:, None, :] - bank[None]).mean(-1), axis=1)


def reexpose_with_responses(
    x: Array, probs: Array, bank: Array, steps: Array, tau: float = TAU
) -> Array:
    """Re-exposes each image with its most probable response: (N, H, W, 3) -> (N, S, H, W, 3).

    ``Z_k = f(clip(f^-1(Z) tau^step_k))`` (DrTMO eq. 1) with f = ``bank[argmax probs]``: one
    consistent response per image (a posterior-weighted mix of brackets would blend curves).
    """
    curves = jnp.asarray(bank)[jnp.argmax(probs, axis=-1)]
    return jax.vmap(lambda img, c: naive_bracket_baseline(img, steps, tau, c))(x, curves)


def tiles_for_classification(
    image: np.ndarray, tile: int = TILE, max_tiles: int = 64
) -> np.ndarray:
    """(T, tile, tile, 3) tiles of one HWC photo, at the scale the classifier was trained on.

    The photo is area-downscaled so its short side is at most 2 * ``tile`` (the training views
    are ``tile``-px views of a ~60-90 degree field), then cut into non-overlapping tiles (at most
    ``max_tiles``, evenly spread). A photo smaller than ``tile`` is used whole.
    """
    img = np.asarray(image, np.float32)
    h, w = img.shape[:2]
    factor = int(min(h, w) // (2 * tile))
    if factor > 1:
        hh, ww = h // factor * factor, w // factor * factor
        img = img[:hh, :ww].reshape(hh // factor, factor, ww // factor, factor, 3).mean((1, 3))
        h, w = img.shape[:2]
    if h < tile or w < tile:
        return img[None]
    tiles = [
        img[i : i + tile, j : j + tile]
        for i in range(0, h - tile + 1, tile)
        for j in range(0, w - tile + 1, tile)
    ]
    keep = np.linspace(0, len(tiles) - 1, min(max_tiles, len(tiles))).round().astype(int)
    return np.stack([tiles[k] for k in keep])


def bank_array(curves: dict[str, np.ndarray] | Sequence[np.ndarray]) -> np.ndarray:
    """(K, 1024) float32 bank from named or listed curves, checked."""
    arr = np.stack(list(curves.values()) if isinstance(curves, dict) else list(curves))
    arr = arr.astype(np.float32)
    if arr.ndim != 2 or arr.shape[1] != crf_lib.N_SAMPLES or arr.shape[0] < 2:
        raise ValueError(f"a response bank must be (K >= 2, {crf_lib.N_SAMPLES}), got {arr.shape}")
    return arr
