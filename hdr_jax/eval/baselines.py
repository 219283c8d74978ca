"""Non-learned stage-2 baselines: Mertens exposure fusion and bicubic upscaling.

Rows of every stage-2 table: Mertens fusion (Mertens et al. 2007; OpenCV with its default
weights: contrast and saturation exponent 1, well-exposedness off) of the LR pair followed by bicubic upscaling,
and bicubic upscaling of each input alone. The stage-1 baseline, the naive re-exposure
f(f^-1(Z) tau^k), is :func:`hdr_jax.camera.exposure.naive_bracket_baseline`.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from hdr_jax import merge

__all__ = ["Method", "baseline_methods", "bicubic_up", "mertens"]

#: A stage-2 method: (under_lr, over_lr, scale) -> fused HR image, HWC float in [0, 1].
Method = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def bicubic_up(img: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic upscaling by ``scale`` (OpenCV), clipped to [0, 1]."""
    h, w = img.shape[:2]
    return np.clip(cv2.resize(img, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC), 0, 1)


def mertens(under: np.ndarray, over: np.ndarray, saturation: float = 1.0) -> np.ndarray:
    """OpenCV's Mertens fusion with its default weights (contrast and saturation exponent 1,
    well-exposedness off; ``saturation`` replaces the saturation exponent) of the pair, clipped
    to [0, 1].

    Fed 8-bit images, as the inputs are: OpenCV scales float input by 1/255 internally, so
    float images in [0, 1] would come out 255x too dark.
    """

    def to8(x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)

    c, _, e = merge.MERTENS_WEIGHTS
    return np.clip(merge.mertens_fusion([to8(under), to8(over)], (c, saturation, e)), 0, 1)


def baseline_methods() -> dict[str, Method]:
    """The baseline rows of a stage-2 table, in table order."""
    return {
        "Mertens + bicubic": lambda u, o, s: bicubic_up(mertens(u, o), s),
        # Colour-preserving: saturated pixels weigh more (the saturation exponent doubled).
        "Mertens (saturation x2) + bicubic": lambda u, o, s: bicubic_up(mertens(u, o, 2.0), s),
        "bicubic (under)": lambda u, o, s: bicubic_up(u, s),
        "bicubic (over)": lambda u, o, s: bicubic_up(o, s),
    }
