"""What a photo's own colour profile declares: its tone curve (ICC rTRC/gTRC/bTRC, PNG gAMA)
and its primaries (ICC rXYZ/gXYZ/bXYZ, PNG cHRM).

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

The primaries are another matter: the networks work per channel on whatever RGB the photo
holds, so a Display P3 or Adobe RGB photo is processed in its own primaries, and its outputs
must say which primaries those are, or every viewer shows them as sRGB (saturated colours
dulled and shifted). :func:`declared_colour_space` reads them; :meth:`ColourSpace.icc_profile`
writes an ICC profile with those primaries and the sRGB tone curve (what the pipeline's LDR
outputs are encoded with) for PNG/JPEG/TIFF outputs, and :attr:`ColourSpace.chromaticities` is
OpenEXR's attribute of the same name for the HDR.

ICC parsing and writing are by hand: Pillow hands over the profile bytes but its littleCMS
binding neither exposes the tone curves and colorants nor builds an RGB profile from primaries.
Only matrix/TRC RGB profiles are read (the kind cameras and editors embed); a LUT-based profile
declares nothing here.
"""

from __future__ import annotations

import dataclasses
import hashlib
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
#: H.273 transfer characteristic of linear data, in a HEIF's nclx colour box.
NCLX_LINEAR = 8


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
        if a == 0.0 and fn != 0:
            return None
        # A malformed curve overflows or divides by zero here; icc_decoding rejects the
        # non-finite result, so numpy need not warn about it.
        with np.errstate(all="ignore"):
            if fn == 0:
                return x ** g
            if fn == 1:
                return np.where(x >= -b / a, np.maximum(a * x + b, 0.0) ** g, 0.0)
            if fn == 2:
                return np.where(x >= -b / a, np.maximum(a * x + b, 0.0) ** g + c, c)
            if fn == 3:
                return np.where(x >= d, np.maximum(a * x + b, 0.0) ** g, c * x)
            return np.where(x >= d, np.maximum(a * x + b, 0.0) ** g + e, c * x + f)
    return None


def _rgb_tags(profile: bytes) -> dict[bytes, bytes] | None:
    """{signature: tag data} of an RGB ICC profile (ICC.1:2010, 7.3 tag table), None for a
    profile of another colour space or too short to hold a table; struct.error when the table
    runs past the data."""
    if len(profile) < 132 or profile[16:20] != b"RGB ":
        return None
    (count,) = struct.unpack(">I", profile[128:132])
    tags = {}
    for i in range(min(count, 256)):
        sig, off, size = struct.unpack(">4sII", profile[132 + 12 * i: 144 + 12 * i])
        tags[sig] = profile[off: off + size]
    return tags


def icc_decoding(profile: bytes) -> np.ndarray | None:
    """(3, len(_CODES)) linear value of each code per channel from an RGB matrix/TRC ICC profile,
    or None (not RGB, no TRC tags, or malformed)."""
    try:
        tags = _rgb_tags(profile)
        if tags is None:
            return None
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
    PNG sRGB chunk, which wins over a PNG gAMA chunk; a HEIF's nclx colour box declares a curve
    only when it is linear (H.273 transfer 8; the video transfers are sRGB-like at 8 bits, and
    the HDR ones are refused when the photo is read)."""
    profile = info.get("icc_profile")
    if profile:
        decoding = icc_decoding(bytes(profile))
        if decoding is None:
            return None
        curve = response_from_decoding(decoding)
        described = "its ICC profile"
    elif "srgb" in info:
        return None
    elif (info.get("nclx_profile") or {}).get("transfer_characteristics") == NCLX_LINEAR:
        curve = crf.gamma_crf(1.0)
        described = "its HEIF colour box"
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


def unread_profile(info: Mapping[str, Any]) -> str | None:
    """Why the photo's ICC profile goes unused, when it has one that neither
    :func:`declared_response` nor :func:`declared_colour_space` can read: its data is neither
    RGB nor grey (a Lab or CMYK profile on a photo decoded as RGB), or it is an RGB profile
    without the matrix and tone curves this reader applies (a LUT-based one). None when there
    is no profile, when it is read (sRGB-like or not), or for a grey profile (a black-and-white
    photo's tone curve, read as sRGB like an untagged one). ``info`` as for
    :func:`declared_response`."""
    profile = info.get("icc_profile")
    if not profile:
        return None
    profile = bytes(profile)
    if len(profile) < 132:
        return "is too short to be one"
    space = profile[16:20]
    if space == b"GRAY":
        return None
    if space != b"RGB ":
        name = space.decode("ascii", "replace").strip() or "unnamed"
        return f"describes {name} data, not RGB"
    if icc_decoding(profile) is not None or icc_chromaticities(profile) is not None:
        return None
    return "has no matrix and tone curves this reader applies (a LUT-based profile?)"


def to_srgb(image: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """``image`` (HWC, [0, 1]) encoded with the response ``curve``, re-encoded with the sRGB
    transfer function: same linear values, so the clip stays at 1 (float32, not quantised)."""
    image = np.asarray(image, np.float32)
    linear = np.clip(np.asarray(crf.apply_inverse_crf(curve, image), np.float64), 0.0, 1.0)
    out = np.clip(np.asarray(crf.srgb_encode(linear), np.float32), 0.0, 1.0)
    return np.where(image >= 1.0, np.float32(1.0), out)  # a clipped code stays exactly clipped



# --------------------------------------------------------------------------------------------
# Primaries
# --------------------------------------------------------------------------------------------

#: (x, y) of the red, green and blue primaries and of the white, in the order of OpenEXR's
#: ``chromaticities`` attribute, of the RGB spaces photos are commonly saved in (sRGB's are
#: Rec. 709's).
KNOWN_SPACES: dict[str, tuple[float, ...]] = {
    "sRGB": (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290),
    "Display P3": (0.680, 0.320, 0.265, 0.690, 0.150, 0.060, 0.3127, 0.3290),
    "Adobe RGB (1998)": (0.64, 0.33, 0.21, 0.71, 0.15, 0.06, 0.3127, 0.3290),
    "Rec. 2020": (0.708, 0.292, 0.170, 0.797, 0.131, 0.046, 0.3127, 0.3290),
    "ProPhoto RGB": (0.7347, 0.2653, 0.1596, 0.8404, 0.0366, 0.0001, 0.3457, 0.3585),
}
#: Largest difference in x or y of a D50-adapted colorant within which a declared space is one
#: of :data:`KNOWN_SPACES` (profiles round their colorants to 1/65536 and adapt them to D50 with
#: slightly different matrices; the known spaces differ by 0.02 or more).
PRIMARY_TOLERANCE = 0.005
#: The ICC profile connection space's white (D50), XYZ as ICC.1 rounds it.
D50_XYZ = np.array([0.9642, 1.0, 0.8249])
#: Bradford cone response (Lam 1985), the chromatic adaptation ICC.1 Annex E recommends.
_BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367],
                      [0.0389, -0.0685, 1.0296]])


def _xyz_from_xy(x: float, y: float) -> np.ndarray:
    return np.array([x / y, 1.0, (1.0 - x - y) / y])


def _xy(xyz: np.ndarray) -> tuple[float, float]:
    s = float(np.sum(xyz))
    return float(xyz[0]) / s, float(xyz[1]) / s


def rgb_to_xyz(chromaticities) -> np.ndarray:
    """(3, 3) matrix from linear RGB to XYZ of the space with these primaries and white (white
    at Y = 1): the primaries' XYZ scaled so that RGB (1, 1, 1) is the white (SMPTE RP 177)."""
    c = [float(v) for v in chromaticities]
    primaries = np.stack([_xyz_from_xy(c[2 * i], c[2 * i + 1]) for i in range(3)], axis=1)
    scale = np.linalg.solve(primaries, _xyz_from_xy(c[6], c[7]))
    return primaries * scale


def bradford(source_white: np.ndarray, target_white: np.ndarray) -> np.ndarray:
    """(3, 3) XYZ -> XYZ von Kries adaptation in the Bradford cone space from one white (XYZ) to
    another."""
    gains = (_BRADFORD @ np.asarray(target_white)) / (_BRADFORD @ np.asarray(source_white))
    return np.linalg.solve(_BRADFORD, gains[:, None] * _BRADFORD)


def _pcs_colorants(chromaticities) -> np.ndarray:
    """(3, 3) the space's RGB -> XYZ adapted to D50: the columns an ICC profile stores."""
    white = _xyz_from_xy(float(chromaticities[6]), float(chromaticities[7]))
    return bradford(white, D50_XYZ) @ rgb_to_xyz(chromaticities)


def _valid(chromaticities) -> bool:
    c = np.asarray(chromaticities, np.float64)
    if c.shape != (8,) or not np.all(np.isfinite(c)) or np.any(c[1::2] <= 0) or np.any(c < 0):
        return False
    try:
        m = rgb_to_xyz(c)
    except np.linalg.LinAlgError:
        return False
    # Primaries that do not span the white with positive weights are not an RGB space.
    return bool(np.all(np.isfinite(m)) and np.all(np.sum(m, axis=0) > 0)
                and abs(np.linalg.det(m)) > 1e-6)


@dataclasses.dataclass(frozen=True)
class ColourSpace:
    """The RGB primaries a photo's file declares: where they were read (``source``), the name of
    the :data:`KNOWN_SPACES` entry they match ('custom' for none) and their ``chromaticities``
    (rx, ry, gx, gy, bx, by, wx, wy; a known space's exact values)."""

    source: str
    name: str
    chromaticities: tuple[float, ...]

    def icc_profile(self) -> bytes:
        """An ICC v4 display profile with these primaries and the sRGB tone curve:
        :func:`icc_profile`."""
        return icc_profile(self.chromaticities, self.name)


def match_space(chromaticities) -> str:
    """Name of the :data:`KNOWN_SPACES` entry whose D50-adapted colorants are within
    :data:`PRIMARY_TOLERANCE` of these chromaticities' (the white enters through the
    adaptation), or 'custom'."""
    ours = _pcs_colorants(chromaticities)
    ours_xy = np.array([_xy(ours[:, i]) for i in range(3)])
    for name, known in KNOWN_SPACES.items():
        theirs = _pcs_colorants(known)
        if np.max(np.abs(ours_xy - [_xy(theirs[:, i]) for i in range(3)])) <= PRIMARY_TOLERANCE:
            return name
    return "custom"


def _xyz_tag(tag: bytes) -> np.ndarray | None:
    if len(tag) < 20 or tag[:4] != b"XYZ ":
        return None
    return np.array(_s15(tag, 8, 3))


def icc_chromaticities(profile: bytes) -> tuple[float, ...] | None:
    """The chromaticities of an RGB matrix/TRC ICC profile's primaries and white, or None (not
    RGB with an XYZ connection space, no colorant tags, or malformed).

    The colorants (rXYZ, gXYZ, bXYZ) are adapted to the D50 connection space; they are adapted
    back to the profile's own white with the inverse of its 'chad' tag (ICC.1:2010, 9.2.15) or,
    without one, with Bradford from the D50 to its 'wtpt' (version 2 profiles store the
    unadapted white there; a D50 'wtpt' then leaves them as they are)."""
    try:
        tags = _rgb_tags(profile)
        if tags is None or profile[20:24] != b"XYZ ":
            return None
        cols = [_xyz_tag(tags.get(s, b"")) for s in (b"rXYZ", b"gXYZ", b"bXYZ")]
        if any(c is None for c in cols):
            return None
        pcs = np.stack(cols, axis=1)
        chad = tags.get(b"chad", b"")
        if len(chad) >= 44 and chad[:4] == b"sf32":
            adapt = np.array(_s15(chad, 8, 9)).reshape(3, 3)
        else:
            white = _xyz_tag(tags.get(b"wtpt", b""))
            adapt = (bradford(white, D50_XYZ) if white is not None and white[1] > 0
                     else np.eye(3))
        back = np.linalg.inv(adapt)
    except (struct.error, np.linalg.LinAlgError, ValueError):
        return None
    native, white = back @ pcs, back @ D50_XYZ
    if not (np.all(np.isfinite(native)) and np.all(np.sum(native, axis=0) > 0)
            and np.sum(white) > 0):
        return None
    c = tuple(v for i in range(3) for v in _xy(native[:, i])) + _xy(white)
    return c if _valid(c) else None


def declared_colour_space(info: Mapping[str, Any]) -> ColourSpace | None:
    """The primaries the photo's metadata declares, or None when it declares none, sRGB's, or
    none it can read. ``info`` as for :func:`declared_response` (Pillow's ``Image.info``, PNG
    cHRM as 'chromaticity': white, red, green, blue; a HEIF's nclx colour box as pillow-heif's
    'nclx_profile', with the x, y of the primaries its H.273 code stands for): an ICC profile
    wins over a PNG sRGB chunk, which wins over the nclx box or a PNG cHRM chunk."""
    profile = info.get("icc_profile")
    if profile:
        c = icc_chromaticities(bytes(profile))
        source = "its ICC profile"
    elif "srgb" in info:
        return None
    elif info.get("nclx_profile"):
        nclx = info["nclx_profile"]
        try:
            c = tuple(float(nclx[f"color_primary_{k}_{a}"])
                      for k in ("red", "green", "blue", "white") for a in "xy")
        except (KeyError, TypeError, ValueError):
            c = None
        source = "its HEIF colour box"
    elif "chromaticity" in info:
        w = [float(v) for v in info["chromaticity"]][:8]
        c = tuple(w[2:8] + w[0:2]) if len(w) == 8 else None
        source = "its PNG cHRM chunk"
    else:
        return None
    if c is None or not _valid(c):
        return None
    name = match_space(c)
    if name == "sRGB":
        return None
    return ColourSpace(source, name, tuple(KNOWN_SPACES.get(name, c)))


def _s15_bytes(values) -> bytes:
    return b"".join(struct.pack(">i", round(float(v) * 65536.0)) for v in values)


def _mluc(text: str) -> bytes:
    utf16 = text.encode("utf-16-be")
    return (b"mluc" + bytes(4) + struct.pack(">II", 1, 12) + b"enUS"
            + struct.pack(">II", len(utf16), 28) + utf16)


def icc_profile(chromaticities, description: str = "RGB") -> bytes:
    """An ICC v4 RGB display profile (ICC.1:2010): these primaries and white (colorants adapted
    to D50 with Bradford, the adaptation in 'chad') and the sRGB tone curve (parametric curve
    type 3, IEC 61966-2-1) on every channel; the profile ID is its MD5 (7.2.18). Deterministic:
    the same primaries give the same bytes."""
    c = [float(v) for v in chromaticities]
    if not _valid(c):
        raise ValueError(f"icc_profile: not the chromaticities of an RGB space: {c}")
    white = _xyz_from_xy(c[6], c[7])
    adapt = bradford(white, D50_XYZ)
    pcs = adapt @ rgb_to_xyz(c)
    trc = (b"para" + bytes(4) + struct.pack(">HH", 3, 0)
           + _s15_bytes((crf.SRGB_EXPONENT, 1 / (1 + crf.SRGB_OFFSET),
                         crf.SRGB_OFFSET / (1 + crf.SRGB_OFFSET), 1 / crf.SRGB_TOE_SLOPE,
                         crf.SRGB_CODE_MAX)))
    tags = [
        (b"desc", _mluc(f"{description} (sRGB tone curve)")),
        (b"cprt", _mluc("No copyright, use freely")),
        (b"wtpt", b"XYZ " + bytes(4) + _s15_bytes(D50_XYZ)),
        (b"chad", b"sf32" + bytes(4) + _s15_bytes(adapt.ravel())),
        *[(sig, b"XYZ " + bytes(4) + _s15_bytes(pcs[:, i]))
          for i, sig in enumerate((b"rXYZ", b"gXYZ", b"bXYZ"))],
    ]
    table, data, offset = [], b"", 128 + 4 + 12 * (len(tags) + 3)
    for sig, body in tags:
        table.append(struct.pack(">4sII", sig, offset + len(data), len(body)))
        data += body + bytes(-len(body) % 4)
    trc_at = offset + len(data)  # the three TRC tags share one curve
    table += [struct.pack(">4sII", sig, trc_at, len(trc)) for sig in (b"rTRC", b"gTRC", b"bTRC")]
    data += trc
    head = bytearray(128)
    head[8:12] = bytes([4, 0x30, 0, 0])
    head[12:16], head[16:20], head[20:24], head[36:40] = b"mntr", b"RGB ", b"XYZ ", b"acsp"
    head[24:36] = struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
    head[68:80] = _s15_bytes(D50_XYZ)
    body = bytearray(bytes(head) + struct.pack(">I", len(tags) + 3) + b"".join(table) + data)
    body[0:4] = struct.pack(">I", len(body))
    # The ID is the MD5 of the profile with its flags, intent and ID fields zero.
    body[84:100] = hashlib.md5(bytes(body)).digest()
    return bytes(body)
