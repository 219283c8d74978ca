"""Camera responses up to their exponent: the shape one photo can show, and shape prototypes.

A photo f(E a) of a scene E at exposure a is exactly the photo f(x^(1/p)) of the scene E^p at
exposure a^p, for any response f and any p > 0, so one photo fixes its camera only up to the
exponent of the camera's input (f and f(x^p) are exponent twins). Every curve's twins share
one twin, the one that codes mid-grey as sRGB codes it (:func:`canonical`): comparing canonical
twins compares the shapes a photo can tell apart.

:func:`shape_prototypes` clusters responses drawn from a training sampler, brought to their
canonical twins, into K shapes (k-means of ln f^-1 at :data:`SHAPE_CODES`); each prototype is
the member nearest its cluster's centre (a real curve), placed at the cluster's typical exponent
(the median of the exponents that brought its members to the canonical twin: where training
cameras of that shape sit). The blind curve choice (:mod:`hdr_jax.models.curvechoice`)
linearises a photo of an unknown camera with one of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.cluster.vq

from hdr_jax.camera import crf as crf_lib

#: Codes at which two curves' shapes are compared (ln f^-1 there: the highlights weigh as much
#: as the midtones), and the radiance whose code fixes a curve's exponent.
SHAPE_CODES = np.linspace(0.05, 1.0, 64)
MID_GREY = 0.18
#: Training responses the prototypes are clustered from, and the seed of their draw and of
#: the clustering.
POOL_SIZE, POOL_SEED = 4000, 11


def with_exponent(curve: np.ndarray, p: float) -> np.ndarray:
    """f(x^p) for ``curve`` f."""
    return crf_lib.apply_crf(curve, crf_lib.GRID.astype(np.float64) ** p).astype(np.float32)


def canonical(curve: np.ndarray) -> tuple[np.ndarray, float]:
    """The exponent twin f(x^p) of ``curve`` f that codes mid-grey as sRGB does, and p: the one
    representative of all the curves a photo through f cannot be told from (each of them has
    this twin)."""
    grey = crf_lib.apply_crf(crf_lib.srgb_crf(), np.float64(MID_GREY))
    p = math.log(float(crf_lib.apply_inverse_crf(curve, grey))) / math.log(MID_GREY)
    return with_exponent(curve, p), p


def shape_features(curve: np.ndarray) -> np.ndarray:
    """ln f^-1 at :data:`SHAPE_CODES`: where two curves' linearisations differ."""
    return np.log(np.maximum(crf_lib.apply_inverse_crf(curve, SHAPE_CODES), 1e-6))


def prototype_pool(sampler: Callable[[np.random.Generator], tuple[str, np.ndarray]],
                   size: int = POOL_SIZE, seed: int = POOL_SEED
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``size`` responses drawn from ``sampler`` (``rng -> (family, curve)``, e.g. the
    training :class:`highlight_views.CurveSampler`) brought to their canonical twins
    (:func:`canonical`), and the exponents that did so."""
    rng = np.random.default_rng(seed)
    curves, powers = zip(*(canonical(sampler(rng)[1]) for _ in range(size)))
    return np.stack(curves), np.array(powers)


def shape_prototypes(pool: np.ndarray, powers: np.ndarray, feats: np.ndarray, k: int,
                     seed: int = POOL_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``k`` prototypes of the pool's shapes (``feats``: their :func:`shape_features`): the
    member of each k-means cluster nearest its centre, so that each is a real curve, at the
    canonical exponent and at the cluster's typical one (the median of its members' exponents),
    and their features. A cluster that k-means leaves empty gives no prototype."""
    centres, labels = scipy.cluster.vq.kmeans2(feats, k, minit="++", seed=seed)
    medoids, typical = [], []
    for j in range(k):
        members = np.flatnonzero(labels == j)
        if members.size:
            medoids.append(members[np.argmin(((feats[members] - centres[j]) ** 2).sum(1))])
            typical.append(with_exponent(pool[medoids[-1]], 1.0 / np.median(powers[members])))
    return pool[medoids], np.stack(typical), feats[medoids]
