"""The tone curve a photo's colour profile declares (hdr_jax.camera.profile), checked against
littleCMS (Pillow's ImageCms) on hand-built ICC profiles, and the CLI's use of it."""

from __future__ import annotations

import io
import struct
import subprocess
import sys

import numpy as np
import pytest
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

