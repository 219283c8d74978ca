"""Tests for hdr_jax.io: round trips against independent encoders/decoders (Pillow, OpenCV,
the OpenEXR bindings used directly), error paths, atomic writes and input discovery."""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import cv2
import numpy as np
import OpenEXR
import pytest
from conftest import with_nclx
from PIL import Image

from hdr_jax import io as hio
from hdr_jax import isobmff
from hdr_jax.data.testing import write_dng
from hdr_jax.io import ImageIOError

HDRI_DIR = Path("/work/shared/data/hdri")
rng = np.random.default_rng(0)


def _ramp(h: int = 6, w: int = 10) -> np.ndarray:
    """Smooth, asymmetric RGB image in [0, 1]; no two orientations of it coincide."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([x / (w - 1), y / (h - 1), (x + 2 * y) / (w - 1 + 2 * (h - 1))], axis=-1)


def _write_exr(path: Path, channels: dict, compression=OpenEXR.ZIP_COMPRESSION) -> None:
    header = {"compression": compression, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, channels).write(os.fspath(path))


def _assert_one_line_error(excinfo, path: Path) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.strip() == msg
    assert path.name in msg, msg


def _dir_names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# --------------------------------------------------------------------------------------------
# HDR: OpenEXR and Radiance
# --------------------------------------------------------------------------------------------


def test_exr_roundtrip_float(tmp_path):
    x = (rng.random((5, 7, 3)) * 100).astype(np.float32)
    p = tmp_path / "f.exr"
    hio.write_hdr(p, x)
    np.testing.assert_array_equal(hio.read_hdr(p), x)  # FLOAT + ZIP is lossless
    with OpenEXR.File(os.fspath(p), separate_channels=True) as f:
        assert f.header()["compression"] == OpenEXR.ZIP_COMPRESSION
        ch = f.channels()
        assert sorted(ch) == ["B", "G", "R"]
        np.testing.assert_array_equal(ch["G"].pixels, x[..., 1])


def test_exr_roundtrip_half(tmp_path):
    x = (rng.random((5, 7, 3)) * 1000).astype(np.float32)
    p = tmp_path / "h.exr"
    hio.write_hdr(p, x, half=True)
    y = hio.read_hdr(p)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_array_equal(y, x.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(y, x, rtol=2**-11)  # half has an 11-bit significand
    with OpenEXR.File(os.fspath(p), separate_channels=True) as f:
        assert all(c.pixels.dtype == np.float16 for c in f.channels().values())


def test_write_hdr_half_overflow_rejected(tmp_path):
    with pytest.raises(ImageIOError, match="half"):
        hio.write_hdr(tmp_path / "big.exr", np.full((2, 2, 3), 1e5, np.float32), half=True)
    assert _dir_names(tmp_path) == []


def test_write_hdr_grey_input_becomes_rgb(tmp_path):
    g = rng.random((4, 5)).astype(np.float32)
    hio.write_hdr(tmp_path / "g.exr", g)
    np.testing.assert_array_equal(hio.read_hdr(tmp_path / "g.exr"), np.repeat(g[..., None], 3, -1))


@pytest.mark.parametrize(
    "layout",
    ["separate_float", "separate_mixed_types", "interleaved_rgb", "rgba_half", "separate_rgba", "layer",
     "y_only"],
)
def test_exr_channel_layouts(tmp_path, layout):
    """Files written directly with the bindings, in the layouts other tools produce."""
    x = (rng.random((4, 6, 3)) * 8).astype(np.float32)
    a = rng.random((4, 6)).astype(np.float32)
    r, g, b = (np.ascontiguousarray(x[..., i]) for i in range(3))
    expected = x
    if layout == "separate_float":
        ch = {"B": b, "G": g, "R": r}
    elif layout == "separate_mixed_types":
        ch = {"R": r.astype(np.float16), "G": g, "B": b}
        expected = np.stack([r.astype(np.float16).astype(np.float32), g, b], -1)
    elif layout == "interleaved_rgb":
        ch = {"RGB": x}
    elif layout == "rgba_half":
        ch = {"RGBA": np.concatenate([x, a[..., None]], -1).astype(np.float16)}
        expected = x.astype(np.float16).astype(np.float32)
    elif layout == "separate_rgba":
        ch = {"R": r, "G": g, "B": b, "A": a, "Z": a * 100}
    elif layout == "layer":
        ch = {"diffuse.R": r, "diffuse.G": g, "diffuse.B": b, "depth.Z": a}
    else:  # luminance only -> grey RGB
        ch = {"Y": r}
        expected = np.repeat(r[..., None], 3, -1)
    p = tmp_path / f"{layout}.exr"
    _write_exr(p, ch)
    y = hio.read_hdr(p)
    assert y.dtype == np.float32 and y.shape == (4, 6, 3)
    np.testing.assert_array_equal(y, expected)


def test_exr_without_colour_channels_rejected(tmp_path):
    p = tmp_path / "depth.exr"
    _write_exr(p, {"Z": np.ones((3, 3), np.float32)})
    with pytest.raises(ImageIOError, match="no RGB or Y") as ei:
        hio.read_hdr(p)
    _assert_one_line_error(ei, p)


def test_exr_uint_channels_rejected(tmp_path):
    p = tmp_path / "uint.exr"
    _write_exr(p, {c: np.ones((3, 3), np.uint32) for c in "RGB"})
    with pytest.raises(ImageIOError, match="uint32"):
        hio.read_hdr(p)


def test_exr_negative_values_clamped(tmp_path):
    x = np.array([[[-0.5, 0.25, 2.0], [1e-3, -1e-4, 0.0]]], np.float32)
    p = tmp_path / "neg.exr"
    _write_exr(p, {c: np.ascontiguousarray(x[..., i]) for i, c in enumerate("RGB")})
    np.testing.assert_array_equal(hio.read_hdr(p), np.maximum(x, 0))


def test_exr_nonfinite(tmp_path):
    x = np.ones((3, 4, 3), np.float32)
    x[0, 0, 0] = np.nan
    x[1, 2, :] = np.nan  # one pixel, three bad channels
    x[2, 3, 1] = np.inf
    x[2, 0, 2] = 5.0
    p = tmp_path / "nan.exr"
    _write_exr(p, {c: np.ascontiguousarray(x[..., i]) for i, c in enumerate("RGB")})
    with pytest.raises(ImageIOError, match=r"3 of 12 pixels") as ei:
        hio.read_hdr(p)
    _assert_one_line_error(ei, p)
    y = hio.read_hdr(p, allow_nonfinite=True)
    expected = x.copy()
    expected[0, 0, 0] = 0.0
    expected[1, 2, :] = 0.0
    expected[2, 3, 1] = 5.0  # +Inf -> largest finite value
    np.testing.assert_array_equal(y, expected)


def test_generated_exr_like_real_data(tmp_path):
    """The real panoramas are HALF or FLOAT, separate B,G,R, DWAB (lossy) or ZIP compressed, with
    slightly negative pixels. Exercise the reader on a file of that kind without the data set."""
    h, w = 16, 32
    x = np.exp(rng.normal(0, 2, (h, w, 3))).astype(np.float32)
    x[0, :4] = -1e-3
    p = tmp_path / "pano.exr"
    _write_exr(p, {c: np.ascontiguousarray(x[..., i]).astype(np.float16) for i, c in enumerate("RGB")},
               compression=OpenEXR.DWAB_COMPRESSION)
    with OpenEXR.File(os.fspath(p), separate_channels=True) as f:  # independent decode
        ref = np.stack([f.channels()[c].pixels for c in "RGB"], -1).astype(np.float32)
    y = hio.read_hdr(p)
    assert y.shape == (h, w, 3) and y.dtype == np.float32
    assert np.isfinite(y).all() and (y >= 0).all()
    np.testing.assert_array_equal(y, np.maximum(ref, 0))
    assert (y[0, :4] == 0).all()


def test_real_hdri_files():
    files = sorted(HDRI_DIR.glob("*.exr")) if HDRI_DIR.is_dir() else []
    if not files:
        pytest.skip(f"{HDRI_DIR} not available")
    for f in files:
        y = hio.read_hdr(f)
        assert y.dtype == np.float32 and y.ndim == 3 and y.shape[2] == 3, f
        assert y.shape[1] == 2 * y.shape[0], f  # equirectangular
        assert np.isfinite(y).all() and (y >= 0).all(), f
        assert y.max() > 1.0, f  # genuinely high dynamic range


def test_radiance_roundtrip(tmp_path):
    x = np.exp(rng.normal(0, 2, (5, 7, 3))).astype(np.float32)
    x[0, 0] = [4.0, 0.0, 0.0]  # pure red: catches a BGR/RGB swap
    p = tmp_path / "r.hdr"
    hio.write_hdr(p, x)
    y = hio.read_hdr(p)
    assert y.dtype == np.float32 and y.shape == x.shape
    # RGBE shares one 8-bit exponent per pixel: error ~1% of the pixel's largest channel.
    tol = 0.01 * x.max(axis=-1, keepdims=True)
    assert (np.abs(y - x) <= tol).all()
    np.testing.assert_allclose(y[0, 0], [4.0, 0.0, 0.0], rtol=0.01)


def test_radiance_written_by_opencv_is_rgb(tmp_path):
    rgb = np.zeros((2, 3, 3), np.float32)
    rgb[..., 0], rgb[..., 2] = 3.0, 0.5
    p = tmp_path / "cv.hdr"
    assert cv2.imwrite(os.fspath(p), rgb[..., ::-1].copy())
    np.testing.assert_allclose(hio.read_hdr(p), rgb, rtol=0.01)


# --------------------------------------------------------------------------------------------
# LDR
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_ldr_8bit_roundtrip(tmp_path, ext):
    x = _ramp()
    p = tmp_path / f"a{ext}"
    hio.write_ldr(p, x)
    y, info = hio.read_ldr(p, return_info=True)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_array_equal(y, np.rint(x * 255) / np.float32(255))
    assert (info.bit_depth, info.channels, info.height, info.width) == (8, 3, 6, 10)
    np.testing.assert_array_equal(np.asarray(Image.open(p)), np.rint(x * 255).astype(np.uint8))


def test_ldr_write_clips(tmp_path):
    x = np.array([[[-0.5, 0.5, 1.5]]], np.float32)
    hio.write_ldr(tmp_path / "c.png", x)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "c.png")), [[[0, 128, 255]]])


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_ldr_16bit_roundtrip(tmp_path, ext):
    x = _ramp()
    p = tmp_path / f"a16{ext}"
    hio.write_ldr(p, x, bit_depth=16)
    y, info = hio.read_ldr(p, return_info=True)
    assert info.bit_depth == 16 and hio.ldr_info(p).bit_depth == 16
    np.testing.assert_array_equal(y, (np.rint(x * 65535) / 65535).astype(np.float32))
    # independent decode: OpenCV returns BGR uint16
    ref = cv2.imread(os.fspath(p), cv2.IMREAD_UNCHANGED)
    assert ref.dtype == np.uint16
    np.testing.assert_array_equal(y, ref[..., ::-1] / np.float32(65535))


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_ldr_16bit_written_by_opencv(tmp_path, ext):
    bgra = rng.integers(0, 65536, (4, 5, 4), dtype=np.uint16)
    p = tmp_path / f"cv16{ext}"
    assert cv2.imwrite(os.fspath(p), bgra)
    y, info = hio.read_ldr(p, return_info=True)
    assert (info.bit_depth, info.channels) == (16, 4)
    np.testing.assert_array_equal(y, bgra[..., 2::-1] / np.float32(65535))  # alpha dropped


def test_ldr_16bit_grey(tmp_path):
    g = rng.integers(0, 65536, (4, 5), dtype=np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(g).save(p)
    y, info = hio.read_ldr(p, return_info=True)
    assert (info.bit_depth, info.channels) == (16, 1)
    np.testing.assert_array_equal(y, np.repeat(g[..., None], 3, -1) / np.float32(65535))


def test_ldr_grey_write_and_read(tmp_path):
    g = rng.random((4, 5)).astype(np.float32)
    p = tmp_path / "g.png"
    hio.write_ldr(p, g)
    assert Image.open(p).mode == "L"
    y, info = hio.read_ldr(p, return_info=True)
    assert info.channels == 1
    np.testing.assert_array_equal(y, np.repeat(np.rint(g * 255)[..., None], 3, -1) / np.float32(255))


def test_ldr_rgba_alpha_dropped(tmp_path):
    rgba = rng.integers(0, 256, (4, 5, 4), dtype=np.uint8)
    rgba[0, 0, 3] = 0  # fully transparent pixel keeps its colour
    p = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(p)
    y, info = hio.read_ldr(p, return_info=True)
    assert info.channels == 4
    np.testing.assert_array_equal(y, rgba[..., :3] / np.float32(255))


def test_ldr_palette(tmp_path):
    palette = np.array([[255, 0, 0], [0, 128, 255], [10, 20, 30]], np.uint8)
    idx = rng.integers(0, 3, (4, 5), dtype=np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette(palette.ravel().tolist())
    p = tmp_path / "pal.png"
    im.save(p)
    assert Image.open(p).mode == "P"
    np.testing.assert_array_equal(hio.read_ldr(p), palette[idx] / np.float32(255))
    # Half-transparent palette entries (a tRNS chunk of bytes): the colours, alpha dropped,
    # without Pillow's warning about converting such a palette straight to RGB.
    im.save(p, transparency=bytes([255, 128, 0]))
    assert isinstance(Image.open(p).info["transparency"], bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = hio.read_ldr(p)
    np.testing.assert_array_equal(y, palette[idx] / np.float32(255))


def test_ldr_one_bit(tmp_path):
    bits = rng.random((4, 9)) > 0.5
    p = tmp_path / "bw.png"
    Image.fromarray(bits).save(p)
    y, info = hio.read_ldr(p, return_info=True)
    assert info.bit_depth == 1
    np.testing.assert_array_equal(y, np.repeat(bits[..., None], 3, -1).astype(np.float32))


def test_ldr_jpeg(tmp_path):
    x = _ramp(16, 24)
    p = tmp_path / "a.jpg"
    hio.write_ldr(p, x, quality=95)
    y = hio.read_ldr(p)
    assert y.shape == x.shape
    assert np.abs(y - x).mean() < 0.01
    np.testing.assert_array_equal(y, np.asarray(Image.open(p).convert("RGB")) / np.float32(255))
    # lower quality -> smaller file: the kwarg reaches the encoder
    noise = rng.random((16, 24, 3))
    hio.write_ldr(tmp_path / "q20.jpeg", noise, quality=20)
    hio.write_ldr(tmp_path / "q100.jpeg", noise, quality=100)
    assert (tmp_path / "q20.jpeg").stat().st_size < 0.7 * (tmp_path / "q100.jpeg").stat().st_size


def test_jpeg_exif_orientation(tmp_path):
    x = np.zeros((16, 32, 3), np.uint8)
    x[:, :16] = (255, 0, 0)  # left half red, right half blue
    x[:, 16:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be rotated 90 degrees clockwise for display
    p = tmp_path / "rot.jpg"
    Image.fromarray(x).save(p, quality=95, exif=exif)
    y, info = hio.read_ldr(p, return_info=True)
    assert y.shape == (32, 16, 3) and (info.height, info.width, info.orientation) == (32, 16, 6)
    stored = np.asarray(Image.open(p)) / np.float32(255)  # Pillow does not rotate on its own
    np.testing.assert_array_equal(y, np.rot90(stored, k=-1))
    # clockwise: the stored left (red) half ends up on top
    assert y[:12, :, 0].mean() > 0.9 and y[:12, :, 2].mean() < 0.1
    assert y[20:, :, 2].mean() > 0.9 and y[20:, :, 0].mean() < 0.1


_PIL_TRANSPOSE = {
    1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}


def _read_rotated_photo(path: Path, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """Writes a ramp as ``path`` (Pillow's encoder of its format) with EXIF orientation 6 and
    checks that it reads upright, as 8-bit ``fmt``, lossy, its colour box declaring sRGB's
    primaries (what both encoders write). Returns (the ramp's codes, what was read)."""
    img = (np.clip(_ramp(32, 48), 0, 1) * 255).round().astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    Image.fromarray(img).save(path, quality=95, exif=exif.tobytes())
    assert hio.list_images([path.parent]) == [path]
    got, info = hio.read_ldr(path, return_info=True)
    assert info.format == fmt and info.bit_depth == 8 and got.shape == (48, 32, 3)
    assert np.abs(got - np.rot90(img, k=-1) / 255.0).mean() < 0.02
    assert hio.is_lossy(path)
    assert hio.colour_metadata(path)["nclx_profile"]["color_primaries"] == 1
    return img, got


def test_heif(tmp_path):
    """HEIC as phones save it, encoded by libheif (pillow-heif): read upright (the encoder turns
    an EXIF orientation into the file's own rotation, which the decoder applies), 8-bit codes
    whatever it stores, lossy, its ICC profile or nclx colour box in the colour metadata; an HDR
    (PQ/HLG) one is refused."""
    pillow_heif = pytest.importorskip("pillow_heif")
    img, _ = _read_rotated_photo(tmp_path / "p.HEIC", "HEIF")
    # 10 bits: decoded to 8
    deep = (np.clip(_ramp(32, 48), 0, 1) * 65535).round().astype(np.uint16)
    pillow_heif.from_bytes(mode="RGB;16", size=(48, 32), data=deep.tobytes()).save(
        tmp_path / "d.heif", quality=95)
    got, info = hio.read_ldr(tmp_path / "d.heif", return_info=True)
    assert info.bit_depth == 8 and np.all(got * 255 == np.round(got * 255))
    assert np.abs(got - deep / 65535.0).mean() < 0.02
    # the colour box: Display P3 primaries; PQ is an HDR image already
    Image.fromarray(img).save(tmp_path / "p3.heic", color_primaries=12,
                              transfer_characteristics=13)
    nclx = hio.colour_metadata(tmp_path / "p3.heic")["nclx_profile"]
    np.testing.assert_allclose([nclx["color_primary_green_x"], nclx["color_primary_green_y"]],
                               [0.265, 0.69], atol=1e-6)
    hio.read_ldr(tmp_path / "p3.heic")
    for transfer, name in ((16, "PQ"), (18, "HLG")):
        p = tmp_path / f"hdr{transfer}.heic"
        Image.fromarray(img).save(p, color_primaries=9, transfer_characteristics=transfer)
        with pytest.raises(ImageIOError, match=f"an HDR image already .*{name}") as ei:
            hio.read_ldr(p)
        _assert_one_line_error(ei, p)
    with pytest.raises(ImageIOError, match="unsupported extension"):
        hio.write_ldr(tmp_path / "out.heic", img / 255.0)


def test_avif(tmp_path):
    """AVIF, encoded by libavif (Pillow): read upright (the encoder turns an EXIF orientation
    into the file's rotation property, which the decoder reports back as one), 8-bit, lossy;
    its nclx colour box is read by hand into the colour metadata as a HEIC's is: Display P3
    primaries are declared, PQ / HLG refused as an HDR image already."""
    from hdr_jax.camera import profile

    img, got = _read_rotated_photo(tmp_path / "p.AVIF", "AVIF")
    assert profile.declared_colour_space(hio.colour_metadata(tmp_path / "p.AVIF")) is None
    data = (tmp_path / "p.AVIF").read_bytes()
    p3 = tmp_path / "p3.avif"
    p3.write_bytes(with_nclx(data, 12, 13))
    nclx = hio.colour_metadata(p3)["nclx_profile"]
    np.testing.assert_allclose([nclx["color_primary_green_x"], nclx["color_primary_green_y"]],
                               [0.265, 0.69], atol=1e-6)
    assert profile.declared_colour_space(hio.colour_metadata(p3)).name == "Display P3"
    np.testing.assert_array_equal(hio.read_ldr(p3), got)  # the codes are the same
    for transfer, name in ((16, "PQ"), (18, "HLG")):
        p = tmp_path / f"hdr{transfer}.avif"
        p.write_bytes(with_nclx(data, 9, transfer))
        with pytest.raises(ImageIOError, match=f"an HDR image already .*{name}") as ei:
            hio.read_ldr(p)
        _assert_one_line_error(ei, p)
    linear = tmp_path / "linear.avif"
    linear.write_bytes(with_nclx(data, 1, 8))
    assert profile.declared_response(hio.colour_metadata(linear)) is not None
    with pytest.raises(ImageIOError, match="unsupported extension"):
        hio.write_ldr(tmp_path / "out.avif", img / 255.0)


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def _nclx_box(primaries: int) -> bytes:
    return _box(b"colr", b"nclx" + struct.pack(">HHHB", primaries, 13, 6, 0x80))


def test_heif_nclx_follows_the_primary_item():
    """The nclx box read is the one the property associations give the primary item: 32-bit
    item IDs and 15-bit indices (ipma version 1, flag 1) included; none without a primary item,
    and no exception on any cut of the boxes."""
    ipco = _box(b"ipco", _nclx_box(9) + _box(b"ispe", bytes(12)) + _nclx_box(12))
    # item 1 -> properties 1, 2; item 70000 -> 2, 3 (the first marked essential)
    ipma = _box(b"ipma", bytes([1, 0, 0, 1]) + struct.pack(">I", 2)
                + struct.pack(">IB", 1, 2) + struct.pack(">HH", 1, 2)
                + struct.pack(">IB", 70000, 2) + struct.pack(">HH", 0x8002, 3))
    iprp = _box(b"iprp", ipco + ipma)

    def heif(pitm: bytes) -> bytes:
        return _box(b"ftyp", b"avif" + bytes(4)) + _box(b"meta", bytes(4) + pitm + iprp)

    for item, primaries in ((1, 9), (70000, 12)):
        data = heif(_box(b"pitm", bytes([1, 0, 0, 0]) + struct.pack(">I", item)))
        got = hio.heif_nclx(data)
        assert got["color_primaries"] == primaries and got["full_range_flag"] == 1
    assert hio.heif_nclx(heif(b"")) is None  # no primary item
    assert hio.heif_nclx(heif(_box(b"pitm", bytes(4) + struct.pack(">H", 5)))) is None
    data = heif(_box(b"pitm", bytes([1, 0, 0, 0]) + struct.pack(">I", 70000)))
    assert hio.heif_nclx(data)["color_primary_white_x"] == pytest.approx(0.3127)
    for cut in range(len(data)):
        hio.heif_nclx(data[:cut])
    rng = np.random.default_rng(3)
    for _ in range(300):
        bad = bytearray(data)
        for i in rng.integers(0, len(bad), 3):
            bad[i] = int(rng.integers(256))
        hio.heif_nclx(bytes(bad))


def test_isobmff_items_round_trip():
    """write_file -> read_meta keeps each item's type, hidden flag, properties (shared ones
    written once), 'dimg' references (renumbered 1, 2, ...) and data; the first is primary;
    without data only the layout is read; no cut of the file raises."""
    ispe = (b"ispe", bytes(4) + struct.pack(">II", 64, 16))
    items = [isobmff.Item(70000, b"grid", False, (ispe, (b"irot", b"\1")), {b"dimg": (9, 8)},
                          bytes([0, 0, 0, 1]) + struct.pack(">HH", 64, 16)),
             isobmff.Item(9, b"hvc1", True, (ispe, (b"hvcC", b"left")), {}, b"L" * 10),
             isobmff.Item(8, b"hvc1", True, (ispe, (b"hvcC", b"right")), {}, b"R" * 12)]
    data = isobmff.write_file(items, b"heic")
    assert data[4:12] == b"ftypheic"
    meta = isobmff.read_meta(data)
    assert meta.primary == 1 and sorted(meta.items) == [1, 2, 3]
    for n, want in enumerate(items, 1):
        got = meta.items[n]
        assert (got.type, got.hidden, got.properties, got.data) == (
            want.type, want.hidden, want.properties, want.data)
    assert meta.items[1].refs == {b"dimg": (2, 3)}
    assert isobmff.transforms(meta.items[1]) == [(b"irot", 1)]
    assert data.count(b"ispe") == 1  # one property box, associated with all three
    assert all(x.data is None for x in isobmff.read_meta(data, with_data=False).items.values())
    for cut in range(len(data)):
        isobmff.read_meta(data[:cut])


def test_isobmff_transforms_follow_numpy():
    """apply_transforms: 'irot' n turns anticlockwise, 'imir' 0 swaps top and bottom, 1 left
    and right, in the order given."""
    a = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(isobmff.apply_transforms(a, [(b"irot", 1)]), [[2, 5], [1, 4],
                                                                                [0, 3]])
    np.testing.assert_array_equal(isobmff.apply_transforms(a, [(b"imir", 0)]), [[3, 4, 5],
                                                                                [0, 1, 2]])
    np.testing.assert_array_equal(isobmff.apply_transforms(a, [(b"irot", 1), (b"imir", 1)]),
                                  [[5, 2], [4, 1], [3, 0]])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_all_paths(tmp_path, orientation):
    """8-bit (Pillow exif_transpose) and 16-bit (OpenCV decode + our own transpose) paths must
    both match Pillow's transpose of the stored pixels."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    g8 = rng.integers(0, 256, (3, 5), dtype=np.uint8)
    g16 = g8.astype(np.uint16) * 257
    for bits, arr in ((8, g8), (16, g16)):
        im = Image.fromarray(arr)
        p = tmp_path / f"o{bits}.png"
        im.save(p, exif=exif)
        op = _PIL_TRANSPOSE[orientation]
        ref = np.asarray(im if op is None else im.transpose(op)).astype(np.float32) / (2**bits - 1)
        y, info = hio.read_ldr(p, return_info=True)
        assert info.bit_depth == bits and info.orientation == orientation
        assert (info.height, info.width) == ref.shape
        np.testing.assert_array_equal(y, np.repeat(ref[..., None], 3, -1))
    # 16-bit colour TIFFs (classic and BigTIFF), whose decoder would turn them itself.
    tifffile = pytest.importorskip("tifffile")
    rgb8 = rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    op = _PIL_TRANSPOSE[orientation]
    im = Image.fromarray(rgb8)
    ref = np.asarray(im if op is None else im.transpose(op)).astype(np.float32) / 255
    for big in (False, True):
        p = tmp_path / f"o16{'big' if big else ''}.tif"
        tifffile.imwrite(p, rgb8.astype(np.uint16) * 257, photometric="rgb", bigtiff=big,
                         extratags=[(0x0112, "H", 1, orientation, True)])
        y, info = hio.read_ldr(p, return_info=True)
        assert (info.format, info.bit_depth, info.orientation) == ("TIFF", 16, orientation)
        np.testing.assert_allclose(y, ref, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Failures: every one an ImageIOError with a one-line message naming the file
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reader", [hio.read_ldr, hio.read_hdr])
def test_missing_file(tmp_path, reader):
    p = tmp_path / ("nope.png" if reader is hio.read_ldr else "nope.exr")
    with pytest.raises(ImageIOError, match="no such file") as ei:
        reader(p)
    _assert_one_line_error(ei, p)


@pytest.mark.parametrize("reader", [hio.read_ldr, hio.read_hdr])
def test_directory(tmp_path, reader):
    d = tmp_path / ("dir.png" if reader is hio.read_ldr else "dir.exr")
    d.mkdir()
    with pytest.raises(ImageIOError, match="directory") as ei:
        reader(d)
    _assert_one_line_error(ei, d)


@pytest.mark.parametrize("name", ["e.png", "e.jpg", "e.exr", "e.hdr"])
def test_empty_file(tmp_path, name):
    p = tmp_path / name
    p.touch()
    reader = hio.read_hdr if p.suffix in hio.HDR_EXTENSIONS else hio.read_ldr
    with pytest.raises(ImageIOError, match="empty") as ei:
        reader(p)
    _assert_one_line_error(ei, p)


def _write_valid(p: Path) -> None:
    if p.suffix in hio.HDR_EXTENSIONS:
        hio.write_hdr(p, np.exp(rng.normal(0, 1, (32, 48, 3))))
    elif p.name.endswith("16.png"):
        hio.write_ldr(p, rng.random((32, 48, 3)), bit_depth=16)
    elif p.suffix in (".heic", ".avif"):  # written by libheif's / libavif's encoder, which we
        # only read
        Image.fromarray((rng.random((32, 48, 3)) * 255).astype(np.uint8)).save(p, quality=90)
    else:
        hio.write_ldr(p, rng.random((32, 48, 3)))


@pytest.mark.parametrize("name", ["t.png", "t16.png", "t.jpg", "t.tif", "t.heic", "t.avif",
                                  "t.exr", "t.hdr"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated(tmp_path, name, keep):
    p = tmp_path / name
    _write_valid(p)
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * keep)])
    reader = hio.read_hdr if p.suffix in hio.HDR_EXTENSIONS else hio.read_ldr
    with pytest.raises(ImageIOError) as ei:
        reader(p)
    _assert_one_line_error(ei, p)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


@pytest.mark.parametrize("damage", ["jpeg_cut_with_end_marker", "jpeg_zeroed_bytes",
                                    "png_rows_missing", "png16_rows_missing"])
def test_damage_pillow_decodes_past_is_refused(tmp_path, damage):
    # Pillow decodes these without an error, into grey, garbage or black rows.
    import struct
    import zlib

    img = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    if damage.startswith("jpeg"):
        # A smooth image: zeroed bytes in a noise image can decode as valid codes, which no
        # decoder notices (the check catches what libjpeg reports, not every garbling).
        p = tmp_path / "d.jpg"
        yy, xx = np.mgrid[0:96, 0:128]
        smooth = np.clip(np.stack([xx * 2, yy * 2, xx + yy], -1) / 255.0, 0.0, 1.0)
        smooth[10:30, 10:40] = 1.0
        hio.write_ldr(p, smooth, quality=90)
        data = bytearray(p.read_bytes())
        if damage == "jpeg_cut_with_end_marker":
            data = data[: len(data) // 2] + b"\xff\xd9"
        else:
            data[len(data) // 2: len(data) // 2 + 40] = bytes(40)
    else:
        p = tmp_path / "d.png"
        sixteen = damage == "png16_rows_missing"
        samples = (img.astype(">u2") * 257) if sixteen else img
        raw = b"".join(b"\0" + row.tobytes() for row in samples)
        header = struct.pack(">IIBBBBB", 64, 48, 16 if sixteen else 8, 2, 0, 0, 0)
        data = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
                + _png_chunk(b"IDAT", zlib.compress(raw[: len(raw) // 2]))
                + _png_chunk(b"IEND", b""))
    p.write_bytes(bytes(data))
    with pytest.raises(ImageIOError, match="(?i)corrupt|truncated") as ei:
        hio.read_ldr(p)
    _assert_one_line_error(ei, p)
    # The same file whole reads.
    if damage.startswith("png"):
        whole = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
                 + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))
        p.write_bytes(whole)
        np.testing.assert_allclose(hio.read_ldr(p), img / 255.0, atol=1e-6)


@pytest.mark.parametrize("layout", ["rgb32", "grey32", "rgb16_integers"])
def test_float_tiff_named(tmp_path, layout):
    # A float TIFF is a scene-referred image, not a photo: the error says so (Pillow alone says
    # "cannot identify image file" for RGB and "bit depth 32" for grey); an integer 16-bit TIFF
    # still reads.
    p = tmp_path / "f.tif"
    x = np.random.default_rng(3).random((24, 40, 3)).astype(np.float32)
    if layout == "grey32":
        Image.fromarray(x[..., 0], mode="F").save(p)
    elif layout == "rgb16_integers":
        assert cv2.imwrite(str(p), (x * 65535).astype(np.uint16))
        assert hio.read_ldr(p).shape == (24, 40, 3)
        return
    else:
        assert cv2.imwrite(str(p), x[..., ::-1])
    with pytest.raises(ImageIOError, match="32-bit floating-point samples") as ei:
        hio.read_ldr(p)
    _assert_one_line_error(ei, p)


@pytest.mark.parametrize("name", ["r.png", "r.jpg", "r.tiff", "r.heic", "r.avif", "r.exr",
                                  "r.hdr"])
def test_random_bytes(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(np.random.default_rng(1).bytes(3000))
    reader = hio.read_hdr if p.suffix in hio.HDR_EXTENSIONS else hio.read_ldr
    with pytest.raises(ImageIOError) as ei:
        reader(p)
    _assert_one_line_error(ei, p)


def test_unsupported_extension(tmp_path):
    p = tmp_path / "a.bmp"
    Image.new("RGB", (2, 2)).save(p)
    with pytest.raises(ImageIOError, match="unsupported extension") as ei:
        hio.read_ldr(p)
    _assert_one_line_error(ei, p)
    e = tmp_path / "a.exr"
    hio.write_hdr(e, np.ones((2, 2, 3)))
    with pytest.raises(ImageIOError, match="read_hdr"):
        hio.read_ldr(e)
    with pytest.raises(ImageIOError, match="unsupported extension"):
        hio.write_ldr(tmp_path / "a.gif", np.ones((2, 2, 3)))
    with pytest.raises(ImageIOError, match="unsupported extension"):
        hio.write_hdr(tmp_path / "a.png", np.ones((2, 2, 3)))


@pytest.mark.parametrize(
    "image, match",
    [
        (np.ones((2, 2, 4)), "shape"),
        (np.ones((2, 2, 2)), "shape"),
        (np.ones((2,)), "shape"),
        (np.ones((0, 3, 3)), "zero size"),
        (np.ones((2, 2, 3), bool), "dtype"),
        (np.array([[[np.nan, 0, 0]]]), "NaN"),
        (np.array([[[1e300, 0, 0]]]), "NaN or Inf"),
    ],
)
def test_write_rejects_bad_images(tmp_path, image, match):
    for p, writer in ((tmp_path / "x.png", hio.write_ldr), (tmp_path / "x.exr", hio.write_hdr)):
        with pytest.raises(ImageIOError, match=match) as ei:
            writer(p, image)
        _assert_one_line_error(ei, p)
    assert _dir_names(tmp_path) == []


def test_write_ldr_bad_options(tmp_path):
    with pytest.raises(ImageIOError, match="16-bit"):
        hio.write_ldr(tmp_path / "a.jpg", np.ones((2, 2, 3)), bit_depth=16)
    with pytest.raises(ImageIOError, match="bit_depth"):
        hio.write_ldr(tmp_path / "a.png", np.ones((2, 2, 3)), bit_depth=12)
    with pytest.raises(ImageIOError, match="quality"):
        hio.write_ldr(tmp_path / "a.jpg", np.ones((2, 2, 3)), quality=0)
    assert _dir_names(tmp_path) == []


def test_write_hdr_clamps_negatives(tmp_path):
    x = np.array([[[-2.0, 0.5, 3.0]]], np.float32)
    hio.write_hdr(tmp_path / "n.exr", x)
    with OpenEXR.File(os.fspath(tmp_path / "n.exr"), separate_channels=True) as f:
        assert f.channels()["R"].pixels[0, 0] == 0.0


# --------------------------------------------------------------------------------------------
# Atomic writes and overwrite protection
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["o.png", "o.exr", "o.hdr"])
def test_overwrite_protection(tmp_path, name):
    p = tmp_path / name
    writer = hio.write_hdr if p.suffix in hio.HDR_EXTENSIONS else hio.write_ldr
    read = hio.read_hdr if p.suffix in hio.HDR_EXTENSIONS else hio.read_ldr
    writer(p, np.full((2, 3, 3), 0.25))
    before = p.read_bytes()
    with pytest.raises(ImageIOError, match="already exists") as ei:
        writer(p, np.full((2, 3, 3), 0.75))
    _assert_one_line_error(ei, p)
    assert p.read_bytes() == before
    writer(p, np.full((2, 3, 3), 0.75), overwrite=True)
    np.testing.assert_allclose(read(p), 0.75, atol=1 / 255)
    assert _dir_names(tmp_path) == [name]


def test_failed_write_leaves_nothing(tmp_path):
    bad = np.ones((3, 3, 3), np.float32)
    bad[1, 1, 1] = np.nan
    with pytest.raises(ImageIOError, match="1 pixels are NaN"):
        hio.write_hdr(tmp_path / "bad.exr", bad)
    assert _dir_names(tmp_path) == []


def test_atomic_output_cleans_up_on_exception(tmp_path):
    target = tmp_path / "x.exr"
    with pytest.raises(RuntimeError, match="encoder crashed"):
        with hio.atomic_output(target) as tmp:
            assert tmp.parent == tmp_path and tmp != target and tmp.suffix == ".exr"
            tmp.write_bytes(b"half a file")
            raise RuntimeError("encoder crashed")
    assert _dir_names(tmp_path) == []


def test_atomic_output_success_and_permissions(tmp_path):
    target = tmp_path / "x.bin"
    with hio.atomic_output(target) as tmp:
        assert tmp.exists() and not target.exists()  # nothing visible until the block succeeds
        tmp.write_bytes(b"payload")
    assert target.read_bytes() == b"payload"
    assert _dir_names(tmp_path) == ["x.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_leftovers_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    """SIGKILL runs no handler, so a writer killed mid-write leaves its temporary file; the next
    write of the same output removes it. A live writer's temporary, and one from another
    machine, are left alone."""
    import signal
    import subprocess
    import sys

    target = tmp_path / "out.png"
    writer = ("import sys, time\nfrom hdr_jax import io\n"
              "with io.atomic_output(sys.argv[1]) as tmp:\n"
              "    tmp.write_bytes(b'partial'); print('ready', flush=True); time.sleep(60)\n")
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(target)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        killed, live = procs
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        temps = {int(t.name.split("-")[1]): t for t in tmp_path.glob(".out.*.tmp.png")}
        assert set(temps) == {killed.pid, live.pid}
        foreign = tmp_path / f".out.000000-{killed.pid}-0123abcd.tmp.png"
        foreign.write_bytes(b"another machine")
        with hio.atomic_output(target) as tmp:
            tmp.write_bytes(b"done")
        assert target.read_bytes() == b"done"
        assert not temps[killed.pid].exists()
        assert temps[live.pid].exists() and foreign.exists()
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_atomic_output_never_clobbers_a_file_created_meanwhile(tmp_path):
    target = tmp_path / "x.png"
    with pytest.raises(ImageIOError, match="already exists"):
        with hio.atomic_output(target) as tmp:
            tmp.write_bytes(b"ours")
            target.write_bytes(b"theirs")  # another process wins the race
    assert target.read_bytes() == b"theirs"
    assert _dir_names(tmp_path) == ["x.png"]


def test_atomic_output_empty_result_rejected(tmp_path):
    with pytest.raises(ImageIOError, match="no data"):
        with hio.atomic_output(tmp_path / "x.png"):
            pass
    assert _dir_names(tmp_path) == []


def test_atomic_output_bad_targets(tmp_path):
    with pytest.raises(ImageIOError, match="does not exist") as ei:
        with hio.atomic_output(tmp_path / "missing" / "x.png"):
            pass
    _assert_one_line_error(ei, tmp_path / "missing" / "x.png")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ImageIOError, match="directory"):
        hio.write_ldr(tmp_path / "d.png", np.ones((2, 2, 3)), overwrite=True)


# --------------------------------------------------------------------------------------------
# list_images
# --------------------------------------------------------------------------------------------


def test_list_images(tmp_path):
    for n in ["b.png", "a.JPG", "c.tif", "notes.txt", ".hidden.png", "h.exr"]:
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.png").write_bytes(b"x")
    (tmp_path / "empty").mkdir()

    assert hio.list_images(tmp_path) == [tmp_path / n for n in ["a.JPG", "b.png", "c.tif"]]
    assert hio.list_images([tmp_path], kinds=("hdr",)) == [tmp_path / "h.exr"]
    assert hio.list_images(str(tmp_path), kinds=("ldr", "hdr"))[-1] == tmp_path / "h.exr"
    # files, globs and directories mix; duplicates dropped, first occurrence order kept
    got = hio.list_images([tmp_path / "c.tif", str(tmp_path / "*.png"), tmp_path])
    assert got == [tmp_path / n for n in ["c.tif", "b.png", "a.JPG"]]
    recursive = hio.list_images([str(tmp_path / "**" / "*.png")])
    assert recursive == [tmp_path / "b.png", tmp_path / "sub" / "deep.png"]

    for bad, match in [
        (tmp_path / "empty", "no LDR images"),
        (str(tmp_path / "*.webp"), "matches no LDR images"),
        (tmp_path / "missing.png", "no such file"),
        (tmp_path / "notes.txt", "unsupported extension"),
    ]:
        with pytest.raises(ImageIOError, match=match) as ei:
            hio.list_images([tmp_path / "b.png", bad])
        assert "\n" not in str(ei.value) and Path(bad).name in str(ei.value)
    with pytest.raises(ImageIOError):
        hio.list_images([])
    with pytest.raises(ValueError):
        hio.list_images(tmp_path, kinds=("raw",))


def _raw_scene(h: int = 40, w: int = 56) -> np.ndarray:
    """Linear sRGB: smooth colour ramps, and a disc well past the clip."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    scene = np.stack([0.9 * xx / w, yy / h, 0.3 + 0.2 * xx / w], -1)
    scene[np.hypot(yy - h / 2, xx - w / 2) < 6] = 3.0
    return scene


def test_camera_raw_reads_as_exact_srgb_codes(tmp_path):
    """A DNG is demosaiced by LibRaw, white-balanced as shot, in linear sRGB with the sensor's
    white at 1 and every channel of a saturated pixel clipped there, turned upright, and
    encoded with the sRGB curve in float; nothing else about it is read."""
    from hdr_jax.camera import crf

    scene = _raw_scene()
    p = write_dng(tmp_path / "p.DNG", scene)
    got, info = hio.read_ldr(p, return_info=True)
    assert (info.format, info.bit_depth, info.height, info.width) == ("RAW", 16, 40, 56)
    assert hio.ldr_info(p) == info and got.dtype == np.float32
    # Demosaicing is exact on the smooth ramps, not at the border or next to the disc's edge.
    yy, xx = np.mgrid[0:40, 0:56]
    smooth = (np.hypot(yy - 20, xx - 28) > 9) & (yy >= 3) & (yy < 37) & (xx >= 3) & (xx < 53)
    linear = np.asarray(crf.srgb_decode(got), np.float64)
    np.testing.assert_allclose(linear[smooth], scene[smooth], atol=2e-3)
    # Saturated: every channel at the clip (what the pipeline counts as clipped), not tinted.
    assert np.all(got[np.hypot(yy - 20, xx - 28) < 4] >= 254 / 255)
    assert not np.all(got * 65535 == np.round(got * 65535))  # float codes, not 16-bit
    assert hio.colour_metadata(p) == {} and not hio.is_lossy(p)
    assert hio.read_gain_map(p) is None and hio.exif_exposure(p) is None  # none recorded
    shot = write_dng(tmp_path / "e.dng", scene, exposure=(0.01, 2.8))
    assert hio.exif_exposure(shot) == pytest.approx(np.log2(0.01 / 2.8**2), abs=1e-4)
    # Turned as the camera recorded (EXIF orientation 6: a quarter turn clockwise).
    turned = write_dng(tmp_path / "t.nef.dng", scene, orientation=6)
    assert (hio.ldr_info(turned).height, hio.ldr_info(turned).width) == (56, 40)
    np.testing.assert_array_equal(hio.read_ldr(turned), np.rot90(got, k=-1))
    # A 14-bit sensor with a black level and a camera that sees white as (0.5, 1, 0.7): the
    # same colours after white balance, up to one scale (LibRaw's white point).
    tinted = write_dng(tmp_path / "w.dng", scene, black=256, white=16383,
                       neutral=(0.5, 1.0, 0.7))
    ratio = np.asarray(crf.srgb_decode(hio.read_ldr(tinted)), np.float64)[smooth] / np.maximum(
        linear[smooth], 1e-3)
    bright = linear[smooth] > 0.1
    assert np.std(ratio[bright]) < 0.01 and abs(np.median(ratio[bright]) - 1.0) < 0.03


def test_camera_raw_at_half_size(tmp_path):
    """``raw_half_size``: each 2x2 block of the colour filter array is one pixel (half the
    sides, rounded up), the same linear values as the full decode on smooth parts, the same
    clip, the same turn; other files ignore the flag."""
    from hdr_jax.camera import crf

    scene = _raw_scene(41, 57)  # odd sides: LibRaw rounds the half up
    p = write_dng(tmp_path / "p.dng", scene, black=256, white=16383, neutral=(0.5, 1.0, 0.7))
    full = np.asarray(crf.srgb_decode(hio.read_ldr(p)), np.float64)
    half, info = hio.read_ldr(p, return_info=True, raw_half_size=True)
    assert half.shape == (21, 29, 3) and (info.height, info.width) == (21, 29)
    linear = np.asarray(crf.srgb_decode(half), np.float64)
    # A half-size pixel samples its block's four photosites (top-left at 2y, 2x): compare it
    # with the full decode's mean over the block, away from the disc's edge and the border.
    yy, xx = np.mgrid[0:21, 0:29]
    block = full[:40, :56].reshape(20, 2, 28, 2, 3).mean((1, 3))
    smooth = ((np.hypot(2 * yy + 0.5 - 20.5, 2 * xx + 0.5 - 28.5) > 10)
              & (yy >= 2) & (yy < 18) & (xx >= 2) & (xx < 26))
    np.testing.assert_allclose(linear[:20, :28][smooth[:20, :28]],
                               block[smooth[:20, :28]], atol=0.012)
    assert np.all(half[np.hypot(2 * yy + 0.5 - 20.5, 2 * xx + 0.5 - 28.5) < 4] >= 254 / 255)
    turned = write_dng(tmp_path / "t.dng", scene, black=256, white=16383,
                       neutral=(0.5, 1.0, 0.7), orientation=6)
    np.testing.assert_array_equal(hio.read_ldr(turned, raw_half_size=True), np.rot90(half, k=-1))
    png = tmp_path / "p.png"
    hio.write_ldr(png, half)
    assert hio.read_ldr(png, raw_half_size=True).shape == half.shape


def test_linear_dng_reads_as_its_scene(tmp_path):
    """A linear DNG (demosaiced data, as phones' raw formats store it) decodes to its scene;
    at half size, which LibRaw does not apply to it, its 2x2 blocks are averaged instead."""
    from hdr_jax.camera import crf

    scene = _raw_scene(41, 57)
    p = write_dng(tmp_path / "pro.dng", scene, black=64, white=16383, neutral=(0.5, 1.0, 0.7),
                  demosaiced=True)
    got = hio.read_ldr(p)
    assert got.shape == (41, 57, 3) and hio.ldr_info(p).height == 41
    linear = np.asarray(crf.srgb_decode(got), np.float64)
    unclipped = scene.max(-1) < 1.0
    np.testing.assert_allclose(linear[unclipped], scene[unclipped], atol=2e-3)
    assert np.all(got[scene.max(-1) > 1.0] >= 254 / 255)
    half = np.asarray(crf.srgb_decode(hio.read_ldr(p, raw_half_size=True)), np.float64)
    assert half.shape == (21, 29, 3)
    blocks = linear[:40, :56].reshape(20, 2, 28, 2, 3).mean((1, 3))
    np.testing.assert_allclose(half[:20, :28], blocks, atol=3e-3)


def test_camera_raw_white_point_is_where_the_sensor_saturated(tmp_path):
    """The sensor's white level maps to 1 unless a pile of pixels share a lower largest value
    (a camera that saturates early); a raw whose brightest pixels did not clip is not
    brightened until they read as clipped (LibRaw's default guess would)."""
    from hdr_jax.camera import crf

    yy, xx = np.mgrid[0:48, 0:64]
    ramp = np.stack([xx / 64, yy / 48, 0.2 + 0 * xx], -1)
    mid = (ramp.max(-1) < 0.6) & (ramp.min(-1) > 0.15) & (yy > 3) & (yy < 44) & (xx > 3)

    def decoded(name, scene, **kw):
        p = write_dng(tmp_path / name, scene, black=256, white=16383, noise=0.003, **kw)
        return np.asarray(crf.srgb_decode(hio.read_ldr(p)), np.float64)

    dim = decoded("dim.dng", 0.8 * ramp)  # brightest pixel at 79 % of white, nothing clipped
    assert np.median(dim[mid] / (0.8 * ramp[mid])) == pytest.approx(1.0, abs=0.01)
    assert dim.max() < 0.85
    clipped = decoded("clip.dng", 1.6 * ramp)  # red clips at the white level
    assert np.median(clipped[mid] / (1.6 * ramp[mid])) == pytest.approx(1.0, abs=0.01)
    early = decoded("early.dng", 1.6 * ramp, saturation=15000)  # clips at 15000 of 16383
    scale = (16383 - 256) / (15000 - 256)
    assert np.median(early[mid] / (1.6 * ramp[mid])) == pytest.approx(scale, abs=0.01)
    assert np.all(early[..., 0][1.6 * ramp[..., 0] > 1.05] >= crf.srgb_decode(254 / 255))
    # A pile far below white (60 %) is not taken for saturation: unclipped bright values that a
    # lossy raw format's coarse steps made equal.
    flat = write_dng(tmp_path / "flat.dng", 0.6 * np.ones_like(ramp), black=256, white=16383)
    assert crf.srgb_decode(hio.read_ldr(flat)).max() < 0.65


def test_broken_camera_raw_files_are_one_line_errors(tmp_path, capfd):
    good = write_dng(tmp_path / "g.dng", _raw_scene()).read_bytes()
    cases = {"noise.cr2": np.random.default_rng(0).bytes(4000),
             "header.dng": good[:200],
             "half.dng": good[: len(good) // 2],
             "png.arw": (Path(__file__).parent / ".." / "hdr_jax" / "assets" /
                         "demo.jpg").read_bytes()}
    capfd.readouterr()
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(ImageIOError, match="camera raw|corrupt or truncated") as ei:
            hio.ldr_info(p)
            hio.read_ldr(p)
        _assert_one_line_error(ei, p)
        assert "b'" not in str(ei.value)  # LibRaw's bytes messages are decoded
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == "", captured


def test_camera_raw_without_rawpy_is_one_line(tmp_path, monkeypatch):
    import sys

    p = write_dng(tmp_path / "p.dng", _raw_scene())
    monkeypatch.setitem(sys.modules, "rawpy", None)  # import rawpy now raises ImportError
    for read in (hio.read_ldr, hio.ldr_info, hio.colour_metadata):
        with pytest.raises(ImageIOError, match=r"needs rawpy \(pip install rawpy\)") as ei:
            read(p)
        _assert_one_line_error(ei, p)
