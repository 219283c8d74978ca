"""HDR gain maps: the HDR rendition a phone stores beside the SDR photo (Ultra HDR JPEG, ISO
21496-1, an iPhone's HEIC or JPEG).

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

An iPhone (12 and later) stores its own kind in a HEIC (Apple, "Applying Apple HDR effect to
your photos"): an 8-bit grey auxiliary image, Rec. 709-encoded, whose linear value g scales
each pixel by 1 + (headroom - 1) g, where the headroom, the HDR white over the SDR white, is a
piecewise-linear function (in stops) of two numbers of the photo's Apple MakerNote, tags 33
and 48 (:func:`apple_headroom`).

ISO 21496-1 stores the same parameters as Adobe's in binary (a HEIF's 'tmap' item, as in
Samsung's HEIC, or a JPEG map's APP2 segment): headrooms of the base and the alternate
rendition, and per channel the map's min, max, gamma and the two offsets, each a fraction of
32-bit integers (:func:`iso_fields`); applied with Adobe's formula.

The file side (finding the map through the JPEG's Multi-Picture Format index or the HEIF's
auxiliary images and items) is :func:`hdr_jax.io.read_gain_map`; this module parses the metadata and
applies the map.
"""

from __future__ import annotations

import dataclasses
import re
import struct

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
    #: 'hdrgm' (Adobe's formula, :func:`hdr_rendition`; ISO 21496-1 maps too) or 'apple' (an
    #: iPhone's: gain_max holds log2 of the headroom).
    kind: str = "hdrgm"

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


def apple_stops(maker33: float, maker48: float) -> float:
    """log2 of the headroom (HDR white / SDR white) of an iPhone's gain map from its MakerNote
    tags 33 and 48, Apple's formula: 1.8 - 20 m48 (m48 <= 0.01) or 1.601 - 0.101 m48 when
    m33 < 1, and 3 - 70 m48 or 2.303 - 0.303 m48 otherwise; at least 0."""
    if maker33 < 1.0:
        stops = -20.0 * maker48 + 1.8 if maker48 <= 0.01 else -0.101 * maker48 + 1.601
    else:
        stops = -70.0 * maker48 + 3.0 if maker48 <= 0.01 else -0.303 * maker48 + 2.303
    return float(max(stops, 0.0))


def apple_headroom(maker33: float, maker48: float) -> float:
    """The headroom of an iPhone's gain map, 2^:func:`apple_stops` (Apple's formula)."""
    return float(2.0 ** apple_stops(maker33, maker48))


#: TIFF field types of a number (RATIONAL, SRATIONAL, FLOAT, DOUBLE): struct codes per byte order.
_NUMBER_TYPES = {5: "II", 10: "ii", 11: "f", 12: "d"}


def apple_maker_note(maker_note: bytes) -> dict[int, float]:
    """The numeric tags of an Apple MakerNote ({tag: first value}): the bytes 'Apple iOS\\0',
    two of version, 'MM' or 'II', then a TIFF directory (count, 12-byte entries) whose value
    offsets count from the MakerNote's first byte. :class:`GainMapError` when it is not one."""
    mn = bytes(maker_note)
    if not mn.startswith(b"Apple iOS\0") or len(mn) < 16 or mn[12:14] not in (b"MM", b"II"):
        raise GainMapError("no Apple MakerNote")
    end = ">" if mn[12:14] == b"MM" else "<"
    (count,) = struct.unpack_from(end + "H", mn, 14)
    out = {}
    for i in range(count):
        at = 16 + 12 * i
        if at + 12 > len(mn):
            raise GainMapError("the Apple MakerNote is cut off")
        tag, kind, n = struct.unpack_from(end + "HHI", mn, at)
        if kind not in _NUMBER_TYPES or n < 1:
            continue
        code = _NUMBER_TYPES[kind]
        size = struct.calcsize(end + code)
        where = at + 8 if size <= 4 else struct.unpack_from(end + "I", mn, at + 8)[0]
        if where + size > len(mn):
            raise GainMapError(f"the Apple MakerNote's tag {tag} points past its end")
        values = struct.unpack_from(end + code, mn, where)
        if len(values) == 2:
            if values[1] == 0:
                continue
            out[tag] = values[0] / values[1]
        else:
            out[tag] = float(values[0])
    return out


def _parse_apple(recovery: np.ndarray, maker_note: bytes) -> GainMap:
    """An iPhone's gain map: its headroom from MakerNote tags 33 and 48 (a file without tag 48,
    as some iPhones write, counts it 0: the formula's value where its branch starts)."""
    if not maker_note:
        raise GainMapError("an Apple gain map without the Apple MakerNote that holds its headroom")
    tags = apple_maker_note(maker_note)
    if 33 not in tags:
        raise GainMapError("an Apple gain map without its headroom (MakerNote tag 33)")
    m33, m48 = tags[33], tags.get(48, 0.0)
    if not (np.isfinite(m33) and np.isfinite(m48)):
        raise GainMapError(f"the Apple MakerNote's headroom tags are not finite: {m33}, {m48}")
    stops = apple_stops(m33, m48)
    # Its parameters in Adobe's terms, checked as theirs: no boost at 0, the headroom at 1.
    fields = {"GainMapMin": [0.0], "GainMapMax": [stops], "Gamma": [1.0], "OffsetSDR": [0.0],
              "OffsetHDR": [0.0], "HDRCapacityMin": [0.0], "HDRCapacityMax": [stops]}
    return dataclasses.replace(_from_fields(recovery, fields, False, "Apple gain map "),
                               kind="apple")


def iso_fields(payload: bytes) -> dict[str, list[float]]:
    """The parameters of ISO 21496-1 binary gain-map metadata (as a JPEG's APP2 segment holds
    it; a HEIF 'tmap' item puts a version byte before it, which :func:`hdr_jax.io.
    read_gain_map` removes), named as Adobe's XMP fields: the minimum and writer version (16
    bits each; a minimum above 0 is not understood), a flags byte (bit 7: three channels, else
    one), the base and alternate HDR headrooms (unsigned fractions of two 32-bit integers),
    then per channel GainMapMin and GainMapMax (signed / unsigned), Gamma (unsigned), OffsetSDR
    and OffsetHDR (the base and alternate offsets, signed / unsigned); big-endian.
    :class:`GainMapError` when it is not."""
    data = bytes(payload)
    if len(data) < 5:
        raise GainMapError(f"ISO 21496-1 metadata of {len(data)} bytes, too short")
    minimum, writer = struct.unpack_from(">HH", data, 0)
    if minimum > 0:
        raise GainMapError(f"ISO 21496-1 metadata needs a reader of version {minimum}")
    channels = 3 if data[4] & 0x80 else 1
    need = 5 + 16 + channels * 40
    if len(data) < need or (writer == 0 and len(data) != need):
        raise GainMapError(f"ISO 21496-1 metadata of {len(data)} bytes, expected {need}")

    def fraction(at: int, signed: bool) -> float:
        n, d = struct.unpack_from(">iI" if signed else ">II", data, at)
        if d == 0:
            raise GainMapError("ISO 21496-1 metadata with a zero denominator")
        return n / d

    out = {"HDRCapacityMin": [fraction(5, False)], "HDRCapacityMax": [fraction(13, False)]}
    names = (("GainMapMin", True), ("GainMapMax", True), ("Gamma", False), ("OffsetSDR", True),
             ("OffsetHDR", True))
    for c in range(channels):
        for j, (name, signed) in enumerate(names):
            out.setdefault(name, []).append(fraction(21 + 40 * c + 8 * j, signed))
    return out


def parse(recovery: np.ndarray, metadata: bytes | str, kind: str = "hdrgm") -> GainMap:
    """A :class:`GainMap` from the map's pixels (h, w[, c]) in [0, 1] and its metadata
    (:func:`hdr_jax.io.read_gain_map`'s): for 'hdrgm' its XMP packet, for 'iso' its ISO
    21496-1 binary metadata (:func:`iso_fields`; an alternate headroom below the base's: the
    base is the HDR rendition), for 'apple' the photo's Apple MakerNote. :class:`GainMapError`
    when the metadata lacks the required fields or holds unusable values."""
    if kind == "apple":
        return _parse_apple(recovery, metadata)
    if kind == "iso":
        fields = iso_fields(metadata)
        base_is_hdr = fields["HDRCapacityMax"][0] < fields["HDRCapacityMin"][0]
        return _from_fields(recovery, fields, base_is_hdr)
    if kind != "hdrgm":
        raise GainMapError(f"unknown gain map kind {kind!r}")
    xmp = metadata
    text = xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else xmp
    if HDRGM_NAMESPACE not in text:
        raise GainMapError("no hdrgm metadata")
    fields = {}
    for name in (*_PER_CHANNEL, "HDRCapacityMin", "HDRCapacityMax"):
        v = _field(text, name)
        if v is None:
            if name not in DEFAULTS:
                raise GainMapError(f"hdrgm:{name} is missing")
            v = [DEFAULTS[name]]
        fields[name] = v
    base = _field(text, "BaseRenditionIsHDR")
    return _from_fields(recovery, fields, isinstance(base, str) and base.lower() == "true",
                        "hdrgm:")


def _from_fields(recovery: np.ndarray, fields: dict, base_is_hdr: bool,
                 prefix: str = "ISO 21496-1 ") -> GainMap:
    """A :class:`GainMap` from Adobe-named fields (one or three numbers each), checked."""
    values = {}
    for name, v in fields.items():
        if len(v) not in (1, 3) or not all(np.isfinite(v)):
            raise GainMapError(f"{prefix}{name} must be one or three finite numbers, got {v}")
        values[name] = np.broadcast_to(np.asarray(v, np.float64), (3,)).copy()
    if np.any(values["GainMapMax"] < values["GainMapMin"]):
        raise GainMapError(f"{prefix}GainMapMax is below GainMapMin")
    if np.any(values["Gamma"] <= 0):
        raise GainMapError(f"{prefix}Gamma must be positive")
    if np.any(np.abs(values["GainMapMax"]) > 16) or np.any(np.abs(values["GainMapMin"]) > 16):
        raise GainMapError(f"{prefix}GainMapMin/Max beyond 16 stops")
    if np.any(np.abs(values["OffsetSDR"]) > 1) or np.any(np.abs(values["OffsetHDR"]) > 1):
        # Offsets are a small fraction of white (the default is 1/64).
        raise GainMapError(f"{prefix}OffsetSDR/OffsetHDR beyond 1")
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
        base_is_hdr=bool(base_is_hdr),
    )


def hdr_rendition(sdr_linear: np.ndarray, gain_map: GainMap, weight: float = 1.0) -> np.ndarray:
    """The HDR rendition (H, W, 3), linear, SDR white at 1, of an SDR base image linearised
    (``sdr_linear``, (H, W, 3)) and its gain map (upsampled bilinearly to the base's size):

        log_boost = GainMapMin (1 - r) + GainMapMax r,  r = recovery^(1 / Gamma),
        HDR = (SDR + OffsetSDR) 2^(log_boost weight) - OffsetHDR

    (the specification's application of a gain map; ``weight`` 1 is a display with at least
    HDRCapacityMax of headroom), or for an iPhone's map (kind 'apple')

        HDR = SDR (1 + (headroom^weight - 1) g),  g = the map's value, Rec. 709-decoded

    (Apple's, at ``weight`` 1). Values below 0 are clipped to 0."""
    if gain_map.base_is_hdr:
        raise GainMapError("the base image is the HDR rendition (BaseRenditionIsHDR); its map "
                           "leads to SDR")
    sdr = np.asarray(sdr_linear, np.float32)
    h, w = sdr.shape[:2]
    rec = gain_map.recovery
    if rec.shape[:2] != (h, w):
        rec = cv2.resize(rec, (w, h), interpolation=cv2.INTER_LINEAR)
        rec = rec.reshape(h, w, -1)
    if gain_map.kind == "apple":
        g = rec709_decode(rec)
        headroom = np.float32(2.0 ** (float(gain_map.gain_max[0]) * weight))
        return np.maximum(sdr * (1.0 + (headroom - 1.0) * g), 0.0).astype(np.float32)
    r = np.power(np.clip(rec, 0.0, 1.0), (1.0 / gain_map.gamma).astype(np.float32))
    log_boost = gain_map.gain_min * (1.0 - r) + gain_map.gain_max * r
    hdr = (sdr + gain_map.offset_sdr) * np.exp2(log_boost * weight) - gain_map.offset_hdr
    return np.maximum(hdr, 0.0).astype(np.float32)


def rec709_decode(v: np.ndarray) -> np.ndarray:
    """Inverse of the Rec. 709 OETF (ITU-R BT.709): V / 4.5 below 0.081, else
    ((V + 0.099) / 1.099)^(1 / 0.45)."""
    v = np.clip(np.asarray(v, np.float32), 0.0, 1.0)
    return np.where(v < 0.081, v / 4.5, np.power((v + 0.099) / 1.099, 1.0 / 0.45)).astype(
        np.float32)


def check_shape(gain_map: GainMap, shape: tuple[int, int]) -> None:
    """:class:`GainMapError` unless the map has the photo's (h, w) aspect within 5 %: a map
    stored turned against its photo would be stretched across it."""
    h, w = gain_map.recovery.shape[:2]
    if abs(np.log((h / w) / (shape[0] / shape[1]))) > np.log(1.05):
        raise GainMapError(f"the map ({w}x{h}) is not the photo's shape ({shape[1]}x{shape[0]})")
