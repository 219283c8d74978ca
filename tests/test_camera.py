"""Tests for hdr_jax.camera: CRFs, brackets, panorama crops."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import expit
from skimage.color import rgb2xyz, xyz2rgb

from hdr_jax.camera import (
    GRID,
    EMoR,
    apply_crf,
    apply_inverse_crf,
    default_training_crfs,
    exposure_times,
    expose,
    gamma_crf,
    invert_crf,
    load_dorf,
    load_emor,
    normalise_radiance,
    parametric_crfs,
    perspective_crop,
    random_views,
    s_curve_crf,
    sample_emor_crfs,
    select_representative_crfs,
    simulate_bracket,
    simulate_bracket_jax,
    srgb_crf,
)
from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera import exposure
from hdr_jax.camera.exposure import TAU

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CRF_DIR = SHARED / "crf"
HDRI_DIR = SHARED / "hdri"
X = np.linspace(0.0, 1.0, 1024)


def assert_valid_crf(f: np.ndarray) -> None:
    assert f.shape == (1024,) and f.dtype == np.float32
    assert f[0] == 0.0 and f[-1] == 1.0
    assert np.all(np.diff(f) >= 0)


# ------------------------------------------------------------------------------------------
# CRFs
# ------------------------------------------------------------------------------------------


def test_grid():
    np.testing.assert_allclose(GRID, np.arange(1024) / 1023, atol=1e-7)


def test_parametric_crfs_valid_and_distinct():
    crfs = parametric_crfs()
    assert {"sRGB", "gamma+1.4", "gamma+2.2"} <= set(crfs) and len(crfs) >= 8
    for f in crfs.values():
        assert_valid_crf(f)
    stack = np.stack(list(crfs.values()))
    d = np.abs(stack[:, None] - stack[None]).max(-1)
    assert d[~np.eye(len(stack), dtype=bool)].min() > 0.01


def test_gamma_crf_formula():
    np.testing.assert_allclose(gamma_crf(1.4), X ** (1 / 1.4), atol=1e-6)
    xs = np.random.default_rng(0).uniform(0.05, 1.0, 500)
    np.testing.assert_allclose(apply_crf(gamma_crf(2.2), xs), xs ** (1 / 2.2), atol=2e-5)


def test_srgb_matches_standard():
    f = srgb_crf()
    ref = np.where(X <= 0.0031308, 12.92 * X, 1.055 * X ** (1 / 2.4) - 0.055)
    np.testing.assert_allclose(f, ref, atol=1e-6)
    np.testing.assert_allclose(apply_crf(f, np.array([0.18, 0.5])), [0.4613, 0.7354], atol=2e-4)
    # scikit-image linearises sRGB independently: Y of a grey pixel is the linear value.
    grey = np.repeat(f[:, None], 3, axis=1)[None]
    np.testing.assert_allclose(rgb2xyz(grey)[0, :, 1], X, atol=2e-4)


def test_s_curve_shape():
    c, p = 6.0, 0.45
    f = s_curve_crf(c, p)
    assert_valid_crf(f)
    y = X ** (1 / 2.2)
    ref = (expit(c * (y - p)) - expit(-c * p)) / (expit(c * (1 - p)) - expit(-c * p))
    np.testing.assert_allclose(f, ref, atol=1e-6)
    # S-shape in the gamma-encoded domain: steeper than the gamma curve at the pivot, flatter at 1.
    slope = np.gradient(f, y)
    i_p, i_top = np.searchsorted(y, p), np.searchsorted(y, 0.97)
    assert slope[i_p] > 1.3 and slope[i_top] < 0.7
    with pytest.raises(ValueError):
        s_curve_crf(-1.0)


def test_apply_crf_numpy_jax_jit_match_np_interp():
    f = s_curve_crf(5.0)
    x = np.random.default_rng(1).uniform(-0.2, 1.2, (4, 5, 3)).astype(np.float32)
    ref = np.interp(np.clip(x, 0, 1), GRID, f)
    out_np = apply_crf(f, x)
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float32
    np.testing.assert_allclose(out_np, ref, atol=1e-6)
    out_jit = jax.jit(apply_crf)(jnp.asarray(f), jnp.asarray(x))
    assert isinstance(out_jit, jax.Array)
    np.testing.assert_allclose(np.asarray(out_jit), ref, atol=1e-6)


@pytest.mark.parametrize("name", ["sRGB", "gamma+2.2", "scurve+8@0.55"])
def test_invert_crf_roundtrip(name):
    f = parametric_crfs()[name]
    g = invert_crf(f)
    assert_valid_crf(g)
    # Independent reference for a strictly increasing f: np.interp with swapped axes.
    np.testing.assert_allclose(g, np.interp(X, f.astype(np.float64), X), atol=1e-5)
    x = np.random.default_rng(2).uniform(0.0, 1.0, 1000).astype(np.float32)
    np.testing.assert_allclose(apply_inverse_crf(f, apply_crf(f, x)), x, atol=2e-3)
    np.testing.assert_allclose(jax.jit(invert_crf)(jnp.asarray(f)), g, atol=1e-6)


def test_invert_crf_flat_parts():
    # A toe (flat at 0 up to x = 0.1) and a shoulder (saturated from x = 0.8).
    f = np.clip((X - 0.1) / 0.7, 0.0, 1.0).astype(np.float32)
    g = invert_crf(f)
    assert_valid_crf(g)
    z = np.linspace(0.01, 0.99, 99)
    np.testing.assert_allclose(apply_crf(f, apply_crf(g, z)), z, atol=1e-3)
    np.testing.assert_allclose(apply_crf(g, z), 0.1 + 0.7 * z, atol=2e-3)
    np.testing.assert_allclose(np.asarray(invert_crf(jnp.asarray(f))), g, atol=1e-6)


# --- a response the user names -----------------------------------------------------------


def test_parse_response_names_and_files(tmp_path):
    np.testing.assert_array_equal(crf_lib.parse_response("sRGB"), crf_lib.srgb_crf())
    np.testing.assert_array_equal(crf_lib.parse_response(" gamma:2.2 "), crf_lib.gamma_crf(2.2))
    # A file of N samples is interpolated linearly onto the 1024-sample grid (np.interp).
    xs = np.linspace(0.0, 1.0, 33)
    samples = xs ** (1 / 1.8)
    np.save(tmp_path / "f.npy", samples)
    (tmp_path / "f.txt").write_text("\n".join(f"{v:.9f}" for v in samples) + "\n")
    (tmp_path / "f.csv").write_text(",".join(f"{v:.9f}" for v in samples))
    # A spreadsheet's CSV export may start with a byte-order mark.
    (tmp_path / "bom.csv").write_text(",".join(f"{v:.9f}" for v in samples), encoding="utf-8-sig")
    expected = np.interp(X, xs, samples)
    for name in ("f.npy", "f.txt", "f.csv", "bom.csv"):
        curve = crf_lib.parse_response(str(tmp_path / name))
        assert crf_lib.is_valid_crf(curve)
        np.testing.assert_allclose(curve, expected, atol=1e-6)
    np.save(tmp_path / "col.npy", samples[:, None])  # one column is fine
    np.testing.assert_allclose(crf_lib.parse_response(str(tmp_path / "col.npy")), expected,
                               atol=1e-6)


@pytest.mark.parametrize(
    "content, match",
    [
        ("0 0.5 0.4 1", "non-decreasing"),
        ("0.1 0.5 1", "from 0 to 1"),
        ("0 0.5 2", "from 0 to 1"),
        ("0.0", "at least 2"),
        ("0 nan 1", "non-finite"),
        ("0 half 1", "not a list of numbers"),
    ],
)
def test_parse_response_rejects_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as e:
        crf_lib.parse_response(str(path))
    assert "\n" not in str(e.value) and str(path) in str(e.value)


@pytest.mark.parametrize(
    "spec, match",
    [("gamma:", "needs a number"), ("gamma:0", r"\[0.2, 10\]"), ("gamma:inf", r"\[0.2, 10\]"),
     ("no-such-file.txt", "neither srgb nor gamma:G nor a file")],
)
def test_parse_response_rejects_bad_names(spec, match):
    with pytest.raises(ValueError, match=match):
        crf_lib.parse_response(spec)


def test_resample_crf_rejects_a_table():
    with pytest.raises(ValueError, match="one column or row"):
        crf_lib.resample_crf(np.zeros((3, 3)))


@pytest.mark.parametrize("values", [np.array([0.0, 0.5 + 1j, 1.0]), np.array([False, True]),
                                    np.array(["0", "1"])])
def test_resample_crf_rejects_values_that_are_not_real_numbers(tmp_path, values):
    with pytest.raises(ValueError, match="real numbers"):
        crf_lib.resample_crf(values)
    np.save(tmp_path / "curve.npy", values)  # through --response's file reader, one line
    with pytest.raises(ValueError, match="curve.npy: a response must hold real numbers"):
        crf_lib.parse_response(str(tmp_path / "curve.npy"))


# --- file formats --------------------------------------------------------------------------


def _write_blocks(path: Path, blocks: list[tuple[str, np.ndarray]]) -> None:
    """The EMoR text layout: header line, then 4 values per line in C '%e' with 3-digit
    exponents, CRLF line ends (as in the distributed files)."""
    lines = []
    for name, vals in blocks:
        lines.append(name)
        for i in range(0, len(vals), 4):
            row = [f"{v:.6e}" for v in vals[i:i + 4]]
            row = [s[:-2] + "0" + s[-2:] if s[-3] in "+-" else s for s in row]
            lines.append("   ".join(row))
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())


def _synthetic_emor(rng: np.random.Generator, n_basis: int = 3):
    f0 = X ** (1 / 2.2)
    raw = np.stack([np.sin((i + 1) * np.pi * X) * (1 + 0.3 * X) for i in range(n_basis)])
    q, _ = np.linalg.qr(raw.T)  # orthonormal columns that still vanish at 0 and 1
    basis = q.T * np.sign(q.T[:, 1:2])
    g0 = X ** 2.2
    return f0, basis, g0, basis[::-1].copy()


def test_load_emor_synthetic(tmp_path):
    f0, basis, g0, hinv = _synthetic_emor(np.random.default_rng(0))
    h_blocks = [(f"h({i + 1})=", b) for i, b in enumerate(basis)]
    hinv_blocks = [(f"hinv({i + 1})=", b) for i, b in enumerate(hinv)]
    _write_blocks(tmp_path / "emor.txt", [("E = ", X), ("f0 = ", f0)] + h_blocks)
    _write_blocks(tmp_path / "invemor.txt", [("B = ", X), ("g0 = ", g0)] + hinv_blocks)
    for arg in (tmp_path, tmp_path / "emor.txt"):
        emor = load_emor(arg)
        np.testing.assert_allclose(emor.f0, f0, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(emor.basis, basis, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(emor.g0, g0, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(emor.inv_basis, hinv, rtol=1e-6, atol=1e-9)
    (tmp_path / "invemor.txt").unlink()
    assert load_emor(tmp_path).g0 is None


def test_load_emor_malformed(tmp_path):
    f0, basis, _, _ = _synthetic_emor(np.random.default_rng(0), 1)
    good = [("E = ", X), ("f0 = ", f0), ("h(1)=", basis[0])]
    bad_sets = {
        "short": [("E = ", X), ("f0 = ", f0[:1000]), ("h(1)=", basis[0])],
        "header": [("E = ", X), ("g0 = ", f0), ("h(1)=", basis[0])],
        "grid": [("E = ", X ** 2), ("f0 = ", f0), ("h(1)=", basis[0])],
        "blocks": good[:2],
    }
    for name, blocks in bad_sets.items():
        _write_blocks(tmp_path / "emor.txt", blocks)
        with pytest.raises(ValueError):
            load_emor(tmp_path)
    _write_blocks(tmp_path / "emor.txt", good)
    text = (tmp_path / "emor.txt").read_text().replace("9.775171e-004", "9.77x171e-004", 1)
    (tmp_path / "emor.txt").write_text(text)
    with pytest.raises(ValueError, match="not a number"):
        load_emor(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_emor(tmp_path / "missing")


@pytest.mark.skipif(not (CRF_DIR / "emor.txt").is_file(), reason="EMoR data not present")
def test_load_emor_real():
    emor = load_emor(CRF_DIR)
    assert emor.f0.shape == (1024,) and emor.basis.shape == (25, 1024)
    np.testing.assert_allclose(emor.f0[:4], [0.0, 8.833750e-003, 1.497601e-002, 2.023710e-002], atol=1e-8)
    assert emor.f0[-1] == 1.0 and emor.g0 is not None and emor.inv_basis.shape == (25, 1024)
    gram = emor.basis.astype(np.float64) @ emor.basis.T
    np.testing.assert_allclose(gram, np.eye(25), atol=1e-5)
    for f in sample_emor_crfs(emor, 50, np.random.default_rng(0)):
        assert_valid_crf(f)


def test_load_dorf_synthetic(tmp_path):
    irr_coarse = np.linspace(0, 1, 1024)
    irr_warped = irr_coarse ** 1.5  # a non-uniform irradiance grid must be resampled
    curves = [("agfacolor-vista-200CDBlue", irr_coarse, irr_coarse ** (1 / 1.7)),
              ("Gold-200CDBlue", irr_warped, np.sqrt(irr_warped)),
              ("Gold-200CDBlue", irr_coarse, irr_coarse)]
    lines = []
    for name, irr, bri in curves:
        lines += [name, "graph", "I =", " ".join(f"{v:.6e}" for v in irr),
                  "B =", " ".join(f"{v:.6e}" for v in bri)]
    (tmp_path / "dorfCurves.txt").write_text("\n".join(lines) + "\n")
    got = load_dorf(tmp_path / "dorfCurves.txt")
    assert list(got) == ["agfacolor-vista-200CDBlue", "Gold-200CDBlue", "Gold-200CDBlue#2"]
    for f in got.values():
        assert_valid_crf(f)
    np.testing.assert_allclose(got["agfacolor-vista-200CDBlue"], X ** (1 / 1.7), atol=1e-6)
    np.testing.assert_allclose(got["Gold-200CDBlue"][50:], np.sqrt(X[50:]), atol=1e-4)
    np.testing.assert_allclose(got["Gold-200CDBlue#2"], X, atol=1e-6)
    (tmp_path / "bad.txt").write_text("\n".join(lines[:6]).replace("B =", "Q ="))
    with pytest.raises(ValueError):
        load_dorf(tmp_path / "bad.txt")
    (tmp_path / "bad.txt").write_text("\n".join(lines[:5]))
    with pytest.raises(ValueError):
        load_dorf(tmp_path / "bad.txt")


def test_sample_emor_distribution():
    f0, basis, _, _ = _synthetic_emor(np.random.default_rng(0), 3)
    emor = EMoR(f0=f0.astype(np.float32), basis=basis.astype(np.float32))
    rng = np.random.default_rng(3)
    curves = sample_emor_crfs(emor, 300, rng, n_coeffs=3, scale=0.05, decay=0.5)
    assert curves.shape == (300, 1024)
    for f in curves[:20]:
        assert_valid_crf(f)
    # Small coefficients are never rejected: projections recover N(0, (scale decay^i)^2).
    c = (curves - f0) @ basis.T
    np.testing.assert_allclose(c.std(0), [0.05, 0.025, 0.0125], rtol=0.15)
    np.testing.assert_allclose(c.mean(0), 0.0, atol=0.01)
    wide = sample_emor_crfs(emor, 100, np.random.default_rng(4), n_coeffs=3, scale=0.5)
    assert all(np.all(np.diff(f) >= 0) for f in wide)
    again = sample_emor_crfs(emor, 100, np.random.default_rng(4), n_coeffs=3, scale=0.5)
    np.testing.assert_array_equal(wide, again)


def test_kmeans_recovers_clusters():
    rng = np.random.default_rng(5)
    centres = [1.4, 2.2, 3.2]
    gammas = np.concatenate([c + rng.normal(0, 0.02, 30) for c in centres])
    labels = np.repeat(np.arange(3), 30)
    perm = rng.permutation(90)
    curves = np.stack([gamma_crf(g) for g in gammas[perm]])
    labels = labels[perm]
    reps, idx = select_representative_crfs(curves, 3, seed=0, return_indices=True)
    assert reps.shape == (3, 1024)
    assert sorted(labels[idx]) == [0, 1, 2]
    # Darkest response first; each representative sits near its cluster's generating gamma.
    assert list(labels[idx]) == [0, 1, 2]
    for r, c in zip(reps, centres):
        assert_valid_crf(r)
        assert np.abs(r - gamma_crf(c)).max() < 0.02
    # The spline passes close to the member it smooths.
    np.testing.assert_allclose(reps, curves[idx], atol=3e-3)
    # Clusters of two gammas each: the centroid is then no member of its cluster.
    pairs = np.stack([gamma_crf(c + d) for c in centres for d in (-0.15, 0.15) for _ in range(5)])
    cent = select_representative_crfs(pairs, 3, seed=1, use_centroid=True)
    for j, r in enumerate(cent):
        mean = pairs[10 * j:10 * j + 10].mean(0)
        np.testing.assert_allclose(r, mean, atol=2e-3)
        assert np.abs(pairs[10 * j] - mean).max() > 0.01


def test_default_training_crfs_parametric():
    crfs = default_training_crfs()
    assert len(crfs) == 5 and set(crfs) <= set(parametric_crfs())
    means = [f.mean() for f in crfs.values()]
    assert means == sorted(means)
    for f in crfs.values():
        assert_valid_crf(f)


@pytest.mark.skipif(not (CRF_DIR / "emor.txt").is_file(), reason="EMoR data not present")
def test_default_training_crfs_emor():
    crfs = default_training_crfs(CRF_DIR, k=5, seed=0)
    assert list(crfs) == [f"emor-{j}" for j in range(5)]
    stack = np.stack(list(crfs.values()))
    for f in stack:
        assert_valid_crf(f)
    assert np.abs(np.diff(stack, axis=0)).max(-1).min() > 0.01


# ------------------------------------------------------------------------------------------
# Exposure
# ------------------------------------------------------------------------------------------


def test_exposure_times():
    np.testing.assert_allclose(exposure_times(), [2.0 ** (k / 2) for k in range(-4, 5)], rtol=1e-6)
    np.testing.assert_allclose(exposure_times(2, 2.0), [0.5, 1.0, 2.0])
    for bad in (3, -2):
        with pytest.raises(ValueError):
            exposure_times(bad)


def _hdr(rng, shape=(6, 7, 3)):
    # Log-uniform radiance over ~12 stops, like a real scene.
    return np.exp2(rng.uniform(-8, 4, shape)).astype(np.float32)


def test_normalise_radiance():
    rng = np.random.default_rng(6)
    hdr = _hdr(rng)
    hdr[0, 0] = -0.01
    e = normalise_radiance(hdr)
    assert e.min() >= 0
    np.testing.assert_allclose(e.mean(), 0.5, rtol=1e-5)
    np.testing.assert_allclose(e[1:] / hdr[1:], e[1, 1, 1] / hdr[1, 1, 1], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.jit(normalise_radiance)(hdr)), e, rtol=1e-5)
    with pytest.raises(ValueError):
        normalise_radiance(np.zeros((2, 2, 3)))


def test_bracket_monotone_and_middle_image():
    rng = np.random.default_rng(7)
    hdr = _hdr(rng, (8, 9, 3))
    f = parametric_crfs()["scurve+6@0.45"]
    b = simulate_bracket(hdr, f)
    assert b.shape == (9, 8, 9, 3) and b.dtype == np.float32
    assert b.min() >= 0 and b.max() <= 1
    assert np.all(np.diff(b, axis=0) >= 0)
    assert b[0].mean() < b[4].mean() < b[-1].mean()
    np.testing.assert_allclose(b * 255, np.round(b * 255), atol=1e-3)
    e = hdr * (0.5 / hdr.mean())
    ref = np.round(np.interp(np.clip(e, 0, 1), GRID, f) * 255) / 255
    assert np.mean(np.abs(b[4] - ref) < 1e-6) > 0.99
    assert np.abs(b[4] - ref).max() <= 1 / 255 + 1e-6
    # Exposure k multiplies E by tau^k before the CRF.
    ref_up = np.interp(np.clip(e * 4.0, 0, 1), GRID, f)
    np.testing.assert_allclose(simulate_bracket(hdr, f, quantize=False)[-1], ref_up, atol=1e-5)


def test_bracket_jpeg():
    rng = np.random.default_rng(8)
    hdr = np.exp2(cv2.GaussianBlur(rng.uniform(-6, 3, (32, 32, 3)), (0, 0), 2)).astype(np.float32)
    f = srgb_crf()
    plain = simulate_bracket(hdr, f, T=2)
    jpeg = simulate_bracket(hdr, f, T=2, jpeg_quality=90)
    assert jpeg.shape == plain.shape and 0 < np.abs(jpeg - plain).mean() < 0.02
    r1 = simulate_bracket(hdr, f, T=2, jpeg_quality=(60, 95), rng=np.random.default_rng(1))
    r2 = simulate_bracket(hdr, f, T=2, jpeg_quality=(60, 95), rng=np.random.default_rng(1))
    np.testing.assert_array_equal(r1, r2)
    with pytest.raises(ValueError):
        simulate_bracket(hdr, f, jpeg_quality=0)
    with pytest.raises(ValueError):
        simulate_bracket(hdr[..., :2], f)


def test_jax_bracket_matches_numpy_jit_vmap():
    rng = np.random.default_rng(9)
    hdrs = np.stack([normalise_radiance(_hdr(rng)) for _ in range(2)])
    f = parametric_crfs()["gamma+1.8"]
    times = exposure_times()
    ref = np.stack([simulate_bracket(h, f, normalise=False) for h in hdrs])
    fn = jax.jit(jax.vmap(simulate_bracket_jax, in_axes=(0, None, None)))
    out = np.asarray(fn(jnp.asarray(hdrs), jnp.asarray(f), jnp.asarray(times)))
    assert out.shape == ref.shape == (2, 9, 6, 7, 3)
    # Identical arithmetic; at most a rare one-level rounding tie may differ.
    assert np.mean(np.abs(out - ref) < 1e-6) > 0.999 and np.abs(out - ref).max() <= 1 / 255 + 1e-6
    raw = jax.jit(simulate_bracket_jax, static_argnames="quantize")(hdrs[0], f, times, quantize=False)
    raw_np = simulate_bracket(hdrs[0], f, normalise=False, quantize=False)
    np.testing.assert_allclose(np.asarray(raw), raw_np, atol=1e-6)
    # normalise=True in JAX equals the NumPy default.
    raw_hdr = _hdr(rng)
    out_n = np.asarray(simulate_bracket_jax(raw_hdr, f, times, normalise=True))
    assert np.abs(out_n - simulate_bracket(raw_hdr, f)).max() <= 1 / 255 + 1e-6
    middle = np.asarray(expose(jnp.asarray(hdrs[0]), 1.0, f))
    np.testing.assert_allclose(middle, ref[0, 4], atol=1 / 255 + 1e-6)


# ------------------------------------------------------------------------------------------
# Panorama crops
# ------------------------------------------------------------------------------------------


def _direction_panorama(h: int, w: int) -> np.ndarray:
    """Each pixel holds the unit direction (x right, y up, z forward) of its centre."""
    lon = 2 * np.pi * (np.arange(w) + 0.5) / w - np.pi
    lat = np.pi / 2 - np.pi * (np.arange(h) + 0.5) / h
    lon, lat = np.meshgrid(lon, lat)
    d = np.stack([np.cos(lat) * np.sin(lon), np.sin(lat), np.cos(lat) * np.cos(lon)], -1)
    return d.astype(np.float32)


def _analytic_rays(fov, elev, azim, h, w):
    """Pixel-centre rays from the forward/right/up basis of the view."""
    el, az = np.radians(elev), np.radians(azim)
    fwd = np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])
    right = np.array([np.cos(az), 0.0, -np.sin(az)])
    up = np.cross(fwd, right)
    t = np.tan(np.radians(fov) / 2)
    px = ((np.arange(w) + 0.5) / w * 2 - 1) * t
    py = (1 - (np.arange(h) + 0.5) / h * 2) * t * h / w
    d = fwd + px[None, :, None] * right + py[:, None, None] * up
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def test_crop_centre_pixel_samples_expected_column():
    rng = np.random.default_rng(10)
    pano = rng.uniform(0, 1, (9, 16, 3)).astype(np.float32)
    for col in (0, 5, 11, 15):
        azim = math.degrees(2 * math.pi * (col + 0.5) / 16 - math.pi)
        crop = perspective_crop(pano, 60.0, 0.0, azim, 5)
        assert crop.shape == (5, 5, 3)
        np.testing.assert_allclose(crop[2, 2], pano[4, col], atol=1e-5)
    # Azimuth 180 looks at the seam: the average of the last and first columns.
    seam = perspective_crop(pano, 60.0, 0.0, 180.0, 5)[2, 2]
    np.testing.assert_allclose(seam, (pano[4, 0] + pano[4, -1]) / 2, atol=1e-5)


def test_crop_directions_match_analytic_rays():
    pano = _direction_panorama(128, 256)
    views = [(70.0, 20.0, 150.0, (24, 32)), (90.0, -30.0, -45.0, 17), (40.0, 5.0, 0.0, (9, 5))]
    for fov, elev, azim, size in views:
        crop = perspective_crop(pano, fov, elev, azim, size)
        rays = _analytic_rays(fov, elev, azim, *crop.shape[:2])
        np.testing.assert_allclose(crop, rays, atol=2e-3)
    # Horizontal fov between the outer pixel centres of the middle row.
    fov, w = 80.0, 33
    row = perspective_crop(pano, fov, 0.0, 30.0, w)[w // 2]
    a, b = row[0] / np.linalg.norm(row[0]), row[-1] / np.linalg.norm(row[-1])
    want = 2 * math.atan((1 - 1 / w) * math.tan(math.radians(fov) / 2))
    assert abs(math.acos(np.clip(a @ b, -1, 1)) - want) < 2e-3
    # Looking up: top row higher than bottom row; positive azimuth: centre ray to the right.
    crop = perspective_crop(pano, 60.0, 25.0, 40.0, 15)
    lon = np.degrees(np.arctan2(crop[..., 0], crop[..., 2]))
    assert crop[0, 7, 1] > crop[7, 7, 1] > crop[-1, 7, 1]
    assert lon[7, 0] < lon[7, 7] < lon[7, -1] and abs(lon[7, 7] - 40.0) < 0.5


def test_crop_matches_cv2_remap():
    pano = np.repeat(_direction_panorama(64, 128)[..., :1], 3, -1) + 1.0
    fov, elev, azim, h, w = 75.0, 10.0, 170.0, 20, 24
    rays = _analytic_rays(fov, elev, azim, h, w)
    u = (np.arctan2(rays[..., 0], rays[..., 2]) + np.pi) / (2 * np.pi) * 128 - 0.5
    v = (np.pi / 2 - np.arcsin(rays[..., 1])) / np.pi * 64 - 0.5
    ref = cv2.remap(pano, u.astype(np.float32), v.astype(np.float32), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_WRAP)
    np.testing.assert_allclose(perspective_crop(pano, fov, elev, azim, (h, w)), ref, atol=1e-2)


def test_random_views():
    views = random_views(np.random.default_rng(0), 50, (60.0, 90.0), (-10.0, 20.0))
    assert len(views) == 50
    fov, el, az = np.array(views).T
    assert fov.min() >= 60 and fov.max() <= 90 and el.min() >= -10 and el.max() <= 20
    assert az.min() >= -180 and az.max() < 180 and az.std() > 60
    assert views == random_views(np.random.default_rng(0), 50, (60.0, 90.0), (-10.0, 20.0))


def test_crop_and_bracket_synthetic_panorama():
    """The real-data pipeline on a generated panorama: bright sky band, dark ground."""
    rng = np.random.default_rng(11)
    pano = _direction_panorama(64, 128)
    hdr = np.exp2(8 * np.clip(pano[..., 1:2], 0, 1) - 4 + rng.normal(0, 0.3, (64, 128, 3))).astype(np.float32)
    crop = perspective_crop(hdr, 80.0, 10.0, 120.0, 16)
    b = simulate_bracket(crop, srgb_crf())
    assert b.shape == (9, 16, 16, 3) and np.all(np.diff(b, axis=0) >= 0)
    assert b[4, :4].mean() > b[4, -4:].mean()


@pytest.mark.skipif(not HDRI_DIR.is_dir() or not any(HDRI_DIR.glob("*.exr")), reason="HDRI data not present")
def test_crop_and_bracket_real_panorama():
    import OpenEXR

    path = sorted(HDRI_DIR.glob("*.exr"))[0]
    with OpenEXR.File(str(path)) as fh:
        channels = fh.channels()
        if "RGB" in channels:
            rgb = channels["RGB"].pixels
        else:
            rgb = np.stack([channels[c].pixels for c in "RGB"], -1)
    hdr = np.maximum(np.asarray(rgb, np.float32), 0.0)
    crop = perspective_crop(hdr, 80.0, 10.0, 120.0, 32)
    assert crop.shape == (32, 32, 3) and np.all(np.isfinite(crop)) and crop.min() >= 0
    b = simulate_bracket(crop, parametric_crfs()["gamma+1.4"], jpeg_quality=95)
    assert b.shape == (9, 32, 32, 3)
    assert b[0].mean() < b[4].mean() < b[-1].mean()
    assert 0.05 < b[4].mean() < 0.95


# --------------------------------------------------------------------------------------------
# Naive baseline
# --------------------------------------------------------------------------------------------


def test_naive_baseline_matches_skimage_srgb():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (2, 5, 6, 3)).astype(np.float32)
    steps = np.array([[-3, 1, 4], [2, 0, -8]], np.int32)
    out = exposure.naive_bracket_baseline(x, steps)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3, 5, 6, 3) and out.dtype == np.float32
    for b in range(2):
        xyz = rgb2xyz(x[b].astype(np.float64))  # sRGB decode + a linear map, so scaling commutes
        for n in range(3):
            ref = xyz2rgb(xyz * TAU ** steps[b, n])
            np.testing.assert_allclose(out[b, n], ref, atol=2e-5)
    np.testing.assert_allclose(out[1, 1], x[1], atol=2e-5)  # step 0 is the identity
    # Shared steps broadcast over the batch; JAX in, JAX out with the same values.
    shared = exposure.naive_bracket_baseline(x, np.array([1, -1]))
    assert shared.shape == (2, 2, 5, 6, 3)
    np.testing.assert_allclose(shared[0, 0], out[0, 1], atol=1e-6)
    jax_out = exposure.naive_bracket_baseline(jnp.asarray(x), jnp.asarray(steps))
    assert isinstance(jax_out, jnp.ndarray) and not isinstance(jax_out, np.ndarray)
    np.testing.assert_allclose(np.asarray(jax_out), out, atol=1e-5)


def test_naive_baseline_with_a_curve():
    rng = np.random.default_rng(1)
    # Above ~0.1: a 1024-sample curve cannot resolve the steep toe of x^(1/2.2) near 0.
    x = rng.uniform(0.1, 1, (4, 4, 3)).astype(np.float32)
    steps = np.array([-2, 3])
    # f(E) = E^(1/2.2): f(f^-1(Z) tau^s) = Z tau^(s/2.2), clipped.
    out = exposure.naive_bracket_baseline(x, steps, crf=crf_lib.gamma_crf(2.2))
    ref = np.clip(x[None] * TAU ** (steps[:, None, None, None] / 2.2), 0, 1)
    assert out.shape == (2, 4, 4, 3)
    np.testing.assert_allclose(out, ref, atol=3e-3)
    # The sampled sRGB curve agrees with the exact formula.
    np.testing.assert_allclose(exposure.naive_bracket_baseline(x, steps, crf=crf_lib.srgb_crf()),
                               exposure.naive_bracket_baseline(x, steps), atol=3e-3)
    with pytest.raises(ValueError, match="crf"):
        exposure.naive_bracket_baseline(x, steps, crf="gamma")
    with pytest.raises(ValueError, match="input"):
        exposure.naive_bracket_baseline(x[..., :2], steps)


def test_srgb_curve_and_luminance_have_one_definition():
    """The sampled sRGB CRF is the exact formula on the grid; decode inverts encode; luminance
    gives the same values for NumPy (float32 matmul) and JAX (einsum) inputs."""
    np.testing.assert_array_equal(crf_lib.srgb_crf(), crf_lib._finish(crf_lib.srgb_encode(crf_lib._GRID64)))
    z = np.linspace(0, 1, 257)
    np.testing.assert_allclose(crf_lib.srgb_encode(crf_lib.srgb_decode(z)), z, atol=1e-12)
    rgb = np.random.default_rng(2).uniform(0, 4, (5, 7, 3)).astype(np.float32)
    lum = crf_lib.luminance(rgb)
    assert lum.shape == (5, 7) and isinstance(lum, np.ndarray)
    np.testing.assert_allclose(lum, rgb @ np.array([0.2126, 0.7152, 0.0722]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(crf_lib.luminance(jnp.asarray(rgb))), lum, rtol=1e-6)
