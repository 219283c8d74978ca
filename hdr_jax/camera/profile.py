"""The tone curve a photo's own colour profile declares (ICC rTRC/gTRC/bTRC, PNG gAMA).

A photo saved in a colour space other than sRGB says so in its file: Adobe RGB (1998) encodes
with a pure power of 563/256, ProPhoto RGB (ROMM) with 1.8, a "linear" profile with none. Read
from the file, that encoding is known rather than guessed, which the blind pipeline cannot do
for a pure power (a power camera photographing a scene looks like another power on a scene of
other contrast). But the profile holds the encoding only: the tone curve a camera or a raw
converter applies before it is not in the file, and linearising a tone-mapped photo with the
bare encoding undoes too little near the clip. So a declared curve is used only when it is a
scene-referred encoding (:data:`SCENE_LINEAR_GAMMA`: linear data has no tone curve before it),
and then by re-encoding the photo to sRGB (:func:`to_srgb`), so that the pipeline's handling of
sRGB photos (its learned shoulder and highlight estimates) still applies to whatever curve the
data carries; a display encoding other than sRGB is reported, for the user to confirm with
``--response``.

ICC parsing is written by hand: Pillow hands over the profile bytes but its littleCMS binding
does not expose the tone curves. Only matrix/TRC RGB profiles are read (the kind cameras and
editors embed); a LUT-based profile returns None.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any, Mapping

import numpy as np

from hdr_jax.camera import crf

#: Codes from which :func:`differs_from_srgb` compares a declared curve with sRGB: midtones to
#: the clip, where the linearisation sets the level of the clipped highlights.
COMPARE_FROM_CODE = 0.3
#: Largest difference (stops) of linearised codes above COMPARE_FROM_CODE below which a declared
#: curve counts as sRGB (Adobe RGB's 2.2 power is within 0.06 stops of sRGB there).
SRGB_TOLERANCE_STOPS = 0.2
#: Effective gamma (log of the linear value of code 0.5 / log 0.5) at or below which a declared
#: curve is a scene-referred (linear or near-linear) encoding: sRGB's is 2.2, ProPhoto's 1.8.
SCENE_LINEAR_GAMMA = 1.5

_CODES = np.linspace(0.0, 1.0, 4097)


@dataclasses.dataclass(frozen=True)
class Declared:
    """A tone curve a photo's file declares: where it was read (``source``), the response
    ``curve`` on :data:`crf.GRID`, its effective gamma, and whether it is scene-referred."""

    source: str
    curve: np.ndarray
    gamma: float

    @property
    def scene_linear(self) -> bool:
        return self.gamma <= SCENE_LINEAR_GAMMA


def _s15(data: bytes, offset: int, n: int) -> list[float]:
    return [v / 65536.0 for v in struct.unpack(f">{n}i", data[offset: offset + 4 * n])]


def _decode_trc(tag: bytes) -> np.ndarray | None:
    """Linear value of each code of ``_CODES`` for one ICC 'curv' or 'para' tag (ICC.1:2010,
    10.5 curveType and 10.15 parametricCurveType), or None for a tag it cannot read."""
    kind = tag[:4]
    x = _CODES
    if kind == b"curv":
        (n,) = struct.unpack(">I", tag[8:12])
        if n == 0:
            return x.copy()
        if n == 1:
            (g,) = struct.unpack(">H", tag[12:14])
            return x ** (g / 256.0) if g > 0 else None
        if len(tag) < 12 + 2 * n:
            return None
        table = np.frombuffer(tag[12: 12 + 2 * n], ">u2").astype(np.float64) / 65535.0
        return np.interp(x, np.linspace(0.0, 1.0, n), table)
    if kind == b"para":
        (fn,) = struct.unpack(">H", tag[8:10])
        count = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}.get(fn)
        if count is None or len(tag) < 12 + 4 * count:
            return None
        g, a, b, c, d, e, f = (_s15(tag, 12, count) + [0.0] * 7)[:7]
        if fn == 0:
            return x ** g
        if a == 0.0:
            return None
        with np.errstate(invalid="ignore"):
            if fn == 1:
                return np.where(x >= -b / a, np.maximum(a * x + b, 0.0) ** g, 0.0)
            if fn == 2:
                return np.where(x >= -b / a, np.maximum(a * x + b, 0.0) ** g + c, c)
            if fn == 3:
                return np.where(x >= d, np.maximum(a * x + b, 0.0) ** g, c * x)
            return np.where(x >= d, np.maximum(a * x + b, 0.0) ** g + e, c * x + f)
    return None


def icc_decoding(profile: bytes) -> np.ndarray | None:
    """(3, len(_CODES)) linear value of each code per channel from an RGB matrix/TRC ICC profile,
    or None (not RGB, no TRC tags, or malformed)."""
    try:
        if len(profile) < 132 or profile[16:20] != b"RGB ":
            return None
        (count,) = struct.unpack(">I", profile[128:132])
        tags = {}
        for i in range(min(count, 256)):
            sig, off, size = struct.unpack(">4sII", profile[132 + 12 * i: 144 + 12 * i])
            tags[sig] = profile[off: off + size]
        curves = [_decode_trc(tags.get(s, b"")) for s in (b"rTRC", b"gTRC", b"bTRC")]
    except struct.error:
        return None
    if any(c is None or not np.all(np.isfinite(c)) for c in curves):
        return None
    return np.stack(curves)


def response_from_decoding(decoding: np.ndarray) -> np.ndarray:
    """The (1024,) response f on :data:`crf.GRID` whose inverse is ``decoding`` (linear value of
    each code of ``_CODES``, averaged over channels in the log domain when given per channel),
    normalised to 1 at the clip."""
    d = np.maximum(np.asarray(decoding, np.float64), 1e-12)
    if d.ndim == 2:
        d = np.exp(np.log(d).mean(0))
    return crf.response_from_inverse(d, _CODES)


def differs_from_srgb(curve: np.ndarray) -> float:
    """Largest difference (stops) between ``curve`` and sRGB in the linear value of the codes
    from :data:`COMPARE_FROM_CODE` to the clip."""
    z = np.linspace(COMPARE_FROM_CODE, 1.0, 141, dtype=np.float32)
    a = np.asarray(crf.apply_inverse_crf(curve, z), np.float64)
    b = np.asarray(crf.apply_inverse_crf(crf.srgb_crf(), z), np.float64)
    return float(np.max(np.abs(np.log2(np.maximum(a, 1e-9) / np.maximum(b, 1e-9)))))


def declared_response(info: Mapping[str, Any]) -> Declared | None:
    """The tone curve the photo's metadata declares, or None when it declares nothing, sRGB, or
    a curve within :data:`SRGB_TOLERANCE_STOPS` of sRGB (then the pipeline's own handling of
    sRGB-like photos applies). ``info`` is Pillow's ``Image.info``: an ICC profile wins over a
    PNG sRGB chunk, which wins over a PNG gAMA chunk."""
    profile = info.get("icc_profile")
    if profile:
        decoding = icc_decoding(bytes(profile))
        if decoding is None:
            return None
        curve = response_from_decoding(decoding)
        described = "its ICC profile"
    elif "srgb" in info:
        return None
    elif "gamma" in info:
        file_gamma = float(info["gamma"])
        if not (np.isfinite(file_gamma) and 0.1 <= file_gamma <= 10.0):
            return None
        curve = crf.gamma_crf(1.0 / file_gamma)
        described = "its PNG gAMA chunk"
    else:
        return None
    if differs_from_srgb(curve) <= SRGB_TOLERANCE_STOPS:
        return None
    mid = float(crf.apply_inverse_crf(curve, np.float32(0.5)))
    gamma = float(np.log(max(mid, 1e-9)) / np.log(0.5))
    return Declared(described, curve, gamma)


def to_srgb(image: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """``image`` (HWC, [0, 1]) encoded with the response ``curve``, re-encoded with the sRGB
    transfer function: same linear values, so the clip stays at 1 (float32, not quantised)."""
    image = np.asarray(image, np.float32)
    linear = np.clip(np.asarray(crf.apply_inverse_crf(curve, image), np.float64), 0.0, 1.0)
    out = np.clip(np.asarray(crf.srgb_encode(linear), np.float32), 0.0, 1.0)
    return np.where(image >= 1.0, np.float32(1.0), out)  # a clipped code stays exactly clipped

