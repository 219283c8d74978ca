"""The tone curve a photo's colour profile declares (hdr_jax.camera.profile), checked against
littleCMS (Pillow's ImageCms) on hand-built ICC profiles, and the CLI's use of it."""

from __future__ import annotations

import io
import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli, with_nclx
from PIL import Image, ImageCms, PngImagePlugin

from hdr_jax import io as hio
from hdr_jax.camera import crf, profile

# sRGB's colorants adapted to D50 and the D50 white (the PCS), so that a profile built with
# them differs from sRGB only in its tone curves.
_COLORANTS = {b"rXYZ": (0.4361, 0.2225, 0.0139), b"gXYZ": (0.3851, 0.7169, 0.0971),
              b"bXYZ": (0.1431, 0.0606, 0.7141), b"wtpt": (0.9642, 1.0, 0.8249)}


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def curv_gamma(g: float) -> bytes:
    return b"curv" + bytes(4) + struct.pack(">IH", 1, round(g * 256)) + bytes(2)


def curv_table(values: np.ndarray) -> bytes:
    table = np.round(np.asarray(values) * 65535).astype(">u2").tobytes()
    return b"curv" + bytes(4) + struct.pack(">I", len(values)) + table + bytes(len(table) % 4)


def para(fn: int, *params: float) -> bytes:
    body = b"para" + bytes(4) + struct.pack(">H", fn) + bytes(2) + b"".join(map(_s15, params))
    return body + bytes(-len(body) % 4)


SRGB_PARA = para(3, 2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)


def icc(trc: bytes | tuple[bytes, bytes, bytes]) -> bytes:
    """A minimal ICC v2 RGB display profile: sRGB colorants and the given TRC tag(s)."""
    trcs = trc if isinstance(trc, tuple) else (trc, trc, trc)
    tags = {sig: b"XYZ " + bytes(4) + b"".join(map(_s15, xyz)) for sig, xyz in _COLORANTS.items()}
    tags.update(zip((b"rTRC", b"gTRC", b"bTRC"), trcs))
    tags[b"desc"] = b"desc" + bytes(4) + struct.pack(">I", 5) + b"test\0" + bytes(4 + 67 + 3)
    tags[b"cprt"] = b"text" + bytes(4) + b"none\0" + bytes(3)
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags.items():
        table += struct.pack(">4sII", sig, offset + len(data), len(body))
        data += body + bytes(-len(body) % 4)
    head = bytearray(128)
    head[8:12] = bytes([2, 0x10, 0, 0])
    head[12:16], head[16:20], head[20:24], head[36:40] = b"mntr", b"RGB ", b"XYZ ", b"acsp"
    head[68:80] = b"".join(map(_s15, _COLORANTS[b"wtpt"]))
    body = bytes(head) + struct.pack(">I", len(tags)) + table + data
    return struct.pack(">I", len(body)) + body[4:]


def _lcms_decoding(data: bytes) -> np.ndarray:
    """Linear value of the grey codes 0..255 through littleCMS: the profile to sRGB, then the
    sRGB decoding (an independent reading of the same tone curve, 8-bit)."""
    ramp = Image.fromarray(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, -1))
    src = ImageCms.ImageCmsProfile(io.BytesIO(data))
    out = ImageCms.profileToProfile(ramp, src, ImageCms.createProfile("sRGB"),
                                    renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    return crf.srgb_decode(np.asarray(out, np.float64)[0, :, 1] / 255.0)


@pytest.mark.parametrize("trc", [
    curv_gamma(1.8), curv_gamma(563 / 256), curv_gamma(1.0), SRGB_PARA, para(0, 2.6),
    para(1, 2.0, 1.0, 0.0), curv_table(np.linspace(0, 1, 300) ** 1.8)])
def test_icc_tone_curve_agrees_with_littlecms(trc):
    data = icc(trc)
    ours = profile.icc_decoding(data)
    assert ours.shape == (3, len(profile._CODES))
    mine = np.interp(np.arange(256) / 255.0, profile._CODES, ours[1])
    theirs = _lcms_decoding(data)
    # 8-bit output of littleCMS: compare where one sRGB code step is small relative to the value
    sel = theirs > 0.02
    np.testing.assert_allclose(mine[sel], theirs[sel], rtol=0.03)


def test_declared_response_only_when_not_srgb_like():
    def declared(trc):
        return profile.declared_response({"icc_profile": icc(trc)})

    pro = declared(curv_gamma(1.8))
    assert "ICC" in pro.source and abs(pro.gamma - 1.8) < 0.01 and not pro.scene_linear
    np.testing.assert_allclose(pro.curve, crf.gamma_crf(1.8), atol=2e-3)
    linear = declared(curv_gamma(1.0))
    assert linear.scene_linear and abs(linear.gamma - 1.0) < 1e-3
    assert not declared(para(0, 3.0)).scene_linear
    # sRGB itself and Adobe RGB (563/256) keep the pipeline's sRGB handling
    assert declared(SRGB_PARA) is None and declared(curv_gamma(563 / 256)) is None
    # per-channel curves average in the log domain
    mixed = declared((curv_gamma(1.7), curv_gamma(1.8), curv_gamma(1.9)))
    np.testing.assert_allclose(mixed.curve, crf.gamma_crf(1.8), atol=5e-3)
    # PNG chunks: gAMA alone declares a power unless it is the usual 1/2.2; sRGB wins over gAMA
    assert profile.declared_response({"gamma": 1.0}).scene_linear
    assert abs(profile.declared_response({"gamma": 1 / 1.8}).gamma - 1.8) < 1e-3
    assert profile.declared_response({"gamma": 0.45455}) is None
    assert profile.declared_response({"gamma": 1 / 1.8, "srgb": 0}) is None
    # a HEIF's nclx box declares only a linear curve (H.273 transfer 8); an ICC profile wins
    linear_heif = profile.declared_response({"nclx_profile": {"transfer_characteristics": 8}})
    assert linear_heif.scene_linear and "HEIF" in linear_heif.source
    for transfer in (1, 6, 13, 14):
        assert profile.declared_response({"nclx_profile": {"transfer_characteristics": transfer}}
                                         ) is None
    assert profile.declared_response({"nclx_profile": {"transfer_characteristics": 8},
                                      "icc_profile": icc(SRGB_PARA)}) is None
    # what cannot be read declares nothing
    for info in ({}, {"icc_profile": b"junk" * 40}, {"icc_profile": icc(b"curv")},
                 {"icc_profile": icc(para(9, 1.0))}, {"gamma": 0.0}, {"gamma": float("nan")}):
        assert profile.declared_response(info) is None


def test_colour_metadata_from_files(tmp_path):
    img = Image.fromarray(np.full((8, 8, 3), 128, np.uint8))
    data = icc(curv_gamma(1.8))
    for name in ("p.png", "p.jpg", "p.tif"):
        img.save(tmp_path / name, icc_profile=data)
        assert hio.colour_metadata(tmp_path / name)["icc_profile"] == data
    meta = PngImagePlugin.PngInfo()
    meta.add(b"gAMA", struct.pack(">I", round(100000 / 1.8)))
    img.save(tmp_path / "g.png", pnginfo=meta)
    assert abs(hio.colour_metadata(tmp_path / "g.png")["gamma"] - 1 / 1.8) < 1e-4
    img.save(tmp_path / "plain.png")
    assert hio.colour_metadata(tmp_path / "plain.png") == {}


def test_to_srgb_keeps_the_linear_values():
    rng = np.random.default_rng(1)
    codes = rng.random((8, 8, 3)).astype(np.float32)
    codes[0, 0] = 1.0
    for curve in (crf.gamma_crf(1.0), crf.gamma_crf(1.8), crf.s_curve_crf(6.0, 0.5, gamma=1.0)):
        out = profile.to_srgb(codes, curve)
        assert out.dtype == np.float32 and np.all(out[0, 0] == 1.0)
        np.testing.assert_allclose(crf.srgb_decode(out.astype(np.float64)),
                                   crf.apply_inverse_crf(curve, codes), atol=1e-5)


@pytest.mark.slow
def test_cli_uses_a_scene_linear_profile_and_reports_others(tiny_weights, tmp_path):
    """A photo with a linear profile is decoded with it (re-encoded to sRGB, one note), unlike
    the same pixels without a profile; --response and --ignore-profile override the profile; a
    ProPhoto-like photo (gamma 1.8 profile) only gets a note and is reconstructed as the same
    pixels without one; a photo with an sRGB profile is reconstructed as without one."""
    rng = np.random.default_rng(0)
    pixels = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    for name, trc in (("linear", curv_gamma(1.0)), ("pro", curv_gamma(1.8)),
                      ("srgb", SRGB_PARA), ("plain", None)):
        kw = {"icc_profile": icc(trc)} if trc else {}
        Image.fromarray(pixels).save(tmp_path / f"{name}.png", **kw)

    def run(name, *extra):
        out = f"out_{name}_{len(extra)}"
        r = subprocess.run([sys.executable, "-m", "hdr_jax.cli", "reconstruct", f"{name}.png",
                            "-o", out, "--weights", tiny_weights, "--scale", "0", *extra],
                           cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stderr, hio.read_hdr(tmp_path / out / f"{name}.exr")

    err, plain = run("plain")
    assert "note:" not in err
    err, linear = run("linear")
    assert err.count("note: linear.png is decoded with the scene-referred curve") == 1, err
    assert not np.allclose(linear, plain, rtol=0.05)
    err, given = run("linear", "--response", "srgb")
    assert "note:" not in err and not np.allclose(given, linear, rtol=0.05)
    err, ignored = run("linear", "--ignore-profile")
    assert "note:" not in err
    np.testing.assert_array_equal(ignored, plain)
    err, pro = run("pro")
    assert "note: pro.png declares gamma 1.80" in err and "--response gamma:1.80" in err, err
    np.testing.assert_array_equal(pro, plain)
    err, srgb = run("srgb")
    assert "note:" not in err
    np.testing.assert_array_equal(srgb, plain)
    # 16 bits: one note either way, the declared curve's or the bit depth's
    tifffile = pytest.importorskip("tifffile")  # scikit-image's; Pillow writes no 16-bit RGB
    tifffile.imwrite(tmp_path / "deep.tif", pixels.astype(np.uint16) * 257, photometric="rgb",
                     iccprofile=icc(curv_gamma(1.0)))
    for extra, says in (((), "decoded with the scene-referred curve"),
                        (("--ignore-profile",), "is 16-bit; it is treated as display-referred"),
                        (("--response", "srgb"), "is 16-bit; it is treated as display-referred")):
        r = subprocess.run([sys.executable, "-m", "hdr_jax.cli", "reconstruct", "deep.tif", "-o",
                            f"deep_{len(extra)}", "--weights", tiny_weights, "--scale", "0",
                            *extra], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0 and r.stderr.count("note:") == 1 and says in r.stderr, r.stderr
    # fuse reads both photos the same way (a linear-profile pair is re-encoded before CF-Net)
    dark = (pixels // 4).astype(np.uint8)
    Image.fromarray(dark).save(tmp_path / "dark_linear.png", icc_profile=icc(curv_gamma(1.0)))
    Image.fromarray(dark).save(tmp_path / "dark_plain.png")
    fused = {}
    for kind in ("linear", "plain"):
        r = subprocess.run([sys.executable, "-m", "hdr_jax.cli", "fuse", f"dark_{kind}.png",
                            f"{kind}.png", "-o", f"fused_{kind}.png", "--scale", "2",
                            "--weights", tiny_weights], cwd=tmp_path, capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        assert r.stderr.count("is decoded with the scene-referred curve") == (2 if kind ==
                                                                             "linear" else 0)
        fused[kind] = hio.read_ldr(tmp_path / f"fused_{kind}.png")
    assert not np.allclose(fused["linear"], fused["plain"], atol=0.02)


def test_a_profile_that_goes_unread_is_named(tiny_weights, cli_env, tmp_path):
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    grey = bytearray(icc(curv_gamma(2.2)))
    grey[16:20] = b"GRAY"
    lut = bytearray(icc(curv_gamma(2.2)))
    for sig in (b"rTRC", b"rXYZ"):  # an RGB profile without its matrix and red curve
        i = bytes(lut).index(sig)
        lut[i:i + 4] = b"A2B0" if sig == b"rTRC" else b"B2A0"
    assert lab[16:20] == b"Lab "
    assert profile.unread_profile({"icc_profile": lab}) == "describes Lab data, not RGB"
    assert "LUT" in profile.unread_profile({"icc_profile": bytes(lut)})
    assert profile.unread_profile({"icc_profile": b"x" * 20}) == "is too short to be one"
    for info in ({}, {"icc_profile": bytes(grey)}, {"icc_profile": icc(SRGB_PARA)},
                 {"icc_profile": icc(curv_gamma(1.8))}, {"srgb": 0}):
        assert profile.unread_profile(info) is None, info
    # The CLI says so once and reads the photo as sRGB, as without the profile.
    rng = np.random.default_rng(1)
    pixels = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "lab.jpg", icc_profile=lab, quality=95)
    Image.fromarray(pixels).save(tmp_path / "plain.jpg", quality=95)
    hdrs = {}
    for name in ("lab", "plain"):
        r = run_cli(["reconstruct", tmp_path / f"{name}.jpg", "-o", tmp_path / name, "--weights",
                     tiny_weights, "--scale", "0"], cli_env)
        assert r.returncode == 0, r.stderr
        notes = [ln for ln in r.stderr.splitlines() if ln.startswith("note:")]
        assert notes == (["note: lab.jpg: its ICC profile describes Lab data, not RGB; read as "
                          "sRGB"] if name == "lab" else []), r.stderr
        hdrs[name] = hio.read_hdr(tmp_path / name / f"{name}.exr")
    np.testing.assert_array_equal(hdrs["lab"], hdrs["plain"])


@pytest.mark.slow
def test_declared_encoding_study_runs_and_reports(fake_hdr_dir, tiny_weights, tmp_path):
    import json

    out = tmp_path / "study"
    r = subprocess.run([sys.executable, "-m", "experiments.declared_encoding", "--hdr_dir",
                        str(fake_hdr_dir), "--weights", str(tiny_weights), "--size", "64",
                        "--limit", "1", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    assert list(res["summary"]) == ["gamma 1", "gamma 1 + S", "gamma 1.8", "gamma 1.8 + S",
                                    "gamma 2.6", "gamma 2.6 + S"]
    assert len(res["inputs"]) == 6 * 2
    for curve in res["summary"].values():
        assert all(np.isfinite(v["pu21"]) for v in curve.values())
    assert "re-encoded to sRGB from the declared encoding" in (out / "results.md").read_text()



# --------------------------------------------------------------------------------------------
# Primaries
# --------------------------------------------------------------------------------------------

_D65 = (0.3127, 0.3290)
_CUSTOM = (0.66, 0.32, 0.25, 0.70, 0.14, 0.07, *_D65)


def _matrix(c) -> np.ndarray:
    """RGB -> XYZ of chromaticities c, computed here from scratch (white at Y = 1)."""
    xyz = lambda x, y: np.array([x / y, 1.0, (1 - x - y) / y])  # noqa: E731
    p = np.stack([xyz(c[0], c[1]), xyz(c[2], c[3]), xyz(c[4], c[5])], 1)
    return p * np.linalg.solve(p, xyz(c[6], c[7]))


def _lcms_to_srgb(data: bytes, codes: np.ndarray) -> np.ndarray:
    src = ImageCms.ImageCmsProfile(io.BytesIO(data))
    out = ImageCms.profileToProfile(Image.fromarray(codes), src, ImageCms.createProfile("sRGB"),
                                    renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    return np.asarray(out, np.float64) / 255.0


@pytest.mark.parametrize("name", ["Display P3", "Adobe RGB (1998)", "Rec. 2020", "custom"])
def test_written_icc_profile_converts_like_its_primaries_in_littlecms(name):
    """littleCMS reads the profile we write (tags, colorants, 'chad', the sRGB 'para' curve) and
    converts its colours to sRGB as the primaries say: linear RGB -> XYZ -> sRGB's RGB (same D65
    white, so no adaptation), computed here independently of the library's matrices."""
    c = _CUSTOM if name == "custom" else profile.KNOWN_SPACES[name]
    data = profile.icc_profile(c, name)
    rng = np.random.default_rng(3)
    codes = (rng.random((16, 16, 3)) * 255).round().astype(np.uint8)
    lin = crf.srgb_decode(codes / 255.0)
    want = lin @ (np.linalg.inv(_matrix(profile.KNOWN_SPACES["sRGB"])) @ _matrix(c)).T
    inside = np.all((want > 0.005) & (want < 0.98), axis=-1)  # sRGB cannot hold the others
    assert inside.mean() > 0.2
    got = _lcms_to_srgb(data, codes)
    np.testing.assert_allclose(got[inside], crf.srgb_encode(want)[inside], atol=3 / 255)
    # and sRGB colours it does not change where the space is sRGB itself
    same = _lcms_to_srgb(profile.icc_profile(profile.KNOWN_SPACES["sRGB"]), codes)
    np.testing.assert_allclose(same, codes / 255.0, atol=2 / 255)


def _v2_profile(c, white_tag) -> bytes:
    """A version-2 style profile as many writers make it: the colorants of chromaticities c
    adapted to D50 with Bradford (computed here), no 'chad', and the given 'wtpt'."""
    m_bradford = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367],
                           [0.0389, -0.0685, 1.0296]])
    w = _matrix(c) @ np.ones(3)
    d50 = np.array([0.9642, 1.0, 0.8249])
    adapt = np.linalg.inv(m_bradford) @ np.diag((m_bradford @ d50) / (m_bradford @ w)) @ m_bradford
    cols = adapt @ _matrix(c)
    data = bytearray(icc(SRGB_PARA))
    for sig, xyz in ((b"rXYZ", cols[:, 0]), (b"gXYZ", cols[:, 1]), (b"bXYZ", cols[:, 2]),
                     (b"wtpt", white_tag)):
        (count,) = struct.unpack(">I", data[128:132])
        for i in range(count):
            s, off, _ = struct.unpack(">4sII", data[132 + 12 * i: 144 + 12 * i])
            if s == sig:
                data[off + 8: off + 20] = b"".join(map(_s15, xyz))
    return bytes(data)


def test_declared_colour_space():
    p3 = profile.KNOWN_SPACES["Display P3"]
    for name, c in profile.KNOWN_SPACES.items():
        got = profile.declared_colour_space({"icc_profile": profile.icc_profile(c, name)})
        if name == "sRGB":
            assert got is None
        else:
            assert got.name == name and got.chromaticities == c and "ICC" in got.source
    # other writers' sRGB: littleCMS's own (v4, 'chad'), and sRGB colorants with a D50 'wtpt'
    lcms_srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert profile.declared_colour_space({"icc_profile": lcms_srgb}) is None
    assert profile.declared_colour_space({"icc_profile": icc(curv_gamma(1.8))}) is None
    # a version-2 P3 profile without 'chad': its 'wtpt' holds the unadapted D65 white
    d65 = _matrix(p3) @ np.ones(3)
    v2 = profile.declared_colour_space({"icc_profile": _v2_profile(p3, d65)})
    assert v2.name == "Display P3" and v2.chromaticities == p3
    # ... or the D50 (then the colorants are compared as stored, D50-adapted)
    v2_d50 = profile.declared_colour_space({"icc_profile": _v2_profile(p3, (0.9642, 1, 0.8249))})
    assert v2_d50.name == "Display P3"
    # a space of its own keeps its chromaticities (to the profile's 1/65536 rounding)
    custom = profile.declared_colour_space({"icc_profile": profile.icc_profile(_CUSTOM)})
    assert custom.name == "custom"
    np.testing.assert_allclose(custom.chromaticities, _CUSTOM, atol=1e-4)
    # PNG cHRM (white first), below an sRGB chunk and an ICC profile
    chrm = (*p3[6:], *p3[:6])
    assert profile.declared_colour_space({"chromaticity": chrm}).name == "Display P3"
    assert profile.declared_colour_space({"chromaticity": chrm, "srgb": 0}) is None
    assert profile.declared_colour_space({"chromaticity": chrm, "icc_profile": lcms_srgb}) is None
    # a HEIF's nclx colour box (pillow-heif's reading of it), below an ICC profile
    nclx = {"color_primaries": 12, "transfer_characteristics": 13, **{
        f"color_primary_{k}_{a}": v for (k, a), v in zip(
            [(k, a) for k in ("red", "green", "blue", "white") for a in "xy"], p3)}}
    heif = profile.declared_colour_space({"nclx_profile": nclx})
    assert heif.name == "Display P3" and "HEIF" in heif.source
    assert profile.declared_colour_space({"nclx_profile": nclx, "icc_profile": lcms_srgb}) is None
    srgb_nclx = dict(nclx, **{"color_primary_green_x": 0.30, "color_primary_green_y": 0.60,
                              "color_primary_red_x": 0.64, "color_primary_red_y": 0.33})
    assert profile.declared_colour_space({"nclx_profile": srgb_nclx}) is None
    assert profile.declared_colour_space({"nclx_profile": {"color_primaries": 12}}) is None
    # what cannot be read declares nothing
    collinear = (0.3127, 0.329, 0.2, 0.2, 0.4, 0.4, 0.6, 0.6)
    for info in ({}, {"icc_profile": b"junk" * 40}, {"chromaticity": collinear},
                 {"chromaticity": (0.3127, 0.329, 0.64, 0.0, 0.3, 0.6, 0.15, 0.06)},
                 {"chromaticity": (float("nan"),) * 8}, {"chromaticity": (0.3,) * 5}):
        assert profile.declared_colour_space(info) is None, info
    with pytest.raises(ValueError, match="not the chromaticities"):
        profile.icc_profile(collinear)


def test_outputs_record_the_primaries(tmp_path):
    rng = np.random.default_rng(4)
    img = rng.random((8, 12, 3)).astype(np.float32)
    space = profile.declared_colour_space(
        {"icc_profile": profile.icc_profile(profile.KNOWN_SPACES["Display P3"], "Display P3")})
    for name in ("o.png", "o.jpg", "o.tif"):
        hio.write_ldr(tmp_path / name, img, icc_profile=space.icc_profile())
        back = profile.declared_colour_space(hio.colour_metadata(tmp_path / name))
        assert back == space, name
    np.testing.assert_array_equal(hio.read_ldr(tmp_path / "o.png"),
                                  np.round(img * 255) / 255)
    with pytest.raises(hio.ImageIOError, match="colour profile in a 16-bit"):
        hio.write_ldr(tmp_path / "deep.png", img, bit_depth=16, icc_profile=b"x" * 200)
    import OpenEXR

    hio.write_hdr(tmp_path / "o.exr", img * 8, chromaticities=space.chromaticities)
    with OpenEXR.File(str(tmp_path / "o.exr")) as f:
        np.testing.assert_allclose(f.header()["chromaticities"], space.chromaticities, atol=1e-6)
    np.testing.assert_array_equal(hio.read_hdr(tmp_path / "o.exr"), img * 8)
    hio.write_hdr(tmp_path / "o.hdr", img * 8, chromaticities=space.chromaticities)
    head = (tmp_path / "o.hdr").read_bytes().split(b"\n\n")[0].decode().splitlines()
    assert "PRIMARIES= 0.6800 0.3200 0.2650 0.6900 0.1500 0.0600 0.3127 0.3290" in head
    # RGBE: 8-bit mantissas under the pixel's largest channel's exponent
    np.testing.assert_allclose(hio.read_hdr(tmp_path / "o.hdr"), img * 8, atol=8 / 128)
    hio.write_hdr(tmp_path / "plain.exr", img)
    with OpenEXR.File(str(tmp_path / "plain.exr")) as f:
        assert "chromaticities" not in f.header()
    with pytest.raises(hio.ImageIOError, match="8 finite numbers"):
        hio.write_hdr(tmp_path / "bad.exr", img, chromaticities=(0.3,) * 7)
    assert not (tmp_path / "bad.exr").exists()


@pytest.mark.slow
def test_cli_tags_outputs_with_the_declared_primaries(tiny_weights, cli_env, tmp_path):
    """A Display P3 photo is processed as the same pixels without a profile, and every output of
    reconstruct, brackets and fuse says it is Display P3 (one note); --ignore-profile drops the
    tags; fuse refuses a pair that declares different primaries."""
    import OpenEXR

    p3 = profile.KNOWN_SPACES["Display P3"]
    tag = profile.icc_profile(p3, "Display P3")
    rng = np.random.default_rng(5)
    pixels = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "p3.png", icc_profile=tag)
    Image.fromarray(pixels).save(tmp_path / "plain.png")
    Image.fromarray(pixels // 4).save(tmp_path / "dark_p3.png", icc_profile=tag)
    Image.fromarray(pixels // 4).save(tmp_path / "dark_plain.png")

    def cli(command, *files, options=()):
        """hdr-jax COMMAND with FILES (names in tmp_path; after -o the output) and OPTIONS."""
        return run_cli([command, *[tmp_path / f if f != "-o" else f for f in files], *options,
                        "--weights", tiny_weights], cli_env)

    def space(path):
        return profile.declared_colour_space(hio.colour_metadata(tmp_path / path))

    def exr_chroma(path):
        with OpenEXR.File(str(tmp_path / path)) as f:
            return f.header().get("chromaticities")

    for name in ("p3", "plain"):
        r = cli("reconstruct", f"{name}.png", "-o", name, options=("--scale", "2", "--stack"))
        assert r.returncode == 0, r.stderr
    r = cli("reconstruct", "p3.png", "-o", "p3_again", options=("--scale", "0"))
    assert r.stderr.count("note:") == 1 and "p3.png is in Display P3 primaries" in r.stderr
    outs = sorted(p.name for p in (tmp_path / "p3").iterdir())
    assert outs == sorted(p.name.replace("plain", "p3") for p in (tmp_path / "plain").iterdir())
    for out in outs:
        if out.endswith(".png"):
            assert space(f"p3/{out}").name == "Display P3", out
            assert space(f"plain/{out.replace('p3', 'plain')}") is None
            np.testing.assert_array_equal(hio.read_ldr(tmp_path / "p3" / out),
                                          hio.read_ldr(tmp_path / "plain" /
                                                       out.replace("p3", "plain")))
    np.testing.assert_allclose(exr_chroma("p3/p3.exr"), p3, atol=1e-6)
    assert exr_chroma("plain/plain.exr") is None
    np.testing.assert_array_equal(hio.read_hdr(tmp_path / "p3/p3.exr"),
                                  hio.read_hdr(tmp_path / "plain/plain.exr"))
    r = cli("reconstruct", "p3.png", "-o", "ignored",
            options=("--scale", "0", "--ignore-profile"))
    assert r.returncode == 0 and "note:" not in r.stderr, r.stderr
    assert exr_chroma("ignored/p3.exr") is None and space("ignored/p3_preview.png") is None
    # a phone's HEIC, Display P3 in its colour box: read, and its outputs tagged the same way
    Image.fromarray(pixels).save(tmp_path / "phone.heic", quality=95, color_primaries=12,
                                 transfer_characteristics=13)
    r = cli("reconstruct", "phone.heic", "-o", "phone", options=("--scale", "2"))
    assert r.returncode == 0 and "phone.heic is in Display P3 primaries" in r.stderr, r.stderr
    assert space("phone/phone_fused.png").name == "Display P3"
    np.testing.assert_allclose(exr_chroma("phone/phone.exr"), p3, atol=1e-6)
    # an AVIF's nclx box, read by hand (Pillow's decoder does not report it)
    Image.fromarray(pixels).save(tmp_path / "web.avif", quality=95)
    (tmp_path / "web.avif").write_bytes(with_nclx((tmp_path / "web.avif").read_bytes(), 12, 13))
    r = cli("reconstruct", "web.avif", "-o", "web", options=("--scale", "0"))
    assert r.returncode == 0 and "web.avif is in Display P3 primaries" in r.stderr, r.stderr
    np.testing.assert_allclose(exr_chroma("web/web.exr"), p3, atol=1e-6)
    (tmp_path / "pq.avif").write_bytes(with_nclx((tmp_path / "web.avif").read_bytes(), 9, 16))
    r = cli("reconstruct", "pq.avif", "-o", "pq", options=("--scale", "0"))
    assert r.returncode == 1 and "an HDR image already" in r.stderr
    assert not (tmp_path / "pq").exists()
    r = cli("brackets", "p3.png", "-o", "brackets")
    assert r.returncode == 0, r.stderr
    assert space("brackets/p3_ev-4.0.png").name == "Display P3"
    np.testing.assert_allclose(exr_chroma("brackets/p3.exr"), p3, atol=1e-6)
    r = cli("fuse", "dark_p3.png", "p3.png", "-o", "fused.png", options=("--scale", "2"))
    assert r.returncode == 0, r.stderr
    assert space("fused.png").name == "Display P3"
    r = cli("fuse", "dark_plain.png", "p3.png", "-o", "mixed.png", options=("--scale", "2"))
    assert r.returncode == 1 and "declare different primaries (sRGB, Display P3)" in r.stderr
    assert r.stderr.count("\n") == 1 and not (tmp_path / "mixed.png").exists()
    r = cli("fuse", "dark_plain.png", "p3.png", "-o", "mixed.png",
            options=("--scale", "2", "--ignore-profile"))
    assert r.returncode == 0 and space("mixed.png") is None, r.stderr
