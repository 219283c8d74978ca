"""Image file I/O: LDR (PNG/JPEG/TIFF, and HEIF, AVIF and camera raw files to read) and HDR
(OpenEXR/Radiance) readers and atomic writers.

Everything returns or accepts single images as float32 HxWx3 NumPy arrays (add the batch axis
yourself). LDR values lie in [0, 1]; HDR values are linear RGB >= 0. Every failure raises
`ImageIOError` with a one-line message that starts with the offending path, so a CLI can print
it as is.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import glob
import hashlib
import io as stdio
import math
import os
import secrets
import shutil
import socket
import stat
import struct
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal, overload

import cv2
import numpy as np
import OpenEXR
import pillow_heif
from PIL import Image

from hdr_jax import interrupts, isobmff

__all__ = [
    "GAIN_MAP_KINDS",
    "HDR_EXTENSIONS",
    "ImageIOError",
    "LDR_EXTENSIONS",
    "LDR_INPUT_EXTENSIONS",
    "RAW_EXTENSIONS",
    "LdrInfo",
    "OutputSet",
    "atomic_output",
    "colour_metadata",
    "exif_camera",
    "exif_exposure",
    "heif_nclx",
    "is_lossy",
    "is_raw",
    "ldr_info",
    "list_images",
    "printable",
    "read_hdr",
    "read_gain_map",
    "read_ldr",
    "remove_temporaries",
    "remove_stale_temporaries",
    "write_hdr",
    "write_ldr",
]

PathLike = str | os.PathLike

#: LDR formats read and written.
LDR_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Camera raw formats (read only), decoded by LibRaw through rawpy: DNG and the makers' own.
RAW_EXTENSIONS: tuple[str, ...] = (
    ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf",
    ".rw2", ".rwl", ".pef", ".srw", ".3fr", ".iiq", ".erf", ".kdc", ".dcr", ".mrw", ".mos")
#: LDR formats read: also HEIF (HEIC, what phones save), decoded by libheif through pillow-heif,
#: AVIF (a HEIF of AV1 pictures), decoded by libavif through Pillow, and camera raw files.
LDR_INPUT_EXTENSIONS: tuple[str, ...] = (LDR_EXTENSIONS + (".heic", ".heif", ".avif")
                                         + RAW_EXTENSIONS)
HDR_EXTENSIONS: tuple[str, ...] = (".exr", ".hdr", ".pic")
_KIND_EXTENSIONS = {"ldr": LDR_INPUT_EXTENSIONS, "hdr": HDR_EXTENSIONS}
_PIL_FORMATS = ("PNG", "JPEG", "TIFF", "HEIF", "AVIF")
#: H.273 transfer characteristics of a HEIF's nclx colour box that encode HDR, not a photo's
#: display-referred codes: SMPTE ST 2084 (PQ) and ARIB STD-B67 (HLG).
_HDR_TRANSFERS = {16: "PQ (SMPTE ST 2084)", 18: "HLG (ARIB STD-B67)"}
_D65, _ILLUMINANT_C = (0.3127, 0.3290), (0.310, 0.316)
#: x, y of the red, green and blue primaries and of the white of the H.273 colour primaries
#: codes an nclx colour box may name (ITU-T H.273, table 2), for an AVIF, whose decoder reports
#: the box's codes but not what they stand for (libheif does, for a HEIC). SMPTE ST 428 (CIE
#: XYZ) is left out: not the RGB of a photo.
_H273_PRIMARIES: dict[int, tuple[float, ...]] = {
    1: (0.640, 0.330, 0.300, 0.600, 0.150, 0.060) + _D65,  # BT.709, sRGB
    4: (0.67, 0.33, 0.21, 0.71, 0.14, 0.08) + _ILLUMINANT_C,  # BT.470 System M
    5: (0.64, 0.33, 0.29, 0.60, 0.15, 0.06) + _D65,  # BT.601 625 lines
    6: (0.630, 0.340, 0.310, 0.595, 0.155, 0.070) + _D65,  # BT.601 525 lines
    7: (0.630, 0.340, 0.310, 0.595, 0.155, 0.070) + _D65,  # SMPTE 240M
    8: (0.681, 0.319, 0.243, 0.692, 0.145, 0.049) + _ILLUMINANT_C,  # generic film
    9: (0.708, 0.292, 0.170, 0.797, 0.131, 0.046) + _D65,  # BT.2020
    11: (0.680, 0.320, 0.265, 0.690, 0.150, 0.060, 0.314, 0.351),  # DCI-P3
    12: (0.680, 0.320, 0.265, 0.690, 0.150, 0.060) + _D65,  # Display P3
    22: (0.630, 0.340, 0.295, 0.605, 0.155, 0.077) + _D65,  # EBU Tech 3213
}
_HALF_MAX = float(np.finfo(np.float16).max)  # 65504
_EXIF_ORIENTATION = 0x0112
_EXIF_IFD = 0x8769
_EXIF_EXPOSURE_TIME, _EXIF_F_NUMBER, _EXIF_ISO = 0x829A, 0x829D, 0x8827
_EXIF_MAKE, _EXIF_MODEL = 0x010F, 0x0110
_LIBC = ctypes.CDLL(None)  # the running process's C library, for fflush


# Pillow opens HEIF through pillow-heif, which decodes a 10- or 12-bit one to 8 bits (most
# phones' HEIC are 8-bit); an HDR transfer (PQ/HLG) is refused in read_ldr, so those 8 bits are
# display codes. Thumbnails, depth maps and auxiliary images are not needed (a gain map is found
# in the file's items by read_gain_map, not through pillow-heif).
pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)


class ImageIOError(Exception):
    """Any image read/write failure. The message is one line and names the file."""

    def __init__(self, message: str, path: PathLike | None = None):
        super().__init__(message)
        self.path = None if path is None else Path(path)


def printable(text) -> str:
    """`text` as one terminal line: control characters (a newline or an ANSI escape in a file
    name) are shown as Python escapes instead of acting on the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error(
    path: PathLike,
    message: str,
    cause: BaseException | None = None,
    log: list[str] | None = None,
    temporary: Path | None = None,
) -> ImageIOError:
    """The one-line error of ``path``; ``temporary``: the hidden name the file was being written
    under, which a library's message names in place of ``path``."""
    if cause is not None:
        # LibRaw's errors (through rawpy) carry their text as bytes.
        text = cause.args[0] if len(cause.args) == 1 and isinstance(cause.args[0], bytes) else None
        text = text.decode("utf-8", "replace") if text is not None else str(cause)
        if (temporary is not None and isinstance(cause, OSError) and cause.strerror
                and cause.filename is not None
                and os.fspath(cause.filename) == os.fspath(temporary)):
            text = f"[Errno {cause.errno}] {cause.strerror}"  # not "tmp -> path"
        detail = _one_line(text) or type(cause).__name__
        message = f"{message} ({type(cause).__name__}: {detail})"
    elif log:  # what the C library said, when it raised nothing itself
        message = f"{message} ({_one_line(log[0], limit=200)})"
    if temporary is not None:
        message = message.replace(os.fspath(temporary), os.fspath(path)).replace(
            temporary.name, Path(path).name)
    # The path is escaped, not flattened: "a\nb.png" must not read as "a b.png".
    return ImageIOError(_one_line(f"{printable(os.fspath(path))}: {message}", limit=500), path)


@contextlib.contextmanager
def _library_messages() -> Iterator[list[str]]:
    """Collects what the decoders print (libpng, libtiff, OpenCV and OpenEXR on file descriptors
    1 and 2, the OpenEXR binding through Python's sys.stdout) and Python warnings (Pillow) into
    the yielded list, filled when the block ends.

    Those messages would break the one-line error promise, and they carry nothing the error
    raised afterwards does not say; the first line is kept as the error's detail.
    """
    messages: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        # File descriptors and the warnings filters are process-wide: redirecting them from
        # two threads at once could leave stderr pointing at a sink. Readers on worker threads
        # keep the libraries' own output.
        yield messages
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    python_text = stdio.StringIO()
    try:
        with (
            tempfile.TemporaryFile() as sink,
            warnings.catch_warnings(record=True) as caught,
            contextlib.redirect_stdout(python_text),
            contextlib.redirect_stderr(python_text),
        ):
            warnings.simplefilter("always")
            for fd in saved:
                os.dup2(sink.fileno(), fd)
            try:
                yield messages
            finally:
                _LIBC.fflush(None)  # C stdio buffers (C++ iostreams write through them)
                for fd, copy in saved.items():
                    os.dup2(copy, fd)
                sink.seek(0)
                text = sink.read().decode("utf-8", errors="replace") + python_text.getvalue()
                messages += [line.strip() for line in text.splitlines() if line.strip()]
                messages += [str(w.message) for w in caught]
    finally:
        for copy in saved.values():
            os.close(copy)


def _check_input_file(path: PathLike, extensions: tuple[str, ...], kind: str) -> Path:
    """Fail early, with a specific message, on the usual ways a path is not a readable image."""
    p = Path(path)
    try:
        if not p.exists():
            raise _error(p, "no such file")
        if p.is_dir():
            raise _error(p, "is a directory, not an image file")
        if not p.is_file():
            kind = _file_kind(p)
            raise _error(p, f"is not a regular file ({kind})" if kind else "is not a regular file")
        if p.stat().st_size == 0:
            raise _error(p, "empty file (0 bytes)")
    except OSError as e:
        raise _error(p, "cannot access file", e) from e
    ext = p.suffix.lower()
    if ext not in extensions:
        other = ("read_hdr" if ext in HDR_EXTENSIONS else
                 "read_ldr" if ext in LDR_INPUT_EXTENSIONS else None)
        hint = f"; use {other}" if other else ""
        raise _error(
            p,
            f"unsupported extension {p.suffix or '(none)'!r} for an {kind} image "
            f"(expected one of {', '.join(extensions)}){hint}",
        )
    return p


def _file_kind(p: Path) -> str:
    """'a FIFO', 'a character device', ... for a path that exists but is no regular file."""
    try:
        mode = p.stat().st_mode
    except OSError:
        return ""
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return ""


# --------------------------------------------------------------------------------------------
# LDR reading
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LdrInfo:
    """What an LDR file stores, before conversion to float RGB."""

    format: str  # "PNG" | "JPEG" | "TIFF" | "HEIF" | "AVIF" | "MPO" | "RAW"
    height: int  # after EXIF orientation, i.e. the shape read_ldr returns
    width: int
    channels: int  # stored channels incl. alpha; palette images count as RGB(A)
    bit_depth: int  # bits per stored sample: 1, 2, 4, 8 or 16
    orientation: int  # EXIF orientation tag, 1 = as stored
    frames: int = 1  # images in the file (TIFF pages, PNG animation frames, MPO pictures)


def _png_bit_depth(path: Path) -> int | None:
    # Pillow reports 16-bit RGB(A) PNGs as 8-bit "RGB"/"RGBA", so read the IHDR chunk directly.
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return head[24]
    return None


def _orientation(im: Image.Image, *, probe: bool) -> int:
    # A PNG's getexif() decodes the pixels when no eXIf chunk precedes them; the header-only
    # probe must not decode, so there it reads only an eXIf chunk already seen.
    if probe and im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a corrupt EXIF block (the pixels are already decoded and checked)
        return 1
    return orientation if orientation in range(1, 9) else 1


def _detach_tiff_orientation(im: Image.Image) -> int | None:
    """A TIFF's orientation tag, removed before its pixels load (None for other formats).

    Pillow transposes an oriented TIFF while loading it and the result has the wrong layout; the
    stored pixels, rotated here like every other format's, are right."""
    if im.format != "TIFF":
        return None
    exif = im.getexif()  # for a TIFF this reads the tags, not the pixels
    orientation = exif.get(_EXIF_ORIENTATION, 1)
    if _EXIF_ORIENTATION in exif:
        del exif[_EXIF_ORIENTATION]
    if _EXIF_ORIENTATION in im.tag_v2:
        del im.tag_v2[_EXIF_ORIENTATION]
        im._size = im._tile_size  # the stored size; Pillow had swapped it for the orientation
    try:
        orientation = int(orientation)
    except (TypeError, ValueError):
        return 1
    return orientation if orientation in range(1, 9) else 1


def _pil_info(im: Image.Image, path: Path, *, probe: bool = False) -> LdrInfo:
    fmt = im.format or "?"
    if fmt == "PNG":
        bits = _png_bit_depth(path) or 8
    elif fmt == "TIFF":
        sample_bits = im.tag_v2.get(258, (1,))
        bits = int(max(sample_bits if isinstance(sample_bits, tuple) else (sample_bits,)))
    elif fmt == "HEIF":
        bits = 8  # decoded to 8 bits whatever it stores (_register_heif)
    else:
        bits = int(getattr(im, "bits", None) or 8)
    if im.mode.startswith("I;16"):
        bits = 16
    if im.mode in ("P", "PA"):
        channels = 4 if (im.mode == "PA" or "transparency" in im.info) else 3
    else:
        channels = len(im.getbands())
    orientation = _detach_tiff_orientation(im)
    if orientation is None:
        orientation = _orientation(im, probe=probe)
    w, h = im.size
    if orientation >= 5:
        w, h = h, w
    return LdrInfo(fmt, h, w, channels, bits, orientation, int(getattr(im, "n_frames", 1)))


def _tiff_float_bits(path: Path) -> int | None:
    """Bits per sample of a TIFF whose first image stores floating-point samples (SampleFormat
    3), else None (any other TIFF, or a header that does not parse). Read by hand: Pillow does
    not open float RGB TIFFs at all, so it cannot say why."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head[:4] not in (b"II*\0", b"MM\0*"):
                return None
            end = "<" if head[:2] == b"II" else ">"
            f.seek(struct.unpack(end + "I", head[4:8])[0])
            (count,) = struct.unpack(end + "H", f.read(2))
            tags = {}
            for _ in range(min(count, 512)):
                entry = f.read(12)
                if len(entry) < 12:
                    return None
                tag, typ, n = struct.unpack(end + "HHI", entry[:8])
                if typ == 3 and tag in (258, 339):  # SHORT: the first value (inline if n <= 2)
                    if n <= 2:
                        tags[tag] = struct.unpack(end + "H", entry[8:10])[0]
                    else:
                        here = f.tell()
                        f.seek(struct.unpack(end + "I", entry[8:12])[0])
                        tags[tag] = struct.unpack(end + "H", f.read(2))[0]
                        f.seek(here)
    except (OSError, struct.error):
        return None
    return tags.get(258, 32) if tags.get(339) == 3 else None


def _open_ldr(p: Path) -> Image.Image:
    try:
        with _library_messages():
            im = Image.open(p, formats=_PIL_FORMATS)
    except Exception as e:
        bits = _tiff_float_bits(p) if p.suffix.lower() in (".tif", ".tiff") else None
        if bits is not None:
            raise _float_tiff_error(p, bits) from None
        raise _error(p, "not a readable PNG/JPEG/TIFF/HEIF/AVIF image", e) from e
    if im.format == "AVIF" and "nclx_profile" not in im.info:
        try:
            nclx = heif_nclx(p.read_bytes())
        except OSError as e:
            im.close()
            raise _error(p, "cannot read the file", e) from e
        if nclx is not None:
            im.info["nclx_profile"] = nclx
    return im


def heif_nclx(data: bytes) -> dict | None:
    """The nclx colour box associated with a HEIF file's primary item (ISO/IEC 23008-12 'colr'
    of colour type 'nclx': H.273 colour primaries, transfer characteristics, matrix
    coefficients, full-range flag), as pillow-heif reports a HEIC's: 'color_primaries',
    'transfer_characteristics', 'matrix_coefficients', 'full_range_flag' and, for the primaries
    of :data:`_H273_PRIMARIES`, 'color_primary_{red,green,blue,white}_{x,y}'. None when the
    file has no such box or its boxes do not parse. Read by hand for AVIF: Pillow's decoder
    reports an ICC profile but not an nclx box."""
    meta = isobmff.read_meta(data, with_data=False)
    item = meta.items.get(meta.primary)
    for kind, body in item.properties if item is not None else ():
        if kind == b"colr" and len(body) >= 11 and body[:4] == b"nclx":
            cp, tc, mc = struct.unpack_from(">HHH", body, 4)
            out = {"color_primaries": cp, "transfer_characteristics": tc,
                   "matrix_coefficients": mc, "full_range_flag": body[10] >> 7}
            xy = _H273_PRIMARIES.get(cp)
            if xy is not None:
                out |= {f"color_primary_{c}_{a}": xy[2 * j + m]
                        for j, c in enumerate(("red", "green", "blue", "white"))
                        for m, a in enumerate("xy")}
            return out
    return None


def _float_tiff_error(p: Path, bits: int) -> ImageIOError:
    return _error(p, f"a TIFF of {bits}-bit floating-point samples (scene-referred HDR?); a "
                  "photo stores 8- or 16-bit integers")


def is_raw(path: PathLike) -> bool:
    """Whether ``path`` names a camera raw file (by its extension, :data:`RAW_EXTENSIONS`)."""
    return Path(path).suffix.lower() in RAW_EXTENSIONS


def _rawpy(p: Path):
    """The rawpy module (LibRaw), imported for a raw file only: most runs never need it."""
    try:
        import rawpy
    except ImportError as e:  # a dependency, but an install may lack a wheel for its platform
        raise _error(p, "reading camera raw files needs rawpy (pip install rawpy)", e) from e
    return rawpy


@contextlib.contextmanager
def _open_raw(p: Path):
    rawpy = _rawpy(p)
    try:
        with _library_messages():
            raw = rawpy.imread(os.fspath(p))
    except Exception as e:
        raise _error(p, "not a camera raw file LibRaw can read", e) from e
    try:
        yield raw
    finally:
        raw.close()


#: LibRaw's flip codes that turn the picture by 90 degrees (its sizes are then swapped).
_RAW_QUARTER_TURNS = (5, 6)


def _raw_info(p: Path) -> LdrInfo:
    with _open_raw(p) as raw:
        try:
            s = raw.sizes
        except Exception as e:
            raise _error(p, "cannot parse its raw header", e) from e
    h, w = (s.width, s.height) if s.flip in _RAW_QUARTER_TURNS else (s.height, s.width)
    if h <= 0 or w <= 0:
        raise _error(p, f"image has zero size {(h, w)}")
    return _raw_ldr_info(h, w)


def _raw_ldr_info(height: int, width: int) -> LdrInfo:
    # LibRaw turns the picture upright itself and hands over 16-bit RGB.
    return LdrInfo(format="RAW", height=int(height), width=int(width), channels=3,
                   bit_depth=16, orientation=1)


#: Clipping piles a sensor's saturated pixels up on one raw value, where noise spreads unclipped
#: ones: a largest value shared by at least this many pixels (and this share of them) is where
#: the sensor saturated, if it is at least SATURATION_FLOOR of the white level above black (a
#: sensor saturates a little below its nominal white, not far; a lossy raw format's coarse
#: steps can pile up unclipped bright values too).
SATURATION_PILE, SATURATION_SHARE, SATURATION_FLOOR = 16, 1e-5, 0.9


def _raw_saturation(raw) -> int | None:
    """Where ``raw``'s sensor saturated, above its black level, when that is below its white
    level: its largest value, if a pile of pixels share it (:data:`SATURATION_PILE`: a camera
    that saturates below its nominal white); None (the white level) otherwise. LibRaw's own
    guess (``adjust_maximum_thr``) takes the largest value whenever it is above 75 % of the
    white level, so a photo whose brightest pixels did not clip would be brightened until they
    read as clipped."""
    try:
        values = raw.raw_image_visible
        white, black = int(raw.white_level), min(raw.black_level_per_channel)
    except Exception:  # a layout rawpy does not expose (the decode itself still runs)
        return None
    top = int(values.max())
    pile = np.count_nonzero(values == top)
    if (black + SATURATION_FLOOR * (white - black) <= top < white
            and pile >= max(SATURATION_PILE, SATURATION_SHARE * values.size)):
        return top - black
    return None


def _read_raw(p: Path, half_size: bool = False) -> tuple[np.ndarray, LdrInfo]:
    """A camera raw file as a photo: demosaiced by LibRaw with the white balance the camera
    recorded, in linear sRGB primaries, the sensor's saturation (:func:`_raw_saturation`) at 1
    and every channel clipped there (LibRaw's 'clip' highlight mode: a clipped highlight is
    white, not tinted), turned
    upright, brightened by nothing; then encoded with the sRGB transfer function in float, so
    its codes are exactly sRGB (no 8- or 16-bit rounding). With ``half_size``, LibRaw's
    half-size mode: each 2x2 block of the colour filter array becomes one pixel (no
    demosaicing), half the width and height rounded up."""
    from hdr_jax.camera import crf  # the one sRGB encoding (it loads JAX: raw files only)

    rawpy = _rawpy(p)
    with _open_raw(p) as raw:
        try:
            # LibRaw halves only colour-filter-array data ("flat"); a linear DNG (demosaiced
            # already, as phones' raw formats are) is halved below.
            binned = half_size and raw.raw_type == rawpy.RawType.Flat
            with _library_messages():
                rgb = raw.postprocess(
                    output_color=rawpy.ColorSpace.sRGB, gamma=(1.0, 1.0), no_auto_bright=True,
                    output_bps=16, use_camera_wb=True, highlight_mode=rawpy.HighlightMode.Clip,
                    user_sat=_raw_saturation(raw), adjust_maximum_thr=0.0,
                    half_size=binned)
        except Exception as e:
            raise _error(p, "cannot decode its raw data (corrupt or truncated?)", e) from e
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise _error(p, f"LibRaw decoded an image of shape {rgb.shape}, not RGB")
    linear = rgb.astype(np.float32) / np.float32(65535.0)
    if half_size and not binned:
        # Its 2x2 blocks of linear values averaged (an odd last row or column paired with
        # itself, as LibRaw rounds the half up).
        h, w = linear.shape[:2]
        linear = np.pad(linear, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        linear = linear.reshape(-(-h // 2), 2, -(-w // 2), 2, 3).mean((1, 3))
    codes = crf.srgb_encode(linear).astype(np.float32)
    return np.ascontiguousarray(codes), _raw_ldr_info(*codes.shape[:2])


def ldr_info(path: PathLike) -> LdrInfo:
    """Header-only probe of an LDR file (bit depth, channels, oriented size); decodes no pixels,
    so a PNG whose EXIF follows its pixel data is reported with orientation 1 here."""
    p = _check_input_file(path, LDR_INPUT_EXTENSIONS, "LDR")
    if is_raw(p):
        return _raw_info(p)
    with _open_ldr(p) as im:
        try:
            return _pil_info(im, p, probe=True)
        except Exception as e:
            raise _error(p, "cannot parse image header", e) from e


def colour_metadata(path: PathLike) -> dict:
    """What an LDR file's header says about its colour encoding, as Pillow reads it:
    'icc_profile' (bytes; PNG iCCP, JPEG APP2, TIFF tag 34675) and, for a PNG, 'srgb' (the sRGB
    chunk's rendering intent), 'gamma' (the gAMA chunk's file gamma) and 'chromaticity' (the
    cHRM chunk: white, red, green, blue x, y), for a HEIF or AVIF 'nclx_profile' (its H.273
    colour box, as pillow-heif reads a HEIC's and :func:`heif_nclx` an AVIF's:
    'color_primaries', 'transfer_characteristics' and the primaries' x, y). Empty when none."""
    p = _check_input_file(path, LDR_INPUT_EXTENSIONS, "LDR")
    if is_raw(p):  # read_ldr encodes a raw file's linear sRGB itself: nothing else to declare
        with _open_raw(p):
            return {}
    with _open_ldr(p) as im:
        return {k: im.info[k] for k in ("icc_profile", "srgb", "gamma", "chromaticity",
                                        "nclx_profile") if k in im.info}


def is_lossy(path: PathLike) -> bool:
    """Whether an LDR file's pixels went through lossy compression (JPEG, HEIF, AVIF, or a TIFF
    with JPEG compression): its codes then ring around edges and clipped regions. Reads the
    header only."""
    p = _check_input_file(path, LDR_INPUT_EXTENSIONS, "LDR")
    if is_raw(p):
        with _open_raw(p):
            return False
    with _open_ldr(p) as im:
        if im.format == "TIFF":
            return "jpeg" in str(im.info.get("compression", "")).lower()
        return im.format != "PNG"


def _mp_entries(mp: bytes) -> list[tuple[int, int]]:
    """(size, offset) of each picture in a JPEG's Multi-Picture Format index (CIPA DC-007: a
    TIFF structure whose MPEntry tag 0xB002 holds 16 bytes per picture: attributes, size,
    offset from the index's TIFF header, two dependent-image entries). Pillow reads the index
    but hands files with a gain map over as single JPEGs, so it is parsed here."""
    end = "<" if mp[:2] == b"II" else ">"
    (ifd,) = struct.unpack(end + "I", mp[4:8])
    (count,) = struct.unpack(end + "H", mp[ifd: ifd + 2])
    for i in range(min(count, 64)):
        tag, _, n, value = struct.unpack(end + "HHII", mp[ifd + 2 + 12 * i: ifd + 14 + 12 * i])
        if tag == 0xB002:
            return [struct.unpack(end + "4xII4x", mp[value + 16 * k: value + 16 * k + 16])
                    for k in range(n // 16)]
    return []


def _mpf_offset(data: bytes) -> int | None:
    """Where a JPEG's Multi-Picture Format index (its TIFF header, from which the picture
    offsets count) starts: after 'MPF\\0' in the first APP2 segment that holds one, among the
    segments before the first scan. Pillow keeps this only for the files it opens as a JPEG,
    not for those it opens as MPO (an iPhone's HDR JPEG among them)."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan
            return None
        (n,) = struct.unpack_from(">H", data, pos + 2)
        if marker == 0xE2 and data[pos + 4: pos + 8] == b"MPF\0":
            return pos + 8
        pos += 2 + n
    return None


#: Auxiliary image type of the HDR gain map an iPhone stores in its HEIC photos (Apple,
#: "Applying Apple HDR effect to your photos").
APPLE_GAIN_MAP = "urn:com:apple:photo:2020:aux:hdrgainmap"
_EXIF_MAKER_NOTE = 0x927C
#: Namespace of ISO 21496-1 gain-map metadata in a JPEG's APP2 segments.
ISO_GAIN_MAP = "urn:iso:std:iso:ts:21496:-1"


#: The gain-map kinds :func:`read_gain_map` reads, in the order it prefers them where a file
#: describes its map more than once (an iPhone's since iOS 18: Apple's and ISO 21496-1).
GAIN_MAP_KINDS = ("hdrgm", "apple", "iso")


def read_gain_map(path: PathLike, kinds: Sequence[str] = GAIN_MAP_KINDS
                  ) -> tuple[np.ndarray, bytes, str] | None:
    """The HDR gain map a photo carries, as (its pixels (h, w, 1 or 3) in [0, 1], upright like
    :func:`read_ldr`'s image, its metadata, its kind); None when the file has none (any other
    format included), or none of ``kinds``, read in their order of preference. The parameters
    are :func:`hdr_jax.camera.gainmap.parse`'s. Three kinds:

    - 'hdrgm': a JPEG's (Ultra HDR: a picture of the file's Multi-Picture Format index whose
      XMP holds Adobe's hdrgm parameters), turned by the photo's EXIF orientation; the metadata
      is that XMP packet. Raises ImageIOError when the photo's XMP announces a gain map
      (hdrgm:Version) that is not there or does not decode.
    - 'iso': ISO 21496-1 binary metadata: a JPEG map's (a picture of the index with that
      metadata in an APP2 segment and no hdrgm XMP, turned like an Ultra HDR map) or a HEIF's
      or AVIF's (a 'tmap' item whose inputs are the photo and the gain map: an auxiliary
      picture, as Samsung's phones write it, or a hidden one, as libavif and libheif do; see
      :func:`_heif_picture` for how it is decoded and turned).
    - 'apple': an iPhone HEIC's (the auxiliary image :data:`APPLE_GAIN_MAP`, decoded and
      turned like a 'tmap' input) or JPEG's (a grey picture of the Multi-Picture Format index
      whose XMP names that auxiliary type, turned like an Ultra HDR map); the metadata is the
      photo's EXIF MakerNote (Apple's, which holds the map's headroom), empty without one.

    A HEIF or AVIF gain map that is not in the file, is cut off or does not decode raises
    ImageIOError."""
    p = _check_input_file(path, LDR_INPUT_EXTENSIONS, "LDR")
    if is_raw(p):
        return None
    with _open_ldr(p) as im:
        fmt, exif = im.format, im.info.get("exif") or b""
        if fmt in ("HEIF", "AVIF"):
            return _heif_gain_map(p, exif, kinds)
        if fmt not in ("JPEG", "MPO"):
            return None
        xmp, mp, mpoffset = im.info.get("xmp") or b"", im.info.get("mp"), im.info.get("mpoffset")
        orientation = _orientation(im, probe=False)
    # Adobe's hdrgm namespace and its Version field, looked for in the bytes (this module does
    # not import the camera package, which loads JAX).
    announced = b"hdr-gain-map" in xmp and b"Version" in xmp and "hdrgm" in kinds
    failure = "none of its pictures is one"
    try:
        entries = _mp_entries(mp) if mp else []
    except struct.error:
        entries, failure = [], "its multi-picture index is malformed"
    data = p.read_bytes() if len(entries) > 1 else b""
    if mpoffset is None and len(entries) > 1:
        mpoffset = _mpf_offset(data)
        if mpoffset is None:
            entries, failure = [], "its multi-picture index is malformed"
    for size, offset in entries[1:]:
        chunk = data[mpoffset + offset: mpoffset + offset + size]
        if not chunk.startswith(b"\xff\xd8"):
            continue
        try:
            with _library_messages(), Image.open(stdio.BytesIO(chunk), formats=("JPEG",)) as g:
                info_xmp = g.info.get("xmp") or b""  # read with the header: no decoding yet
                # An iPhone's JPEG: its map's XMP names Apple's auxiliary type (apdi namespace);
                # ISO 21496-1 alone: the map's APP2 segment holds the binary metadata.
                iso = next((c[len(ISO_GAIN_MAP) + 1:] for m, c in getattr(g, "applist", [])
                            if m == "APP2" and c.startswith(ISO_GAIN_MAP.encode() + b"\0")),
                           b"")
                offered = {"hdrgm": b"hdr-gain-map" in info_xmp,
                           "apple": APPLE_GAIN_MAP.encode() in info_xmp,
                           "iso": len(iso) > 4}  # the photo's own APP2 holds 4 bytes
                kind = next((k for k in kinds if offered.get(k)), None)
                if kind is None:
                    continue
                pixels = np.asarray(g.convert("L") if kind == "apple" else
                                    g if g.mode in ("L", "RGB") else g.convert("RGB"))
        except Exception as e:
            failure = f"its gain map does not decode ({type(e).__name__}: {_one_line(str(e))})"
            continue
        pixels = pixels.astype(np.float32)[..., None] if pixels.ndim == 2 else pixels
        pixels = np.ascontiguousarray(_apply_orientation(pixels / np.float32(255.0), orientation))
        meta = {"hdrgm": bytes(info_xmp), "iso": bytes(iso)}.get(kind) or _maker_note(exif)
        return pixels, meta, kind
    if announced:
        raise _error(p, f"announces an HDR gain map (hdrgm XMP) but {failure}")
    return None


def _heif_gain_map(p: Path, exif: bytes, kinds: Sequence[str]
                   ) -> tuple[np.ndarray, bytes, str] | None:
    """:func:`read_gain_map` of a HEIF or AVIF file (``exif``: the photo's EXIF block): Apple's
    auxiliary gain map and MakerNote ('apple'), the gain map input of an ISO 21496-1 'tmap' item
    whose base input is the photo ('iso': an auxiliary picture, as Samsung's phones and iPhones
    write it, or a hidden one, as libavif and libheif do), the first of ``kinds`` found."""
    try:
        data = p.read_bytes()
    except OSError as e:
        raise _error(p, "cannot read the file", e) from e
    meta = isobmff.read_meta(data)
    photo = meta.items.get(meta.primary)
    if photo is None:
        return None
    apple = next((i for i in meta.items.values() if meta.primary in i.refs.get(b"auxl", ())
                  and isobmff.aux_type(i) == APPLE_GAIN_MAP), None)
    tmap = next((i for i in meta.items.values() if i.type == b"tmap"
                 and i.refs.get(b"dimg", ())[:1] == (meta.primary,)
                 and len(i.refs[b"dimg"]) == 2), None)
    kind = next((k for k in kinds if {"apple": apple, "iso": tmap}.get(k) is not None), None)
    if kind is None:
        return None
    if kind == "apple":
        what, gain, payload = "Apple HDR gain map", apple, _maker_note(exif)
    else:
        what, payload = "ISO 21496-1 gain map", tmap.data
        if payload is None:
            raise _error(p, f"its {what}'s metadata lies beyond the end of the file (cut?)")
        if payload[:1] != b"\0":  # the 'tmap' item's own version, before the ISO metadata
            raise _error(p, f"its {what}'s 'tmap' item is of an unknown version")
        payload = payload[1:]
        gain = meta.items.get(tmap.refs[b"dimg"][1])
        if gain is None:
            raise _error(p, f"its {what} (item {tmap.refs[b'dimg'][1]}) is not in the file")
    try:
        with _library_messages():
            pixels = _heif_picture(meta, gain, photo, grey=kind == "apple")
    except Exception as e:
        raise _error(p, f"its {what} does not decode", e) from e
    return pixels, payload, kind


#: Decoders of a HEIF picture item's coding: HEVC by libheif (pillow-heif), AV1 by libavif
#: (Pillow), each given a file of the brand it reads.
_HEIF_CODINGS = {b"hvc1": b"heic", b"av01": b"avif"}


def _heif_picture(meta: isobmff.Meta, item: isobmff.Item, base: isobmff.Item, *,
                  grey: bool) -> np.ndarray:
    """A picture item of a HEIF or AVIF (coded, or a grid of coded tiles; hidden, auxiliary or
    not), (h, w, 1 or 3) in [0, 1]: written with its tiles as the primary picture of a file of
    its own (:func:`isobmff.write_file`; no decoder here decodes a hidden item, nor an AVIF's
    auxiliary pictures) and decoded there to 8 bits, cropped by its own clean aperture, then
    turned by its own rotation and mirroring, or, when it has none, by ``base``'s: a gain map
    is stored like the picture it belongs to, and the photo is read turned."""
    tiles = [meta.items.get(i) for i in item.refs.get(b"dimg", ())]
    if any(t is None for t in tiles):
        raise ValueError("a tile of it is not in the file")
    coded = {t.type for t in tiles} if item.type == b"grid" else {item.type}
    if len(coded) != 1 or next(iter(coded)) not in _HEIF_CODINGS:
        raise ValueError(f"coded as {b'/'.join(sorted(coded)).decode(errors='replace')}, "
                         "which is not decoded here")
    brand = _HEIF_CODINGS[coded.pop()]
    keep = tuple(x for x in item.properties if x[0] not in (b"irot", b"imir", b"auxC"))
    parts = [dataclasses.replace(item, hidden=False, properties=keep), *tiles]
    if any(x.data is None for x in parts):
        raise ValueError("its data lies outside the file")
    blob = stdio.BytesIO(isobmff.write_file(parts, brand))
    if brand == b"avif":
        with Image.open(blob, formats=("AVIF",)) as im:
            im.load()
            pil = im.copy()
    else:
        pil = pillow_heif.open_heif(blob).to_pillow()
    pil = pil.convert("L") if grey else pil if pil.mode in ("L", "RGB") else pil.convert("RGB")
    pixels = np.asarray(pil, np.float32) / np.float32(255.0)
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    return isobmff.apply_transforms(pixels, isobmff.transforms(item) or isobmff.transforms(base))


def _maker_note(exif: bytes) -> bytes:
    """The MakerNote of an EXIF block (its EXIF directory's tag 0x927C), b"" without one."""
    if not exif:
        return b""
    try:
        with warnings.catch_warnings():  # Pillow warns about a corrupt block; it is one here
            warnings.simplefilter("ignore")
            tags = Image.Exif()
            tags.load(exif)
            found = tags.get_ifd(_EXIF_IFD).get(_EXIF_MAKER_NOTE)
    except Exception:  # a corrupt EXIF block: the map then has no headroom
        return b""
    return bytes(found) if isinstance(found, (bytes, bytearray)) else b""


def exif_exposure(path: PathLike) -> float | None:
    """log2 of the exposure a photo's EXIF records, t ISO / N^2 (exposure time t, ISO speed,
    f-number N; a missing ISO or f-number counts as equal across photos), or None without an
    exposure time. Comparable between photos of one camera, which is all a calibration needs.
    A camera raw file's are the ones LibRaw reads from it (0 where it found none)."""
    p = _check_input_file(path, LDR_INPUT_EXTENSIONS, "LDR")

    def number(v):
        if isinstance(v, tuple):  # ISO may be stored as a sequence
            v = v[0] if v else None
        try:
            v = float(v)
        except (TypeError, ValueError, ZeroDivisionError):
            return None
        return v if np.isfinite(v) and v > 0 else None

    if is_raw(p):
        with _open_raw(p) as raw:
            try:
                shot = raw.other
            except Exception:  # a header LibRaw read without them
                return None
        t, iso, n = number(shot.shutter_speed), number(shot.iso_speed), number(shot.aperture)
    else:
        with _open_ldr(p) as im:
            try:
                tags = im.getexif().get_ifd(_EXIF_IFD)
            except Exception:  # a corrupt EXIF block is no exposure
                return None
        t, iso, n = (number(tags.get(k)) for k in (_EXIF_EXPOSURE_TIME, _EXIF_ISO,
                                                   _EXIF_F_NUMBER))
    if t is None:
        return None
    return float(np.log2(t) + (np.log2(iso) if iso else 0.0) - (2 * np.log2(n) if n else 0.0))


def exif_camera(path: PathLike) -> str | None:
    """The camera a photo's EXIF names (its Make and Model tags; the Model alone when it already
    begins with the Make, as "Canon EOS R5" under the Make "Canon"), or None when it names none.
    Raw files: None (their response is known without one)."""
    p = _check_input_file(path, LDR_INPUT_EXTENSIONS, "LDR")
    if is_raw(p):
        return None
    with _open_ldr(p) as im:
        try:
            tags = im.getexif()
        except Exception:  # a corrupt EXIF block names no camera
            return None
    make, model = (" ".join(str(tags.get(k, "")).replace("\x00", " ").split())
                   for k in (_EXIF_MAKE, _EXIF_MODEL))
    if model.lower().startswith(make.lower()):
        make = ""
    return " ".join(filter(None, (make, model))) or None


def _apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation -> upright, matching PIL.ImageOps.exif_transpose."""
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:
        return a.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(a, k=-1)
    if orientation == 7:
        return a[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(a, k=1)
    return a


#: What libjpeg and libpng report for damage that Pillow decodes past without an error (not
#: libjpeg's "extraneous bytes before marker", which many cameras' files carry harmlessly).
_DAMAGE_MESSAGES = ("premature end of data segment", "bad Huffman code", "instead of RST",
                    "Premature end of JPEG file", "libpng error")


def _damage(log: list[str]) -> list[str]:
    return [m for m in log if any(d in m for d in _DAMAGE_MESSAGES)]


def _check_stream(p: Path, info: LdrInfo) -> None:
    """Refuses a JPEG or PNG whose compressed data is damaged although Pillow decoded it.

    Pillow decodes a JPEG whose entropy-coded data is garbled or cut short (when an end marker
    follows) into grey or garbage rows, and a PNG whose image data ends early into black rows,
    without an error or a warning; libjpeg and libpng (through OpenCV) report both, so the file
    is decoded once more with them and refused on what they report."""
    with _library_messages() as log:
        cv2.imread(os.fspath(p), cv2.IMREAD_UNCHANGED)
    damage = _damage(log)
    if damage:
        raise _error(p, f"cannot decode {info.format} data (corrupt or truncated?)", log=damage)


def _tiff_upright(data: bytes) -> bytes:
    """A TIFF file's bytes with the orientation tag (274) of its first image set to 1 (upright),
    in classic TIFF and BigTIFF; unchanged where there is no such tag or the header does not
    parse (the decoder then says what is wrong)."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 16:
        return data
    version = struct.unpack_from(order + "H", data, 2)[0]
    big = version == 43
    if version not in (42, 43):
        return data
    count_fmt, entry_size = ("Q", 20) if big else ("H", 12)
    ifd = struct.unpack_from(order + ("Q" if big else "I"), data, 8 if big else 4)[0]
    try:
        n = struct.unpack_from(order + count_fmt, data, ifd)[0]
        first = ifd + struct.calcsize(count_fmt)
        for i in range(min(n, 4096)):
            at = first + i * entry_size
            tag, kind = struct.unpack_from(order + "HH", data, at)
            if tag == 274 and kind == 3:  # SHORT, stored in the entry itself
                out = bytearray(data)
                struct.pack_into(order + "H", out, at + (12 if big else 8), 1)
                return bytes(out)
    except struct.error:
        pass
    return data


def _decode_cv2_unchanged(p: Path, info: LdrInfo) -> np.ndarray:
    """16-bit colour PNG/TIFF, which Pillow truncates to 8 bits. Returns RGB float in [0, 1].

    Pillow has decoded (and so checked) the whole stream before this runs."""
    with _library_messages() as log:
        if info.format == "TIFF" and info.orientation not in (0, 1):
            # OpenCV's TIFF decoder turns the image by its orientation tag itself (and fails on
            # the transposing ones), whatever the flags; it reads a copy whose tag says upright,
            # and the orientation is applied below, once, as for every other format.
            try:
                data = _tiff_upright(p.read_bytes())
            except OSError as e:
                raise _error(p, "cannot read the file", e) from e
            raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        else:
            raw = cv2.imread(os.fspath(p), cv2.IMREAD_UNCHANGED)
    damage = _damage(log)
    if raw is None or damage:
        raise _error(
            p, f"OpenCV could not decode this {info.bit_depth}-bit {info.format} "
            "(corrupt or truncated?)", log=damage or log,
        )
    if raw.dtype == np.uint16:
        scale = 65535.0
    elif raw.dtype == np.uint8:
        scale = 255.0
    else:
        raise _error(p, f"unsupported sample type {raw.dtype} (expected 8- or 16-bit integers)")
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[..., 0]
    if raw.ndim == 2:
        rgb = np.repeat(raw[..., None], 3, axis=-1)
    elif raw.shape[2] == 2:  # grey + alpha
        rgb = np.repeat(raw[..., :1], 3, axis=-1)
    elif raw.shape[2] in (3, 4):  # BGR(A)
        rgb = raw[..., 2::-1]
    else:
        raise _error(p, f"unsupported channel count {raw.shape[2]}")
    # The orientation tag, applied as the Pillow path does.
    rgb = _apply_orientation(rgb, info.orientation)
    if rgb.shape[:2] != (info.height, info.width):
        raise _error(p, f"OpenCV decoded {rgb.shape[1]}x{rgb.shape[0]}, the header says "
                        f"{info.width}x{info.height}")
    return rgb.astype(np.float32) / np.float32(scale)


_GREY16_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def _decode_pillow(im: Image.Image, p: Path, info: LdrInfo) -> np.ndarray:
    if info.bit_depth == 16 and im.mode in _GREY16_MODES:  # Pillow keeps 16-bit grey exact
        grey = np.asarray(im).astype(np.float32) / np.float32(65535.0)
        return _apply_orientation(np.repeat(grey[..., None], 3, axis=-1), info.orientation)
    if im.mode in ("I", "F"):
        raise _error(p, f"unsupported pixel mode {im.mode!r} (32-bit integer/float is not an LDR image)")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # Pillow warns when it drops a palette's alpha in one step
    if im.mode != "RGB":
        im = im.convert("RGB")  # grey -> replicated, RGBA/LA -> alpha dropped, palette -> colours
    rgb = np.asarray(im, dtype=np.float32) / np.float32(255.0)
    return _apply_orientation(rgb, info.orientation)


@overload
def read_ldr(path: PathLike, *, return_info: Literal[False] = ...,
             raw_half_size: bool = ...) -> np.ndarray: ...
@overload
def read_ldr(path: PathLike, *, return_info: Literal[True],
             raw_half_size: bool = ...) -> tuple[np.ndarray, LdrInfo]: ...


def read_ldr(path: PathLike, *, return_info: bool = False, raw_half_size: bool = False):
    """Read a PNG/JPEG/TIFF/HEIF/AVIF as float32 HxWx3 RGB in [0, 1], EXIF orientation applied
    (a HEIF's own rotation and mirroring are applied by its decoder, which resets the EXIF tag;
    an AVIF's are reported by its decoder as an EXIF orientation). A camera raw file
    (:data:`RAW_EXTENSIONS`) is decoded by LibRaw into exact sRGB codes of its linear data
    (:func:`_read_raw`); ``raw_half_size`` decodes it at half its width and height (ignored
    for other files).

    8-bit samples are divided by 255 and 16-bit by 65535; greyscale is replicated to RGB, alpha
    is dropped, palette images are expanded. With return_info=True also returns the `LdrInfo`.
    The whole file is decoded here: a corrupt or truncated stream raises, it never reads as a
    partly black image.
    """
    p = _check_input_file(path, LDR_INPUT_EXTENSIONS, "LDR")
    if is_raw(p):
        rgb, info = _read_raw(p, half_size=raw_half_size)
        return (rgb, info) if return_info else rgb
    with _open_ldr(p) as im:
        fmt = im.format or "image"
        failure: Exception | None = None
        with _library_messages() as log:
            try:
                tiff_orientation = _detach_tiff_orientation(im)
                im.load()
            except Exception as e:
                failure = e
        if failure is not None:
            message = f"cannot decode {fmt} data (corrupt or truncated?)"
            raise _error(p, message, failure) from failure
        transfer = (im.info.get("nclx_profile") or {}).get("transfer_characteristics")
        if transfer in _HDR_TRANSFERS:
            raise _error(p, f"an HDR image already (its codes are {_HDR_TRANSFERS[transfer]}, not "
                            "a photo's display codes); hdr-jax makes HDR from an SDR photo")
        try:
            info = _pil_info(im, p)
            if tiff_orientation is not None:  # detached before loading: put it back in the info
                h, w = (im.size[0], im.size[1]) if tiff_orientation >= 5 else im.size[::-1]
                info = dataclasses.replace(info, orientation=tiff_orientation, height=h, width=w)
            if info.bit_depth not in (1, 2, 4, 8, 16):
                bits = _tiff_float_bits(p) if fmt == "TIFF" else None
                if bits is not None:
                    raise _float_tiff_error(p, bits)
                raise _error(p, f"unsupported bit depth {info.bit_depth}")
            if info.bit_depth == 16 and im.mode not in _GREY16_MODES:
                rgb = _decode_cv2_unchanged(p, info)
            else:
                rgb = _decode_pillow(im, p, info)
                if fmt in ("JPEG", "MPO", "PNG"):
                    _check_stream(p, info)
        except ImageIOError:
            raise
        except Exception as e:
            raise _error(p, f"cannot decode {fmt} data (corrupt or truncated?)", e, log) from e
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise _error(p, f"image has zero size {rgb.shape[:2]}")
    rgb = np.ascontiguousarray(rgb, dtype=np.float32)
    return (rgb, info) if return_info else rgb


# --------------------------------------------------------------------------------------------
# HDR reading
# --------------------------------------------------------------------------------------------


def _exr_pick_rgb(p: Path, channels: dict) -> np.ndarray | None:
    """Choose RGB from one EXR part: interleaved RGB(A), separate R,G,B(,A), one layer's
    <layer>.R/G/B, or luminance-only Y (replicated). Returns None if the part has none of these."""
    pix = {name: ch.pixels for name, ch in channels.items()}
    for name in ("RGB", "RGBA"):
        if name in pix and np.ndim(pix[name]) == 3:
            return _exr_check(p, channels, [name], pix[name][..., :3])
    names: list[str] | None = None
    if all(c in pix for c in "RGB"):
        names = ["R", "G", "B"]
    else:
        layers = sorted({n.rsplit(".", 1)[0] for n in pix if "." in n})
        with_rgb = [l for l in layers if all(f"{l}.{c}" in pix for c in "RGB")]
        if len(with_rgb) == 1:
            names = [f"{with_rgb[0]}.{c}" for c in "RGB"]
        elif len(with_rgb) > 1:
            raise _error(p, f"several RGB layers ({', '.join(with_rgb)}); cannot choose one")
        elif "Y" in pix:
            names = ["Y", "Y", "Y"]
    if names is None:
        return None
    planes = [pix[n] for n in names]
    if any(np.ndim(x) != 2 for x in planes) or len({x.shape for x in planes}) != 1:
        raise _error(p, f"channels {', '.join(dict.fromkeys(names))} have mismatched shapes")
    return _exr_check(p, channels, names, np.stack(planes, axis=-1))


def _exr_check(p: Path, channels: dict, names: list[str], rgb: np.ndarray) -> np.ndarray:
    for n in dict.fromkeys(names):
        ch = channels[n]
        if (ch.xSampling, ch.ySampling) != (1, 1):
            raise _error(p, f"channel {n!r} is subsampled ({ch.xSampling}x{ch.ySampling}); not supported")
    if rgb.dtype not in (np.float16, np.float32):
        raise _error(p, f"channel type {rgb.dtype} is not HALF or FLOAT")
    return rgb.astype(np.float32)


def _read_exr(p: Path) -> np.ndarray:
    failure: Exception | None = None
    available: list[str] = []
    with _library_messages() as log:
        try:
            # separate_channels: the interleaved view fails on files mixing HALF and FLOAT channels.
            with OpenEXR.File(os.fspath(p), separate_channels=True) as f:
                for i in range(len(f.parts)):
                    chans = f.channels(i)
                    if any(ch.pixels is None for ch in chans.values()):
                        raise ValueError(f"part {i} has channels without pixel data")
                    rgb = _exr_pick_rgb(p, chans)
                    if rgb is not None:
                        break
                    available += list(chans)
                else:
                    rgb = None
        except ImageIOError:
            raise
        except Exception as e:
            failure = e
    if failure is not None or (rgb is None and not available and log):
        # A truncated file makes the library print its complaint and return no channels at all.
        raise _error(p, "not a readable OpenEXR file (corrupt or truncated?)", failure, log)
    if rgb is None:
        raise _error(p, f"no RGB or Y channels (found: {', '.join(available) or 'none'})")
    return rgb


def _read_radiance(p: Path) -> np.ndarray:
    failure: Exception | None = None
    with _library_messages() as log:
        try:
            bgr = cv2.imread(os.fspath(p), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
        except Exception as e:
            failure = e
    if failure is not None:
        raise _error(p, "not a readable Radiance RGBE file", failure) from failure
    if bgr is None:
        raise _error(p, "not a readable Radiance RGBE file (corrupt or truncated?)", log=log)
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.float32:
        raise _error(p, f"Radiance decoder returned {bgr.dtype} {bgr.shape}, expected float32 HxWx3")
    return bgr[..., ::-1]


def read_hdr(path: PathLike, *, allow_nonfinite: bool = False) -> np.ndarray:
    """Read an OpenEXR or Radiance file as float32 HxWx3 linear RGB, clamped to >= 0.

    Negative values (lossy EXR codecs produce small ones) are clamped to 0. NaN/Inf raise
    ImageIOError unless allow_nonfinite, which maps NaN and -Inf to 0 and +Inf to the largest
    finite value in the image.
    """
    p = _check_input_file(path, HDR_EXTENSIONS, "HDR")
    rgb = _read_exr(p) if p.suffix.lower() == ".exr" else _read_radiance(p)
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise _error(p, f"image has zero size {rgb.shape[:2]}")
    finite = np.isfinite(rgb)
    if not finite.all():
        bad = int(np.count_nonzero(~finite.all(axis=-1)))
        if not allow_nonfinite:
            raise _error(p, f"{bad} of {rgb.shape[0] * rgb.shape[1]} pixels are NaN or Inf")
        top = float(rgb[finite].max()) if finite.any() else 0.0
        rgb = np.nan_to_num(rgb, nan=0.0, posinf=top, neginf=0.0)
    return np.ascontiguousarray(np.maximum(rgb, 0.0), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


#: Temporary files this process has created and not yet renamed or removed. A name is recorded
#: before the file is created, so :func:`remove_temporaries` finds it whenever an exception (an
#: interrupt included) cuts a write short.
_TEMPORARIES: set[Path] = set()
# Room left in a 255-byte file name for the temporary prefix/suffix around a shortened stem.
_TEMP_STEM_CHARS = 64


# Temporary names carry this machine and the writing process (".x.<host>-<pid>-<token>.tmp.png"),
# so that a later run can tell the leftovers of a process that was killed outright (SIGKILL, a
# power cut: no handler runs) from a write in progress.
_HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(dst: PathLike) -> list[Path]:
    """Removes the temporary files that a process of this machine which no longer runs left
    next to ``dst`` (killed while writing it); returns them. Another machine's, or a running
    process's, are left alone."""
    dst = Path(dst)
    prefix = f".{dst.stem[:_TEMP_STEM_CHARS]}.{_HOST_TAG}-"
    removed = []
    for tmp in dst.parent.glob(f"{glob.escape(prefix)}*-*.tmp{glob.escape(dst.suffix)}"):
        pid = tmp.name[len(prefix):].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def _reserve_temp(dst: Path) -> Path:
    # The real suffix stays last so extension-driven encoders (cv2.imwrite) pick the right codec;
    # O_EXCL with mode 0o666 reserves a unique name and keeps the user's umask for the result.
    # The stem is shortened so that an output name near the length limit still has a temp name.
    with contextlib.suppress(OSError):
        remove_stale_temporaries(dst)
    for _ in range(100):
        stem = dst.stem[:_TEMP_STEM_CHARS]
        tag = f"{_HOST_TAG}-{os.getpid()}-{secrets.token_hex(4)}"
        tmp = dst.with_name(f".{stem}.{tag}.tmp{dst.suffix}")
        try:
            with interrupts.deferred():
                _TEMPORARIES.add(tmp)
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            _TEMPORARIES.discard(tmp)
            continue
        except OSError as e:
            _TEMPORARIES.discard(tmp)
            raise _error(dst, "cannot create a temporary file next to it", e) from e
    raise _error(dst, "cannot find a free temporary file name")


def _remove_temp(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink()
    _TEMPORARIES.discard(tmp)


def remove_temporaries() -> list[Path]:
    """Removes every temporary output file this process still has (after an interrupt); returns
    the ones that existed."""
    removed = []
    for tmp in sorted(_TEMPORARIES):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    _TEMPORARIES.clear()
    return removed


def _exists(dst: Path) -> bool:
    # lexists: a dangling symlink at the output path is an existing output too (and is never
    # followed: the rename replaces the link itself).
    return os.path.lexists(dst)


#: Errors of link() that mean the filesystem has no hard links (vfat says EPERM).
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})
#: The destination was checked before the output was written and is there now.
_APPEARED = ("already exists: it appeared while this output was written (another run writing "
             "it?); not replaced")


def _commit(tmp: Path, dst: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, dst)
        _TEMPORARIES.discard(tmp)
        return
    try:
        # link() fails if dst appeared since we checked, so there is no window to clobber it.
        os.link(tmp, dst)
    except FileExistsError as e:
        raise _error(dst, _APPEARED) from e
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS:  # a real failure (I/O error, disk full, read-only)
            raise
        # A filesystem without hard links (FAT, some network mounts): rename, which would
        # replace a file that appears between this check and the rename.
        if _exists(dst):
            raise _error(dst, _APPEARED) from None
        os.replace(tmp, dst)
        _TEMPORARIES.discard(tmp)
        return
    _remove_temp(tmp)


def _keep_aside(dst: Path) -> Path | None:
    """A hidden second name for an existing ``dst`` (a hard link; a copy where the filesystem has
    none), to put back if its output set fails after replacing it; None when nothing is there."""
    if not os.path.lexists(dst):
        return None
    old = _reserve_temp(dst)
    try:
        os.unlink(old)
        try:
            os.link(dst, old, follow_symlinks=False)
        except OSError:
            shutil.copy2(dst, old, follow_symlinks=False)
    except OSError as e:
        _remove_temp(old)
        raise _error(dst, "cannot keep the file it replaces until the set is written", e,
                     temporary=old) from e
    return old


def _check_destination(dst: Path, overwrite: bool) -> None:
    if dst.is_dir():
        raise _error(dst, "is a directory")
    if _exists(dst) and not overwrite:
        raise _error(dst, "already exists (pass overwrite=True to replace it)")
    if not dst.parent.is_dir():
        raise _error(dst, f"output directory {os.fspath(dst.parent)!r} does not exist")


@contextlib.contextmanager
def atomic_output(path: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path`; move it into place only if the block succeeds.

    Refuses (ImageIOError) if `path` exists and not overwrite. On any exception inside the block
    the temporary file is removed and the exception propagates unchanged.
    """
    dst = Path(path)
    _check_destination(dst, overwrite)
    tmp = _reserve_temp(dst)
    try:
        yield tmp
    except BaseException:
        _remove_temp(tmp)
        raise
    try:
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise _error(dst, "writer produced no data")
        with interrupts.deferred():
            _commit(tmp, dst, overwrite)
    except BaseException as e:
        _remove_temp(tmp)
        if isinstance(e, OSError):
            raise _error(dst, "cannot move the finished file into place", e, temporary=tmp) from e
        raise


class OutputSet:
    """Several output files written as one: all are encoded under temporary names, then renamed
    into place together; if any step fails (or is interrupted) none of them is left behind.

        with OutputSet(overwrite=False) as out:
            out.write_hdr("x.exr", hdr)
            out.write_ldr("x_preview.png", preview)

    Every destination is checked when it is added, before anything is encoded.
    """

    def __init__(self, *, overwrite: bool = False):
        self.overwrite = overwrite
        self._pending: list[tuple[Path, Path]] = []  # (temporary, destination)

    def __enter__(self) -> OutputSet:
        return self

    def _add(self, path: PathLike, encode: Callable[[Path], None]) -> None:
        dst = Path(path)
        _check_destination(dst, self.overwrite)
        if any(dst == d for _, d in self._pending):
            raise _error(dst, "is written twice in one output set")
        tmp = _reserve_temp(dst)
        self._pending.append((tmp, dst))
        encode(tmp)
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise _error(dst, "writer produced no data")

    def write_ldr(self, path: PathLike, image, **kwargs) -> None:
        """As :func:`write_ldr`, as part of the set."""
        args = _ldr_args(path, image, **kwargs)
        self._add(path, lambda tmp: _encode_ldr(path, tmp, *args))

    def write_hdr(self, path: PathLike, image, **kwargs) -> None:
        """As :func:`write_hdr`, as part of the set."""
        args = _hdr_args(path, image, **kwargs)
        self._add(path, lambda tmp: _encode_hdr(path, tmp, *args))

    def write_bytes(self, path: PathLike, data: bytes) -> None:
        """A file of ``data`` (a table, a JSON record), as part of the set."""
        self._add(path, lambda tmp: Path(tmp).write_bytes(data))

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()
            return
        # Renamed into place with signals held: an interrupt that arrives meanwhile is raised
        # once the whole set is in place, and does not undo it. A rename that fails undoes the
        # ones before it, putting back the files they replaced (kept aside as hard links).
        done: list[tuple[Path, Path | None]] = []  # (destination, the file it replaced)
        with interrupts.deferred():
            try:
                for tmp, dst in self._pending:
                    old = _keep_aside(dst) if self.overwrite else None
                    try:
                        _commit(tmp, dst, self.overwrite)
                    except OSError as e:
                        if old is not None:
                            _remove_temp(old)
                        raise _error(dst, "cannot move the finished file into place", e,
                                     temporary=tmp) from e
                    done.append((dst, old))
            except BaseException:
                for dst, old in reversed(done):
                    with contextlib.suppress(OSError):
                        if old is None:
                            dst.unlink()  # a file this set made; nothing else is touched
                        else:
                            os.replace(old, dst)
                            _TEMPORARIES.discard(old)
                self.discard()
                raise
            for _, old in done:
                if old is not None:
                    _remove_temp(old)
            self._pending = []

    def discard(self) -> None:
        """Removes the temporary files (nothing was renamed into place yet)."""
        for tmp, _ in self._pending:
            _remove_temp(tmp)
        self._pending = []


def _as_image(path: PathLike, image, *, allow_grey: bool) -> np.ndarray:
    """HxW, HxWx1 or HxWx3 real array -> float32 (HxW kept 2-D only when allow_grey)."""
    try:
        a = np.asarray(image)
    except Exception as e:
        raise _error(path, "image is not convertible to an array", e) from e
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise _error(path, f"image dtype {a.dtype} is not a real number type")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise _error(path, f"image shape {a.shape} is not HxW, HxWx1 or HxWx3")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise _error(path, f"image has zero size {a.shape[:2]}")
    with np.errstate(over="ignore"):
        a = a.astype(np.float32)
    if not np.isfinite(a).all():
        bad = np.count_nonzero(~np.isfinite(a) if a.ndim == 2 else ~np.isfinite(a).all(axis=-1))
        raise _error(path, f"{bad} pixels are NaN or Inf (or overflow float32); refusing to write")
    if a.ndim == 2 and not allow_grey:
        a = np.repeat(a[..., None], 3, axis=-1)
    return a


def _ext(path: PathLike, allowed: tuple[str, ...], kind: str) -> str:
    ext = Path(path).suffix.lower()
    if ext not in allowed:
        raise _error(path, f"unsupported extension {Path(path).suffix or '(none)'!r} for an {kind} image "
                           f"(expected one of {', '.join(allowed)})")
    return ext


def _ldr_args(path: PathLike, image, *, quality: int = 95, bit_depth: int = 8,
              icc_profile: bytes | None = None) -> tuple:
    """Checks a write_ldr request; returns (quantised samples, format, encoder options)."""
    ext = _ext(path, LDR_EXTENSIONS, "LDR")
    if bit_depth not in (8, 16):
        raise _error(path, f"bit_depth must be 8 or 16, got {bit_depth}")
    if bit_depth == 16 and ext in (".jpg", ".jpeg"):
        raise _error(path, "JPEG cannot store 16-bit samples; use .png or .tif")
    if bit_depth == 16 and icc_profile:
        # The 16-bit samples go through OpenCV, which writes no colour profile.
        raise _error(path, "cannot embed a colour profile in a 16-bit image")
    if ext in (".jpg", ".jpeg") and not 1 <= int(quality) <= 100:
        raise _error(path, f"JPEG quality must be in [1, 100], got {quality}")
    a = _as_image(path, image, allow_grey=True)
    peak = 65535 if bit_depth == 16 else 255
    q = np.rint(np.clip(a, 0.0, 1.0) * peak).astype(np.uint16 if bit_depth == 16 else np.uint8)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}[ext]
    options = {"quality": int(quality)} if fmt == "JPEG" else {}
    if icc_profile:
        options["icc_profile"] = bytes(icc_profile)
    return q, fmt, options


def _encode_ldr(path: PathLike, tmp: Path, q: np.ndarray, fmt: str, kwargs: dict) -> None:
    failure: Exception | None = None
    with _library_messages() as log:
        try:
            if q.dtype == np.uint16:
                # Pillow cannot write 16-bit RGB; OpenCV can (and wants BGR).
                ok = cv2.imwrite(os.fspath(tmp), q if q.ndim == 2 else q[..., ::-1])
            else:
                Image.fromarray(q).save(tmp, format=fmt, **kwargs)
                ok = True
        except Exception as e:
            failure = e
    if failure is not None:
        raise _error(path, "cannot encode image", failure, temporary=tmp) from failure
    if not ok:
        raise _error(path, "OpenCV failed to encode the image", log=log, temporary=tmp)


def write_ldr(
    path: PathLike,
    image,
    *,
    overwrite: bool = False,
    quality: int = 95,
    bit_depth: int = 8,
    icc_profile: bytes | None = None,
) -> None:
    """Write float [0, 1] HxWx3 (or HxW grey) as PNG/JPEG/TIFF, chosen by extension.

    Values are clipped to [0, 1] and rounded to 8 bits, or to 16 bits (PNG/TIFF only) with
    bit_depth=16. `quality` applies to JPEG. `icc_profile` (8-bit only) is embedded: the colour
    space the samples are in (none: sRGB, by convention). Atomic; refuses to overwrite unless
    asked.
    """
    args = _ldr_args(path, image, quality=quality, bit_depth=bit_depth, icc_profile=icc_profile)
    with atomic_output(path, overwrite=overwrite) as tmp:
        _encode_ldr(path, tmp, *args)


def _hdr_args(path: PathLike, image, *, half: bool = False,
              chromaticities: Sequence[float] | None = None) -> tuple:
    """Checks a write_hdr request; returns (RGB >= 0, extension, half, chromaticities)."""
    ext = _ext(path, HDR_EXTENSIONS, "HDR")
    if chromaticities is not None:
        chromaticities = tuple(float(v) for v in chromaticities)
        if len(chromaticities) != 8 or not all(math.isfinite(v) for v in chromaticities):
            raise _error(path, f"chromaticities must be 8 finite numbers, got {chromaticities}")
    rgb = np.maximum(_as_image(path, image, allow_grey=False), 0.0)
    if ext == ".exr" and half:
        top = float(rgb.max())
        if top > _HALF_MAX:
            raise _error(path, f"max value {top:.6g} exceeds the half-float range ({_HALF_MAX:g}); "
                               "write with half=False")
    return rgb, ext, half, chromaticities


def _radiance_primaries(tmp: Path, chromaticities: tuple[float, ...]) -> None:
    """Adds a PRIMARIES= line (the Radiance format's own record of the RGB primaries and white,
    the order of OpenEXR's chromaticities) to the header OpenCV wrote, which ends at the first
    empty line."""
    data = tmp.read_bytes()
    end = data.index(b"\n\n")
    line = "PRIMARIES= " + " ".join(f"{v:.4f}" for v in chromaticities)
    tmp.write_bytes(data[: end + 1] + line.encode("ascii") + data[end:])


def _encode_hdr(path: PathLike, tmp: Path, rgb: np.ndarray, ext: str, half: bool,
                chromaticities: tuple[float, ...] | None) -> None:
    failure: Exception | None = None
    ok = True
    with _library_messages() as log:
        try:
            if ext == ".exr":
                dtype = np.float16 if half else np.float32
                planes = {c: np.ascontiguousarray(rgb[..., i], dtype=dtype) for i, c in enumerate("RGB")}
                header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
                if chromaticities is not None:
                    header["chromaticities"] = chromaticities
                with OpenEXR.File(header, planes) as f:
                    f.write(os.fspath(tmp))
            else:
                ok = cv2.imwrite(os.fspath(tmp), np.ascontiguousarray(rgb[..., ::-1]))
                if ok and chromaticities is not None:
                    _radiance_primaries(tmp, chromaticities)
        except Exception as e:
            failure = e
    if failure is not None:
        raise _error(path, "cannot encode image", failure, temporary=tmp) from failure
    if not ok:
        raise _error(path, "OpenCV failed to encode the Radiance image", log=log, temporary=tmp)


def write_hdr(path: PathLike, image, *, overwrite: bool = False, half: bool = False,
              chromaticities: Sequence[float] | None = None) -> None:
    """Write linear RGB as OpenEXR (.exr: FLOAT, or HALF if half; ZIP compression) or Radiance
    (.hdr/.pic: RGBE, `half` ignored). `chromaticities` (rx, ry, gx, gy, bx, by, wx, wy) of the
    RGB primaries are recorded (OpenEXR's chromaticities attribute, Radiance's PRIMARIES=; none:
    Rec. 709's, by both formats' convention).

    HxW / HxWx1 input is written as grey RGB. NaN/Inf raise ImageIOError; negative values are
    clamped to 0 (the same convention read_hdr applies). Atomic; refuses to overwrite unless asked.
    """
    args = _hdr_args(path, image, half=half, chromaticities=chromaticities)
    with atomic_output(path, overwrite=overwrite) as tmp:
        _encode_hdr(path, tmp, *args)


# --------------------------------------------------------------------------------------------
# Input discovery
# --------------------------------------------------------------------------------------------


def list_images(paths: PathLike | Iterable[PathLike], kinds: Iterable[str] = ("ldr",)) -> list[Path]:
    """Expand CLI arguments into image files.

    Each argument is a file (kept if its extension matches `kinds`), a directory (its matching
    files, non-recursive, sorted, hidden files skipped) or a glob pattern (sorted matches;
    `**` recurses). Every argument must yield at least one image; duplicates are dropped.
    """
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    unknown = [k for k in kinds if k not in _KIND_EXTENSIONS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be drawn from {sorted(_KIND_EXTENSIONS)}, got {kinds!r}")
    exts = tuple(e for k in kinds for e in _KIND_EXTENSIONS[k])
    label = "/".join(k.upper() for k in kinds)
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise ImageIOError("no input paths given")

    def wanted(p: Path) -> bool:
        return p.suffix.lower() in exts and not p.name.startswith(".") and p.is_file()

    out: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        raw = os.fspath(item)
        if not raw.strip():
            # Path("") is ".": an unset shell variable must not process the working folder.
            raise ImageIOError("an empty input path was given")
        p = Path(os.path.expanduser(raw))
        try:
            found = _expand(p, raw, wanted, exts, label)
        except OSError as e:  # a name too long, a folder that cannot be read, ...
            raise _error(p, f"cannot access ({e.strerror or type(e).__name__})") from e
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out


def _expand(p: Path, raw: str, wanted: Callable[[Path], bool], exts: tuple[str, ...],
            label: str) -> list[Path]:
    if p.is_dir():
        found = sorted(c for c in p.iterdir() if wanted(c))
        if not found:
            raise _error(p, f"directory contains no {label} images ({', '.join(exts)})")
        return found
    if p.is_file():
        if p.suffix.lower() not in exts:
            raise _error(p, f"unsupported extension {p.suffix or '(none)'!r} for an {label} image "
                            f"(expected one of {', '.join(exts)})")
        return [p]
    if glob.has_magic(raw):
        found = sorted(Path(m) for m in glob.glob(os.path.expanduser(raw), recursive=True))
        found = [m for m in found if wanted(m)]
        if not found:
            raise _error(raw, f"pattern matches no {label} images")
        return found
    if p.exists():  # a FIFO, a device, a socket: say what it is, not "no such file"
        kind = _file_kind(p)
        raise _error(p, f"is not a regular file ({kind})" if kind else "is not a regular file")
    with contextlib.suppress(FileNotFoundError):
        os.stat(p)  # raises the precise OSError (ENAMETOOLONG, EACCES, ...) where there is one
    raise _error(p, "no such file or directory")
