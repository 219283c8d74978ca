"""HDR gain maps (hdr_jax.camera.gainmap, hdr_io.read_gain_map): Ultra HDR JPEGs assembled here
byte by byte (Multi-Picture Format index, hdrgm XMP), the HDR rendition checked against the
specification's formula computed here, and the CLI through subprocesses."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from hdr_jax import io as hio
from hdr_jax.camera import crf, gainmap


def _xmp_app1(body: str) -> bytes:
    packet = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf='
              '"http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
              'xmlns:hdrgm="http://ns.adobe.com/hdr-gain-map/1.0/" ' + body +
              '</rdf:RDF></x:xmpmeta>').encode()
    payload = b"http://ns.adobe.com/xap/1.0/\0" + packet
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def _fields_xmp(fields: dict, seq: bool) -> str:
    """hdrgm fields as attributes, or (seq) as elements with three-value rdf:Seq lists."""
    if not seq:
        return " ".join(f'hdrgm:{k}="{v}"' for k, v in fields.items()) + "/>"
    elems = "".join(
        f"<hdrgm:{k}><rdf:Seq>" + "".join(f"<rdf:li>{x}</rdf:li>" for x in v)
        + f"</rdf:Seq></hdrgm:{k}>" if isinstance(v, (list, tuple)) else
        f"<hdrgm:{k}>{v}</hdrgm:{k}>" for k, v in fields.items())
    return ">" + elems + "</rdf:Description>"


def _jpeg(pixels: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=100, subsampling=0, **kw)
    return buf.getvalue()


def ultra_hdr(sdr: np.ndarray, recovery: np.ndarray, fields: dict, *, seq: bool = False,
              exif: bytes | None = None, map_bytes: bytes | None = None) -> bytes:
    """An Ultra HDR JPEG: the SDR photo with hdrgm:Version XMP and an MPF index (big-endian,
    two entries), then the gain map JPEG with the fields' XMP."""
    primary = _jpeg(sdr, **({"exif": exif} if exif else {}))
    gm = map_bytes if map_bytes is not None else _jpeg(recovery)
    gm = gm[:2] + _xmp_app1(_fields_xmp(fields, seq)) + gm[2:]
    head = _xmp_app1('hdrgm:Version="1.0"/>')
    mpf_len = 2 + 4 + 8 + 2 + 3 * 12 + 4 + 32
    primary_size = len(primary) + len(head) + 2 + mpf_len
    tiff_at = 2 + len(head) + 4 + 4  # SOI, XMP, APP2 marker + length, "MPF\0"
    ifd = struct.pack(">H", 3) + struct.pack(">HHI4s", 0xB000, 7, 4, b"0100") \
        + struct.pack(">HHII", 0xB001, 4, 1, 2) + struct.pack(">HHII", 0xB002, 7, 32, 8 + 42) \
        + struct.pack(">I", 0)
    entries = struct.pack(">IIIHH", 0x030000, primary_size, 0, 0, 0) \
        + struct.pack(">IIIHH", 0, len(gm), primary_size - tiff_at, 0, 0)
    mpf = b"MPF\0" + b"MM\0*" + struct.pack(">I", 8) + ifd + entries
    app2 = b"\xff\xe2" + struct.pack(">H", len(mpf) + 2) + mpf
    assert len(app2) == 2 + mpf_len
    return primary[:2] + head + app2 + primary[2:] + gm


FIELDS = {"Version": "1.0", "GainMapMin": -0.5, "GainMapMax": 3.0, "Gamma": 1.5,
          "OffsetSDR": 0.01, "OffsetHDR": 0.02, "HDRCapacityMin": 0.0, "HDRCapacityMax": 3.0}


def _expected(sdr_u8: np.ndarray, rec_u8: np.ndarray, f: dict) -> np.ndarray:
    """The specification's HDR rendition at full weight, written out here."""
    per = {k: np.broadcast_to(np.asarray(f.get(k, d), np.float64), (3,))
           for k, d in (("GainMapMin", 0.0), ("GainMapMax", 0.0), ("Gamma", 1.0),
                        ("OffsetSDR", 1 / 64), ("OffsetHDR", 1 / 64))}
    sdr = crf.srgb_decode(sdr_u8 / 255.0)
    r = (rec_u8.reshape(*rec_u8.shape[:2], -1) / 255.0) ** (1 / per["Gamma"])
    boost = per["GainMapMin"] * (1 - r) + per["GainMapMax"] * r
    return np.maximum((sdr + per["OffsetSDR"]) * 2.0 ** boost - per["OffsetHDR"], 0)


def _decoded(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The photo and the gain map pixels as Pillow decodes them from the file's bytes."""
    photo = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    start = data.rindex(b"\xff\xd8\xff\xe1")  # the gain map's SOI, followed by its XMP
    return photo, np.asarray(Image.open(io.BytesIO(data[start:])))


@pytest.mark.parametrize("seq", [False, True])
def test_rendition_follows_the_specification(tmp_path, seq):
    rng = np.random.default_rng(0)
    sdr = (rng.random((24, 40, 3)) * 255).astype(np.uint8)
    rec = (rng.random((24, 40, 3 if seq else 1)) * 255).astype(np.uint8)
    fields = dict(FIELDS, GainMapMax=[3.0, 2.0, 1.0], Gamma=[1.5, 1.0, 2.0]) if seq else FIELDS
    data = ultra_hdr(sdr, rec.squeeze(), fields, seq=seq)
    (tmp_path / "u.jpg").write_bytes(data)
    pixels, xmp = hio.read_gain_map(tmp_path / "u.jpg")
    gm = gainmap.parse(pixels, xmp)
    assert gm.recovery.shape == (24, 40, 3 if seq else 1)
    np.testing.assert_allclose(gm.gain_max, [3.0, 2.0, 1.0] if seq else [3.0] * 3)
    assert gm.capacity_max == 3.0 and not gm.base_is_hdr
    photo, stored = _decoded(data)
    np.testing.assert_array_equal(hio.read_ldr(tmp_path / "u.jpg"), photo / np.float32(255))
    got = gainmap.hdr_rendition(crf.srgb_decode(photo / 255.0), gm)
    np.testing.assert_allclose(got, _expected(photo, stored, fields), rtol=1e-5, atol=1e-6)
    # weight 0 is the SDR rendition, moved by the difference of the offsets
    sdr_lin = crf.srgb_decode(photo / 255.0)
    np.testing.assert_allclose(gainmap.hdr_rendition(sdr_lin, gm, 0.0),
                               np.maximum(sdr_lin + 0.01 - 0.02, 0), atol=1e-6)


def test_low_resolution_map_and_orientation(tmp_path):
    """A map at a quarter of the photo's size is upsampled to it; an EXIF orientation turns the
    map with the photo."""
    rng = np.random.default_rng(1)
    sdr = (rng.random((32, 48, 3)) * 255).astype(np.uint8)
    rec = np.full((8, 12), 200, np.uint8)
    rec[:4, :6] = 40  # the stored top-left quarter is darker
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: the stored top-left goes top-right
    (tmp_path / "u.jpg").write_bytes(ultra_hdr(sdr, rec, FIELDS, exif=exif.tobytes()))
    photo = hio.read_ldr(tmp_path / "u.jpg")
    pixels, xmp = hio.read_gain_map(tmp_path / "u.jpg")
    assert photo.shape == (48, 32, 3) and pixels.shape == (12, 8, 1)
    assert pixels[0, -1, 0] < 0.3 and pixels[-1, 0, 0] > 0.7
    gm = gainmap.parse(pixels, xmp)
    flat = gainmap.hdr_rendition(np.full((48, 32, 3), 0.5, np.float32), gm)
    assert flat.shape == (48, 32, 3)
    assert flat[2, -3, 0] < flat[-3, 2, 0]  # the darker quarter is top-right now
    np.testing.assert_allclose(flat[-3, 2], _expected(
        np.full((1, 1, 3), round(crf.srgb_encode(0.5) * 255), np.uint8),
        np.full((1, 1), round(pixels[-1, 0, 0] * 255), np.uint8), FIELDS)[0, 0], rtol=0.02)


def test_files_without_a_gain_map_and_broken_ones(tmp_path):
    rng = np.random.default_rng(2)
    sdr = (rng.random((24, 40, 3)) * 255).astype(np.uint8)
    for name in ("p.jpg", "p.png", "p.heic"):
        Image.fromarray(sdr).save(tmp_path / name)
        assert hio.read_gain_map(tmp_path / name) is None
    # a second picture that is no gain map (a preview, as in camera MPO files)
    data = ultra_hdr(sdr, sdr[..., 0], FIELDS)
    (tmp_path / "plain_mpo.jpg").write_bytes(data.replace(b"hdr-gain-map", b"hdr-gain-mop"))
    assert hio.read_gain_map(tmp_path / "plain_mpo.jpg") is None
    # announced but cut off, or its index pointing nowhere
    cut = data[: data.rindex(b"\xff\xd8\xff\xe1") + 400]
    (tmp_path / "cut.jpg").write_bytes(cut)
    with pytest.raises(hio.ImageIOError, match="announces an HDR gain map .* does not decode"):
        hio.read_gain_map(tmp_path / "cut.jpg")
    (tmp_path / "gone.jpg").write_bytes(data[: data.rindex(b"\xff\xd8\xff\xe1")])
    with pytest.raises(hio.ImageIOError, match="none of its pictures is one"):
        hio.read_gain_map(tmp_path / "gone.jpg")


@pytest.mark.parametrize("change, match", [
    ({"GainMapMax": None}, "GainMapMax is missing"),
    ({"HDRCapacityMax": None}, "HDRCapacityMax is missing"),
    ({"Gamma": "fast"}, "Gamma is not a number"),
    ({"GainMapMin": 2.0, "GainMapMax": 1.0}, "below GainMapMin"),
    ({"Gamma": 0}, "Gamma must be positive"),
    ({"GainMapMax": 40}, "beyond 16 stops"),
    ({"OffsetSDR": "1 2"}, "one or three"),
    ({"OffsetSDR": 1e308}, "beyond 1"),
])
def test_unusable_metadata(change, match):
    fields = {k: v for k, v in dict(FIELDS, **change).items() if v is not None}
    xmp = _xmp_app1(_fields_xmp(fields, False))[4 + 29:]
    with pytest.raises(gainmap.GainMapError, match=match):
        gainmap.parse(np.zeros((4, 4)), xmp)


@pytest.mark.slow
def test_cli_uses_the_gain_map(tiny_weights, cli_env, tmp_path):
    """reconstruct writes the gain map's HDR rendition as the photo's HDR (with or without stage
    2), --ignore-gain-map and a broken map (one warning) give the networks' HDR of the same
    photo, and a base-is-HDR map is not used."""
    rng = np.random.default_rng(3)
    sdr = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    rec = (rng.random((48, 64)) * 255).astype(np.uint8)
    data = ultra_hdr(sdr, rec, FIELDS)
    (tmp_path / "u.jpg").write_bytes(data)
    (tmp_path / "plain.jpg").write_bytes(_jpeg(sdr))
    (tmp_path / "cut.jpg").write_bytes(data[: data.rindex(b"\xff\xd8\xff\xe1") + 400])
    (tmp_path / "base_hdr.jpg").write_bytes(
        ultra_hdr(sdr, rec, dict(FIELDS, BaseRenditionIsHDR="True")))

    def run(name, *extra):
        out = tmp_path / f"out_{name}_{len(extra)}"
        r = run_cli(["reconstruct", tmp_path / f"{name}.jpg", "-o", out, "--weights",
                     tiny_weights, "--scale", "0", *extra], cli_env)
        assert r.returncode == 0, r.stderr
        return r, hio.read_hdr(out / f"{name}.exr")

    photo, stored = _decoded(data)
    r, hdr = run("u")
    assert "from its HDR gain map, up to +3.0 stops" in r.stdout and not r.stderr, r
    np.testing.assert_allclose(hdr, _expected(photo, stored, FIELDS), rtol=1e-5, atol=1e-6)
    r, with_stage2 = run("u", "--scale", "2")
    np.testing.assert_array_equal(with_stage2, hdr)
    assert (tmp_path / "out_u_2" / "u_fused.png").is_file()
    _, plain = run("plain")
    _, ignored = run("u", "--ignore-gain-map")
    np.testing.assert_array_equal(ignored, plain)
    r, broken = run("cut")
    assert r.stderr.count("warning:") == 1 and "does not decode" in r.stderr, r.stderr
    np.testing.assert_array_equal(broken, plain)
    r, base_hdr = run("base_hdr")
    assert "BaseRenditionIsHDR" in r.stderr
    np.testing.assert_array_equal(base_hdr, plain)
