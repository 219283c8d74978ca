"""HDR gain maps: the HDR rendition a phone stores beside the SDR photo (Ultra HDR JPEG).

Phones that take HDR photos save an ordinary SDR JPEG and, after it in the same file, a gain
map: a small image that says, per pixel, by how many stops the HDR rendition is brighter than
the SDR one. Its parameters are XMP in Adobe's ``hdrgm`` namespace (Adobe, "Gain Map
Specification" 1.0; the Android Ultra HDR image format v1 stores the same): GainMapMin and
GainMapMax (log2 of the smallest and largest boost), Gamma of the map's encoding, OffsetSDR and
OffsetHDR, HDRCapacityMin/Max (log2 display headroom between which a viewer blends in the map),
BaseRenditionIsHDR. The camera made the map from its own exposures, so where a photo has one,
its HDR rendition (display-referred, relative to the photo's white) holds what the networks would
have to guess: :func:`hdr_rendition` reconstructs it at full weight (a display of at least
HDRCapacityMax of headroom).

The file side (finding the map through the JPEG's Multi-Picture Format index) is
:func:`hdr_jax.io.read_gain_map`; this module parses the XMP and applies the map.
"""

from __future__ import annotations

import dataclasses
import re

import cv2
import numpy as np

#: Adobe's gain-map XMP namespace.
HDRGM_NAMESPACE = "http://ns.adobe.com/hdr-gain-map/1.0/"
#: Defaults of the optional fields (the specification's).
DEFAULTS = {"GainMapMin": 0.0, "Gamma": 1.0, "OffsetSDR": 1.0 / 64.0, "OffsetHDR": 1.0 / 64.0,
            "HDRCapacityMin": 0.0}
_PER_CHANNEL = ("GainMapMin", "GainMapMax", "Gamma", "OffsetSDR", "OffsetHDR")


class GainMapError(ValueError):
    """A gain map whose metadata cannot be used (missing, malformed or out of range)."""


@dataclasses.dataclass(frozen=True)
class GainMap:
    """A decoded gain map: ``recovery`` (h, w, 1 or 3) its stored values in [0, 1], and its
    parameters (per-channel ones as (3,) arrays, log2 units)."""

    recovery: np.ndarray
    gain_min: np.ndarray
    gain_max: np.ndarray
    gamma: np.ndarray
    offset_sdr: np.ndarray
    offset_hdr: np.ndarray
    capacity_min: float
    capacity_max: float
    base_is_hdr: bool = False

    @property
    def max_boost_stops(self) -> float:
        """log2 of the largest boost the map can give a pixel."""
        return float(np.max(self.gain_max))


def _field(xmp: str, name: str) -> list[float] | str | None:
    """One hdrgm field of an XMP packet, written as an attribute (hdrgm:Name="v") or an element
    (<hdrgm:Name>v</hdrgm:Name>, or an rdf:Seq of <rdf:li> values): its numbers, the raw text
    for a boolean, or None when absent."""
    m = re.search(rf'hdrgm:{name}\s*=\s*"([^"]*)"', xmp)
    if m:
        text = m.group(1)
    else:
        m = re.search(rf"<hdrgm:{name}\b[^>]*>(.*?)</hdrgm:{name}>", xmp, re.S)
        if not m:
            return None
        items = re.findall(r"<rdf:li\b[^>]*>(.*?)</rdf:li>", m.group(1), re.S)
        text = " ".join(items) if items else m.group(1)
    if name == "BaseRenditionIsHDR":
        return text.strip()
    try:
        return [float(v) for v in text.split()]
    except ValueError:
        raise GainMapError(f"hdrgm:{name} is not a number: {text.strip()[:40]!r}") from None


def parse(recovery: np.ndarray, xmp: bytes | str) -> GainMap:
    """A :class:`GainMap` from the map's pixels (h, w[, c]) in [0, 1] and its XMP packet;
    :class:`GainMapError` when the packet lacks the required fields or holds unusable values."""
    text = xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else xmp
    if HDRGM_NAMESPACE not in text:
        raise GainMapError("no hdrgm metadata")
    values = {}
    for name in (*_PER_CHANNEL, "HDRCapacityMin", "HDRCapacityMax"):
        v = _field(text, name)
        if v is None:
            if name not in DEFAULTS:
                raise GainMapError(f"hdrgm:{name} is missing")
            v = [DEFAULTS[name]]
        if len(v) not in (1, 3) or not all(np.isfinite(v)):
            raise GainMapError(f"hdrgm:{name} must be one or three finite numbers, got {v}")
        values[name] = np.broadcast_to(np.asarray(v, np.float64), (3,)).copy()
    if np.any(values["GainMapMax"] < values["GainMapMin"]):
        raise GainMapError("hdrgm:GainMapMax is below GainMapMin")
    if np.any(values["Gamma"] <= 0):
        raise GainMapError("hdrgm:Gamma must be positive")
    if np.any(np.abs(values["GainMapMax"]) > 16) or np.any(np.abs(values["GainMapMin"]) > 16):
        raise GainMapError("hdrgm:GainMapMin/Max beyond 16 stops")
    if np.any(np.abs(values["OffsetSDR"]) > 1) or np.any(np.abs(values["OffsetHDR"]) > 1):
        # Offsets are a small fraction of white (the default is 1/64).
        raise GainMapError("hdrgm:OffsetSDR/OffsetHDR beyond 1")
    base = _field(text, "BaseRenditionIsHDR")
    rec = np.asarray(recovery, np.float32)
    if rec.ndim == 2:
        rec = rec[..., None]
    if rec.ndim != 3 or rec.shape[-1] not in (1, 3) or min(rec.shape[:2]) < 1:
        raise GainMapError(f"a gain map image must be grey or RGB, got shape {rec.shape}")
    return GainMap(
        recovery=np.clip(rec, 0.0, 1.0),
        gain_min=values["GainMapMin"], gain_max=values["GainMapMax"], gamma=values["Gamma"],
        offset_sdr=values["OffsetSDR"], offset_hdr=values["OffsetHDR"],
        capacity_min=float(values["HDRCapacityMin"][0]),
        capacity_max=float(values["HDRCapacityMax"][0]),
        base_is_hdr=isinstance(base, str) and base.lower() == "true",
    )


def hdr_rendition(sdr_linear: np.ndarray, gain_map: GainMap, weight: float = 1.0) -> np.ndarray:
    """The HDR rendition (H, W, 3), linear, SDR white at 1, of an SDR base image linearised
    (``sdr_linear``, (H, W, 3)) and its gain map (upsampled bilinearly to the base's size):

        log_boost = GainMapMin (1 - r) + GainMapMax r,  r = recovery^(1 / Gamma),
        HDR = (SDR + OffsetSDR) 2^(log_boost weight) - OffsetHDR

    (the specification's application of a gain map; ``weight`` 1 is a display with at least
    HDRCapacityMax of headroom). Values below 0 are clipped to 0."""
    if gain_map.base_is_hdr:
        raise GainMapError("the base image is the HDR rendition (BaseRenditionIsHDR); its map "
                           "leads to SDR")
    sdr = np.asarray(sdr_linear, np.float32)
    h, w = sdr.shape[:2]
    rec = gain_map.recovery
    if rec.shape[:2] != (h, w):
        rec = cv2.resize(rec, (w, h), interpolation=cv2.INTER_LINEAR)
        rec = rec.reshape(h, w, -1)
    r = np.power(np.clip(rec, 0.0, 1.0), (1.0 / gain_map.gamma).astype(np.float32))
    log_boost = gain_map.gain_min * (1.0 - r) + gain_map.gain_max * r
    hdr = (sdr + gain_map.offset_sdr) * np.exp2(log_boost * weight) - gain_map.offset_hdr
    return np.maximum(hdr, 0.0).astype(np.float32)
