"""HDR gain maps (hdr_jax.camera.gainmap, hdr_io.read_gain_map): Ultra HDR JPEGs assembled here
byte by byte (Multi-Picture Format index, hdrgm XMP) and iPhone-style HEICs (a second picture
made an auxiliary gain map by editing libheif's boxes, an Apple MakerNote written here), the
HDR rendition checked against the formulas computed here, and the CLI through subprocesses."""

from __future__ import annotations

import dataclasses
import io
import json
import struct

import numpy as np
import pytest
from conftest import run_cli, run_python_checked
from PIL import Image

from hdr_jax import io as hio
from hdr_jax import isobmff
from hdr_jax.camera import crf, gainmap

pillow_heif = pytest.importorskip("pillow_heif")


def _xmp_app1(body: str) -> bytes:
    packet = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf='
              '"http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
              'xmlns:hdrgm="http://ns.adobe.com/hdr-gain-map/1.0/" ' + body +
              '</rdf:RDF></x:xmpmeta>').encode()
    payload = b"http://ns.adobe.com/xap/1.0/\0" + packet
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def _iso_app2(payload: bytes) -> bytes:
    body = hio.ISO_GAIN_MAP.encode() + b"\0" + payload
    return b"\xff\xe2" + struct.pack(">H", len(body) + 2) + body


def iso_payload(channels: list[dict], base: tuple = (0, 1), alternate: tuple = (3, 1), *,
                minimum: int = 0, flags: int | None = None) -> bytes:
    """ISO 21496-1 binary metadata as a JPEG's APP2 segment holds it: versions, flags (three
    channels or one), the headrooms, then per channel min, max, gamma, base and alternate
    offset as (numerator, denominator). A HEIF 'tmap' item holds it after a version byte."""
    flags = (0x80 if len(channels) == 3 else 0) if flags is None else flags
    out = struct.pack(">HHB", minimum, 0, flags) + struct.pack(">IIII", *base, *alternate)
    for c in channels:
        out += struct.pack(">iIiIIIiIiI", *c["min"], *c["max"], *c["gamma"], *c["base"],
                           *c["alt"])
    return out


#: FIELDS as ISO 21496-1 fractions.
ISO_CHANNEL = {"min": (-1, 2), "max": (3, 1), "gamma": (3, 2), "base": (1, 100), "alt": (2, 100)}


def _apple_xmp_app1(aux: bool = True) -> bytes:
    """An XMP APP1 segment as an iPhone's JPEG has: on its gain map, Apple's auxiliary type."""
    body = ('xmlns:apdi="http://ns.apple.com/pixeldatainfo/1.0/" apdi:AuxiliaryImageType="'
            + hio.APPLE_GAIN_MAP + '"' if aux else 'xmlns:xmp="http://ns.adobe.com/xap/1.0/"')
    packet = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf='
              '"http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description ' + body
              + '/></rdf:RDF></x:xmpmeta>').encode()
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


def ultra_hdr(sdr: np.ndarray, recovery: np.ndarray, fields: dict | None, *, seq: bool = False,
              exif: bytes | None = None, map_bytes: bytes | None = None,
              iso: bytes | None = None) -> bytes:
    """An Ultra HDR JPEG: the SDR photo with hdrgm:Version XMP and an MPF index (big-endian,
    two entries), then the gain map JPEG with the fields' XMP. ``fields`` None: an iPhone's
    JPEG instead, the map's XMP naming Apple's auxiliary type and the photo's without hdrgm.
    ``iso``: ISO 21496-1 metadata alone instead of XMP, in APP2 segments."""
    primary = _jpeg(sdr, **({"exif": exif} if exif else {}))
    gm = map_bytes if map_bytes is not None else _jpeg(recovery)
    if iso is not None:
        gm = gm[:2] + _iso_app2(iso) + gm[2:]
        head = _iso_app2(b"\0\0\0\0")  # the photo's: versions only
    elif fields is None:
        gm = gm[:2] + _apple_xmp_app1() + gm[2:]
        head = _apple_xmp_app1(aux=False)
    else:
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
    # the gain map's SOI, followed by its XMP (or ISO 21496-1 APP2) segment
    start = max(data.rfind(b"\xff\xd8\xff\xe1"), data.rfind(b"\xff\xd8\xff\xe2"))
    return photo, np.asarray(Image.open(io.BytesIO(data[start:])))


@pytest.mark.parametrize("seq", [False, True])
def test_rendition_follows_the_specification(tmp_path, seq):
    rng = np.random.default_rng(0)
    sdr = (rng.random((24, 40, 3)) * 255).astype(np.uint8)
    rec = (rng.random((24, 40, 3 if seq else 1)) * 255).astype(np.uint8)
    fields = dict(FIELDS, GainMapMax=[3.0, 2.0, 1.0], Gamma=[1.5, 1.0, 2.0]) if seq else FIELDS
    data = ultra_hdr(sdr, rec.squeeze(), fields, seq=seq)
    (tmp_path / "u.jpg").write_bytes(data)
    pixels, xmp, kind = hio.read_gain_map(tmp_path / "u.jpg")
    assert kind == "hdrgm"
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
    pixels, xmp, _ = hio.read_gain_map(tmp_path / "u.jpg")
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
    # a stereo pair as Pillow writes one (an MPO to Pillow, which drops the index's offset)
    Image.fromarray(sdr).save(tmp_path / "stereo.jpg", format="MPO", save_all=True,
                              append_images=[Image.fromarray(sdr[::-1])])
    assert Image.open(tmp_path / "stereo.jpg").format == "MPO"
    assert hio.read_gain_map(tmp_path / "stereo.jpg") is None
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


def _reconstruct(photo, weights, env, *extra):
    """``reconstruct`` of one photo, stage 1 only unless ``extra`` says otherwise, into a folder
    named after it and the options' count: (the finished process, the written HDR)."""
    out = photo.parent / f"out_{photo.stem}_{len(extra)}"
    r = run_cli(["reconstruct", photo, "-o", out, "--weights", weights, "--scale", "0", *extra],
                env)
    assert r.returncode == 0, r.stderr
    return r, hio.read_hdr(out / f"{photo.stem}.exr")


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
        return _reconstruct(tmp_path / f"{name}.jpg", tiny_weights, cli_env, *extra)

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


# ----------------------------------------------------------------------------------------------
# iPhone HEIC: an auxiliary gain map and Apple's MakerNote
# ----------------------------------------------------------------------------------------------


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _children(data: bytes, start: int, end: int) -> list[tuple[bytes, bytes]]:
    out = []
    while start < end:
        size, kind = struct.unpack_from(">I4s", data, start)
        out.append((kind, data[start + 8: start + size]))
        start += size
    return out


def _libheif_aux(path) -> list[str]:
    """The auxiliary image types libheif lists for a file's primary picture (an independent
    check that the boxes written here make one); the library itself keeps the listing off."""
    saved, pillow_heif.options.AUX_IMAGES = pillow_heif.options.AUX_IMAGES, True
    try:
        return list(pillow_heif.open_heif(path).info["aux"])
    finally:
        pillow_heif.options.AUX_IMAGES = saved


def maker_note(tags: dict, order: str = ">", kind: int = 10) -> bytes:
    """An Apple MakerNote: its header, then a directory of (S)RATIONAL tags {tag: (num, den)}
    whose values follow it, offsets counted from the MakerNote's first byte."""
    code = "ii" if kind == 10 else "II"
    at = 16 + 12 * len(tags) + 4
    entries, values = b"", b""
    for tag, ratio in sorted(tags.items()):
        entries += struct.pack(order + "HHII", tag, kind, 1, at + len(values))
        values += struct.pack(order + code, *ratio)
    return (b"Apple iOS\0\0\x01" + (b"MM" if order == ">" else b"II")
            + struct.pack(order + "H", len(tags)) + entries + b"\0\0\0\0" + values)


def _exif(note: bytes) -> bytes:
    exif = Image.Exif()
    exif[0x8769] = {0x927C: note}
    return exif.tobytes()


def apple_heic(sdr: np.ndarray, gain: np.ndarray, exif: bytes | None = None,
               aux_type: str = hio.APPLE_GAIN_MAP, tmap: bytes | None = None) -> bytes:
    """A HEIC whose second picture (grey) is an auxiliary image of the first, of ``aux_type``:
    libheif writes both pictures (lossless), then item 2 gets an 'auxC' property and an 'auxl'
    reference to the primary, and the item locations move by what the meta box grew. With
    ``tmap``, also an ISO 21496-1 'tmap' item holding those bytes (in an 'mdat' box at the end
    of the file, after the item's version byte) whose 'dimg' inputs are the primary and the
    auxiliary picture."""
    mode = "L" if gain.ndim == 2 else "RGB"
    hf = pillow_heif.from_bytes(mode="RGB", size=sdr.shape[1::-1], data=sdr.tobytes())
    hf.add_frombytes(mode=mode, size=gain.shape[1::-1], data=gain.tobytes())
    buf = io.BytesIO()
    hf.save(buf, quality=-1, **({"exif": exif} if exif else {}))
    data = buf.getvalue()
    top = _children(data, 0, len(data))
    assert [k for k, _ in top] == [b"ftyp", b"meta", b"mdat"], [k for k, _ in top]
    meta = top[1][1]
    kids = dict(_children(meta, 4, len(meta)))
    primary = struct.unpack_from(">H", kids[b"pitm"], 4)[0]
    infos = _children(kids[b"iinf"], 6, len(kids[b"iinf"]))
    assert kids[b"iinf"][0] == 0 and all(b[0] == 2 for _, b in infos)  # 16-bit IDs
    pictures = [struct.unpack_from(">H", b, 4)[0] for k, b in infos if b[8:12] == b"hvc1"]
    (aux,) = [i for i in pictures if i != primary]
    iprp = dict(_children(kids[b"iprp"], 0, len(kids[b"iprp"])))
    props = iprp[b"ipco"] + _box(b"auxC", b"\0\0\0\0" + aux_type.encode() + b"\0")
    index = len(_children(props, 0, len(props)))
    ipma = iprp[b"ipma"]
    assert ipma[0] == 0 and not ipma[3] & 1  # 16-bit item IDs, 7-bit indices
    entries, pos = [], 8
    for _ in range(struct.unpack_from(">I", ipma, 4)[0]):
        item, n = struct.unpack_from(">HB", ipma, pos)
        assoc = list(ipma[pos + 3: pos + 3 + n])
        entries.append((item, assoc + [index] if item == aux else assoc))
        pos += 3 + n
    ipma = ipma[:4] + struct.pack(">I", len(entries)) + b"".join(
        struct.pack(">HB", item, len(a)) + bytes(a) for item, a in entries)
    kids[b"iprp"] = _box(b"ipco", props) + _box(b"ipma", ipma)
    refs = _box(b"auxl", struct.pack(">HHH", aux, 1, primary))
    iloc = kids[b"iloc"]  # version 0, as libheif writes it
    assert iloc[0] == 0
    osize, lsize, bsize = iloc[4] >> 4, iloc[4] & 15, iloc[5] >> 4
    items, pos = [], 8
    for _ in range(struct.unpack_from(">H", iloc, 6)[0]):
        item = struct.unpack_from(">H", iloc, pos)[0]
        base = int.from_bytes(iloc[pos + 4: pos + 4 + bsize], "big")
        pos += 4 + bsize
        spans = []
        for _ in range(struct.unpack_from(">H", iloc, pos)[0]):
            spans.append((int.from_bytes(iloc[pos + 2: pos + 2 + osize], "big"),
                          int.from_bytes(iloc[pos + 2 + osize: pos + 2 + osize + lsize], "big")))
            pos += osize + lsize
        pos += 2
        items.append([item, base, spans])
    if tmap is not None:
        tmap = b"\0" + tmap  # the 'tmap' item's version
        item = max(i for i, _, _ in items) + 1
        infos.append((b"infe", b"\2\0\0\0" + struct.pack(">HH", item, 0) + b"tmap\0"))
        refs += _box(b"dimg", struct.pack(">HHHH", item, 2, primary, aux))
        items.append([item, 0, [(None, len(tmap))]])  # its offset once the file is laid out
    kids[b"iinf"] = kids[b"iinf"][:4] + struct.pack(">H", len(infos)) + b"".join(
        _box(k, b) for k, b in infos)
    kids[b"iref"] = kids.get(b"iref", b"\0\0\0\0") + refs

    def assemble(delta, tail):
        packed = b""
        for item, base, spans in items:
            if base:
                base += delta
            packed += struct.pack(">HH", item, 0) + base.to_bytes(bsize, "big") + struct.pack(
                ">H", len(spans)) + b"".join(
                (tail if off is None else off + (0 if base else delta)).to_bytes(osize, "big")
                + n.to_bytes(lsize, "big") for off, n in spans)
        kids[b"iloc"] = iloc[:6] + struct.pack(">H", len(items)) + packed
        return _box(b"meta", meta[:4] + b"".join(_box(k, b) for k, b in kids.items()))

    delta = len(assemble(0, 0)) - (8 + len(meta))
    head = _box(b"ftyp", top[0][1])
    tail = len(head) + len(assemble(0, 0)) + 8 + len(top[2][1]) + 8
    out = head + assemble(delta, tail) + _box(b"mdat", top[2][1])
    return out + (_box(b"mdat", tmap) if tmap is not None else b"")


NOTE = {33: (1, 2), 48: (1, 200)}  # headroom tags 0.5 and 0.005: 1.8 - 20 * 0.005 = 1.7 stops


def test_apple_headroom_formula():
    """Apple's four branches, evaluated here by hand."""
    cases = [((0.5, 0.0), 1.8), ((0.5, 0.005), 1.7), ((0.5, 0.5), 1.601 - 0.0505),
             ((1.2, 0.005), 3.0 - 0.35), ((1.2, 2.0), 2.303 - 0.606), ((1.2, 10.0), 0.0)]
    for (m33, m48), stops in cases:
        assert gainmap.apple_headroom(m33, m48) == pytest.approx(2.0 ** stops, rel=1e-9)
    # a MakerNote whose tag 48 makes the headroom absurd (found by fuzzing: 2^(4e10) overflowed)
    with pytest.raises(gainmap.GainMapError, match="beyond 16"):
        gainmap.parse(np.zeros((4, 4)), maker_note({33: (1, 2), 48: (-2 ** 31, 1)}), "apple")


@pytest.mark.parametrize("order, kind", [(">", 10), ("<", 10), ("<", 5)])
def test_apple_maker_note(order, kind):
    note = maker_note({8: (3, 4), 33: (7, 8), 48: (1, 4)}, order, kind)
    assert gainmap.apple_maker_note(note) == {8: 0.75, 33: 0.875, 48: 0.25}
    with pytest.raises(gainmap.GainMapError, match="no Apple MakerNote"):
        gainmap.apple_maker_note(b"Nikon\0" + note[6:])
    with pytest.raises(gainmap.GainMapError, match="cut off"):
        gainmap.apple_maker_note(note[:20])
    with pytest.raises(gainmap.GainMapError, match="points past its end"):
        gainmap.apple_maker_note(note[:-4])


def test_apple_gain_map_follows_apples_formula(tmp_path):
    """The auxiliary map and the MakerNote's headroom are read from the HEIC, and the HDR is
    SDR (1 + (headroom - 1) g), g the map's value through the inverse Rec. 709 curve, at the
    photo's size; a map at half size is upsampled."""
    rng = np.random.default_rng(4)
    sdr = (rng.random((32, 48, 3)) * 255).astype(np.uint8)
    gain = (rng.random((32, 48)) * 255).astype(np.uint8)
    (tmp_path / "a.heic").write_bytes(apple_heic(sdr, gain, _exif(maker_note(NOTE))))
    assert _libheif_aux(tmp_path / "a.heic") == [hio.APPLE_GAIN_MAP]
    pixels, note, kind = hio.read_gain_map(tmp_path / "a.heic")
    assert kind == "apple" and pixels.shape == (32, 48, 1)
    np.testing.assert_allclose(pixels[..., 0], gain / 255.0, atol=1 / 255)  # lossless grey
    gm = gainmap.parse(pixels, note, kind)
    assert gm.max_boost_stops == pytest.approx(1.7)
    photo = hio.read_ldr(tmp_path / "a.heic")
    v = pixels.astype(np.float64)
    g = np.where(v < 0.081, v / 4.5, ((v + 0.099) / 1.099) ** (1 / 0.45))
    want = crf.srgb_decode(photo.astype(np.float64)) * (1 + (2 ** 1.7 - 1) * g)
    got = gainmap.hdr_rendition(crf.srgb_decode(photo), gm)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got.max() > 1.5  # the brightest map values lift above SDR white
    # half size, one value: the whole photo scaled by one factor
    flat = np.full((16, 24), 200, np.uint8)
    (tmp_path / "h.heic").write_bytes(apple_heic(sdr, flat, _exif(maker_note(NOTE))))
    gm = gainmap.parse(*hio.read_gain_map(tmp_path / "h.heic"))
    gainmap.check_shape(gm, photo.shape[:2])
    g = ((200 / 255 + 0.099) / 1.099) ** (1 / 0.45)
    np.testing.assert_allclose(gainmap.hdr_rendition(np.full((32, 48, 3), 0.5, np.float32), gm),
                               0.5 * (1 + (2 ** 1.7 - 1) * g), rtol=1e-4)


def test_apple_gain_map_in_a_jpeg(tmp_path):
    """An iPhone's JPEG: the map is the Multi-Picture Format picture whose XMP names Apple's
    auxiliary type, the headroom the primary's MakerNote's; turned with the photo."""
    rng = np.random.default_rng(7)
    sdr = (rng.random((32, 48, 3)) * 255).astype(np.uint8)
    rec = np.full((16, 24), 230, np.uint8)
    rec[:8, :12] = 30
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x8769] = {0x927C: maker_note(NOTE)}
    (tmp_path / "a.jpg").write_bytes(ultra_hdr(sdr, rec, None, exif=exif.tobytes()))
    pixels, note, kind = hio.read_gain_map(tmp_path / "a.jpg")
    assert kind == "apple" and note == maker_note(NOTE) and pixels.shape == (24, 16, 1)
    assert pixels[0, -1, 0] < 0.2 and pixels[-1, 0, 0] > 0.8  # turned like the photo
    gm = gainmap.parse(pixels, note, kind)
    gainmap.check_shape(gm, hio.read_ldr(tmp_path / "a.jpg").shape[:2])
    assert gm.max_boost_stops == pytest.approx(1.7)
    # without the MakerNote the map is found but has no headroom
    (tmp_path / "b.jpg").write_bytes(ultra_hdr(sdr, rec, None))
    with pytest.raises(gainmap.GainMapError, match="without the Apple MakerNote"):
        gainmap.parse(*hio.read_gain_map(tmp_path / "b.jpg"))


def test_iso_metadata():
    """ISO 21496-1 binary metadata read as Adobe's fields; three channels; refusals."""
    fields = gainmap.iso_fields(iso_payload([ISO_CHANNEL]))
    assert fields == {"HDRCapacityMin": [0.0], "HDRCapacityMax": [3.0], "GainMapMin": [-0.5],
                      "GainMapMax": [3.0], "Gamma": [1.5], "OffsetSDR": [0.01],
                      "OffsetHDR": [0.02]}
    three = [dict(ISO_CHANNEL, max=(m, 4)) for m in (12, 8, 4)]
    gm = gainmap.parse(np.zeros((4, 4, 3)), iso_payload(three), "iso")
    np.testing.assert_allclose(gm.gain_max, [3.0, 2.0, 1.0])
    assert not gm.base_is_hdr
    # the alternate rendition below the base's headroom: the base is the HDR one
    assert gainmap.parse(np.zeros((4, 4)), iso_payload([ISO_CHANNEL], (3, 1), (0, 1)),
                         "iso").base_is_hdr
    for payload, match in [
        (iso_payload([ISO_CHANNEL])[:4], "4 bytes, too short"),
        (iso_payload([ISO_CHANNEL], minimum=1), "version 1"),
        (iso_payload([ISO_CHANNEL])[:-4], "expected 61"),
        (iso_payload([ISO_CHANNEL], flags=0x80), "expected 141"),
        (iso_payload([dict(ISO_CHANNEL, gamma=(1, 0))]), "zero denominator"),
        (iso_payload([dict(ISO_CHANNEL, gamma=(0, 1))]), "ISO 21496-1 Gamma must be positive"),
    ]:
        with pytest.raises(gainmap.GainMapError, match=match):
            gainmap.parse(np.zeros((4, 4)), payload, "iso")


#: ISO 21496-1 metadata of two iPhone 15 photos (iOS 18), as their files store it: the APP2
#: payload of a JPEG's map and the data of a HEIC's 'tmap' item (its version byte first).
IPHONE_JPEG_ISO = bytes.fromhex(
    "000000004000000000000f424000161bf8000f4240fffda824000f424000161bf8000f4240000be9da000f4240"
    "0000000a000f42400000000a000f4240")
IPHONE_HEIC_TMAP = bytes.fromhex(
    "00000000004000000000000f424000188d94000f4240fffffc3f000f424000188d94000f4240000b6a0f000f42"
    "400000000a000f42400000000a000f4240")


def test_iso_metadata_of_real_iphone_files():
    """The two real layouts: the JPEG's 61 bytes parse as they are, the HEIC item's after its
    version byte. Their headrooms, 1.45 and 1.61 stops, are what the same photos' Apple
    MakerNotes give by Apple's formula (docs/results/gainmaps)."""
    jpeg = gainmap.iso_fields(IPHONE_JPEG_ISO)
    assert jpeg["HDRCapacityMax"] == jpeg["GainMapMax"] == [1.448952]
    assert jpeg["HDRCapacityMin"] == [0.0] and jpeg["GainMapMin"] == [-0.153564]
    assert jpeg["Gamma"] == [0.780762] and jpeg["OffsetSDR"] == jpeg["OffsetHDR"] == [1e-5]
    assert IPHONE_HEIC_TMAP[0] == 0
    heic = gainmap.iso_fields(IPHONE_HEIC_TMAP[1:])
    assert heic["HDRCapacityMax"] == heic["GainMapMax"] == [1.609108]
    with pytest.raises(gainmap.GainMapError, match="62 bytes, expected 61"):
        gainmap.iso_fields(IPHONE_HEIC_TMAP)  # the item's data as it is: not the metadata


def test_iso_gain_map_in_a_jpeg_and_a_heic(tmp_path):
    """ISO 21496-1 alone: a JPEG map's APP2 segment, a HEIC's 'tmap' item whose gain map is an
    auxiliary image of the photo; both give the specification's rendition."""
    rng = np.random.default_rng(8)
    sdr = (rng.random((24, 40, 3)) * 255).astype(np.uint8)
    rec = (rng.random((24, 40)) * 255).astype(np.uint8)
    payload = iso_payload([ISO_CHANNEL])
    data = ultra_hdr(sdr, rec, None, iso=payload)
    (tmp_path / "i.jpg").write_bytes(data)
    assert Image.open(tmp_path / "i.jpg").format == "MPO"  # no hdrgm XMP for Pillow to see
    pixels, meta, kind = hio.read_gain_map(tmp_path / "i.jpg")
    assert kind == "iso" and meta == payload
    photo, stored = _decoded(data)
    got = gainmap.hdr_rendition(crf.srgb_decode(photo / 255.0), gainmap.parse(pixels, meta, kind))
    np.testing.assert_allclose(got, _expected(photo, stored, FIELDS), rtol=1e-5, atol=1e-6)

    samsung = "urn:com:samsung:photo:2024:aux:hdrgainmap"
    (tmp_path / "i.heic").write_bytes(apple_heic(sdr, rec, aux_type=samsung, tmap=payload))
    assert _libheif_aux(tmp_path / "i.heic") == [samsung]
    pixels, meta, kind = hio.read_gain_map(tmp_path / "i.heic")
    assert kind == "iso" and meta == payload and pixels.shape == (24, 40, 1)
    np.testing.assert_allclose(pixels[..., 0], rec / 255.0, atol=1 / 255)
    photo = hio.read_ldr(tmp_path / "i.heic")
    got = gainmap.hdr_rendition(crf.srgb_decode(photo), gainmap.parse(pixels, meta, kind))
    np.testing.assert_allclose(got, _expected(np.round(photo * 255).astype(np.uint8),
                                              np.round(pixels[..., 0] * 255), FIELDS),
                               rtol=1e-5, atol=1e-6)
    # the same auxiliary picture without the 'tmap' item is nobody's gain map
    (tmp_path / "n.heic").write_bytes(apple_heic(sdr, rec, aux_type=samsung))
    assert hio.read_gain_map(tmp_path / "n.heic") is None
    # a 'tmap' whose gain map is not an auxiliary image (its 'auxl' reference renamed)
    (tmp_path / "h.heic").write_bytes(apple_heic(sdr, rec, aux_type=samsung, tmap=payload)
                                      .replace(b"auxl", b"zzzz"))
    hidden, meta, kind = hio.read_gain_map(tmp_path / "h.heic")
    assert kind == "iso" and meta == payload and np.array_equal(hidden, pixels)


def test_a_map_described_twice(tmp_path):
    """An iPhone's since iOS 18: one map, described by Apple's MakerNote and by ISO 21496-1
    metadata (the map's APP2 segment in a JPEG, a 'tmap' item over the same auxiliary picture
    in a HEIC). Apple's is read unless ``kinds`` asks for the other; a kind the file lacks
    reads as no map."""
    rng = np.random.default_rng(9)
    sdr = (rng.random((24, 40, 3)) * 255).astype(np.uint8)
    rec = (rng.random((12, 20)) * 255).astype(np.uint8)
    payload = iso_payload([ISO_CHANNEL])
    coded = _jpeg(rec)
    jpeg = ultra_hdr(sdr, rec, None, exif=_exif(maker_note(NOTE)),
                     map_bytes=coded[:2] + _iso_app2(payload) + coded[2:])
    (tmp_path / "both.jpg").write_bytes(jpeg)
    (tmp_path / "both.heic").write_bytes(apple_heic(sdr, rec, _exif(maker_note(NOTE)),
                                                    tmap=payload))
    for name in ("both.jpg", "both.heic"):
        apple = hio.read_gain_map(tmp_path / name)
        iso = hio.read_gain_map(tmp_path / name, kinds=("iso",))
        assert apple[2] == "apple" and iso[2] == "iso" and iso[1] == payload, name
        np.testing.assert_array_equal(apple[0], iso[0])  # the same picture
        assert hio.read_gain_map(tmp_path / name, kinds=("iso", "apple"))[2] == "iso"
        assert hio.read_gain_map(tmp_path / name, kinds=("hdrgm",)) is None


def test_apple_gain_maps_that_cannot_be_used(tmp_path):
    rng = np.random.default_rng(5)
    sdr = (rng.random((32, 48, 3)) * 255).astype(np.uint8)
    gain = (rng.random((16, 24)) * 255).astype(np.uint8)
    # another maker's auxiliary image is not Apple's map
    (tmp_path / "o.heic").write_bytes(apple_heic(sdr, gain, _exif(maker_note(NOTE)),
                                                 aux_type="urn:example:photo:aux:gainmap"))
    assert hio.read_gain_map(tmp_path / "o.heic") is None
    # Apple's type followed by subtype data is Apple's map
    (tmp_path / "s.heic").write_bytes(apple_heic(sdr, gain, _exif(maker_note(NOTE)),
                                                 aux_type=hio.APPLE_GAIN_MAP + "\0\x01\x02"))
    assert hio.read_gain_map(tmp_path / "s.heic")[2] == "apple"
    # tag 48 absent counts 0 (1.8 stops); tag 33 or the whole MakerNote absent: no headroom
    for tags, want in [({33: (1, 2)}, "1.8"), ({48: (1, 200)}, "tag 33"),
                       (None, "without the Apple MakerNote")]:
        exif = _exif(maker_note(tags)) if tags else None
        (tmp_path / "m.heic").write_bytes(apple_heic(sdr, gain, exif))
        found = hio.read_gain_map(tmp_path / "m.heic")
        if want == "1.8":
            assert gainmap.parse(*found).max_boost_stops == pytest.approx(1.8)
        else:
            with pytest.raises(gainmap.GainMapError, match=want):
                gainmap.parse(*found)
    # a map turned against its photo
    (tmp_path / "t.heic").write_bytes(apple_heic(sdr, gain.T.copy(), _exif(maker_note(NOTE))))
    gm = gainmap.parse(*hio.read_gain_map(tmp_path / "t.heic"))
    with pytest.raises(gainmap.GainMapError, match="not the photo's shape"):
        gainmap.check_shape(gm, (32, 48))
    # an auxiliary image whose coded data is cut (it is the file's last item): a read error,
    # while the photo itself still reads
    data = apple_heic(sdr, gain, _exif(maker_note(NOTE)))
    (tmp_path / "c.heic").write_bytes(data[:-40])
    assert hio.read_ldr(tmp_path / "c.heic").shape == (32, 48, 3)
    with pytest.raises(hio.ImageIOError, match="c.heic: its Apple HDR gain map does not decode"):
        hio.read_gain_map(tmp_path / "c.heic")


@pytest.mark.slow
def test_cli_uses_an_iphone_gain_map(tiny_weights, cli_env, tmp_path):
    """reconstruct writes an iPhone HEIC's gain-map HDR; one whose MakerNote lacks the headroom
    gets one warning and the networks' HDR, as --ignore-gain-map does."""
    rng = np.random.default_rng(6)
    sdr = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    gain = (rng.random((24, 32)) * 255).astype(np.uint8)
    (tmp_path / "a.heic").write_bytes(apple_heic(sdr, gain, _exif(maker_note(NOTE))))
    (tmp_path / "b.heic").write_bytes(apple_heic(sdr, gain, _exif(maker_note({8: (1, 2)}))))

    def run(name, *extra):
        return _reconstruct(tmp_path / f"{name}.heic", tiny_weights, cli_env, *extra)

    r, hdr = run("a")
    assert "from its HDR gain map, up to +1.7 stops" in r.stdout and not r.stderr, r
    gm = gainmap.parse(*hio.read_gain_map(tmp_path / "a.heic"))
    want = gainmap.hdr_rendition(crf.srgb_decode(hio.read_ldr(tmp_path / "a.heic")), gm)
    np.testing.assert_allclose(hdr, want, rtol=1e-3, atol=1e-4)  # the EXR stores half floats
    r, broken = run("b")
    assert r.stderr.count("warning:") == 1 and "tag 33" in r.stderr, r.stderr
    _, ignored = run("a", "--ignore-gain-map")
    np.testing.assert_array_equal(broken, ignored)


# ----------------------------------------------------------------------------------------------
# ISO 21496-1 'tmap' items with hidden gain maps (libavif's and libheif's layout), HEIC and AVIF
# ----------------------------------------------------------------------------------------------


def _picture(pixels: np.ndarray, brand: bytes) -> isobmff.Item:
    """The primary picture item of a one-picture file the installed encoder writes: libheif
    (lossless) for b'heic', libavif through Pillow for b'avif'."""
    buf = io.BytesIO()
    if brand == b"heic":
        mode = "L" if pixels.ndim == 2 else "RGB"
        pillow_heif.from_bytes(mode=mode, size=pixels.shape[1::-1],
                               data=pixels.tobytes()).save(buf, quality=-1)
    else:
        Image.fromarray(pixels).save(buf, format="AVIF", quality=95)
    meta = isobmff.read_meta(buf.getvalue())
    return meta.items[meta.primary]


def _alone(item: isobmff.Item, brand: bytes) -> np.ndarray:
    """A picture item decoded as the only picture of a file: the decoder's own pixels."""
    data = isobmff.write_file([dataclasses.replace(item, id=1)], brand)
    if brand == b"heic":
        return np.asarray(pillow_heif.open_heif(io.BytesIO(data)).to_pillow())
    return np.asarray(Image.open(io.BytesIO(data), formats=("AVIF",)))


def _props(*steps: tuple[bytes, int]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((kind, bytes([value])) for kind, value in steps)


def tmap_file(photo: isobmff.Item, gain: list[isobmff.Item], payload: bytes, brand: bytes,
              photo_steps=(), gain_steps=()) -> bytes:
    """A HEIC or AVIF of the photo (turned by ``photo_steps``), its hidden gain map (a picture,
    or a grid item followed by its tiles; turned by ``gain_steps``) and a hidden 'tmap' item
    (version 0, then ``payload``) whose 'dimg' inputs are the two, written by the library's own
    writer (whose output the decoders check)."""
    items = [dataclasses.replace(photo, id=1, properties=photo.properties + _props(*photo_steps))]
    root, *tiles = gain
    items.append(dataclasses.replace(root, id=2, hidden=True,
                                     properties=root.properties + _props(*gain_steps)))
    tile_ids = tuple(range(4, 4 + len(tiles)))
    if tiles:
        items[1] = dataclasses.replace(items[1], refs={b"dimg": tile_ids})
    items.append(isobmff.Item(3, b"tmap", True, (), {b"dimg": (1, 2)}, b"\0" + payload))
    items += [dataclasses.replace(t, id=i, hidden=True) for t, i in zip(tiles, tile_ids)]
    return isobmff.write_file(items, brand)


@pytest.mark.parametrize("brand", [b"heic", b"avif"])
def test_iso_gain_map_in_a_hidden_item(tmp_path, brand):
    """The gain map of a 'tmap' item is read where it is a hidden picture, in a HEIC and in an
    AVIF: the decoder's own pixels of that picture, with the file's metadata."""
    rng = np.random.default_rng(11)
    sdr = (rng.random((32, 48, 3)) * 255).astype(np.uint8)
    rec = (rng.random((16, 24)) * 255).astype(np.uint8)
    photo, gain = _picture(sdr, brand), _picture(rec, brand)
    payload = iso_payload([ISO_CHANNEL])
    path = tmp_path / f"g.{brand.decode()}"
    path.write_bytes(tmap_file(photo, [gain], payload, brand))
    assert hio.read_ldr(path).shape == (32, 48, 3)  # the photo reads as before
    pixels, meta, kind = hio.read_gain_map(path)
    want = _alone(gain, brand)
    assert kind == "iso" and meta == payload and pixels.shape[:2] == (16, 24)
    np.testing.assert_array_equal(pixels.reshape(want.shape), want / np.float32(255.0))
    gm = gainmap.parse(pixels, meta, kind)
    gainmap.check_shape(gm, (32, 48))
    assert gm.max_boost_stops == pytest.approx(3.0)


def test_iso_gain_map_of_tiles():
    """A gain map that is a grid of two tiles (as Samsung's is) decodes whole."""
    rng = np.random.default_rng(12)
    rec = (rng.random((16, 64)) * 255).astype(np.uint8)
    tiles = [_picture(np.ascontiguousarray(rec[:, :32]), b"heic"),
             _picture(np.ascontiguousarray(rec[:, 32:]), b"heic")]
    ispe = next(p for p in tiles[0].properties if p[0] == b"ispe")
    grid = isobmff.Item(0, b"grid", True, ((b"ispe", ispe[1][:4] + struct.pack(">II", 64, 16)),),
                        {}, bytes([0, 0, 0, 1]) + struct.pack(">HH", 64, 16))
    photo = _picture((rng.random((32, 128, 3)) * 255).astype(np.uint8), b"heic")
    data = tmap_file(photo, [grid, *tiles], iso_payload([ISO_CHANNEL]), b"heic")
    meta = isobmff.read_meta(data)
    assert meta.items[2].type == b"grid" and meta.items[2].refs[b"dimg"] == (4, 5)
    got = hio._heif_picture(meta, meta.items[2], meta.items[1], grey=True)
    want = np.concatenate([_alone(t, b"heic") for t in tiles], axis=1)
    np.testing.assert_array_equal(got[..., 0], want / np.float32(255.0))


#: Rotations and mirrorings of the photo, in the order they apply (rotation first, as HEIF
#: requires).
STEPS = [((b"irot", 1),), ((b"irot", 2),), ((b"imir", 0),), ((b"imir", 1),),
         ((b"irot", 3), (b"imir", 1)), ((b"irot", 1), (b"imir", 0))]


@pytest.mark.parametrize("brand", [b"heic", b"avif"])
@pytest.mark.parametrize("steps", STEPS)
def test_hidden_gain_map_turns_with_the_photo(tmp_path, brand, steps):
    """A gain map without rotation or mirroring of its own is turned as the decoder turns the
    photo (the decoder's photo equals its stored pixels turned by :func:`isobmff.
    apply_transforms`, and so does the map); one with its own is turned by those alone."""
    rng = np.random.default_rng(14)
    sdr = (rng.random((24, 40, 3)) * 255).astype(np.uint8)
    photo, gain = _picture(sdr, brand), _picture(sdr[..., 0].copy(), brand)
    path = tmp_path / f"t.{brand.decode()}"
    path.write_bytes(tmap_file(photo, [gain], iso_payload([ISO_CHANNEL]), brand,
                               photo_steps=steps))
    stored = _alone(photo, brand) / np.float32(255.0)
    np.testing.assert_array_equal(hio.read_ldr(path), isobmff.apply_transforms(stored, steps))
    pixels = hio.read_gain_map(path)[0]
    own = _alone(gain, brand).reshape(24, 40, -1) / np.float32(255.0)
    np.testing.assert_array_equal(pixels, isobmff.apply_transforms(own, steps))
    # its own rotation (none, here) instead: the photo's is ignored
    path.write_bytes(tmap_file(photo, [gain], iso_payload([ISO_CHANNEL]), brand,
                               photo_steps=steps, gain_steps=((b"irot", 0),)))
    np.testing.assert_array_equal(hio.read_gain_map(path)[0], own)


def test_hidden_gain_maps_that_cannot_be_read(tmp_path):
    """A gain map item that is missing, cut, or of a coding not decoded here: a one-line read
    error naming the file (the CLI turns it into a warning)."""
    rng = np.random.default_rng(13)
    photo = _picture((rng.random((16, 16, 3)) * 255).astype(np.uint8), b"heic")
    gain = _picture((rng.random((8, 8)) * 255).astype(np.uint8), b"heic")
    payload = iso_payload([ISO_CHANNEL])
    good = tmap_file(photo, [gain], payload, b"heic")
    cases = {
        "jpeg": (tmap_file(photo, [dataclasses.replace(gain, type=b"jpeg")], payload, b"heic"),
                 "its ISO 21496-1 gain map does not decode .*coded as jpeg"),
        # the map's coded data zeroed
        "zero": (good.replace(gain.data, bytes(len(gain.data))),
                 "its ISO 21496-1 gain map does not decode"),
        # the file cut in the metadata (the 'tmap' item's data comes last)
        "cut": (good[:-10], "its ISO 21496-1 gain map's metadata lies beyond the end"),
        "gone": (good.replace(struct.pack(">HHHH", 3, 2, 1, 2), struct.pack(">HHHH", 3, 2, 1, 9)),
                 "its ISO 21496-1 gain map .item 9. is not in the file"),
        "version": (good.replace(b"\0" + payload, b"\1" + payload),
                    "its ISO 21496-1 gain map's 'tmap' item is of an unknown version"),
    }
    for name, (data, match) in cases.items():
        path = tmp_path / f"{name}.heic"
        path.write_bytes(data)
        with pytest.raises(hio.ImageIOError, match=f"{name}.heic: {match}"):
            hio.read_gain_map(path)


@pytest.mark.slow
def test_cli_uses_an_avif_gain_map_of_a_turned_photo(tiny_weights, cli_env, tmp_path):
    """reconstruct writes the gain-map HDR of an AVIF whose photo is stored turned a quarter
    and whose map is a hidden item without a rotation of its own; a map whose coded data is
    broken gets one warning and the networks' HDR."""
    rng = np.random.default_rng(15)
    photo = _picture((rng.random((32, 48, 3)) * 255).astype(np.uint8), b"avif")
    gain = _picture((rng.random((16, 24, 3)) * 255).astype(np.uint8), b"avif")
    good = tmap_file(photo, [gain], iso_payload([ISO_CHANNEL]), b"avif",
                     photo_steps=((b"irot", 1),))
    (tmp_path / "a.avif").write_bytes(good)
    (tmp_path / "b.avif").write_bytes(good.replace(gain.data, bytes(len(gain.data))))
    r, hdr = _reconstruct(tmp_path / "a.avif", tiny_weights, cli_env)
    assert "from its HDR gain map, up to +3.0 stops" in r.stdout and not r.stderr, r
    gm = gainmap.parse(*hio.read_gain_map(tmp_path / "a.avif"))
    want = gainmap.hdr_rendition(crf.srgb_decode(hio.read_ldr(tmp_path / "a.avif")), gm)
    assert hdr.shape == (48, 32, 3)
    np.testing.assert_allclose(hdr, want, rtol=1e-3, atol=1e-4)  # the EXR stores half floats
    r, _ = _reconstruct(tmp_path / "b.avif", tiny_weights, cli_env)
    assert r.stderr.count("warning:") == 1 and "gain map does not decode" in r.stderr, r.stderr


def test_gainmap_files_experiment(cli_env, tmp_path):
    """The real-file report: kind, sizes, boost, and a HEIF turned a quarter through its
    rotation property (the map, without one of its own, turns with the photo)."""
    rng = np.random.default_rng(16)
    photo = _picture((rng.random((32, 48, 3)) * 255).astype(np.uint8), b"heic")
    gain = _picture((rng.random((16, 24)) * 255).astype(np.uint8), b"heic")
    (tmp_path / "p.heic").write_bytes(tmap_file(photo, [gain], iso_payload([ISO_CHANNEL]),
                                                b"heic", photo_steps=((b"irot", 0),)))
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    out = tmp_path / "report"
    run_python_checked(["-m", "experiments.gainmap_files", tmp_path / "p.heic",
                        tmp_path / "plain.png", "--out", out], cli_env, timeout=300)
    heif, plain = json.loads((out / "results.json").read_text())["photos"]
    assert plain == {"file": "plain.png", "photo": "8x8", "kind": None}
    assert heif["kind"] == "iso" and heif["photo"] == "48x32" and heif["map"] == "24x16"
    assert heif["fits"] and heif["max boost (stops)"] == pytest.approx(3.0)
    assert heif["turned photo"] == "32x48" and heif["turned map"] == "16x24" and heif["turned fits"]
