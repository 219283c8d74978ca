"""`hdr-jax` on bad input: exit status 1, one line on stderr, no traceback, nothing written.

Expected failures all happen before any network runs, so most cases call `cli.main` in this
process (fast; stderr captured at the file-descriptor level, and an uncaught exception fails the
test just as a traceback would). A representative few, the usage errors and the successful runs
go through a real `python -m hdr_jax.cli` subprocess. The weights are tiny random networks
(conftest.tiny_weights) with the tiny training configs' shapes.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import (
    PHOTO_HW,
    assert_one_line_error,
    cli_in_process,
    files_under,
    make_photo,
    run_cli,
    stderr_lines,
)
from PIL import Image

from hdr_jax import cli, pipeline
from hdr_jax import io as hio
from hdr_jax.camera import crf as crf_lib
from hdr_jax.data.testing import write_dng

# Runs the hdr-jax CLI in subprocesses.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli_inputs")
    photo = make_photo(1)
    paths = {
        "photo": d / "photo.png",
        "grey": d / "ok" / "grey.png",
        "deep": d / "ok" / "deep16.png",
        "small": d / "small.png",
        "huge": d / "huge.png",
        "truncated": d / "truncated.jpg",
        "noise": d / "noise.png",
        "dark": d / "dark.png",
        "narrow": d / "narrow.png",
        "no_images": d / "no_images",
        "empty_dir": d / "empty",
        "response": d / "response.csv",
        "bad_response": d / "bad_response.txt",
        "raw": d / "raw" / "scene.dng",
        "truncated_raw": d / "truncated.nef",
        "huge_raw": d / "huge.dng",
    }
    hio.write_ldr(paths["photo"], photo)
    hio.write_ldr(paths["dark"], photo * 0.25)  # fuse's under-exposure of "photo"
    paths["grey"].parent.mkdir()
    hio.write_ldr(paths["grey"].parent / "photo8.png", photo)
    Image.fromarray(np.round(photo.mean(-1) * 255).astype(np.uint8), mode="L").save(paths["grey"])
    cv2.imwrite(str(paths["deep"]), np.round(photo[..., ::-1] * 65535).astype(np.uint16))
    hio.write_ldr(paths["small"], make_photo(2, (16, 16)))
    # 7000 x 6000 = 42 MP of zeros: about 120 kB as PNG.
    Image.fromarray(np.zeros((6000, 7000), np.uint8), mode="L").save(paths["huge"])
    hio.write_ldr(d / "full.jpg", make_photo(3, (96, 128)), quality=90)
    data = (d / "full.jpg").read_bytes()
    paths["truncated"].write_bytes(data[: len(data) // 2])
    paths["noise"].write_bytes(np.random.default_rng(0).bytes(2000))
    paths["noise"].with_name("noise.cr3").write_bytes(paths["noise"].read_bytes())
    hio.write_ldr(paths["narrow"], make_photo(4, (PHOTO_HW[0] - 8, PHOTO_HW[1])))
    paths["no_images"].mkdir()
    paths["empty_dir"].mkdir()
    (paths["no_images"] / "notes.txt").write_text("not an image\n")
    paths["response"].write_text(",".join(f"{v:.8f}" for v in np.linspace(0, 1, 65) ** (1 / 2.6)))
    paths["bad_response"].write_text("0 0.6 0.5 1\n")
    # A camera raw file of the photo's scene, brighter: its brightest parts saturate.
    paths["raw"].parent.mkdir()
    write_dng(paths["raw"], crf_lib.srgb_decode(photo) * 1.6, black=256, white=16383,
              neutral=(0.5, 1.0, 0.7))
    data = paths["raw"].read_bytes()
    paths["truncated_raw"].write_bytes(data[: len(data) // 2])
    # 16000 x 12000 = 192 MP claimed by the header, 48 MP even at half size: refused before any
    # pixel is decoded.
    write_dng(paths["huge_raw"], np.zeros((2, 2, 3)))
    big = bytearray(paths["huge_raw"].read_bytes())
    (ifd,) = struct.unpack_from("<I", big, 4)  # tifffile writes little-endian
    (count,) = struct.unpack_from("<H", big, ifd)
    for k in range(count):
        tag, kind = struct.unpack_from("<HH", big, ifd + 2 + 12 * k)
        if tag in (256, 257):  # ImageWidth, ImageLength: a SHORT or a LONG in the entry
            struct.pack_into("<H" if kind == 3 else "<I", big, ifd + 10 + 12 * k,
                             16000 if tag == 256 else 12000)
    paths["huge_raw"].write_bytes(bytes(big))
    return paths


@pytest.fixture(scope="module")
def bad_weights(tiny_weights, tmp_path_factory) -> dict[str, Path]:
    """Broken copies of the tiny weights, one defect each."""
    root = tmp_path_factory.mktemp("bad_weights")
    out = {"no_manifest": root / "no_manifest"}
    out["no_manifest"].mkdir()
    (out["no_manifest"] / "drtmo_up.msgpack").write_bytes(
        (tiny_weights / "drtmo_up.msgpack").read_bytes()
    )

    def variant(name: str, edit) -> None:
        d = root / name
        shutil.copytree(tiny_weights, d)
        manifest = json.loads((d / "manifest.json").read_text())
        edit(d, manifest)
        (d / "manifest.json").write_text(json.dumps(manifest))
        out[name] = d

    def flip_byte(d, manifest):
        p = d / "drtmo_up.msgpack"
        data = bytearray(p.read_bytes())
        data[-10] ^= 0xFF
        p.write_bytes(bytes(data))

    def wider_cfnet(d, manifest):
        manifest["cfnet_x2"]["config"]["features"] = 16

    def other_drtmo_width(d, manifest):
        manifest["drtmo_up"]["config"]["width"] = "cpu"

    def unknown_drtmo_width(d, manifest):
        manifest["drtmo_up"]["config"]["width"] = "enormous"

    def missing_file(d, manifest):
        (d / "drtmo_down.msgpack").unlink()

    variant("sha_mismatch", flip_byte)
    variant("cfnet_config_mismatch", wider_cfnet)
    variant("drtmo_config_mismatch", other_drtmo_width)
    variant("drtmo_config_invalid", unknown_drtmo_width)
    variant("missing_file", missing_file)
    return out


_main = cli_in_process


# name -> (argv builder (inputs, weights, bad_weights, out_dir), substring of the message)
BAD_INPUT_CASES = {
    "missing_file": (
        lambda i, w, b, o: [
            "reconstruct",
            i["photo"].with_name("absent.png"),
            "-o",
            o,
            "--weights",
            w,
        ],
        "no such file",
    ),
    "dir_without_images": (
        lambda i, w, b, o: ["reconstruct", i["no_images"], "-o", o, "--weights", w],
        "contains no LDR images",
    ),
    "empty_photo_argument": (  # an unset shell variable: not the working folder
        lambda i, w, b, o: ["reconstruct", "", "-o", o, "--weights", w],
        "empty input path",
    ),
    "glob_without_matches": (
        lambda i, w, b, o: ["reconstruct", i["no_images"] / "*.jpg", "-o", o, "--weights", w],
        "matches no",
    ),
    "truncated_jpeg": (
        lambda i, w, b, o: ["reconstruct", i["truncated"], "-o", o, "--weights", w],
        "truncated.jpg",
    ),
    "random_bytes_png": (
        lambda i, w, b, o: ["reconstruct", i["noise"], "-o", o, "--weights", w],
        "not a readable",
    ),
    "too_small": (
        lambda i, w, b, o: ["reconstruct", i["small"], "-o", o, "--weights", w],
        "at least 32 px",
    ),
    "too_large": (
        lambda i, w, b, o: ["reconstruct", i["huge"], "-o", o, "--weights", w],
        "the limit is 40 MP",
    ),
    "output_is_a_file": (
        lambda i, w, b, o: ["reconstruct", i["photo"], "-o", i["photo"], "--weights", w],
        "photo.png: is not a folder",
    ),
    "output_under_a_file": (
        lambda i, w, b, o: ["reconstruct", i["photo"], "-o", i["photo"] / "sub", "--weights", w],
        "cannot create the output folder",
    ),
    "weights_without_manifest": (
        lambda i, w, b, o: ["reconstruct", i["photo"], "-o", o, "--weights", b["no_manifest"]],
        "no manifest.json",
    ),
    "weights_dir_absent": (
        lambda i, w, b, o: ["reconstruct", i["photo"], "-o", o, "--weights", o / "nowhere"],
        "no such directory",
    ),
    "weights_sha_mismatch": (
        lambda i, w, b, o: ["reconstruct", i["photo"], "-o", o, "--weights", b["sha_mismatch"]],
        "SHA-256",
    ),
    "weights_file_missing": (
        lambda i, w, b, o: ["reconstruct", i["photo"], "-o", o, "--weights", b["missing_file"]],
        "weights file missing",
    ),
    "drtmo_config_mismatch": (
        lambda i, w, b, o: [
            "reconstruct",
            i["photo"],
            "-o",
            o,
            "--weights",
            b["drtmo_config_mismatch"],
        ],
        "do not match the model config",
    ),
    "drtmo_config_invalid": (
        lambda i, w, b, o: [
            "brackets",
            i["photo"],
            "-o",
            o,
            "--weights",
            b["drtmo_config_invalid"],
        ],
        "invalid model config",
    ),
    "cfnet_config_mismatch": (
        lambda i, w, b, o: [
            "fuse",
            i["dark"],
            i["photo"],
            "-o",
            o / "f.png",
            "--weights",
            b["cfnet_config_mismatch"],
        ],
        "do not match the model config",
    ),
    "fuse_no_x4_network": (
        lambda i, w, b, o: [
            "fuse",
            i["dark"],
            i["photo"],
            "-o",
            o / "f.png",
            "--scale",
            "4",
            "--weights",
            w,
        ],
        "no network 'cfnet_x4'",
    ),
    "fuse_sizes_differ": (
        lambda i, w, b, o: ["fuse", i["photo"], i["narrow"], "-o", o / "f.png", "--weights", w],
        "differ in size",
    ),
    "fuse_input_is_a_dir": (
        lambda i, w, b, o: ["fuse", i["no_images"], i["photo"], "-o", o / "f.png", "--weights", w],
        "is a directory",
    ),
    "raw_truncated": (
        lambda i, w, b, o: ["reconstruct", i["truncated_raw"], "-o", o, "--weights", w],
        "cannot decode its raw data",
    ),
    "raw_too_big": (
        lambda i, w, b, o: ["reconstruct", i["huge_raw"], "-o", o, "--weights", w],
        "16000x12000 (192 MP); the limit is 40 MP (at half size 8000x6000, as a raw file is "
        "read above it)",
    ),
    "calibrate_raw_and_jpegs": (
        lambda i, w, b, o: ["calibrate", i["raw"], i["photo"], i["dark"], "-o", o / "c.txt"],
        "1 camera raw files and 2 other photos given; calibrate one kind",
    ),
    "calibrate_raw_and_another_shot": (
        lambda i, w, b, o: ["calibrate", i["raw"], i["narrow"], "-o", o / "c.txt"],
        "calibrate: scene.dng and narrow.png: ",
    ),
    "raw_not_raw": (
        lambda i, w, b, o: ["brackets", i["noise"].with_name("noise.cr3"), "-o", o, "--weights",
                            w],
        "not a camera raw file",
    ),
    "brackets_bad_image": (
        lambda i, w, b, o: ["brackets", i["noise"], "-o", o, "--weights", w],
        "not a readable",
    ),
    "evaluate_missing_data": (
        lambda i, w, b, o: [
            "evaluate",
            "sice",
            "--data-dir",
            o / "nowhere",
            "--out",
            o,
            "--weights",
            w,
        ],
        "SICE folder not found",
    ),
    "evaluate_no_sice_sequences": (
        lambda i, w, b, o: [
            "evaluate",
            "sice",
            "--data-dir",
            i["no_images"],
            "--out",
            o,
            "--weights",
            w,
            "--tfds-dir",
            i["no_images"].parent / "tfds_cache",
        ],
        "no usable SICE",
    ),
    "evaluate_empty_data_dir": (
        lambda i, w, b, o: [
            "evaluate",
            "sice",
            "--data-dir",
            i["empty_dir"],
            "--out",
            o,
            "--weights",
            w,
            "--tfds-dir",
            i["no_images"].parent / "tfds_cache",
        ],
        "no usable SICE",
    ),
    "response_unknown": (
        lambda i, w, b, o: ["reconstruct", i["photo"], "-o", o, "--weights", w,
                            "--response", "log-c"],
        "--response: 'log-c' is neither srgb nor gamma:G nor a file",
    ),
    "response_not_monotone": (
        lambda i, w, b, o: ["brackets", i["photo"], "-o", o, "--weights", w,
                            "--response", i["bad_response"]],
        "non-decreasing",
    ),
    "evaluate_unknown_dataset": (
        lambda i, w, b, o: ["evaluate", "kodak", "--data-dir", i["no_images"], "--out", o],
        "unknown dataset",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT_CASES))
def test_bad_input_is_one_line_and_writes_nothing(
    case, inputs, tiny_weights, bad_weights, tmp_path, capfd
):
    build, message = BAD_INPUT_CASES[case]
    out = tmp_path / "out"
    rc, err = _main(build(inputs, tiny_weights, bad_weights, out), capfd)
    assert_one_line_error(rc, err, contains=message)
    assert files_under(out) == []
    assert files_under(tmp_path) == []


def test_existing_output_is_kept_without_overwrite(inputs, tiny_weights, tmp_path, capfd):
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "photo_preview.png"
    existing.write_bytes(b"precious")
    rc, err = _main(["reconstruct", inputs["photo"], "-o", out, "--weights", tiny_weights], capfd)
    assert_one_line_error(rc, err, contains="--overwrite")
    assert files_under(out) == [existing] and existing.read_bytes() == b"precious"
    (tmp_path / "f.png").write_bytes(b"precious")
    args = [
        "fuse",
        inputs["dark"],
        inputs["photo"],
        "-o",
        tmp_path / "f.png",
        "--weights",
        tiny_weights,
    ]
    rc, err = _main(args, capfd)
    assert_one_line_error(rc, err, contains="--overwrite")
    assert (tmp_path / "f.png").read_bytes() == b"precious"


def test_overwrite_names_outputs_of_an_earlier_run_it_does_not_rewrite(
    inputs, tiny_weights, tmp_path, capfd
):
    # --overwrite replaces what this run writes; a fused image and a stack an earlier run wrote
    # under other options stay as they were, and each kind is named once.
    out = tmp_path / "out"
    out.mkdir()
    for name in ("photo_fused.png", "photo_ev-0.5.png", "photo_ev+0.5.png", "other_fused.png"):
        (out / name).write_bytes(b"earlier")
    args = ["reconstruct", inputs["photo"], "-o", out, "--weights", tiny_weights, "--scale", "0"]
    rc, err = _main([*args, "--overwrite"], capfd)
    assert rc == 0, err
    lines = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 2, err
    assert f"{out / 'photo_fused.png'} is from an earlier run" in lines[0]
    assert "--scale 0" in lines[0]
    assert "and 1 more are from an earlier run" in lines[1] and "--stack" in lines[1]
    assert all((out / n).read_bytes() == b"earlier" for n in
               ("photo_fused.png", "photo_ev-0.5.png", "photo_ev+0.5.png", "other_fused.png"))
    assert (out / "photo.exr").exists()
    # Without leftovers, or writing them, nothing to say.
    rc, err = _main([*args[:-2], "--scale", "2", "--stack", "--overwrite"], capfd)
    assert rc == 0 and "warning:" not in err, err


def test_an_output_folder_that_links_nowhere_is_named(inputs, tiny_weights, tmp_path, capfd):
    (tmp_path / "dang").symlink_to(tmp_path / "nowhere")
    for out in (tmp_path / "dang", tmp_path / "dang" / "sub"):
        rc, err = _main(["reconstruct", inputs["photo"], "-o", out, "--weights", tiny_weights],
                        capfd)
        assert_one_line_error(rc, err, contains=f"dang: is a link to {tmp_path / 'nowhere'}, "
                                                "which does not exist")
    assert not (tmp_path / "nowhere").exists() and (tmp_path / "dang").is_symlink()


def test_batch_reports_each_failure_and_a_summary(inputs, tiny_weights, tmp_path, capfd):
    # Several photos: a failing one is reported (one line each) and the rest would go on; the
    # last line is the summary and the status is 1. Both photos here fail before any compute.
    args = [
        "reconstruct",
        inputs["small"],
        inputs["noise"],
        "-o",
        tmp_path,
        "--weights",
        tiny_weights,
        "--quiet",
    ]
    rc, err = _main(args, capfd)
    lines = stderr_lines(err)
    assert rc == 1 and "Traceback" not in err
    assert [ln.split(":")[0] for ln in lines] == ["error", "error", "hdr-jax"]
    assert lines[-1] == "hdr-jax: error: 2 of 2 photos failed"
    assert files_under(tmp_path) == []


# -- real subprocesses ---------------------------------------------------------------------------


def test_subprocess_errors(inputs, tiny_weights, bad_weights, cli_env, tmp_path):
    out = tmp_path / "out"
    for args, message in [
        (["reconstruct", inputs["photo"].with_name("absent.png"), "-o", out], "no such file"),
        (["reconstruct", inputs["noise"], "-o", out, "--weights", tiny_weights], "not a readable"),
        (
            [
                "fuse",
                inputs["dark"],
                inputs["photo"],
                "-o",
                out / "f.png",
                "--weights",
                bad_weights["sha_mismatch"],
            ],
            "SHA-256",
        ),
    ]:
        res = run_cli(args, cli_env)
        assert_one_line_error(res.returncode, res.stderr, contains=message)
        assert res.stdout == ""
    assert files_under(tmp_path) == []


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["reconstruct"],
        ["reconstruct", "x.png"],
        ["fuse", "a.png", "-o", "f.png"],
        ["reconstruct", "x.png", "-o", "o", "--scale", "3"],
        ["reconstruct", "x.png", "-o", "o", "--hdr-side", "8"],
        ["reconstruct", "x.png", "-o", "o", "--hdr-side", "half"],
    ],
)
def test_usage_errors_exit_2(args, cli_env, capfd):
    rc, err = _main(args, capfd)
    assert rc == 2 and "usage: hdr-jax" in err and "Traceback" not in err


def test_hdr_side_below_the_least_names_the_least(capfd):
    for side in ("-1", "0", "31"):
        rc, err = _main(["reconstruct", "x.png", "-o", "o", "--hdr-side", side], capfd)
        assert rc == 2 and "must be at least 32 (pixels)" in err, err


def test_usage_error_subprocess(cli_env):
    res = run_cli([], cli_env)
    assert res.returncode == 2 and "usage: hdr-jax" in res.stderr
    assert "Traceback" not in res.stderr


def test_reconstruct_grey_and_16bit_then_overwrite(inputs, tiny_weights, cli_env, tmp_path):
    out = tmp_path / "out"
    res = run_cli(
        ["reconstruct", inputs["grey"].parent, "-o", out, "--weights", tiny_weights], cli_env
    )
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    # The only stderr line besides progress is the note on the 16-bit input.
    notes = [ln for ln in stderr_lines(res.stderr) if ln.startswith("note:")]
    assert notes == ["note: deep16.png is 16-bit; it is treated as display-referred (sRGB)"]
    h, w = PHOTO_HW
    hdr = {}
    for stem in ("grey", "deep16", "photo8"):
        hdr[stem] = hio.read_hdr(out / f"{stem}.exr")
        assert hdr[stem].shape == (h, w, 3) and np.all(np.isfinite(hdr[stem]))
        assert hio.read_ldr(out / f"{stem}_preview.png").shape == (h, w, 3)
        assert hio.read_ldr(out / f"{stem}_fused.png").shape == (2 * h, 2 * w, 3)
    assert len(files_under(out)) == 9
    # The 16-bit copy of photo8.png gives nearly the same HDR (a 16-bit file read as 8-bit
    # values, or scaled by 1/255, would not).
    rel = np.abs(hdr["deep16"] - hdr["photo8"]) / (hdr["photo8"] + 1e-3)
    assert np.median(rel) < 0.02, np.median(rel)

    # Rerun: refused without --overwrite (one line, nothing touched), done with it.
    before = {p: p.read_bytes() for p in files_under(out)}
    res = run_cli(["reconstruct", inputs["grey"], "-o", out, "--weights", tiny_weights], cli_env)
    assert_one_line_error(res.returncode, res.stderr, contains="exists")
    assert {p: p.read_bytes() for p in files_under(out)} == before
    (out / "grey.exr").unlink()
    res = run_cli(
        [
            "reconstruct",
            inputs["grey"],
            "-o",
            out,
            "--weights",
            tiny_weights,
            "--overwrite",
            "--scale",
            "0",
        ],
        cli_env,
    )
    assert res.returncode == 0, res.stderr
    np.testing.assert_allclose(hio.read_hdr(out / "grey.exr"), hdr["grey"], rtol=1e-6)
    assert "grey.exr" in res.stdout and "_fused" not in res.stdout


def test_a_black_and_white_photo_stays_black_and_white(inputs, tiny_weights, monkeypatch):
    """Every output of a photo whose three channels are equal has equal channels too (the
    networks alone tint it: they are not symmetric in the channels)."""
    pipe = pipeline.Pipeline.load(tiny_weights)
    photo = hio.read_ldr(inputs["grey"])
    assert pipeline.achromatic(photo) and not pipeline.achromatic(hio.read_ldr(inputs["photo"]))
    res = pipeline.reconstruct(pipe, photo, scale=2)
    for out in (res.stack, res.hdr, res.fused, res.preview):
        assert pipeline.achromatic(out)
    np.testing.assert_array_equal(res.stack[len(res.stack) // 2], photo)
    under, over = res.stack[res.pair[0]], res.stack[res.pair[1]]
    assert pipeline.achromatic(pipeline.fuse_pair(pipe.cfnet(2), under, over))
    monkeypatch.setattr(pipeline, "grey", lambda x: x)
    tinted = pipeline.reconstruct(pipe, photo, scale=2)
    assert not pipeline.achromatic(tinted.stack) and not pipeline.achromatic(tinted.fused)


def test_reconstruct_with_a_known_response(inputs, tiny_weights, tmp_path, capfd):
    def run(out, *extra):
        args = ["reconstruct", inputs["photo"], "-o", out, "--weights", tiny_weights, "--scale"]
        return _main([*args, "0", *extra], capfd)

    out = tmp_path / "out"
    rc, err = run(out, "--response", inputs["response"])
    assert rc == 0, err
    photo = hio.read_ldr(inputs["photo"])
    curve = crf_lib.parse_response(str(inputs["response"]))
    ok = photo.max(-1) < 250 / 255  # the anchored merge keeps unclipped input pixels
    hdr = hio.read_hdr(out / "photo.exr")
    np.testing.assert_allclose(hdr[ok], crf_lib.apply_inverse_crf(curve, photo)[ok], rtol=1e-3)
    # Without it the merge linearises as sRGB: another HDR.
    rc, err = run(tmp_path / "srgb")
    assert rc == 0, err
    srgb = hio.read_hdr(tmp_path / "srgb" / "photo.exr")
    np.testing.assert_allclose(srgb[ok], crf_lib.apply_inverse_crf(crf_lib.srgb_crf(), photo)[ok],
                               rtol=1e-3)


def test_reconstruct_with_a_folder_of_curves_by_camera(inputs, tiny_weights, tmp_path, capfd):
    """--response FOLDER: each photo is read with the curve filed there for the camera its EXIF
    names; a photo of another camera, or of none, is estimated as without --response."""
    pixels = np.asarray(Image.open(inputs["photo"]).convert("RGB"))
    (tmp_path / "in").mkdir()
    for stem, make, model in (("canon", "Canon", "Canon EOS R5"), ("sony", "SONY", "ILCE-7M4"),
                              ("plain", None, None)):
        exif = Image.Exif()
        if make:
            exif[0x010F], exif[0x0110] = make, model
        Image.fromarray(pixels).save(tmp_path / "in" / f"{stem}.jpg", quality=95, exif=exif)
    curves = tmp_path / "curves"
    curves.mkdir()
    curve = crf_lib.gamma_crf(2.6)
    (curves / cli.camera_file_name("Canon EOS R5")).write_text(
        "".join(f"{v:.6f}\n" for v in curve))
    out = tmp_path / "out"
    rc, err = _main(["reconstruct", tmp_path / "in", "-o", out, "--weights", tiny_weights,
                     "--scale", "0", "--response", curves], capfd)
    assert rc == 0, err
    assert f"note: canon.jpg is read with the response of its camera, Canon EOS R5 ({curves}" in err
    assert f"note: sony.jpg: {curves} holds no curve for its camera, SONY ILCE-7M4" in err
    assert "note: plain.jpg names no camera in its EXIF" in err
    for stem, linearise in (("canon", curve), ("sony", crf_lib.srgb_crf())):
        photo = hio.read_ldr(tmp_path / "in" / f"{stem}.jpg")
        ok = photo.max(-1) < 250 / 255  # the anchored merge keeps unclipped input pixels
        np.testing.assert_allclose(hio.read_hdr(out / f"{stem}.exr")[ok],
                                   crf_lib.apply_inverse_crf(linearise, photo)[ok], rtol=1e-3)
    # The plain photo's HDR is the one made without --response.
    rc, err = _main(["reconstruct", tmp_path / "in" / "plain.jpg", "-o", tmp_path / "blind",
                     "--weights", tiny_weights, "--scale", "0"], capfd)
    assert rc == 0, err
    np.testing.assert_array_equal(hio.read_hdr(out / "plain.exr"),
                                  hio.read_hdr(tmp_path / "blind" / "plain.exr"))
    # A camera's curve that does not read: one line, that photo fails, nothing written for it.
    (curves / cli.camera_file_name("Canon EOS R5")).write_text("0.5\n0.2\n")
    rc, err = _main(["reconstruct", tmp_path / "in" / "canon.jpg", "-o", tmp_path / "bad",
                     "--weights", tiny_weights, "--scale", "0", "--response", curves], capfd)
    assert rc == 1 and "--response: " in err and "Canon EOS R5.txt" in err, err
    assert not list((tmp_path / "bad").glob("canon*"))


def test_reconstruct_a_camera_raw_file(inputs, tiny_weights, tmp_path, capfd):
    """A raw file is read as exact sRGB codes of its linear data (a 16-bit PNG of the same
    codes makes the same HDR) with the sRGB response known: --response does not apply."""
    raw = inputs["raw"]
    codes = hio.read_ldr(raw)
    png = tmp_path / "in" / "png16.png"
    png.parent.mkdir()
    hio.write_ldr(png, codes, bit_depth=16)
    out = tmp_path / "out"
    rc, err = _main(["reconstruct", raw, png, "-o", out, "--weights", tiny_weights, "--scale",
                     "0", "--response", "gamma:2.6"], capfd)
    assert rc == 0, err
    assert "note: scene.dng is camera raw data" in err
    assert "--response does not apply to scene.dng" in err
    assert "does not apply to png16" not in err
    assert sorted(p.name for p in out.iterdir()) == [
        "png16.exr", "png16_preview.png", "scene.exr", "scene_preview.png"]
    hdr = hio.read_hdr(out / "scene.exr")
    ok = codes.max(-1) < 250 / 255  # the anchored merge keeps unclipped input pixels
    np.testing.assert_allclose(hdr[ok], crf_lib.srgb_decode(codes)[ok], rtol=1e-3, atol=1e-6)
    rc, err = _main(["reconstruct", png, "-o", tmp_path / "srgb", "--weights", tiny_weights,
                     "--scale", "0", "--response", "srgb"], capfd)
    assert rc == 0, err
    np.testing.assert_allclose(hio.read_hdr(tmp_path / "srgb" / "png16.exr"), hdr, rtol=2e-3,
                               atol=1e-5)
    assert cli._photo_response(raw, None) is not None
    np.testing.assert_array_equal(cli._photo_response(raw, None), crf_lib.srgb_crf())
    assert cli._photo_response(png, None) is None


def test_a_raw_file_above_the_pixel_limit_is_read_at_half_size(inputs, tiny_weights, tmp_path,
                                                               capfd, monkeypatch):
    """A raw file of more pixels than the limit (a 45-61 MP camera against 40 MP) is decoded at
    half size, with a note; one still above the limit at half size is refused."""
    raw = inputs["raw"]
    info = hio.ldr_info(raw)
    h, w = -(-info.height // 2), -(-info.width // 2)
    monkeypatch.setattr(cli, "MAX_PIXELS", h * w)  # the full size is above it, half is not
    out = tmp_path / "out"
    rc, err = _main(["reconstruct", raw, "-o", out, "--weights", tiny_weights, "--scale", "0"],
                    capfd)
    assert rc == 0, err
    assert f"its raw data is decoded at half size, {w}x{h}" in err
    assert "decoded at half size by LibRaw" in err
    hdr = hio.read_hdr(out / "scene.exr")
    assert hdr.shape == (h, w, 3)
    monkeypatch.setattr(cli, "MAX_PIXELS", h * w - 1)
    rc, err = _main(["reconstruct", raw, "-o", tmp_path / "out2", "--weights", tiny_weights,
                     "--scale", "0"], capfd)
    assert rc == 1 and f"(at half size {w}x{h}, as a raw file is read above it)" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out2").exists()


def test_a_raw_file_is_used_instead_of_the_jpeg_of_the_same_shot(inputs, tiny_weights, tmp_path,
                                                                  capfd):
    card = tmp_path / "card"
    card.mkdir()
    shutil.copy(inputs["raw"], card / "IMG_1.DNG")
    hio.write_ldr(card / "IMG_1.JPG", hio.read_ldr(inputs["raw"]))  # the camera's JPEG of it
    shutil.copy(inputs["photo"], card / "IMG_2.png")
    out = tmp_path / "out"
    rc, err = _main(["reconstruct", card, "-o", out, "--weights", tiny_weights, "--scale", "0"],
                    capfd)
    assert rc == 0, err
    assert "note: IMG_1.JPG is skipped: the camera raw file of the same shot, IMG_1.DNG" in err
    assert err.count("hdr-jax calibrate IMG_1.DNG IMG_1.JPG -o CURVE.txt") == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "IMG_1.exr", "IMG_1_preview.png", "IMG_2.exr", "IMG_2_preview.png"]
    assert "IMG_2" not in err  # a photo without a raw twin is untouched


def test_reconstruct_at_a_working_scale(inputs, tiny_weights, tmp_path, capfd):
    photo = hio.read_ldr(inputs["photo"])
    side = 32  # the least the flag takes; the photo is larger, so it is shrunk
    assert min(photo.shape[:2]) > side
    out = tmp_path / "out"
    rc, err = _main(["reconstruct", inputs["photo"], "-o", out, "--weights", tiny_weights,
                     "--scale", "0", "--hdr-side", str(side)], capfd)
    assert rc == 0, err
    pipe = pipeline.Pipeline.load(tiny_weights)
    want = pipeline.reconstruct(pipe, photo, scale=None, hdr_side=side).hdr
    np.testing.assert_allclose(hio.read_hdr(out / "photo.exr"), want, rtol=1e-3)
    assert sorted(p.name for p in out.iterdir()) == ["photo.exr", "photo_preview.png"]
    # --stack still writes the full-resolution exposures.
    rc, err = _main(["reconstruct", inputs["photo"], "-o", tmp_path / "stack", "--weights",
                     tiny_weights, "--scale", "0", "--hdr-side", str(side), "--stack"], capfd)
    assert rc == 0, err
    evs = sorted((tmp_path / "stack").glob("photo_ev*"))
    assert len(evs) == 17 and hio.read_ldr(evs[0]).shape == photo.shape


def test_merge_choices_are_the_merge_modules_methods():
    from hdr_jax import merge

    assert cli.MERGE_CHOICES == merge.MERGE_METHODS
    assert cli.build_parser().parse_args(["reconstruct", "x.jpg", "-o", "o"]).merge == "anchored"


def test_up_choices_are_the_pipelines_methods():
    from hdr_jax import pipeline

    assert cli.UP_CHOICES == pipeline.UP_METHODS
    for command in (["reconstruct", "x.jpg"], ["brackets", "x.jpg"]):
        assert cli.build_parser().parse_args([*command, "-o", "o"]).up is None  # auto
        assert (
            cli.build_parser().parse_args([*command, "-o", "o", "--up", "network"]).up == "network"
        )


def test_evaluate_sice_writes_the_stage2_table(tiny_weights, tmp_path, capfd):
    """`evaluate sice` on a miniature SICE tree: the CF-Net row and the baseline rows of
    hdr_jax.eval.stage2 on the held-out test split; a second run keeps the results."""
    from hdr_jax.data import testing
    from hdr_jax.eval import baselines

    testing.write_fake_sice(tmp_path / "sice")
    out = tmp_path / "out"
    args = ["evaluate", "sice", "--data-dir", tmp_path / "sice", "--out", out]
    args += ["--weights", tiny_weights, "--tfds-dir", tmp_path / "tfds"]
    capfd.readouterr()
    rc = cli.main([str(a) for a in args])
    printed = capfd.readouterr()
    assert rc == 0, printed.err
    # stdout is the table (no tfds "Downloading and preparing" lines); the sequences the fake
    # tree makes unusable are one 'note:' line each on stderr.
    assert printed.out.startswith("### SICE held-out test split, x2"), printed.out[:200]
    notes = printed.err.splitlines()
    assert len(notes) == 3 and all(n.startswith("note: SICE part1/") for n in notes), notes
    res = json.loads((out / "results.json").read_text())
    assert list(res) == ["CF-Net (ours)", *baselines.baseline_methods()]
    for row in res.values():
        assert row["n"] >= 1 and np.isfinite(row["psnr"]) and 0 < row["ssim"] <= 1
    md = (out / "results.md").read_text()
    assert md.startswith("### SICE held-out test split, x2") and "| CF-Net (ours) |" in md
    before = (out / "results.json").read_bytes()
    rc, err = _main(args, capfd)
    assert_one_line_error(rc, err, contains="exists")
    assert (out / "results.json").read_bytes() == before
    # A dataset prepared from one folder is not read for another: in a --tfds-dir the user
    # named it is refused (not deleted), and the results stay.
    (tmp_path / "other").mkdir()
    other = [str(a) for a in args]
    other[3] = str(tmp_path / "other")
    rc, err = _main(other + ["--overwrite"], capfd)
    assert_one_line_error(rc, err, contains="holds a SICE dataset prepared from")
    assert "remove it or name another --tfds-dir" in err
    assert (out / "results.json").read_bytes() == before
    assert (tmp_path / "tfds" / "sice" / "x2" / "source.json").is_file()
    # One with no record of its folder (prepared by the training scripts) is read, with a note.
    (tmp_path / "tfds" / "sice" / "x2" / "source.json").unlink()
    rc, err = _main(other + ["--overwrite"], capfd)
    assert rc == 0 and "no record of the folder this dataset was prepared from" in err, err
    assert not (tmp_path / "tfds" / "sice" / "x2" / "source.json").exists()  # not claimed
    # The default dataset inside OUT: prepared again from the folder given under --overwrite
    # (an empty one: the run fails as for any empty folder, rather than scoring the old data).
    out3 = tmp_path / "out3"
    base = [str(a) for a in ("evaluate", "sice", "--data-dir", tmp_path / "sice", "--out",
                             out3, "--weights", tiny_weights)]
    rc, err = _main(base, capfd)
    assert rc == 0, err
    before = (out3 / "results.json").read_bytes()
    stale = base[:3] + [str(tmp_path / "other")] + base[4:]
    rc, err = _main(stale + ["--overwrite"], capfd)
    assert_one_line_error(rc, err, contains="no usable SICE data")
    assert (out3 / "results.json").read_bytes() == before
    rc, err = _main(base + ["--overwrite"], capfd)  # prepared again from the SICE folder
    assert rc == 0, err
    assert (out3 / "results.json").read_bytes() == before
    for name in ("results.json", "results.md"):
        (out3 / name).unlink()
    rc, err = _main(base[:3] + [str(tmp_path / "other")] + base[4:], capfd)
    assert_one_line_error(rc, err, contains="pass --overwrite to prepare it again")


def test_evaluate_failures_leave_nothing(tmp_path, capfd):
    """A failed `evaluate` leaves no output folder or prepared-dataset tree behind; bad flags
    are usage errors; an output path that is a file is one line."""
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    rc, err = _main(["evaluate", "sice", "--data-dir", tmp_path / "empty", "--out", out], capfd)
    assert_one_line_error(rc, err, contains="no usable SICE data")
    assert "extract Dataset_Part1 and Dataset_Part2 into it" in err  # not tfds's cut sentence
    assert not out.exists()  # tfds had started a tree under out/tfds
    rc, err = _main(["evaluate", "sice", "--data-dir", tmp_path / "empty", "--out", out,
                     "--limit", "-1"], capfd)
    assert rc == 2 and "must be 0 or more" in err and "Traceback" not in err
    (tmp_path / "afile").write_text("keep")
    rc, err = _main(["evaluate", "sice", "--data-dir", tmp_path / "empty", "--out",
                     tmp_path / "afile"], capfd)
    assert_one_line_error(rc, err, contains="is not a folder")
    assert (tmp_path / "afile").read_text() == "keep"
    # An existing output folder is the user's: a failed run leaves it (and what is in it).
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    rc, err = _main(["evaluate", "sice", "--data-dir", tmp_path / "empty", "--out", out], capfd)
    assert_one_line_error(rc, err, contains="no usable SICE data")
    assert "extract Dataset_Part1 and Dataset_Part2 into it" in err  # not tfds's cut sentence
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    # A result name that is a folder: refused before anything is prepared, even to overwrite.
    (out / "results.md").mkdir()
    rc, err = _main(["evaluate", "sice", "--data-dir", tmp_path / "empty", "--out", out,
                     "--overwrite"], capfd)
    assert_one_line_error(rc, err, contains="results.md: is a directory")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "results.md"]
    # A --tfds-dir the run made is removed again when it fails.
    rc, err = _main(["evaluate", "sice", "--data-dir", tmp_path / "empty", "--out",
                     tmp_path / "out2", "--tfds-dir", tmp_path / "new_tfds"], capfd)
    assert_one_line_error(rc, err, contains="no usable SICE data")
    assert not (tmp_path / "new_tfds").exists() and not (tmp_path / "out2").exists()


def test_notes_for_a_multi_image_file_and_a_flat_fuse_input(inputs, tiny_weights, tmp_path,
                                                             capfd):
    photo = (hio.read_ldr(inputs["photo"]) * 255).round().astype(np.uint8)
    pages = tmp_path / "pages.tif"
    Image.fromarray(photo).save(pages, save_all=True,
                                append_images=[Image.fromarray(photo[::2, ::2].copy())])
    rc, err = cli_in_process(["reconstruct", pages, "-o", tmp_path / "o", "--weights",
                              tiny_weights, "--scale", "0"], capfd)
    assert rc == 0, err
    assert "note: pages.tif holds 2 images (pages or frames); the first is used" in err
    np.testing.assert_allclose(hio.read_hdr(tmp_path / "o" / "pages.exr").shape[:2],
                               photo.shape[:2])
    # A camera JPEG with an MPF preview (MPO) is one photo: no note.
    mpo = tmp_path / "camera.jpg"
    Image.fromarray(photo).save(mpo, format="MPO", save_all=True,
                                append_images=[Image.fromarray(photo[::2, ::2].copy())])
    assert hio.ldr_info(mpo).frames == 2 and hio.is_lossy(mpo)
    rc, err = cli_in_process(["reconstruct", mpo, "-o", tmp_path / "m", "--weights",
                              tiny_weights, "--scale", "0"], capfd)
    assert rc == 0 and "note:" not in err, err
    # fuse with an all-black under-exposure: warned, as reconstruct warns.
    black = tmp_path / "black.png"
    hio.write_ldr(black, np.zeros(photo.shape, np.float32))
    rc, err = cli_in_process(["fuse", black, inputs["photo"], "-o", tmp_path / "f.png",
                              "--weights", tiny_weights], capfd)
    assert rc == 0, err
    assert "warning: black.png is all black; it records no scene detail" in err
