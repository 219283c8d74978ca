"""Reliability battery: the real `hdr-jax` in subprocesses over generated bad (and good) files.

The contract under test (README, "Errors and exit codes"): every expected failure is exactly one
line on stderr and a documented status (1 input/output failed, 2 usage, 130/143 interrupted); no
traceback, no half-written or hidden temporary file, no output of a photo without the others,
nothing existing overwritten without --overwrite and an input never; a corrupt image is an
error, never a silently black or partial one.

Cost: a case that fails before any network runs is one short subprocess; the cases that need the
networks are grouped into a few runs over tiny photos with the tiny random weights
(conftest.tiny_weights), --scale 0 where stage 2 is not the point, and the shared compilation
cache. Property-based and fuzz tests of the readers run in this process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import msgpack
import numpy as np
import OpenEXR
import pytest
from conftest import PHOTO_HW, REPO_ROOT, make_photo, stderr_lines
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_training import _arrays, _drtmo_args, _restore

from hdr_jax import cli, interrupts, memory, pipeline
from hdr_jax import io as hio
from hdr_jax.data import hdr_brackets as hb
from hdr_jax.data import synthetic_pairs as sp
from hdr_jax.data import testing
from hdr_jax.data.testing import write_dng

H, W = PHOTO_HW
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_permissions = pytest.mark.skipif(IS_ROOT, reason="root ignores file permissions")


def cli_run(args, env, *, cwd: Path | None = None, timeout: float = 300):
    """`hdr-jax ARGS` in a fresh interpreter, like conftest.run_cli but with a chosen cwd."""
    return subprocess.run(
        [sys.executable, "-m", "hdr_jax.cli", *map(os.fsdecode, args)],
        env=env,
        cwd=cwd or REPO_ROOT,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
    )


def all_files(root: Path) -> list[Path]:
    """Every non-directory entry under root, hidden files and symlinks included."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        out += [Path(dirpath) / f for f in filenames]
        out += [Path(dirpath) / d for d in dirnames if (Path(dirpath) / d).is_symlink()]
    return sorted(out)


def temporaries(root: Path) -> list[Path]:
    return [p for p in all_files(root) if ".tmp" in p.name]


def assert_one_line(res, status: int = 1, contains: str = "") -> str:
    lines = stderr_lines(res.stderr)
    assert res.returncode == status, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert len(lines) == 1, res.stderr[-3000:]
    assert lines[0].startswith("hdr-jax: "), lines
    assert "\x1b" not in res.stderr, lines
    assert contains.lower() in lines[0].lower(), (contains, lines[0])
    return lines[0]


def png_bytes(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.round(image[..., ::-1] * 255).astype(np.uint8))
    assert ok
    return buf.tobytes()


def corrupt_idat(data: bytes, offset: int = 20) -> bytes:
    b = bytearray(data)
    b[b.find(b"IDAT") + offset] ^= 0xFF
    return bytes(b)


# -- generated inputs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_weights) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("reliability")
    f: dict[str, Path] = {}
    photo = make_photo(7)

    def put(name: str, data: bytes) -> Path:
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return p

    f["good"] = put("good.png", png_bytes(photo))
    f["dark"] = put("dark.png", png_bytes(photo * 0.25))  # fuse's under-exposure of "good"
    f["good_copy"] = put("copy of good.png", png_bytes(photo))
    f["dark_other"] = put("dark other.png", png_bytes(make_photo(3) * 0.25))  # another scene
    f["corrupt_png"] = put("corrupt.png", corrupt_idat(png_bytes(photo)))
    f["zero_bytes"] = put("zero.png", b"")
    f["noise_jpg"] = put("noise.jpg", np.random.default_rng(1).bytes(3000))
    f["small"] = put("small.png", png_bytes(make_photo(8, (16, 16))))
    deep = np.round(photo[..., ::-1] * 65535).astype(np.uint16)
    for ext in (".png", ".tif"):
        ok, buf = cv2.imencode(ext, deep)
        assert ok
        f[f"trunc16{ext}"] = put(f"trunc16{ext}", buf.tobytes()[: len(buf) // 2])
    # A header claiming 60000 x 60000 pixels, 40 bytes of data: rejected from the header.
    bomb = bytearray(png_bytes(make_photo(9, (32, 32))))
    bomb[16:24] = (60000).to_bytes(4, "big") * 2
    bomb[29:33] = zlib.crc32(bytes(bomb[12:29])).to_bytes(4, "big")  # a valid IHDR
    f["bomb"] = put("bomb.png", bytes(bomb))
    (d / "adir.png").mkdir()
    f["dir_named_png"] = d / "adir.png"
    fifo = d / "fifo.png"
    os.mkfifo(fifo)
    f["fifo"] = fifo
    (d / "zero_link.png").symlink_to("/dev/zero")
    f["dev_zero"] = d / "zero_link.png"
    f["long_name"] = put("x" * 247 + ".png", png_bytes(photo))  # 251 characters
    f["ansi"] = put("\x1b[31mred\x1b[0m.png", png_bytes(make_photo(8, (16, 16))))
    # 16-bit grey TIFF, EXIF orientation 6 (rotate 90 degrees clockwise to display).
    grey16 = np.round(photo.mean(-1) * 65535).astype(np.uint16)
    exif = Image.Exif()
    exif[0x0112] = 6
    f["grey16_rot"] = d / "grey16_rot.tif"
    Image.fromarray(grey16).save(f["grey16_rot"], exif=exif.tobytes())

    # Broken weights, each a copy of the tiny weights with one defect.
    def weights(name: str, edit) -> Path:
        w = d / "weights" / name
        shutil.copytree(tiny_weights, w)
        manifest = json.loads((w / "manifest.json").read_text())
        edit(w, manifest)
        (w / "manifest.json").write_text(json.dumps(manifest))
        return w

    def file_is_dir(w, m):
        (w / "drtmo_up.msgpack").unlink()
        (w / "drtmo_up.msgpack").mkdir()

    def empty_name(w, m):
        m["drtmo_up"]["file"] = ""

    def absolute(w, m):
        m["drtmo_up"]["file"] = "/etc/passwd"

    def climbs_out(w, m):
        shutil.copy(w / "drtmo_up.msgpack", w.parent / "outside.msgpack")
        m["drtmo_up"]["file"] = "../outside.msgpack"

    def non_numeric(w, m):
        data = msgpack.packb({"params": {"kernel": "not a number"}})
        (w / "drtmo_up.msgpack").write_bytes(data)
        m["drtmo_up"]["sha256"] = hashlib.sha256(data).hexdigest()

    def unreadable(w, m):
        os.chmod(w / "drtmo_up.msgpack", 0)

    def flip(w, m):
        p = w / "drtmo_down.msgpack"
        b = bytearray(p.read_bytes())
        b[len(b) // 2] ^= 1
        p.write_bytes(bytes(b))

    def garbage_manifest(w, m):
        m.clear()
        m["drtmo_up"] = [1, 2, 3]

    for name, edit in [
        ("file_is_dir", file_is_dir),
        ("empty_name", empty_name),
        ("absolute", absolute),
        ("climbs_out", climbs_out),
        ("non_numeric", non_numeric),
        ("unreadable", unreadable),
        ("sha", flip),
        ("garbage_manifest", garbage_manifest),
    ]:
        f[f"w_{name}"] = weights(name, edit)
    f["root"] = d
    return f


# -- cases that fail before any network runs: one subprocess each --------------------------------


def _with_weights(key: str, message: str):
    """A reconstruct case whose only defect is the weights folder files[key]."""
    return (lambda f, w, o: ["reconstruct", f["good"], "-o", o, "--weights", f[key]], 1, message)


def _photo(key: str, message: str, command: str = "reconstruct"):
    """A case whose only defect is the input photo files[key]."""
    return (lambda f, w, o: [command, f[key], "-o", o], 1, message)


# name -> (argv builder (files, weights, out), exit status, substring of the one stderr line)
EARLY_CASES = {
    # 1: a flipped byte in the pixel data is an error, not a black image with exit 0
    "corrupt_png": _photo("corrupt_png", "cannot decode PNG"),
    "corrupt_png_brackets": _photo("corrupt_png", "cannot decode PNG", command="brackets"),
    # 3: an output that is an input is refused even with --overwrite
    "fuse_output_is_input": (
        lambda f, w, o: ["fuse", f["dark"], f["good"], "-o", f["good"], "--overwrite"],
        1,
        "is an input",
    ),
    "fuse_same_photo_twice": (
        lambda f, w, o: ["fuse", f["good"], f["good"], "-o", o / "x.png"],
        1,
        "given as both exposures",
    ),
    "fuse_a_copy_of_one_photo": (
        lambda f, w, o: ["fuse", f["good"], f["good_copy"], "-o", o / "x.png"],
        1,
        "are almost the same picture",
    ),
    "fuse_two_scenes": (
        lambda f, w, o: ["fuse", f["dark_other"], f["good"], "-o", o / "x.png"],
        1,
        "do not show one still scene",
    ),
    "fuse_swapped_exposures": (
        lambda f, w, o: ["fuse", f["good"], f["dark"], "-o", o / "x.png"],
        1,
        "give the darker",
    ),
    # 4: tracebacks before
    "long_input_name": _photo("long_name", "name too long"),
    "missing_name_over_255": (
        lambda f, w, o: ["reconstruct", f["root"] / ("y" * 300 + ".png"), "-o", o],
        1,
        "file name too long",
    ),
    "weights_file_is_dir": _with_weights("w_file_is_dir", "not a regular file"),
    "weights_file_empty_name": _with_weights("w_empty_name", "not a file in the directory"),
    "weights_non_numeric": _with_weights("w_non_numeric", "non-numeric"),
    # 7: output problems found before the networks run
    "fuse_wrong_extension": (
        lambda f, w, o: ["fuse", f["dark"], f["good"], "-o", o / "x.exr"],
        1,
        "needs an LDR extension",
    ),
    "fuse_missing_parent": (
        lambda f, w, o: ["fuse", f["dark"], f["good"], "-o", o / "no" / "x.png", "--weights", w],
        1,
        "output folder does not exist",
    ),
    "fuse_parent_is_a_file": (
        lambda f, w, o: ["fuse", f["dark"], f["good"], "-o", f["good"] / "x.png", "--weights", w],
        1,
        "is not a folder",
    ),
    "fuse_output_is_dir": (
        lambda f, w, o: ["fuse", f["dark"], f["good"], "-o", f["dir_named_png"], "--weights", w],
        1,
        "is a directory",
    ),
    # 8: C-library messages folded into the one line
    "truncated_16bit_png": _photo("trunc16.png", "trunc16.png: cannot decode"),
    "truncated_16bit_tif": _photo("trunc16.tif", "trunc16.tif"),
    # 10: messages that say what is wrong
    "fifo_input": _photo("fifo", "a FIFO"),
    "dev_zero_link": _photo("dev_zero", "a character device"),
    "weights_dir_missing": (
        lambda f, w, o: ["reconstruct", f["good"], "-o", o, "--weights", o / "nowhere"],
        1,
        "no such directory",
    ),
    "memory_budget_1kib": (
        lambda f, w, o: [
            "reconstruct",
            f["good"],
            "-o",
            o,
            "--weights",
            w,
            "--memory-budget",
            "1KiB",
        ],
        1,
        "1.0 KiB",
    ),
    # 11: control characters in names are escaped, the error stays one line
    "newline_in_name": (
        lambda f, w, o: ["reconstruct", f["root"] / "a\nb.png", "-o", o],
        1,
        "a\\nb.png: no such file",
    ),
    "ansi_in_name": _photo("ansi", "\\x1b[31mred"),
    # 12: an empty output path is a usage error
    "empty_output": (lambda f, w, o: ["reconstruct", f["good"], "-o", ""], 2, ""),
    # an unset shell variable in --weights "$W" is not the bundled weights
    "empty_weights": (lambda f, w, o: ["reconstruct", f["good"], "-o", o, "--weights", ""], 2,
                      "--weights must not be empty"),
    # 13: a manifest cannot point outside its directory
    "weights_absolute_path": _with_weights("w_absolute", "not a file in the directory"),
    "weights_climb_out": _with_weights("w_climbs_out", "not a file in the directory"),
    # what held before, kept
    "zero_byte_file": _photo("zero_bytes", "empty file"),
    # the output folders a failed run created are removed again
    "bad_photo_into_new_folders": (
        lambda f, w, o: ["reconstruct", f["zero_bytes"], "-o", o / "a" / "b"], 1, "empty file"),
    "bad_photo_into_new_folders_brackets": (
        lambda f, w, o: ["brackets", f["noise_jpg"], "-o", o / "a" / "b"], 1, "not a readable"),
    "noise_jpeg": _photo("noise_jpg", "not a readable"),
    "bomb_header": (
        lambda f, w, o: ["reconstruct", f["bomb"], "-o", o, "--weights", w],
        1,
        "bomb.png",
    ),
    "weights_sha": _with_weights("w_sha", "SHA-256"),
    "weights_garbage_manifest": _with_weights("w_garbage_manifest", "invalid model config"),
    "output_is_a_file": (
        lambda f, w, o: ["reconstruct", f["good"], "-o", f["good"]],
        1,
        "is not a folder",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(EARLY_CASES))
def test_early_failure_is_one_line_and_writes_nothing(case, files, tiny_weights, cli_env, tmp_path):
    build, status, message = EARLY_CASES[case]
    out = tmp_path / "out"
    before = {p: p.stat().st_mtime_ns for p in all_files(files["root"]) if not p.is_symlink()}
    args = build(files, tiny_weights, out)
    if "--weights" not in args and args[0] != "fuse":
        args += ["--weights", tiny_weights]  # faster to load than the bundled networks
    res = cli_run(args, cli_env, cwd=tmp_path)
    if status == 2:
        assert res.returncode == 2 and "usage: hdr-jax" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr and message in res.stderr
    else:
        assert_one_line(res, status, message)
    assert list(tmp_path.iterdir()) == [], all_files(tmp_path)  # nothing made or left behind
    after = {p: p.stat().st_mtime_ns for p in all_files(files["root"]) if not p.is_symlink()}
    assert after == before  # the inputs are untouched


@pytest.mark.slow
def test_dangling_symlink_at_an_output_path(files, tiny_weights, cli_env, tmp_path):
    # 6, 10: refused before anything runs, in the CLI's words; nothing of the set is written.
    out = tmp_path / "out"
    out.mkdir()
    (out / "good_preview.png").symlink_to(tmp_path / "nowhere.png")
    res = cli_run(["reconstruct", files["good"], "-o", out, "--weights", tiny_weights], cli_env)
    assert_one_line(res, 1, "good_preview.png exists (use --overwrite to replace it)")
    assert all_files(tmp_path) == [out / "good_preview.png"]
    assert not (tmp_path / "nowhere.png").exists()


@pytest.mark.slow
@needs_permissions
def test_unreadable_input_folder_and_weights(files, cli_env, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    shutil.copy(files["good"], locked / "p.png")
    locked.chmod(0)
    try:
        assert_one_line(
            cli_run(["reconstruct", locked / "p.png", "-o", tmp_path / "o"], cli_env),
            1,
            "permission denied",
        )
    finally:
        locked.chmod(0o755)
    res = cli_run(
        ["reconstruct", files["good"], "-o", tmp_path / "o", "--weights", files["w_unreadable"]],
        cli_env,
    )
    assert_one_line(res, 1, "cannot read the weights file")


@pytest.mark.slow
@needs_permissions
def test_unwritable_output_folder(files, cli_env, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        res = cli_run(["reconstruct", files["good"], "-o", ro], cli_env)
        assert_one_line(res, 1, "not writable")
    finally:
        ro.chmod(0o755)


def test_unwritable_output_folder_in_process(files, tiny_weights, tmp_path, monkeypatch, capfd):
    # The same check without relying on permissions (root may write anywhere): os.access is what
    # the CLI asks, so make it say no for the output folder only.
    out = tmp_path / "out"
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: Path(p) != out and real(p, mode, **k))
    capfd.readouterr()
    rc = cli.main(
        ["reconstruct", str(files["good"]), "-o", str(out), "--weights", str(tiny_weights)]
    )
    err = capfd.readouterr().err
    assert rc == 1 and stderr_lines(err) == [
        f"hdr-jax: error: {out}: output folder is not writable"
    ]


def test_list_images_reports_an_unreadable_folder(tmp_path, monkeypatch):
    def denied(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "is_dir", denied)
    with pytest.raises(hio.ImageIOError, match="cannot access .Permission denied"):
        hio.list_images([tmp_path / "x.png"])


@pytest.mark.slow
def test_tilde_output_means_home(files, tiny_weights, cli_env, tmp_path):
    env = dict(cli_env, HOME=str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    res = cli_run(["reconstruct", files["good"], "-o", "~/x", "--weights", tiny_weights,
                   "--scale", "0"], env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "home" / "x" / "good.exr").is_file() and not (tmp_path / "~").exists()
    # A run that fails on its photo removes the folder it made, and made no '~' either.
    res = cli_run(
        ["reconstruct", files["small"], "-o", "~/y/z", "--weights", tiny_weights], env, cwd=tmp_path
    )
    assert_one_line(res, 1, "at least 32 px")
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["x"]
    assert not (tmp_path / "~").exists()


@pytest.mark.slow
def test_input_folder_as_output_folder_keeps_the_inputs(files, tiny_weights, cli_env, tmp_path):
    # A folder holding x.png and an x_preview.png (the user's, or an earlier run's output),
    # reconstructed into itself with --overwrite: x.png's preview would overwrite an input and
    # x_preview.png would be processed as a photo. Both are refused before any network runs.
    d = tmp_path / "photos"
    d.mkdir()
    shutil.copy(files["good"], d / "x.png")
    shutil.copy(files["good"], d / "x_preview.png")
    before = {p: p.read_bytes() for p in all_files(d)}
    res = cli_run(["reconstruct", d, "-o", d, "--overwrite", "--weights", tiny_weights], cli_env)
    lines = stderr_lines(res.stderr)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[-1] == "hdr-jax: error: 2 of 2 photos failed"
    assert any("x_preview.png: is an input (x.png would write over it)" in ln
               for ln in lines), lines
    assert any("x_preview.png: is named like an output of" in ln for ln in lines), lines
    assert {p: p.read_bytes() for p in all_files(d)} == before


# -- cases that need the networks: grouped --------------------------------------------------------


@pytest.mark.slow
def test_folder_run_with_mixed_problems(files, tiny_weights, cli_env, tmp_path):
    """One folder run over good, degenerate, colliding and failing photos (defects 2, 4, 9, 14,
    15; and what held: bad files fail alone, the rest are processed, exit 1; a symlink at an
    output path is replaced, never followed)."""
    d = tmp_path / "in"
    d.mkdir()
    photo = make_photo(7)
    for name, image in [
        ("good.png", photo),
        ("black.png", np.zeros_like(photo)),
        ("white.png", np.ones_like(photo)),
        ("grey.png", np.full_like(photo, 0.5)),
        ("a.png", photo),
    ]:
        hio.write_ldr(d / name, image)
    hio.write_ldr(d / "a.jpg", photo[::-1])  # same stem as a.png
    shutil.copy(files["long_name"], d / files["long_name"].name)
    shutil.copy(files["grey16_rot"], d / "grey16_rot.tif")
    shutil.copy(files["corrupt_png"], d / "corrupt.png")
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours")
    (out / "good.exr").symlink_to(victim)
    res = cli_run(
        ["reconstruct", d, "-o", out, "--scale", "0", "--overwrite", "--weights", tiny_weights],
        cli_env,
    )
    lines = stderr_lines(res.stderr)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    # One line per problem and the summary; no progress bar in a log (stderr is not a terminal).
    errors = [ln for ln in lines if ln.startswith("error: ")]
    warnings = [ln for ln in lines if ln.startswith("warning: ")]
    notes = [ln for ln in lines if ln.startswith("note: ")]
    assert len(errors) + len(warnings) + len(notes) + 1 == len(lines), lines
    assert lines[-1] == "hdr-jax: error: 3 of 9 photos failed", lines
    assert any("a.png_preview" in ln or "an output of both" in ln for ln in errors), errors
    assert any("name too long" in ln for ln in errors), errors
    assert any("corrupt.png: cannot decode" in ln for ln in errors), errors
    assert sorted(ln.split()[1] for ln in warnings) == ["black.png", "white.png"], warnings
    made = sorted(p.name for p in all_files(out))
    stems = ["a", "black", "good", "grey", "grey16_rot", "white"]
    assert made == sorted([f"{s}.exr" for s in stems] + [f"{s}_preview.png" for s in stems])
    assert temporaries(tmp_path) == []
    # The symlink was replaced by the output; its target is untouched.
    assert not (out / "good.exr").is_symlink() and victim.read_text() == "not yours"
    # a.jpg came first (sorted), so a.* are its outputs: the HDR is of the flipped photo.
    a = hio.read_ldr(out / "a_preview.png")
    good = hio.read_ldr(out / "good_preview.png")
    assert np.abs(a[::-1] - good).mean() < 0.5 * np.abs(a - good).mean()
    # 9: the rotated 16-bit grey TIFF is processed upright (W x H swapped).
    assert hio.read_hdr(out / "grey16_rot.exr").shape == (W, H, 3)
    # 14: degenerate photos give flat, colourless HDRs and previews; flat grey is not white.
    black, white = hio.read_hdr(out / "black.exr"), hio.read_hdr(out / "white.exr")
    assert black.max() == 0.0
    np.testing.assert_allclose(white, 1.0, atol=1e-6)
    grey_preview = hio.read_ldr(out / "grey_preview.png")
    assert grey_preview.max() < 0.9, grey_preview.max()
    assert np.ptp(grey_preview.mean((0, 1))) < 0.02  # no colour cast
    assert np.ptp(hio.read_ldr(out / "white_preview.png")) < 0.01


@pytest.mark.slow
def test_debevec_on_a_black_photo_is_black(tiny_weights, cli_env, tmp_path):
    hio.write_ldr(tmp_path / "black.png", np.zeros((H, W, 3), np.float32))
    res = cli_run(
        [
            "brackets",
            tmp_path / "black.png",
            "-o",
            tmp_path / "o",
            "--merge",
            "debevec",
            "--weights",
            tiny_weights,
        ],
        cli_env,
    )
    assert res.returncode == 0, res.stderr
    assert stderr_lines(res.stderr) == [
        (
            "warning: black.png is all black; it records no scene detail, so its HDR is the "
            "photo itself, linearised"
        )
    ]
    assert hio.read_hdr(tmp_path / "o" / "black.exr").max() == 0.0


def test_degenerate_merge_in_process():
    stack = np.random.default_rng(0).random((17, 8, 8, 3)).astype(np.float32)
    for image, value in [(np.zeros((8, 8, 3)), 0.0), (np.ones((8, 8, 3)), 1.0)]:
        for method in ("anchored", "robust", "debevec"):
            hdr, _ = pipeline.merge_photo_stack(stack, image, method)
            np.testing.assert_allclose(hdr, value, atol=1e-6)
    assert pipeline.degenerate(np.full((8, 8, 3), 0.5)) is None
    flat = pipeline.tonemap_preview(np.full((8, 8, 3), 0.2, np.float32))
    assert 0.3 < flat.mean() < 0.7, flat.mean()


# -- signals, partial failures: a driver that pauses the real CLI inside a write ------------------

# Runs `hdr-jax ARGV` with the output encoder patched to pause (mode 'encode': after the first
# temporary file has data) or to fail on the preview (mode 'fail'), or with the temp-file
# reservation pausing between recording the name and creating the file (mode 'reserve').
_DRIVER = r"""
import os, sys, time
from hdr_jax import cli, io as hio
mode = os.environ["HDR_JAX_TEST_MODE"]
def ready():
    print("READY", flush=True)
if mode == "encode":
    encode = hio._encode_hdr
    def slow(path, tmp, *a):
        encode(path, tmp, *a)
        ready()
        time.sleep(120)
    hio._encode_hdr = slow
elif mode == "fail":
    encode = hio._encode_ldr
    def fail(path, tmp, *a):
        if str(path).endswith("_preview.png"):
            raise hio.ImageIOError(f"{path}: simulated encoder failure (disk full)")
        encode(path, tmp, *a)
    hio._encode_ldr = fail
elif mode == "reserve":
    class Slow(set):
        def add(self, item):
            super().add(item)
            ready()
            time.sleep(3)
    hio._TEMPORARIES = Slow()
elif mode == "swallow":  # SIGTERM lands in a finaliser (JAX's gc callback, say): swallowed there
    import signal
    encode = hio._encode_hdr
    class Finaliser:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # bytecodes: the handler runs here, inside the finaliser
                pass
    def swallowing(path, tmp, *a):
        Finaliser()
        encode(path, tmp, *a)
    hio._encode_hdr = swallowing
sys.exit(cli.main(sys.argv[1:]))
"""


def run_and_signal(cmd, env, *, stop_when=None, signals=(), timeout: float = 600):
    """Runs `cmd` from the repository root; once a stdout line satisfies stop_when, sends it
    `signals` (0.2 s apart) and waits for the end. Returns the CompletedProcess."""
    proc = subprocess.Popen(
        cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    lines = []
    try:
        for line in proc.stdout if stop_when is not None else ():
            lines.append(line)
            if stop_when(line.strip()):
                for s in signals:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, s)
                    time.sleep(0.2)
                break
        out, err = proc.communicate()
    finally:
        watchdog.cancel()
    return subprocess.CompletedProcess(cmd, proc.returncode, "".join(lines) + out, err)


def _driven(mode: str, args, env, signals=()):
    return run_and_signal(
        [sys.executable, "-c", _DRIVER, *map(str, args)],
        dict(env, HDR_JAX_TEST_MODE=mode),
        stop_when=(lambda ln: ln == "READY") if signals else None,
        signals=signals,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode,signals,status",
    [
        ("encode", (signal.SIGTERM,), 143),
        ("encode", (signal.SIGINT, signal.SIGINT), 130),  # a second Ctrl-C: still one line
        ("reserve", (signal.SIGINT,), 130),  # signal between naming and creating the temp file
        ("swallow", (), 143),  # raised in a finaliser, which drops it: still stops the run
    ],
)
def test_interrupt_removes_everything_it_made(
    mode, signals, status, files, tiny_weights, cli_env, tmp_path
):
    out = tmp_path / "out"
    args = ["reconstruct", files["good"], "-o", out, "--scale", "0", "--weights", tiny_weights]
    res = _driven(mode, args, cli_env, signals)
    name = "SIGTERM" if status == 143 else "SIGINT"
    assert_one_line(res, status, f"interrupted ({name})")
    assert all_files(tmp_path) == []


@pytest.mark.slow
def test_outputs_are_a_set(files, tiny_weights, cli_env, tmp_path):
    # 6: the preview fails after the HDR was encoded: neither is left, and the rerun works.
    out = tmp_path / "out"
    args = ["reconstruct", files["good"], "-o", out, "--scale", "0", "--weights", tiny_weights]
    res = _driven("fail", args, cli_env)
    assert_one_line(res, 1, "simulated encoder failure")
    assert all_files(tmp_path) == []
    res = cli_run(args, cli_env)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in all_files(out)) == ["good.exr", "good_preview.png"]


def test_output_set_in_process(tmp_path):
    img = np.full((4, 5, 3), 0.5, np.float32)
    with pytest.raises(hio.ImageIOError, match="NaN"), hio.OutputSet() as out:
        out.write_hdr(tmp_path / "a.exr", img)
        out.write_ldr(tmp_path / "a.png", img * np.nan)
    assert all_files(tmp_path) == []
    (tmp_path / "b.png").write_bytes(b"keep")
    with pytest.raises(hio.ImageIOError, match="already exists"), hio.OutputSet() as out:
        out.write_hdr(tmp_path / "b.exr", img)
        out.write_ldr(tmp_path / "b.png", img)
    assert all_files(tmp_path) == [tmp_path / "b.png"]
    # A destination that appears between the check and the rename: the set is rolled back.
    with pytest.raises(hio.ImageIOError, match="already exists"), hio.OutputSet() as out:
        out.write_hdr(tmp_path / "c.exr", img)
        out.write_ldr(tmp_path / "c.png", img)
        (tmp_path / "c.png").write_bytes(b"raced")
    assert sorted(all_files(tmp_path)) == [tmp_path / "b.png", tmp_path / "c.png"]
    assert (tmp_path / "c.png").read_bytes() == b"raced"
    with hio.OutputSet() as out:
        out.write_hdr(tmp_path / "d.exr", img)
        out.write_ldr(tmp_path / "d.png", img)
    np.testing.assert_allclose(hio.read_ldr(tmp_path / "d.png"), img, atol=1 / 255)


def test_an_encoding_error_names_the_output_not_its_temporary_file(tmp_path, monkeypatch):
    from PIL import Image

    def full_disk(self, fp, *args, **kwargs):
        raise OSError(28, "No space left on device", os.fspath(fp))

    monkeypatch.setattr(Image.Image, "save", full_disk)
    dst = tmp_path / "a.png"
    with pytest.raises(hio.ImageIOError) as info:
        hio.write_ldr(dst, np.full((4, 5, 3), 0.5, np.float32))
    assert str(info.value) == (f"{dst}: cannot encode image (OSError: [Errno 28] No space left "
                               "on device)")
    assert all_files(tmp_path) == []
    # A library that names the temporary file in its own words (OpenEXR does).
    tmp = tmp_path / ".a.1234.tmp.exr"
    err = hio._error(tmp_path / "a.exr", "cannot encode image",
                     RuntimeError(f'Failed to write pixel data to image file "{tmp}". No space'),
                     temporary=tmp)
    assert ".tmp" not in str(err) and f'image file "{tmp_path / "a.exr"}"' in str(err)


@pytest.mark.parametrize("errno_name", ["EIO", "EPERM"])
def test_only_a_filesystem_without_hard_links_gets_the_rename_fallback(errno_name, tmp_path,
                                                                      monkeypatch):
    # Without --overwrite an output is linked into place (link() refuses to replace a file that
    # appeared meanwhile). A failing link() falls back to a rename only where the filesystem
    # has no hard links (EPERM on FAT); an I/O error is an error, and nothing is left.
    import errno

    code = getattr(errno, errno_name)
    img = np.full((4, 5, 3), 0.5, np.float32)
    # A file that appears while the output is written is never replaced.
    raced = tmp_path / "raced" / "b.png"
    raced.parent.mkdir()
    with pytest.raises(hio.ImageIOError, match="appeared while this output was written"):
        with hio.OutputSet() as out:
            out.write_ldr(raced, img)
            raced.write_bytes(b"raced")
    assert all_files(raced.parent) == [raced] and raced.read_bytes() == b"raced"

    def failing_link(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(hio.os, "link", failing_link)
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    dst = tmp_path / "a.png"
    if errno_name == "EPERM":
        hio.write_ldr(dst, img)
        np.testing.assert_allclose(hio.read_ldr(dst), img, atol=1 / 255)
    else:
        with pytest.raises(hio.ImageIOError, match="cannot move the finished file into place"):
            hio.write_ldr(dst, img)
        assert all_files(tmp_path) == []


@pytest.mark.parametrize("hard_links", [True, False])
def test_output_set_overwrite_keeps_the_old_set_until_the_new_one_is_whole(
    hard_links, tmp_path, monkeypatch
):
    img = np.full((4, 5, 3), 0.5, np.float32)
    if not hard_links:  # a filesystem without them (FAT, exFAT): the replaced files are copied

        def no_link(*args, **kwargs):
            raise OSError(1, "Operation not permitted")

        monkeypatch.setattr(hio.os, "link", no_link)
    names = [tmp_path / "e.exr", tmp_path / "e.png", tmp_path / "e_ev-1.png"]
    for n in names:
        n.write_bytes(b"old " + n.name.encode())
    commit, calls = hio._commit, []

    def failing_third(tmp, dst, overwrite):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        commit(tmp, dst, overwrite)

    # The third rename fails after two old files were replaced: the two are put back.
    monkeypatch.setattr(hio, "_commit", failing_third)
    with pytest.raises(hio.ImageIOError, match="cannot move the finished file"):
        with hio.OutputSet(overwrite=True) as out:
            out.write_hdr(names[0], img)
            out.write_ldr(names[1], img)
            out.write_ldr(names[2], img)
    assert calls == names
    assert sorted(all_files(tmp_path)) == sorted(names)  # and no hidden file left
    assert [n.read_bytes() for n in names] == [b"old " + n.name.encode() for n in names]

    # An interrupt while the set is renamed into place is raised once the whole set is there.
    def interrupted_first(tmp, dst, overwrite):
        if dst == names[0]:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        commit(tmp, dst, overwrite)

    monkeypatch.setattr(hio, "_commit", interrupted_first)
    with interrupts.handled():
        with pytest.raises(interrupts.Interrupted) as info:
            with hio.OutputSet(overwrite=True) as out:
                out.write_hdr(names[0], img)
                out.write_ldr(names[1], img)
                out.write_ldr(names[2], img)
    assert info.value.exit_status == 130
    assert sorted(all_files(tmp_path)) == sorted(names)
    np.testing.assert_allclose(hio.read_ldr(names[2]), img, atol=1 / 255)
    np.testing.assert_allclose(hio.read_hdr(names[0]), img, atol=1e-3)


def test_interrupt_inside_deferred_is_raised_at_its_end():
    with interrupts.handled():
        with pytest.raises(interrupts.Interrupted) as info, interrupts.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            reached = True
        assert reached and info.value.exit_status == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_signal_a_finaliser_swallows_is_raised_at_the_next_safe_point(capfd):
    class Finaliser:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs in here, and its exception is dropped
                pass

    hook = sys.unraisablehook  # the test runner's
    with interrupts.handled():
        Finaliser()
        reached = True  # the finaliser did not stop the program
        with pytest.raises(interrupts.Interrupted) as info, interrupts.deferred():
            pytest.fail("a block entered after the signal")
        assert reached and info.value.exit_status == 143
        interrupts.raise_swallowed()  # raised once only
        with interrupts.deferred():
            pass
    assert "Exception ignored" not in capfd.readouterr().err  # kept, not reported
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert sys.unraisablehook is hook


def test_the_command_leaves_at_once_when_interrupted(monkeypatch):
    """Interrupted, `hdr-jax` exits through os._exit, not the interpreter's shutdown (which can
    crash on a compilation XLA still runs); other statuses exit normally, ignoring Ctrl-C and
    SIGTERM from then on. The dispositions are recorded, not set: this process's children
    would inherit an ignored SIGTERM (a multiprocessing pool could then never stop them)."""
    exits, dispositions = [], []
    monkeypatch.setattr(cli.os, "_exit", lambda status: exits.append(status))
    monkeypatch.setattr(cli.signal, "signal", lambda *a: dispositions.append(a))
    for status in (143, 130, 1, 0):
        monkeypatch.setattr(cli, "main", lambda status=status: status)
        with pytest.raises(SystemExit) as info:
            cli.run()
            raise SystemExit("left through os._exit")
        if status in (130, 143):
            assert exits.pop() == status  # (the stub returns, so the code after it runs too)
        else:
            assert info.value.code == status
            assert dispositions == [(signal.SIGINT, signal.SIG_IGN),
                                    (signal.SIGTERM, signal.SIG_IGN)]
        dispositions.clear()
    assert exits == []


# -- C libraries stay quiet -------------------------------------------------------------------


def test_truncated_files_say_one_thing(files, tmp_path, capfd):
    hio.write_hdr(tmp_path / "x.exr", np.random.default_rng(0).random((40, 50, 3)) + 0.1)
    data = (tmp_path / "x.exr").read_bytes()
    (tmp_path / "t.exr").write_bytes(data[: len(data) // 2])
    capfd.readouterr()
    for path in [tmp_path / "t.exr", files["trunc16.png"], files["trunc16.tif"]]:
        reader = hio.read_hdr if path.suffix == ".exr" else hio.read_ldr
        with pytest.raises(hio.ImageIOError) as info:
            reader(path)
        assert "corrupt or truncated" in str(info.value) or "not a readable" in str(info.value)
        assert "\n" not in str(info.value)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == "", captured


def test_rotated_16bit_grey_tiff_reads_upright(files):
    # Orientation 6: the stored rows are the displayed columns, so upright = rotate 90 degrees
    # clockwise. (Pillow's own transpose of an oriented TIFF scrambles it; it is no reference.)
    stored = np.round(make_photo(7).mean(-1) * 65535).astype(np.uint16)
    got, info = hio.read_ldr(files["grey16_rot"], return_info=True)
    assert (info.height, info.width, info.orientation, info.bit_depth) == (W, H, 6, 16)
    assert hio.ldr_info(files["grey16_rot"]) == info
    upright = np.rot90(stored, -1).astype(np.float32) / 65535
    np.testing.assert_array_equal(got, np.repeat(upright[..., None], 3, axis=-1))


def test_format_bytes_small_sizes():
    assert memory.format_bytes(1024) == "1.0 KiB"
    assert memory.format_bytes(100) == "100 B"
    assert memory.format_bytes(3 * 2**20) == "3.0 MiB"


def test_printable_escapes_control_characters():
    assert hio.printable("a\nb\x1b[0m\tc é") == "a\\nb\\x1b[0m\\tc é"


def test_readme_documents_the_exit_codes():
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Errors and exit codes", 1)[1].split("\n## ", 1)[0]
    for code in ("0", "1", "2", "130", "143"):
        assert f"| {code} |" in section, code
    assert "exit\n  status 1" not in text and "and exit status 1." not in text


# -- training faults: kill, terminate, fail to write; the run still ends bit-identical -----------

# experiments.train with faults injected into the checkpoint writer (HDR_JAX_TEST_FAULT):
#   hang:N    once the data-iterator part of checkpoint N is being written, say READY and hang
#             (the test then SIGKILLs the process in the middle of that checkpoint write)
#   enospc    the first checkpoint write of this run fails as on a full disk
_TRAIN_DRIVER = r"""
import errno, os, sys, time
from absl import app
import grain
from hdr_jax.training import checkpoint
fault = os.environ.get("HDR_JAX_TEST_FAULT", "")
current = {}
_save = checkpoint.save
def save(manager, state, data_iterator=None):
    current["step"] = int(state.step)
    _save(manager, state, data_iterator)
checkpoint.save = save
Handler = grain.checkpoint.CheckpointHandler
_handler_save = Handler.save
def handler_save(self, directory, *args, **kwargs):
    if fault == f"hang:{current.get('step')}":
        print("READY", flush=True)
        time.sleep(600)
    if fault == "enospc":
        raise OSError(errno.ENOSPC, "No space left on device")
    return _handler_save(self, directory, *args, **kwargs)
Handler.save = handler_save
from experiments import train
sys.argv = ["experiments.train"] + sys.argv[1:]
app.run(train.main)
"""

TRAIN_TIMEOUT = 600


def _train_args(data: dict[str, Path], workdir: Path) -> list[str]:
    # The tiny 6-step DrTMO run of test_training, checkpointed every 2 steps (so a SIGTERM can
    # land between checkpoints) and logging every step (the test's clock).
    keep = [a for a in _drtmo_args(data, workdir) if not a.startswith("--config.checkpoint_every")]
    return keep + ["--config.checkpoint_every=2", "--config.log_every=1"]


def _train(args, env, *, fault: str = "", stop_when=None, stop_with=None):
    """Runs the driver; when a stdout line satisfies stop_when, sends stop_with (a signal)."""
    return run_and_signal(
        [sys.executable, "-c", _TRAIN_DRIVER, *args],
        dict(env, HDR_JAX_TEST_FAULT=fault),
        stop_when=stop_when,
        signals=(stop_with,) if stop_with else (),
        timeout=TRAIN_TIMEOUT,
    )


def _checkpoint_steps(workdir: Path) -> list[int]:
    d = workdir / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def _final_params(workdir: Path) -> list[np.ndarray]:
    return _arrays(_restore(workdir))


@pytest.fixture(scope="module")
def train_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fault_data")
    testing.write_fake_hdr_folder(root / "hdr")
    return {"hdr": root / "hdr", "tfds": root / "tfds"}


@pytest.mark.slow
def test_training_survives_kill_term_and_a_full_disk(train_data, cli_env, tmp_path):
    """One workdir through: SIGKILL in the middle of a checkpoint write; SIGTERM (a final
    checkpoint, exit 143, one line); a checkpoint write failing as on a full disk (one line,
    exit 1, earlier checkpoints intact); SIGKILL at a random point; then a clean finish. The
    result equals an uninterrupted run bit for bit."""
    reference = tmp_path / "reference"
    res = _train(_train_args(train_data, reference), cli_env)
    assert res.returncode == 0, res.stderr[-3000:]
    workdir = tmp_path / "faulty"
    args = _train_args(train_data, workdir)

    # 1. SIGKILL while checkpoint 2 is being written: it never becomes a checkpoint.
    res = _train(
        args, cli_env, fault="hang:2", stop_when=lambda ln: ln == "READY", stop_with=signal.SIGKILL
    )
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    assert _checkpoint_steps(workdir) == []
    assert any("tmp" in p.name for p in (workdir / "checkpoints").iterdir())  # it was mid-write

    # 2. SIGTERM during step 3 (not a checkpoint step): the run stops after the step in flight
    # with a checkpoint of it, exit 143 and one line.
    res = _train(
        args, cli_env, stop_when=lambda ln: ln.startswith("step 3 train"), stop_with=signal.SIGTERM
    )
    assert res.returncode == 143, res.stderr[-3000:]
    lines = stderr_lines(res.stderr)
    assert lines[-1].startswith("experiments.train: interrupted (SIGTERM)"), lines
    # Before it at most orbax's warning that it replaces the unfinished step-2 folder.
    assert all("atomicity.py" in ln for ln in lines[:-1]), lines
    assert "Traceback" not in res.stderr
    last = max(int(ln.split()[1]) for ln in res.stdout.splitlines() if ln.startswith("step "))
    assert _checkpoint_steps(workdir)[-1] == last >= 3

    # 3. The next checkpoint write fails as on a full disk: one line, exit 1, the checkpoint
    # of step `last` still there and restorable (step 4 proves it).
    res = _train(args, cli_env, fault="enospc")
    assert res.returncode == 1, res.stderr[-3000:]
    lines = stderr_lines(res.stderr)
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert len(lines) == 1, lines
    assert lines[0].startswith("experiments.train: error: cannot write checkpoint"), lines
    assert "No space left on device" in lines[0]
    assert _checkpoint_steps(workdir)[-1] == last

    # 4. SIGKILL at some point of step 5, then 5. the same command to the end.
    res = _train(
        args, cli_env, stop_when=lambda ln: ln.startswith("step 5 train"), stop_with=signal.SIGKILL
    )
    assert res.returncode == -signal.SIGKILL
    res = _train(args, cli_env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _checkpoint_steps(workdir)[-1] == 6
    for a, b in zip(_final_params(workdir), _final_params(reference), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_training_into_an_unusable_workdir_is_one_line(train_data, cli_env, tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    res = _train(_train_args(train_data, tmp_path / "file" / "run"), cli_env)
    assert res.returncode == 1, res.stderr[-3000:]
    lines = stderr_lines(res.stderr)
    assert lines == [f"experiments.train: error: {tmp_path / 'file' / 'run'}: Not a directory"]


def test_builders_skip_a_corrupt_source_file_by_name(tmp_path, caplog):
    paths = testing.write_fake_hdr_folder(tmp_path / "hdr")
    bad = paths[1]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # truncated
    # NaN radiance (write_hdr refuses it, so through OpenEXR directly).
    nan = tmp_path / "hdr" / "scene_nan.exr"
    plane = np.full((16, 16), np.nan, np.float32)
    with OpenEXR.File({"type": OpenEXR.scanlineimage}, {c: plane for c in "RGB"}) as f:
        f.write(str(nan))
    files = sorted(paths + [nan])
    builder = hb.HdrBrackets(config="tiny", data_dir=str(tmp_path / "tfds"))
    with caplog.at_level("WARNING"):
        examples = list(builder._generate_examples(files, builder._training_crfs()))
    scenes = {ex["scene"] for _, ex in examples}
    assert scenes == {p.stem for p in paths} - {bad.stem}
    assert all(np.isfinite(ex["hdr"].astype(np.float32)).all() for _, ex in examples)
    assert bad.name in caplog.text and nan.name in caplog.text
    strict = hb.HdrBrackets(config="tiny", data_dir=str(tmp_path / "tfds2"), strict=True)
    with pytest.raises(hb.SourceFileError, match=bad.name):
        list(strict._generate_examples(files, strict._training_crfs()))
    pairs = sp.SyntheticPairs(config="tiny_x2", data_dir=str(tmp_path / "tfds3"))
    caplog.clear()
    with caplog.at_level("WARNING"):
        got = {key.split("/")[0] for key, _ in pairs._generate_examples([bad, paths[0]])}
    assert got == {paths[0].stem} and bad.name in caplog.text


# -- property-based tests of the readers and writers ---------------------------------------------

_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@st.composite
def _ldr_files(draw):
    """(file format, integer samples HxW or HxWxC, bit depth) that PNG/TIFF can hold."""
    fmt = draw(st.sampled_from(["png", "tif"]))
    depth = draw(st.sampled_from([8, 16]))
    channels = draw(st.sampled_from([1, 3, 4] if depth == 16 else [1, 2, 3, 4]))
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    top = 255 if depth == 8 else 65535
    lo = draw(st.integers(0, top))
    hi = draw(st.integers(lo, top))
    seed = draw(st.integers(0, 2**16))
    shape = (h, w) if channels == 1 else (h, w, channels)
    samples = np.random.default_rng(seed).integers(lo, hi + 1, shape)
    return fmt, samples.astype(np.uint8 if depth == 8 else np.uint16), depth


def _expected_rgb(samples: np.ndarray, depth: int) -> np.ndarray:
    """The documented conversion: /255 or /65535, grey replicated, alpha dropped."""
    x = samples.astype(np.float32) / np.float32(255.0 if depth == 8 else 65535.0)
    if x.ndim == 2:
        x = x[..., None]
    return np.repeat(x[..., :1], 3, axis=-1) if x.shape[-1] <= 2 else x[..., :3]


@pytest.mark.filterwarnings("ignore")
@_SETTINGS
@given(_ldr_files())
def test_read_ldr_is_the_documented_conversion(tmp_path, case):
    fmt, samples, depth = case
    path = tmp_path / f"p.{fmt}"
    if depth == 16:  # PIL cannot write 16-bit colour: OpenCV (BGR order) can
        bgr = samples if samples.ndim == 2 else samples[..., [2, 1, 0, 3][: samples.shape[-1]]]
        assert cv2.imwrite(str(path), bgr)
    else:
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[1 if samples.ndim == 2 else samples.shape[-1]]
        Image.fromarray(samples, mode=mode).save(path)
    got, info = hio.read_ldr(path, return_info=True)
    assert got.dtype == np.float32 and got.shape == (*samples.shape[:2], 3)
    assert info.bit_depth == depth
    np.testing.assert_array_equal(got, _expected_rgb(samples, depth))


@_SETTINGS
@given(
    h=st.integers(1, 20),
    w=st.integers(1, 20),
    half=st.booleans(),
    scale=st.floats(1e-3, 1e4),
    seed=st.integers(0, 2**16),
)
def test_hdr_round_trip(tmp_path, h, w, half, scale, seed):
    x = (np.random.default_rng(seed).standard_normal((h, w, 3)) * scale).astype(np.float32)
    hio.write_hdr(tmp_path / "x.exr", x, half=half, overwrite=True)
    got = hio.read_hdr(tmp_path / "x.exr")
    want = np.maximum(x.astype(np.float16) if half else x, 0).astype(np.float32)
    np.testing.assert_array_equal(got, want)
    hio.write_hdr(tmp_path / "x.hdr", x, overwrite=True)  # RGBE: 8-bit mantissa
    rgbe = hio.read_hdr(tmp_path / "x.hdr")
    # RGBE: an 8-bit mantissa per channel under one shared exponent per pixel.
    bound = want.max(-1, keepdims=True) * (2.0 / 256) + np.finfo(np.float32).tiny
    assert np.all(np.abs(rgbe - want) <= bound)


@_SETTINGS
@given(
    h=st.integers(1, 20),
    w=st.integers(1, 20),
    ext=st.sampled_from([".png", ".tif"]),
    depth=st.sampled_from([8, 16]),
    seed=st.integers(0, 2**16),
)
def test_ldr_round_trip(tmp_path, h, w, ext, depth, seed):
    x = np.random.default_rng(seed).uniform(-0.2, 1.2, (h, w, 3)).astype(np.float32)
    path = tmp_path / f"x{ext}"
    hio.write_ldr(path, x, bit_depth=depth, overwrite=True)
    step = 1.0 / (255 if depth == 8 else 65535)
    np.testing.assert_allclose(hio.read_ldr(path), np.clip(x, 0, 1), atol=0.5 * step + 1e-7)


# -- byte-mutation fuzz: a documented error or the image PIL decodes, never a crash or hang -------

# Runs in a child process, so that a crash (a signal) or a hang (the timeout) is caught too. For
# each mutation: read_ldr / read_hdr must raise ImageIOError with a one-line message naming the
# file, or return what the reference decoder gives (Pillow for LDR; for EXR, finite >= 0 RGB).
_FUZZ_CHILD = r"""
import json, sys, warnings
from pathlib import Path
import numpy as np
from PIL import Image, ImageOps
from hdr_jax import io as hio
warnings.simplefilter("ignore")
base, n, seed, work = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
data = base.read_bytes()
rng = np.random.default_rng(seed)
stats = {"error": 0, "equal": 0, "skipped": 0}
problems = []

def reference(path):
    try:
        im = Image.open(path)
        im.load()
    except Exception:
        return None
    if im.format == "TIFF" and im.getexif().get(0x0112, 1) != 1:
        return "skip"  # Pillow's own transpose of an oriented TIFF is no reference
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(ImageOps.exif_transpose(im)).astype(np.float32) / 65535
        return np.repeat(arr[..., None], 3, axis=-1)
    if im.mode not in ("1", "L", "LA", "P", "PA", "RGB", "RGBA"):
        return "skip"
    return np.asarray(ImageOps.exif_transpose(im).convert("RGB"), np.float32) / 255

for i in range(n):
    b = bytearray(data)
    kind = rng.integers(4)
    if kind == 0:
        for _ in range(rng.integers(1, 4)):
            b[rng.integers(len(b))] ^= 1 << rng.integers(8)
    elif kind == 1:
        b[rng.integers(len(b))] = rng.integers(256)
    elif kind == 2:
        b = b[: rng.integers(1, len(b))]
    else:
        at = rng.integers(len(b))
        b[at:at] = rng.bytes(rng.integers(1, 16))
    path = work / f"m{i}{base.suffix}"
    path.write_bytes(bytes(b))
    hdr = base.suffix == ".exr"
    try:
        got = hio.read_hdr(path) if hdr else hio.read_ldr(path)
    except hio.ImageIOError as e:
        msg = str(e)
        if "\n" in msg or not msg.startswith(str(path)):
            problems.append(f"{i}: bad message {msg!r}")
        stats["error"] += 1
        continue
    except Exception as e:
        problems.append(f"{i}: undocumented {type(e).__name__}: {e}")
        continue
    if hdr:
        if got.ndim != 3 or got.shape[2] != 3 or not np.isfinite(got).all() or got.min() < 0:
            problems.append(f"{i}: EXR read gave {got.shape} with bad values")
        stats["equal"] += 1
        continue
    ref = reference(path)
    if ref is None:
        problems.append(f"{i}: Pillow rejects it, read_ldr returned an image")
    elif isinstance(ref, str):
        stats["skipped"] += 1
    elif ref.shape != got.shape or np.abs(ref - got).max() > 1.01 / 255:
        problems.append(f"{i}: differs from Pillow's decode")
    else:
        stats["equal"] += 1
print(json.dumps({"stats": stats, "problems": problems[:20]}))
"""

FUZZ_MUTATIONS = 60  # per base file; 5 files


@pytest.fixture(scope="module")
def fuzz_bases(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("fuzz_bases")
    photo = make_photo(11, (24, 32))
    hio.write_ldr(d / "b.png", photo)
    hio.write_ldr(d / "b.jpg", photo, quality=90)
    hio.write_ldr(d / "b.tif", photo)
    grey = np.round(photo.mean(-1) * 65535).astype(np.uint16)
    Image.fromarray(grey).save(d / "grey16.png")
    hio.write_hdr(d / "b.exr", photo * 4.0)
    return sorted(d.iterdir())


_RAW_FUZZ_CHILD = r"""
import collections, json, sys
from pathlib import Path
import numpy as np
from hdr_jax import io as hio
base, n, work = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
data, rng = base.read_bytes(), np.random.default_rng(0)
stats, problems = collections.Counter(), []
for i in range(n):
    b = bytearray(data)
    if i % 3 == 0:
        b = b[: rng.integers(1, len(b))]
    else:
        for _ in range(rng.integers(1, 4)):
            b[rng.integers(len(b))] = rng.integers(256)
    path = work / f"m{i}.dng"
    path.write_bytes(bytes(b))
    try:
        info, got = hio.ldr_info(path), hio.read_ldr(path)
    except hio.ImageIOError as e:
        stats["error"] += 1
        if "\n" in str(e) or not str(e).startswith(str(path)):
            problems.append(f"{i}: bad message {str(e)!r}")
        continue
    stats["read"] += 1
    if not (got.dtype == np.float32 and got.ndim == 3 and got.shape[2] == 3
            and np.isfinite(got).all() and got.min() >= 0 and got.max() <= 1):
        problems.append(f"{i}: read as {got.dtype} {got.shape} in [{got.min()}, {got.max()}]")
print(json.dumps({"stats": stats, "problems": problems}))
"""


@pytest.mark.slow
def test_camera_raw_byte_mutation_fuzz(cli_env, tmp_path):
    """Damaged DNGs through LibRaw: a one-line ImageIOError or a valid photo, never another
    exception or a crash of the process (a subprocess, so a crash fails the test)."""
    yy, xx = np.mgrid[0:24, 0:32] / 32.0
    base = write_dng(tmp_path / "b.dng", np.stack([xx, yy, 0.5 + 0 * xx], -1) * 1.2)
    work = tmp_path / "work"
    work.mkdir()
    res = subprocess.run([sys.executable, "-c", _RAW_FUZZ_CHILD, base, "150", work],
                         env=cli_env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["problems"] == [], report
    assert report["stats"]["error"] > 20 and report["stats"]["read"] > 20, report["stats"]


@pytest.mark.slow
def test_byte_mutation_fuzz(fuzz_bases, cli_env, tmp_path):
    totals = {"error": 0, "equal": 0, "skipped": 0}
    for k, base in enumerate(fuzz_bases):
        work = tmp_path / base.name
        work.mkdir()
        res = subprocess.run(
            [sys.executable, "-c", _FUZZ_CHILD, base, str(FUZZ_MUTATIONS), str(k), work],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert res.returncode == 0, (base.name, res.returncode, res.stderr[-2000:])
        report = json.loads(res.stdout.strip().splitlines()[-1])
        assert report["problems"] == [], (base.name, report)
        for key, v in report["stats"].items():
            totals[key] += v
    # The fuzz is worth something only if it produced both outcomes.
    assert totals["error"] > 50 and totals["equal"] > 20, totals
