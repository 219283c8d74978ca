"""Camera calibration from exposures (`crf.calibrate_response`, `hdr-jax calibrate`)."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import scipy.stats
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from hdr_jax import io as hio
from hdr_jax.camera import crf
from hdr_jax.camera.exposure import jpeg_roundtrip

EV = [-2.0, 0.0, 2.0]


def _scene(seed: int = 0) -> np.ndarray:
    """A textured radiance map spanning about 10 stops, with a bright patch that clips."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.normal(size=(96, 128)), (0, 0), 5)
    fine = cv2.GaussianBlur(rng.normal(size=(96, 128, 3)), (0, 0), 1.5)
    log_e = 1.6 * big / big.std()
    rad = np.exp(log_e[..., None] + 0.25 * fine / fine.std()).astype(np.float32)
    rad[10:30, 10:40] *= 8.0
    return rad / np.percentile(rad, 85)


def _bracket(curve, quality=None, seed=0):
    rad = _scene(seed)
    photos = [np.round(np.asarray(crf.apply_crf(curve, np.clip(rad * 2.0**e, 0, 1))) * 255)
              / 255 for e in EV]
    return [jpeg_roundtrip(p.astype(np.float32), quality) if quality else p for p in photos]


def _inverse_error(curve, truth) -> float:
    z = np.linspace(0.05, 1.0, 200, dtype=np.float32)
    a = np.log2(np.maximum(crf.apply_inverse_crf(curve, z), 1e-6))
    b = np.log2(np.maximum(crf.apply_inverse_crf(truth, z), 1e-6))
    return float(np.sqrt(np.mean((a - b) ** 2)))


CURVES = {"sRGB": crf.srgb_crf(), "gamma 2.6": crf.gamma_crf(2.6),
          "gamma 1.8 + S": crf.s_curve_crf(6.0, gamma=1.8)}


@pytest.mark.parametrize("name", sorted(CURVES))
def test_recovers_the_curve_from_a_png_bracket(name):
    truth = CURVES[name]
    photos = _bracket(truth)
    got = crf.calibrate_response(photos, EV, lossy=False)
    assert crf.is_valid_crf(got)
    assert _inverse_error(got, truth) < 0.1
    # Far from the other curves: the photos, not a prior, decided.
    others = [_inverse_error(got, c) for n, c in CURVES.items() if n != name]
    assert min(others) > 2 * _inverse_error(got, truth)
    # Treated as a JPEG, the codes next to the clipped patch are left out, and a shoulder, which
    # maps a wide range of irradiance to the last few codes, is pinned down far less well.
    if "S" in name:
        assert _inverse_error(crf.calibrate_response(photos, EV), truth) > 2 * _inverse_error(
            got, truth)


def _opencv(photos) -> np.ndarray:
    """OpenCV's Debevec calibration of the same photos, made a curve the same way."""
    cv2.setRNGSeed(1)
    inv = cv2.createCalibrateDebevec(samples=200).process(
        [np.round(p * 255).astype(np.uint8) for p in photos],
        np.exp2(np.array(EV, np.float32)))[:, 0, :]
    g = np.log(inv.astype(np.float64))
    g = (g - g[-1]).mean(1)
    e = np.maximum.accumulate(np.exp(g)) + np.arange(256) * 1e-9
    return crf.resample_crf(np.interp(np.linspace(0, 1, 256), e / e[-1], np.arange(256) / 255))


def test_agrees_with_opencv_on_a_png_bracket():
    truth = crf.gamma_crf(2.6)
    photos = _bracket(truth)
    # Where OpenCV's is well determined (above its toe, below the clip): the same shape, and
    # the same level to a tenth of a stop.
    z = np.linspace(0.2, 0.95, 64, dtype=np.float32)
    diff = (np.log2(crf.apply_inverse_crf(crf.calibrate_response(photos, EV, lossy=False), z))
            - np.log2(crf.apply_inverse_crf(_opencv(photos), z)))
    assert np.std(diff) < 0.03 and abs(np.mean(diff)) < 0.1


def test_the_reduced_solve_is_the_dense_least_squares():
    """The solve eliminates ln E and solves for g alone: the same g as NumPy's least squares of
    the whole system, and the same minimum-norm g where no pixel fixes the curve's slope."""
    rng = np.random.default_rng(3)
    log_t = np.log(2.0) * np.array([-2.0, 0.0, 2.0])
    scene = np.exp(rng.normal(-1.0, 1.5, 300))
    z = np.clip(np.round(255 * np.clip(scene[:, None] * np.exp(log_t), 0, 1) ** (1 / 2.2)
                         + rng.normal(0, 1, (300, 3))), 0, 255).astype(int)
    w = np.minimum(z, 255 - z).astype(np.float64)
    w[:40] = 0.0  # pixels no photo weighs
    only_one = w * (np.arange(3) == np.arange(300)[:, None] % 3)  # each pixel in one photo
    for weights, tol in ((w, 1e-6), (only_one, 0.0)):
        a, b = crf._debevec_system(z, weights, log_t, crf.CALIBRATION_SMOOTHNESS)
        dense = np.linalg.lstsq(a, b, rcond=None)[0][:256]
        got = crf._debevec_solve(z, weights, log_t, crf.CALIBRATION_SMOOTHNESS)
        np.testing.assert_allclose(got, dense, rtol=0, atol=tol)
    # The system itself, row by row: w (g(z) - ln E) = w ln t, smoothness, g(128) = 0.
    a, b = crf._debevec_system(z[:2, :2], w[50:52, :2], log_t[:2], 1.0)
    assert a.shape == (2 * 2 + 255, 256 + 2)
    assert a[1, z[0, 1]] == w[50, 1] > 0 and a[1, 256] == -w[50, 1] and b[1] == w[50, 1] * log_t[1]
    assert a[4 + 9, 9] == a[4 + 9, 11] == -a[4 + 9, 10] / 2 == 10 and a[-1, 128] == 1


@pytest.mark.parametrize("name", sorted(CURVES))
def test_a_jpeg_bracket_with_clipped_regions(name):
    truth = CURVES[name]
    photos = _bracket(truth, quality=90)
    got = crf.calibrate_response(photos, EV)
    assert _inverse_error(got, truth) < (0.3 if "S" in name else 0.15)
    # OpenCV's, which counts the JPEG's ringing around the clipped patch, is far off.
    assert _inverse_error(got, truth) < _inverse_error(_opencv(photos), truth) / 3
    # Deterministic: the same photos give the same curve.
    np.testing.assert_array_equal(got, crf.calibrate_response(photos, EV))
    # Read as lossless photos, the ringing bends the curve as it bends OpenCV's.
    assert _inverse_error(crf.calibrate_response(photos, EV, lossy=False), truth) > 3 * (
        _inverse_error(got, truth))


@pytest.mark.parametrize("photos, ev, message", [
    (1, [0.0], "at least 2 photos"),
    (2, [0.0], "each with its exposure"),
    (2, [0.0, 0.0], "same exposure"),
    (2, [0.0, 0.5], "span"),
    (2, [0.0, float("nan")], "finite"),
    (3, [-2.0, 0.0, 100.0], "stops apart"),
    (3, [-2.0, 0.0, 1e6], "not a photo's"),
    (3, [-2.0, 0.0, 1e300], "not a photo's"),
])
def test_bad_calibration_sets(photos, ev, message):
    images = _bracket(crf.srgb_crf())[:photos]
    with pytest.raises(ValueError, match=message):
        crf.calibrate_response(images, ev)


def test_exposures_that_do_not_match_the_photos(monkeypatch):
    photos = _bracket(crf.srgb_crf())
    # Given brightest first with rising exposures (or one exposure swapped): refused, where the
    # solve alone returned a step curve that linearises every code to the clip.
    with pytest.raises(ValueError, match=r"photo 2 \(EV \+0\) is darker than photo 1"):
        crf.calibrate_response(photos[::-1], EV)
    with pytest.raises(ValueError, match="do not match"):
        crf.calibrate_response([photos[0], photos[2], photos[1]], EV)
    with pytest.raises(ValueError, match="almost identical"):
        crf.calibrate_response([photos[1], photos[1]], [0.0, 2.0])
    # Exposures of two scenes: their codes do not order the pixels alike (Spearman's rank
    # correlation against SciPy's), where one scene's exposures do.
    other = _bracket(crf.srgb_crf(), seed=1)
    with pytest.raises(ValueError, match="do not show one still scene"):
        crf.calibrate_response([photos[0], other[1], photos[2]], EV)
    a, b = (np.round(np.asarray(p) * 255).astype(np.uint8) for p in (photos[0], other[1]))
    both = (a > 10) & (a < 245) & (b > 10) & (b < 245)
    assert crf.rank_agreement(a, b) == pytest.approx(
        scipy.stats.spearmanr(a[both], b[both]).statistic, abs=1e-9)
    assert crf.rank_agreement(a, b) < crf.MIN_RANK_AGREEMENT
    c = np.round(np.asarray(photos[1]) * 255).astype(np.uint8)
    assert crf.rank_agreement(a, c) > 0.9
    # One exposure far off (the last photo given 10 stops above the middle one instead of 2, or
    # the first 5 below): the solve bends without failing, and the steps between neighbouring
    # photos through the bent curve no longer agree with the exposures.
    for curve in CURVES.values():
        for ev in ([-2.0, 0.0, 10.0], [-5.0, 0.0, 2.0]):
            with pytest.raises(ValueError, match="stops apart through the solved response"):
                crf.calibrate_response(_bracket(curve), ev, lossy=False)
    # Given in any order with their own exposures, the same curve.
    np.testing.assert_array_equal(crf.calibrate_response(photos[::-1], EV[::-1]),
                                  crf.calibrate_response(photos, EV))
    # Whatever else drives the solve to a degenerate curve is refused, not returned.
    monkeypatch.setattr(crf, "_debevec_solve", lambda *a: np.linspace(-1e4, 0.0, 256))
    with pytest.raises(ValueError, match="degenerate"):
        crf.calibrate_response(photos, EV)
    monkeypatch.setattr(crf, "_debevec_solve", lambda *a: np.linspace(0.0, 1e3, 256))
    with pytest.raises(ValueError, match="degenerate"):
        crf.calibrate_response(photos, EV)


def test_photos_without_information():
    with pytest.raises(ValueError, match="black or clipped"):
        crf.calibrate_response([np.zeros((40, 40, 3)), np.ones((40, 40, 3))], [0.0, 2.0])
    with pytest.raises(ValueError, match="one size"):
        crf.calibrate_response([np.zeros((40, 40, 3)), np.zeros((40, 41, 3))], [0.0, 2.0])


def _save_jpeg(path, image, t=None, n=None, iso=None, make=None, model=None):
    exif = Image.Exif()
    for tag, value in ((0x010F, make), (0x0110, model)):
        if value is not None:
            exif[tag] = value
    ifd = exif.get_ifd(0x8769)
    if t is not None:
        ifd[0x829A] = IFDRational(*t)
    if n is not None:
        ifd[0x829D] = IFDRational(*n)
    if iso is not None:
        ifd[0x8827] = iso
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path, quality=95, exif=exif)


def test_exif_exposure(tmp_path):
    image = np.full((40, 40, 3), 0.5)
    _save_jpeg(tmp_path / "a.jpg", image, t=(1, 250), n=(28, 10), iso=200)
    assert hio.exif_exposure(tmp_path / "a.jpg") == pytest.approx(np.log2(200 / 250 / 2.8**2))
    _save_jpeg(tmp_path / "b.jpg", image, t=(1, 60))  # no ISO, no f-number: time alone
    assert hio.exif_exposure(tmp_path / "b.jpg") == pytest.approx(np.log2(1 / 60))
    _save_jpeg(tmp_path / "c.jpg", image)
    assert hio.exif_exposure(tmp_path / "c.jpg") is None


def test_exif_camera(tmp_path):
    image = np.full((16, 16, 3), 0.5)
    for make, model, name in (("Canon", "Canon EOS R5", "Canon EOS R5"),
                              ("NIKON CORPORATION", "NIKON D850", "NIKON CORPORATION NIKON D850"),
                              ("Apple\0", "  iPhone 13  Pro\0\0", "Apple iPhone 13 Pro"),
                              ("FUJIFILM", None, "FUJIFILM"), (None, None, None)):
        _save_jpeg(tmp_path / "a.jpg", image, make=make, model=model)
        assert hio.exif_camera(tmp_path / "a.jpg") == name
    hio.write_ldr(tmp_path / "a.png", image)
    assert hio.exif_camera(tmp_path / "a.png") is None
    with pytest.raises(hio.ImageIOError, match="no such file"):
        hio.exif_camera(tmp_path / "missing.jpg")


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "hdr_jax.cli", "calibrate", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def test_cli_writes_the_response_file(tmp_path):
    truth = crf.gamma_crf(2.6)
    names = []
    for e, photo in zip(EV, _bracket(truth)):
        names.append(f"ev{e:+.0f}.png")
        hio.write_ldr(tmp_path / names[-1], photo)
    r = _cli(*names, "-o", "curve.txt", "--ev", "-2", "0", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "--response curve.txt" in r.stdout
    got = crf.parse_response(str(tmp_path / "curve.txt"))
    assert _inverse_error(got, truth) < 0.1
    # PNGs are lossless: calibrated with the codes next to the clipped patch.
    np.testing.assert_allclose(got, crf.calibrate_response(
        [hio.read_ldr(tmp_path / n) for n in names], EV, lossy=False), atol=2e-6)
    before = (tmp_path / "curve.txt").read_bytes()
    # An existing curve is kept without --overwrite, and replaced with it.
    r = _cli(*names, "-o", "curve.txt", "--ev", "-2", "0", "2", cwd=tmp_path)
    assert r.returncode == 1 and "exists" in r.stderr and r.stderr.count("\n") == 1
    assert (tmp_path / "curve.txt").read_bytes() == before
    r = _cli(*names, "-o", "curve.txt", "--ev=-2,0,2", "--overwrite", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # Exposures as fractions and in e-notation, negative ones too, are the same numbers.
    r = _cli(*names, "-o", "curve.txt", "--ev", "-4/2", "0", "+2e0", "--overwrite", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "curve.txt").read_bytes() == before
    # Mixed fractions as cameras print them, with commas between the photos.
    r = _cli(*names, "-o", "curve.txt", "--ev", "-1 3/3, 0,", "+1 1/1", "--overwrite",
             cwd=tmp_path)
    assert r.returncode == 1 and "--ev" in r.stderr and r.stderr.count("\n") == 1
    r = _cli(*names, "-o", "curve.txt", "--ev=-2 0/3, 0, +1 5/5", "--overwrite", cwd=tmp_path)
    assert r.returncode == 1 and "--ev" in r.stderr
    r = _cli(*names, "-o", "curve.txt", "--ev", "-2 0/3,0,  +2 0/9", "--overwrite", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "curve.txt").read_bytes() == before
    # Without commas, spaces separate the photos: the count is wrong, and the line says why.
    r = _cli(*names, "-o", "bad.txt", "--ev", "-1", "1/3", "0", "+1", "1/3", cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "5 exposures for 3 photos; a mixed fraction such as -1 1/3 needs commas" in r.stderr
    # An input is never the output, whatever the flags.
    original = (tmp_path / names[0]).read_bytes()
    r = _cli(*names, "-o", names[0], "--ev", "-2", "0", "2", "--overwrite", cwd=tmp_path)
    assert r.returncode == 1 and "is an input" in r.stderr
    assert (tmp_path / names[0]).read_bytes() == original
    # Wrong exposures: one line each, nothing written.
    for ev, message in ((["-2", "0"], "2 exposures for 3 photos"), (["-2", "x", "2"], "--ev"),
                        (["-2", "0", "2/0"], "--ev"), (["-2e0", "0", "-1/x"], "--ev"),
                        (["0", "0.2", "0.4"], "span"), (["-2", "0", "100"], "stops apart"),
                        (["-2", "0", "1e308"], "an exposure of 1e+308 stops is not a photo's"),
                        (["2", "0", "-2"], "do not match the photos"),
                        (["-2", "0", "10"], "do not match the photos")):
        r = _cli(*names, "-o", "bad.txt", "--ev", *ev, cwd=tmp_path)
        assert r.returncode == 1 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert not (tmp_path / "bad.txt").exists()
    # PNGs carry no exposure time: --ev is asked for.
    r = _cli(*names, "-o", "bad.txt", cwd=tmp_path)
    assert r.returncode == 1 and "--ev" in r.stderr and not (tmp_path / "bad.txt").exists()
    r = _cli(names[0], "-o", "bad.txt", "--ev", "0", cwd=tmp_path)
    assert r.returncode == 1 and "at least 2 photos" in r.stderr
    r = _cli(names[0], names[1], names[0], "-o", "bad.txt", "--ev", "-2", "0", "2", cwd=tmp_path)
    assert r.returncode == 1 and "given twice" in r.stderr
    # A black-and-white conversion among colour photos (its own curve, one channel): refused.
    hio.write_ldr(tmp_path / "grey.png", np.repeat(
        hio.read_ldr(tmp_path / names[2]).mean(-1, keepdims=True), 3, axis=-1))
    r = _cli(names[0], names[1], "grey.png", "-o", "bad.txt", "--ev", "-2", "0", "2",
             cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "grey.png is black-and-white and ev-2.png is in colour" in r.stderr
    assert not (tmp_path / "bad.txt").exists()
    r = _cli(*names, "-o", "bad.npy", "--ev", "-2", "0", "2", cwd=tmp_path)
    assert r.returncode == 1 and "as text" in r.stderr and not (tmp_path / "bad.npy").exists()
    r = _cli(*names, "-o", "bad.png", "--ev", "-2", "0", "2", cwd=tmp_path)
    assert r.returncode == 1 and "not as an image" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize("text, stops", [
    ("-2", -2.0), ("+0.7", 0.7), ("-1e0", -1.0), ("-2/3", -2 / 3), ("+1/3", 1 / 3),
    ("-1 1/3", -4 / 3), ("+1 2/3", 5 / 3), ("2 1/2", 2.5), ("-0 1/3", -1 / 3),
    (" -1  1/3 ", -4 / 3),
])
def test_stops_reads_numbers_and_a_cameras_fractions(text, stops):
    from hdr_jax.cli import _stops

    assert _stops(text) == pytest.approx(stops, abs=1e-12)


@pytest.mark.parametrize("text", ["1 4/3", "1 -1/3", "1.5 1/3", "1 2", "+-1 1/3", "1 2 1/3",
                                  "x", "1 1/0", "1/0"])
def test_stops_refuses_what_is_not_one_exposure(text):
    from hdr_jax.cli import _stops

    with pytest.raises((ValueError, ZeroDivisionError)):
        _stops(text)


def test_cli_takes_a_folder_or_a_pattern_in_name_order(tmp_path):
    truth = crf.gamma_crf(2.2)
    (tmp_path / "bracket").mkdir()
    for name, photo in zip(("a.png", "b.png", "c.png"), _bracket(truth)):
        hio.write_ldr(tmp_path / "bracket" / name, photo)
    (tmp_path / "bracket" / "notes.txt").write_text("not a photo")
    ev = ["--ev", "-2", "0", "2"]
    files = [f"bracket/{n}" for n in ("a.png", "b.png", "c.png")]
    assert _cli(*files, "-o", "files.txt", *ev, cwd=tmp_path).returncode == 0
    for args, out in ((["bracket"], "folder.txt"), (["bracket/*.png"], "pattern.txt")):
        r = _cli(*args, "-o", out, *ev, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / out).read_text() == (tmp_path / "files.txt").read_text()
    # Name order is not exposure order here: the error says in which order the photos were read.
    (tmp_path / "bracket" / "a.png").rename(tmp_path / "bracket" / "d.png")
    r = _cli("bracket", "-o", "bad.txt", *ev, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "do not match the photos" in r.stderr and "order read: bracket/b.png, bracket/c.png" \
        ", bracket/d.png" in r.stderr
    assert not (tmp_path / "bad.txt").exists()
    (tmp_path / "empty").mkdir()
    r = _cli("empty", "-o", "bad.txt", *ev, cwd=tmp_path)
    assert r.returncode == 1 and "no LDR images" in r.stderr and r.stderr.count("\n") == 1


def test_bracket_overlap_counts_pixels_well_exposed_in_two_photos():
    a = np.full((10, 10, 3), 128, np.uint8)
    b = a.copy()
    b[:, 5:] = 255  # clipped right half
    c = np.zeros_like(a)
    # Lossless: only the left half is well exposed in two photos (a and b).
    assert crf.bracket_overlap([a, b, c], lossy=False) == pytest.approx(0.5)
    # Lossy: b's pixels within 2 px of its clipped half do not count (columns 3-4).
    assert crf.bracket_overlap([a, b, c], lossy=True) == pytest.approx(0.3)
    # The least share over the channels: b's blue channel black leaves blue with no overlap.
    b[..., 2] = 0
    assert crf.bracket_overlap([a, b, c], lossy=False) == 0.0
    assert crf.bracket_overlap([a, a / 255.0, c], lossy=False) == 1.0  # floats read as codes


def test_cli_warns_on_a_bracket_with_little_overlap(tmp_path):
    truth = crf.gamma_crf(2.2)
    rad = _scene()

    def write(gain, stem):
        names = []
        for e in EV:
            names.append(f"{stem}{e:+.0f}.jpg")
            photo = crf.apply_crf(truth, np.clip(rad * gain * 2.0**e, 0, 1))
            hio.write_ldr(tmp_path / names[-1], np.asarray(photo, np.float32))
        return names

    ev = ["--ev", "-2", "0", "2"]
    # EV 0 96 % clipped and EV +2 all but clipped: under 1 % of the pixels are well exposed in
    # two photos. The curve is written, with a warning.
    few = write(128.0, "clipped")
    assert crf.bracket_overlap([hio.read_ldr(tmp_path / n) for n in few]) < 0.01
    r = _cli(*few, "-o", "few.txt", *ev, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "warning: only" in r.stderr and r.stderr.count("\n") == 1
    assert (tmp_path / "few.txt").exists()
    r = _cli(*write(4.0, "fine"), "-o", "fine.txt", *ev, cwd=tmp_path)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr


def test_cli_reads_the_exposures_from_exif(tmp_path):
    truth = crf.s_curve_crf(6.0, gamma=2.2)
    times = [(1, 1000), (1, 250), (1, 60)]  # about -2, 0, +2 stops
    names = []
    for t, photo in zip(times, _bracket(truth)):
        names.append(f"t{t[1]}.jpg")
        _save_jpeg(tmp_path / names[-1], photo, t=t, n=(8, 1), iso=100)
    r = _cli(*names, "-o", "curve.txt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = crf.parse_response(str(tmp_path / "curve.txt"))
    assert _inverse_error(got, truth) < 0.3
    # JPEGs are lossy: the ringing around the clipped patch is left out.
    ev = [hio.exif_exposure(tmp_path / n) for n in names]
    np.testing.assert_allclose(got, crf.calibrate_response(
        [hio.read_ldr(tmp_path / n) for n in names], ev, lossy=True), atol=2e-6)
    assert all(hio.is_lossy(tmp_path / n) for n in names)


def test_cli_files_the_curve_under_the_camera(tmp_path):
    """``-o FOLDER``: the curve is written there under the camera the photos' EXIF names, the
    file ``--response FOLDER`` reads for that camera's photos."""
    from hdr_jax import cli

    truth = crf.s_curve_crf(6.0, gamma=2.2)
    times = [(1, 1000), (1, 250), (1, 60)]
    (tmp_path / "curves").mkdir()
    for camera in ("cam", "mixed", "anon"):
        (tmp_path / camera).mkdir()
    for i, (t, photo) in enumerate(zip(times, _bracket(truth))):
        _save_jpeg(tmp_path / "cam" / f"{i}.jpg", photo, t=t, make="Canon", model="Canon EOS R5")
        _save_jpeg(tmp_path / "mixed" / f"{i}.jpg", photo, t=t, make="Canon",
                   model="Canon EOS R5" if i else "Canon EOS R6")
        _save_jpeg(tmp_path / "anon" / f"{i}.jpg", photo, t=t)
    r = _cli("cam", "-o", "curves", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    filed = tmp_path / "curves" / cli.camera_file_name("Canon EOS R5")
    assert filed.name == "Canon EOS R5.txt" and f"--response {filed.relative_to(tmp_path)}" in (
        r.stdout)
    got = crf.parse_response(str(filed))
    ev = [hio.exif_exposure(tmp_path / "cam" / f"{i}.jpg") for i in range(3)]
    np.testing.assert_allclose(got, crf.calibrate_response(
        [hio.read_ldr(tmp_path / "cam" / f"{i}.jpg") for i in range(3)], ev, lossy=True),
        atol=2e-6)
    r = _cli("cam", "-o", "curves", cwd=tmp_path)  # filed already: kept without --overwrite
    assert r.returncode == 1 and "exists" in r.stderr and r.stderr.count("\n") == 1
    for folder, message in (("mixed", "name different cameras (Canon EOS R5, Canon EOS R6)"),
                            ("anon", "0.jpg names no camera in its EXIF")):
        r = _cli(folder, "-o", "curves", cwd=tmp_path)
        assert r.returncode == 1 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert [p.name for p in (tmp_path / "curves").iterdir()] == ["Canon EOS R5.txt"]
    # Names a file system would read otherwise are made safe, and stay one file a camera.
    assert cli.camera_file_name("Maker ../x/y: Z") == "Maker .._x_y_ Z.txt"
    assert cli.camera_file_name("...") == "_.txt"


def test_cli_lossy_flag_for_a_png_saved_from_a_jpeg(tmp_path):
    truth = crf.gamma_crf(2.6)
    names = []
    for e, photo in zip(EV, _bracket(truth, quality=90)):
        names.append(f"ev{e:+.0f}.png")
        hio.write_ldr(tmp_path / names[-1], photo)
    ev = ["--ev", "-2", "0", "2"]
    assert _cli(*names, "-o", "plain.txt", *ev, cwd=tmp_path).returncode == 0
    r = _cli(*names, "-o", "lossy.txt", *ev, "--lossy", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    plain, lossy = (_inverse_error(crf.parse_response(str(tmp_path / n)), truth)
                    for n in ("plain.txt", "lossy.txt"))
    # Read as lossless, the JPEG's ringing bends the curve; --lossy leaves it out.
    assert lossy < 0.15 and plain > 3 * lossy


def test_is_lossy(tmp_path):
    image = np.full((16, 16, 3), 0.5, np.float32)
    hio.write_ldr(tmp_path / "a.png", image)
    hio.write_ldr(tmp_path / "a.jpg", image)
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(tmp_path / "raw.tif")
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(tmp_path / "j.tif",
                                                                compression="jpeg")
    assert [hio.is_lossy(tmp_path / n) for n in ("a.png", "a.jpg", "raw.tif", "j.tif")] == [
        False, True, False, True]
    with pytest.raises(hio.ImageIOError):
        hio.is_lossy(tmp_path / "missing.png")


def test_calibration_study_runs_and_reports(fake_hdr_dir, tiny_weights, tmp_path):
    import json

    out = tmp_path / "cal"
    r = subprocess.run([sys.executable, "-m", "experiments.calibration_study", "--hdr_dir",
                        str(fake_hdr_dir), "--out", str(out), "--size", "64", "--limit", "1",
                        "--pipeline", "--weights", str(tiny_weights)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    assert [c["curve"] for c in res["curves"]] == [
        "sRGB", "gamma 1.8", "gamma 2.2", "gamma 2.6", "gamma 1.8 + S", "gamma 2.2 + S",
        "gamma 2.6 + S"]
    assert all(0 <= v < 1.0 for c in res["curves"] for v in c["rms_log2"].values())
    s = res["summary"]
    # On sRGB photos the true inverse response is inverse sRGB.
    assert s["sRGB"]["true inverse response (oracle)"] == s["sRGB"]["inverse sRGB"]
    row = "the pipeline, --response calibrated from the PNG bracket"
    assert all(np.isfinite(s[f][row]["pu21"]) for f in s)
    assert row in (out / "results.md").read_text()
    assert len(res["inputs"]) == res["protocol"]["inputs"] == 9


def test_cli_a_full_disk_is_one_line(tmp_path, monkeypatch, capfd):
    import errno
    import pathlib

    from conftest import cli_in_process

    names = []
    for e, photo in zip(EV, _bracket(crf.gamma_crf(2.2))):
        names.append(tmp_path / f"ev{e:+.0f}.png")
        hio.write_ldr(names[-1], photo)

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    rc, err = cli_in_process(["calibrate", *names, "-o", tmp_path / "c.txt", "--ev", "-2", "0",
                              "2"], capfd)
    assert rc == 1 and err.count("\n") == 1 and "No space left on device" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in names)


@pytest.mark.slow
def test_calibration_overlap_study_runs_and_reports(fake_hdr_dir, cli_env, tmp_path):
    import json

    from conftest import run_python_checked

    out = tmp_path / "overlap"
    run_python_checked(["-m", "experiments.calibration_overlap", "--hdr_dir", fake_hdr_dir,
                        "--scenes", "1", "--choice", "1", "--size", "32", "--out", out],
                       cli_env, timeout=600)
    res = json.loads((out / "results.json").read_text())
    # 2 views x 3 curves (no EMoR folder) x 5 exposure sets x 4 clip fractions x PNG / JPEG.
    assert len(res["inputs"]) == 2 * 3 * 5 * 4 * 2 and res["check"] == []
    s = res["summary"]["choice, PNG"]
    assert sum(b["n"] for b in s["bins"]) + s["refused"] == s["brackets"] == 120
    for x in res["inputs"]:
        assert 0.0 <= x["overlap"] <= 1.0
        assert (x["error"] is None) == (x["refused"] is not None)
    assert "Warned (overlap below 1.0%)" in (out / "results.md").read_text()


def _shot(curve, tmp_path, *, exposure=1.6, seed=0, quality=92, gains=(1.0, 1.0, 1.0)):
    """One shot of a scene saved as a raw file (DNG, saturating log2(``exposure``) stops above
    the photo's clip) and as the camera's JPEG through ``curve`` (with its own white balance
    ``gains`` on top of the raw decoder's): (raw path, JPEG path)."""
    from hdr_jax.data.testing import fake_radiance, write_dng

    scene = fake_radiance(np.random.default_rng(seed), 480, 640, stops=10).astype(np.float64)
    scene = scene / np.quantile(scene.max(-1), 0.97)  # the raw file saturates on 3 %
    raw = write_dng(tmp_path / f"IMG_{seed}.DNG", scene, black=512, white=16383,
                    neutral=(0.5, 1.0, 0.7))
    codes = np.asarray(crf.apply_crf(curve, np.clip(scene * exposure * np.asarray(gains), 0, 1)))
    jpg = tmp_path / f"IMG_{seed}.JPG"
    cv2.imwrite(str(jpg), np.round(codes[..., ::-1] * 255).astype(np.uint8),
                [cv2.IMWRITE_JPEG_QUALITY, quality])
    return raw, jpg


def _pair(raw, jpg):
    return crf.srgb_decode(hio.read_ldr(raw)), hio.read_ldr(jpg)


@pytest.mark.parametrize("name", sorted(CURVES))
def test_recovers_the_curve_from_a_raw_file_and_its_jpeg(name, tmp_path):
    """One shot as raw + JPEG gives the JPEG's response: its irradiance read per pixel by the
    sensor, its clip where the JPEG's clipped regions begin, which lies below the sensor's."""
    truth = CURVES[name]
    got = crf.response_from_raw_pair(*_pair(*_shot(truth, tmp_path)))
    assert crf.is_valid_crf(got)
    assert crf.inverse_error(got, truth) < 0.12
    others = [crf.inverse_error(got, c) for n, c in CURVES.items() if n != name]
    assert min(others) > 2 * crf.inverse_error(got, truth)
    # A camera whose JPEG has its own white balance, a photo at another size: the same curve.
    warm = crf.response_from_raw_pair(*_pair(*_shot(truth, tmp_path, gains=(1.15, 1.0, 0.9))))
    assert crf.inverse_error(warm, truth) < 0.15
    linear, photo = _pair(*_shot(truth, tmp_path))
    small = cv2.resize(photo, (480, 360), interpolation=cv2.INTER_AREA)
    assert crf.inverse_error(crf.response_from_raw_pair(linear, small), truth) < 0.15


def test_a_raw_file_and_a_photo_of_another_shot_are_refused(tmp_path):
    truth = crf.s_curve_crf(6.0, gamma=2.2)
    linear, _ = _pair(*_shot(truth, tmp_path, seed=0))
    _, other = _pair(*_shot(truth, tmp_path, seed=1))
    with pytest.raises(ValueError, match="not the same shot"):
        crf.response_from_raw_pair(linear, other)
    with pytest.raises(ValueError, match="not the same framing"):
        crf.response_from_raw_pair(linear, np.rot90(other))
    flat = np.full_like(linear, 0.2)
    with pytest.raises(ValueError, match="shows codes"):
        crf.response_from_raw_pair(flat, np.full_like(linear, 0.5))
    with pytest.raises(ValueError, match="RGB image"):
        crf.response_from_raw_pair(linear[..., 0], other)
    with pytest.raises(ValueError, match="not finite"):
        crf.response_from_raw_pair(np.where(linear > 0.5, np.nan, linear), other)


def test_cli_calibrates_a_raw_file_and_its_jpeg(tmp_path):
    truth = crf.s_curve_crf(6.0, gamma=2.2)
    raw, jpg = _shot(truth, tmp_path)
    r = _cli(jpg.name, raw.name, "-o", "camera.txt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"response of {jpg.name}, read against its raw file {raw.name}" in r.stdout
    got = crf.parse_response(str(tmp_path / "camera.txt"))
    assert crf.inverse_error(got, truth) < 0.12
    np.testing.assert_allclose(got, crf.response_from_raw_pair(*_pair(raw, jpg)), atol=2e-6)
    # The card's folder with the one shot: the same.
    (tmp_path / "card").mkdir()
    for p in (raw, jpg):
        p.rename(tmp_path / "card" / p.name)
    r = _cli("card", "-o", "folder.txt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "folder.txt").read_text() == (tmp_path / "camera.txt").read_text()
    # --ev has no place in one shot; another shot's JPEG does not calibrate: one line each.
    r = _cli("card", "-o", "bad.txt", "--ev", "0", "1", cwd=tmp_path)
    assert r.returncode == 1 and "--ev does not apply" in r.stderr and r.stderr.count("\n") == 1
    _, other = _shot(truth, tmp_path, seed=1)
    r = _cli(f"card/{raw.name}", other.name, "-o", "bad.txt", cwd=tmp_path)
    assert r.returncode == 1 and "not the same shot" in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") <= 1 and not (tmp_path / "bad.txt").exists()
