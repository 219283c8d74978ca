"""The highlight lift: features, weight, network, the pipeline's lift, the protocol's lifted
scores and the fitting experiment."""

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_photo, save_clip_level

from hdr_jax import bundle, pipeline
from hdr_jax import io as hio
from hdr_jax.camera import crf as crf_lib
from hdr_jax.eval import protocol
from hdr_jax.models import level, registry

N = len(level.FEATURES)
ASSET = Path(pipeline.__file__).parent / "assets" / "demo.jpg"
#: A lift config: the features standardised about 0 with scale 1.
CONFIG = {"mean": [0.0] * N, "scale": [1.0] * N}


def _photo_with_a_disc(hw=(64, 96), radius=12, code=1.0):
    """A mid-grey photo with a clipped disc (every channel at ``code``) and a pixel where only
    red clips."""
    img = np.full(hw + (3,), 0.4, np.float32)
    yy, xx = np.mgrid[: hw[0], : hw[1]]
    disc = (yy - hw[0] // 2) ** 2 + (xx - hw[1] // 2) ** 2 <= radius**2
    img[disc] = code
    img[2, 2] = (1.0, 0.5, 0.3)
    return img, disc


def test_features_match_a_direct_count():
    img, disc = _photo_with_a_disc()
    f = level.photo_features(img, -0.3)
    n_clipped = disc.sum() + 1
    lum = crf_lib.apply_inverse_crf(crf_lib.srgb_crf(), img) @ np.float32([0.2126, 0.7152,
                                                                             0.0722])
    assert f.shape == (N,)
    np.testing.assert_allclose(f, [-0.3, np.log(n_clipped / img[..., 0].size),
                                   disc.sum() / n_clipped, 1 / n_clipped,
                                   np.log(np.mean(lum >= level.NEAR_CLIP))], rtol=1e-5)
    # A photo without clipped pixels: the fractions' floor, no NaN.
    f0 = level.photo_features(np.full((8, 8, 3), 0.3, np.float32), 0.0)
    assert np.all(np.isfinite(f0)) and f0[1] == pytest.approx(np.log(1e-4))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        level.photo_features(np.zeros((8, 8), np.float32), 0.0)


def test_lift_weight_rises_with_the_code_and_the_distance_from_the_border():
    img, disc = _photo_with_a_disc()
    img[disc, 2] = 0.95  # blue halfway up the ramp inside the disc
    w = level.lift_weight(img)
    clipped = protocol.clipped_mask(img)
    assert np.all(w[~clipped] == 0)
    d = cv2.distanceTransform(clipped.astype(np.uint8), cv2.DIST_L2, 3) * (256 / 64)
    spatial = 1 - np.exp(-d / level.RAMP_DISTANCE)
    np.testing.assert_allclose(w[..., 0][clipped], spatial[clipped], rtol=1e-5)
    np.testing.assert_allclose(w[..., 2][disc], 0.5 * spatial[disc], rtol=1e-4)
    centre = w[32, 48, 0]
    assert centre > 0.99 and w[disc][:, 0].min() < 0.9
    # Distances are measured at the protocol's pixel scale: twice the photo, the same weights.
    big = cv2.resize(img, (192, 128), interpolation=cv2.INTER_NEAREST)
    assert level.lift_weight(big)[64, 96, 0] == pytest.approx(centre, abs=1e-4)
    assert not level.lift_weight(np.full((8, 8, 3), 0.5, np.float32)).any()


def test_lift_weight_of_a_photo_clipped_everywhere_is_finite_and_silent():
    # Every pixel clipped in red: no unclipped pixel to measure a distance from (OpenCV reports
    # FLT_MAX, which the pixel scale overflowed), so the spatial factor is 1 everywhere.
    img = np.zeros((40, 48, 3), np.float32)
    img[..., 0] = 1.0
    img[:, 24:, 1] = 0.95
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = level.lift_weight(img)
    gate = level.border_gate(img)
    np.testing.assert_allclose(w[..., 0], gate, rtol=1e-6)
    np.testing.assert_allclose(w[:, 24:, 1], 0.5 * gate[:, 24:], rtol=1e-5)


def test_border_gate_is_the_darkness_of_each_regions_surround():
    img = np.full((64, 64, 3), 0.3, np.float32)
    img[10:20, 10:20] = 1.0  # a source bordered by dark pixels
    img[38:58, 38:58] = 0.99  # a bright patch whose centre clips: the surround is at 0.99
    img[44:52, 44:52] = 1.0
    gate = level.border_gate(img)
    assert gate[15, 15] == pytest.approx(1.0)
    assert gate[48, 48] == pytest.approx(0.01 / level.GATE_DARKNESS, rel=1e-3)
    assert gate[30, 30] == 0 and gate[40, 40] == 0
    w = level.lift_weight(img)
    assert w[48, 48, 0] < 0.03 < 0.99 < w[15, 15, 0]


def test_lift_multiplies_only_the_clipped_pixels():
    img, disc = _photo_with_a_disc()
    hdr = protocol.linearise_srgb(img)
    out = level.lift(hdr, img, 2.0)
    np.testing.assert_allclose(out, hdr * np.exp2(2.0 * level.lift_weight(img)), rtol=1e-6)
    np.testing.assert_array_equal(out[~protocol.clipped_mask(img)],
                                  hdr[~protocol.clipped_mask(img)])
    assert out[32, 48, 0] > 3.9 * hdr[32, 48, 0]


def test_a_lift_below_zero_keeps_clipped_pixels_at_the_clip_and_measured_ones():
    img, disc = _photo_with_a_disc()
    img[disc, 2] = 0.95  # a measured channel on the ramp inside the clipped disc
    hdr = protocol.linearise_srgb(img)
    hdr[disc, 0] *= 3.0  # the merge put red far above the clip
    clip = float(protocol.linearise_srgb(np.full((1, 1, 3), protocol.CLIP_LEVEL,
                                                 np.float32))[0, 0, 0])
    out = level.lift(hdr, img, -1.0, clip)
    w = level.lift_weight(img)
    np.testing.assert_allclose(out, np.maximum(hdr * np.exp2(-w), np.minimum(hdr, clip)),
                               rtol=1e-6)
    # Red, three times the clip: halved in the disc's centre; green, at the clip: lowered to
    # the clip code's value at most; the measured blue keeps its value.
    assert out[32, 48, 0] == pytest.approx(1.5, rel=1e-2)
    assert out[disc, :2].min() >= clip - 1e-6 and np.all(out[disc, 1] <= hdr[disc, 1])
    np.testing.assert_array_equal(out[disc, 2], hdr[disc, 2])
    # Above 0 the floor plays no part; without one a lift below 0 goes under the clip.
    np.testing.assert_array_equal(level.lift(hdr, img, 1.0, clip), level.lift(hdr, img, 1.0))
    assert level.lift(hdr, img, -1.0)[disc, 1].min() < clip


def test_network_is_a_bounded_linear_map_of_the_standardised_features():
    module = registry.build("level", {"mean": [1.0] * N, "scale": [2.0] * N, "bias_init": 0.5})
    variables = registry.init("level", module, jax.random.key(0),
                              *registry.example_inputs("level", module, batch=3))
    assert sum(x.size for x in jax.tree.leaves(variables)) == N + 1
    f = jnp.asarray(np.random.default_rng(0).normal(size=(3, N)), jnp.float32)
    np.testing.assert_allclose(module.apply(variables, f), 0.5)  # zero weights: the bias
    kernel = np.arange(1, N + 1, dtype=np.float32)[:, None]
    variables = {"params": {"lift": {"kernel": kernel, "bias": np.float32([0.1])}}}
    want = np.clip(0.1 + ((np.asarray(f) - 1.0) / 2.0) @ kernel[:, 0], level.LOWEST,
                   level.HIGHEST)
    np.testing.assert_allclose(module.apply(variables, f), want, rtol=1e-5)
    assert float(module.apply(variables, jnp.full((1, N), 100.0))[0]) == level.HIGHEST
    assert float(module.apply(variables, jnp.full((1, N), -100.0))[0]) == level.LOWEST
    with pytest.raises(ValueError, match="positive scales"):
        registry.build("level", {"mean": [0.0] * N, "scale": [0.0] * N})


def test_lifted_scores_are_the_protocols():
    rng = np.random.default_rng(3)
    img, disc = _photo_with_a_disc()
    ref = protocol.linearise_srgb(img) * rng.uniform(1.0, 1.3, img.shape).astype(np.float32)
    ref[disc] *= 6.0
    pred = protocol.linearise_srgb(img)
    clipped = protocol.clipped_mask(img)
    w = level.lift_weight(img)
    got = protocol.pu21_clipped_lifted(pred, ref, clipped, w, [0.0, 1.0, 2.5])
    want = [protocol.pu21_protocol(pred * np.exp2(lift * w), ref, clipped)["pu21_clipped"]
            for lift in (0.0, 1.0, 2.5)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got[2] > got[0]  # the truth is brighter than the clip


def _save_level(directory, bias, kernel=None, name="level"):
    variables = {"params": {"lift": {
        "kernel": np.zeros((N, 1), np.float32) if kernel is None else kernel,
        "bias": np.float32([bias])}}}
    bundle.save_network(directory, name, variables, CONFIG, dtype="float32")


@pytest.fixture(scope="module")
def level_weights(tiny_weights, tmp_path_factory):
    """The tiny weights plus a clip-level estimate and a lift of a constant 1.5."""
    directory = tmp_path_factory.mktemp("level") / "weights"
    shutil.copytree(tiny_weights, directory)
    save_clip_level(directory)
    _save_level(directory, 1.5)
    return directory


def test_pipeline_lifts_the_blind_merge(level_weights):
    photo = make_photo(seed=4, hw=(48, 64))
    pipe = pipeline.Pipeline.load(level_weights)
    k = pipeline.blind_clip_level(pipe, photo)
    assert k == pipeline.estimate_clip_level(pipe, photo)
    assert pipeline.estimate_lift(pipe, photo, k) == pytest.approx(1.5)
    out = pipeline.reconstruct(pipe, photo, scale=None)
    plain = pipeline.reconstruct(pipe, photo, scale=None, highlights=False)
    np.testing.assert_array_equal(out.stack, plain.stack)
    # --no-highlights: the bent merge; by default that merge lifted where the photo clipped.
    curve, gain = pipeline.blind_linearisation(pipe, photo, k)
    merged, _ = pipeline.merge_photo_stack(out.stack, photo, "anchored", curve)
    np.testing.assert_allclose(plain.hdr, merged * gain, rtol=1e-6)
    np.testing.assert_allclose(out.hdr, level.lift(plain.hdr, photo, 1.5), rtol=1e-6)
    clipped = protocol.clipped_mask(photo)
    assert clipped.any() and np.all(out.hdr[clipped].max(-1) > plain.hdr[clipped].max(-1))
    np.testing.assert_array_equal(out.hdr[~clipped], plain.hdr[~clipped])
    # A camera response the user gives (these weights have no lift for it), or another merge:
    # no lift.
    assert pipe.level_known is None
    given = pipeline.reconstruct(pipe, photo, scale=None, response_curve=crf_lib.srgb_crf())
    np.testing.assert_array_equal(
        given.hdr, pipeline.merge_photo_stack(given.stack, photo, "anchored")[0])
    robust = pipeline.reconstruct(pipe, photo, scale=None, merge_method="robust")
    np.testing.assert_array_equal(
        robust.hdr, pipeline.merge_photo_stack(robust.stack, photo, "robust", curve)[0] * gain)


def test_pipeline_lift_below_zero_leaves_clipped_pixels_above_every_measured_one(
        level_weights, tmp_path):
    directory = tmp_path / "weights"
    shutil.copytree(level_weights, directory)
    _save_level(directory, level.LOWEST)
    photo = make_photo(seed=4, hw=(48, 64))
    pipe = pipeline.Pipeline.load(directory)
    out = pipeline.reconstruct(pipe, photo, scale=None)
    plain = pipeline.reconstruct(pipe, photo, scale=None, highlights=False)
    at = photo >= protocol.CLIP_LEVEL - 1e-6
    assert at.any() and np.any(out.hdr[at] < plain.hdr[at])  # it did lower some
    for c in range(3):
        if at[..., c].any():
            assert out.hdr[..., c][at[..., c]].min() >= out.hdr[..., c][~at[..., c]].max() - 1e-5


def test_a_working_scale_keeps_the_measured_pixels_of_the_full_resolution_hdr(level_weights):
    # The camera (clip level, median code) is estimated from the whole photo, not from the
    # shrunk copy the fill is made at: every pixel the photo measured has one value.
    photo = make_photo(seed=5, hw=(96, 128))
    pipe = pipeline.Pipeline.load(level_weights)
    small = cv2.resize(photo, (43, 32), interpolation=cv2.INTER_AREA)
    assert pipeline.blind_clip_level(pipe, small) != pipeline.blind_clip_level(pipe, photo)
    full = pipeline.reconstruct(pipe, photo, scale=None).hdr
    clipped = protocol.clipped_mask(photo)
    assert 0 < clipped.mean() < 0.5
    for side in (32, 64):
        at_side = pipeline.reconstruct(pipe, photo, scale=None, hdr_side=side).hdr
        np.testing.assert_array_equal(at_side[~clipped], full[~clipped])
        assert np.all(at_side[clipped] > 0)


def test_a_given_response_takes_its_own_lift(level_weights, tmp_path):
    directory = tmp_path / "weights"
    shutil.copytree(level_weights, directory)
    # The lift for a known response reads clip level 0 whatever the photo: a kernel on that
    # feature alone must not move it.
    kernel = np.zeros((N, 1), np.float32)
    kernel[level.FEATURES.index("clip_level")] = 5.0
    _save_level(directory, 0.75, kernel, name="level_known")
    photo = make_photo(seed=4, hw=(48, 64))
    pipe = pipeline.Pipeline.load(directory)
    assert pipeline.estimate_lift(pipe, photo, None, known_response=True) == pytest.approx(0.75)
    curve = crf_lib.gamma_crf(2.6)
    given = pipeline.reconstruct(pipe, photo, scale=None, response_curve=curve)
    plain = pipeline.reconstruct(pipe, photo, scale=None, response_curve=curve, highlights=False)
    np.testing.assert_array_equal(given.stack, plain.stack)
    np.testing.assert_allclose(plain.hdr, pipeline.merge_photo_stack(
        plain.stack, photo, "anchored", curve)[0], rtol=1e-6)
    np.testing.assert_allclose(given.hdr, level.lift(plain.hdr, photo, 0.75), rtol=1e-6)
    clipped = protocol.clipped_mask(photo)
    assert np.all(given.hdr[clipped].max(-1) > plain.hdr[clipped].max(-1))
    # The blind path keeps the blind lift.
    k = pipeline.blind_clip_level(pipe, photo)
    blind = pipeline.reconstruct(pipe, photo, scale=None)
    unlifted = pipeline.reconstruct(pipe, photo, scale=None, highlights=False)
    np.testing.assert_allclose(blind.hdr, level.lift(unlifted.hdr, photo, pipeline.estimate_lift(
        pipe, photo, k)), rtol=1e-6)
    assert pipeline.estimate_lift(pipe, photo, k) == pytest.approx(1.5)


def test_the_bundled_weights_have_both_lifts():
    pipe = pipeline.Pipeline()  # the bundled weights; only the two lifts are loaded
    photo = np.asarray(hio.read_ldr(ASSET), np.float32)
    for known in (False, True):
        lift = pipeline.estimate_lift(pipe, photo, None, known_response=known)
        assert level.LOWEST <= lift <= level.HIGHEST
    assert pipe.level_known.entry["response"] == "true"
    assert pipe.level.entry.get("response", "blind") == "blind"
    assert pipe.level.entry["recipe"] == pipe.level_known.entry["recipe"] == (
        "experiments/fit_level.py")


def test_weights_without_a_lift_have_none(tiny_weights):
    pipe = pipeline.Pipeline.load(tiny_weights)
    assert pipe.level is None and pipe.level_known is None
    with pytest.raises(bundle.WeightsError, match="no 'level' network"):
        pipeline.estimate_lift(pipe, make_photo(hw=(8, 8)), None)
    with pytest.raises(bundle.WeightsError, match="no 'level_known' network"):
        pipeline.estimate_lift(pipe, make_photo(hw=(8, 8)), None, known_response=True)


def test_a_lift_config_of_the_wrong_length_is_a_weights_error(tiny_weights, tmp_path):
    directory = tmp_path / "weights"
    shutil.copytree(tiny_weights, directory)
    variables = {"params": {"lift": {"kernel": np.zeros((2, 1), np.float32),
                                     "bias": np.zeros(1, np.float32)}}}
    bundle.save_network(directory, "level", variables, {"mean": [0.0, 0.0],
                                                         "scale": [1.0, 1.0]})
    with pytest.raises(bundle.WeightsError, match="invalid model config for 'level'"):
        pipeline.Pipeline.load(directory)


def test_fit_recovers_a_known_linear_lift():
    rng = np.random.default_rng(0)
    n = 400
    features = rng.normal(size=(n, N)).astype(np.float32)
    best = np.clip(1.0 + 0.8 * features[:, 1] - 0.5 * features[:, 2], -0.5, 5.5)
    gains = -np.abs(level.GRID[None, :] - best[:, None])  # peaked at the best lift
    mean, scale, theta = level.fit_linear(features, gains, np.ones(n))
    lifts = theta[0] + ((features - mean) / scale) @ theta[1:]
    assert np.mean(np.abs(lifts - best)) < 0.1
    # score_at interpolates between grid points and bounds the lift as the network does.
    linear = np.tile(level.GRID, (3, 1))
    np.testing.assert_allclose(level.score_at(linear, np.array([0.3, -7.0, 99.0])),
                               [0.3, level.LOWEST, level.HIGHEST], atol=1e-9)


def test_experiment_fits_reports_and_writes_the_lift(fake_hdr_dir, level_weights, tmp_path):
    out = tmp_path / "weights"
    shutil.copytree(level_weights, out)
    args = [sys.executable, "-m", "experiments.fit_level", "--hdr_dir", str(fake_hdr_dir),
            "--emor_dir", "", "--weights", str(level_weights), "--workdir",
            str(tmp_path / "w"), "--size", "32", "--views", "1", "--random_views", "1",
            "--out", str(out)]
    subprocess.run(args, check=True, capture_output=True)
    # The fitting scenes' random views are tabulated apart from the plain ones.
    assert sorted(p.name for p in (tmp_path / "w").glob("tables_*")) == [
        "tables_development.npz", "tables_fitting_random1.npz"]
    fit = json.loads((tmp_path / "w" / "fit.json").read_text())
    assert set(fit["report"]) == {"fitting", "development"}
    assert set(fit["report"]["development"]["lifted"]) == {"sRGB", "gamma", "gamma+S", "mean"}
    # The fitted lift is never below the blind linearisation on the data it was fitted on.
    rep = fit["report"]["fitting"]
    assert rep["lifted"]["mean"] >= rep["blind linearisation"]["mean"] - 1e-6
    pipe = pipeline.Pipeline.load(out)
    assert pipe.level.entry["recipe"] == "experiments/fit_level.py"
    np.testing.assert_allclose(np.asarray(pipe.level.variables["params"]["lift"]["bias"]),
                               [fit["bias"]], rtol=1e-6)
    # A rerun refits from the cached tables: same result.
    subprocess.run(args, check=True, capture_output=True)
    assert json.loads((tmp_path / "w" / "fit.json").read_text()) == fit
    assert fit["fitted_on"] == ["fitting"]
    # --all_scenes fits the development scenes too, from the same tables.
    subprocess.run(args + ["--all_scenes"], check=True, capture_output=True)
    both = json.loads((tmp_path / "w" / "fit.json").read_text())
    assert both["fitted_on"] == ["fitting", "development"]
    with np.load(tmp_path / "w" / "tables_development.npz") as dev:
        assert len(dev["input"]) > 0
    assert both["mean"] != fit["mean"]  # the standardisation covers both sets of scenes
    assert "fitting and development scenes" in pipeline.Pipeline.load(out).level.entry[
        "trained_on"]
    # --response true: tables of the photos linearised with their true response, apart from the
    # blind ones, and the lift written as level_known; the blind lift is left as it was.
    blind_bias = np.asarray(pipeline.Pipeline.load(out).level.variables["params"]["lift"]["bias"])
    subprocess.run(args + ["--response", "true"], check=True, capture_output=True)
    assert {"tables_true_development.npz", "tables_true_fitting_random1.npz"} <= {
        p.name for p in (tmp_path / "w").glob("tables_*")}
    true = json.loads((tmp_path / "w" / "fit_true.json").read_text())
    rep = true["report"]["fitting"]
    assert rep["lifted"]["mean"] >= rep["true linearisation"]["mean"] - 1e-6
    # On the true linearisation the sRGB family is its input: no gain without a lift.
    assert rep["true linearisation"]["sRGB"] == pytest.approx(0.0, abs=1e-3)
    pipe = pipeline.Pipeline.load(out)
    assert pipe.level_known.entry["response"] == "true"
    np.testing.assert_allclose(np.asarray(pipe.level_known.variables["params"]["lift"]["bias"]),
                               [true["bias"]], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(pipe.level.variables["params"]["lift"]["bias"]),
                                  blind_bias)


def test_lift_ceiling_bounds_the_weights_lift(fake_hdr_dir, level_weights, tmp_path):
    out = tmp_path / "ceiling"
    args = [sys.executable, "-m", "experiments.lift_ceiling", "--hdr_dir", str(fake_hdr_dir),
            "--weights", str(level_weights), "--out", str(out), "--size", "32", "--limit", "1"]
    subprocess.run(args, check=True, capture_output=True)
    res = json.loads((out / "results.json").read_text())
    rows = res["summary"]["rows"]
    inputs = res["inputs"]
    assert len(inputs) == res["protocol"]["inputs"] == 9  # 3 families x 3 encodings
    # The weights' lift is a constant 1.5, a grid point: its row is the table there.
    j = int(np.argmin(np.abs(level.GRID - 1.5)))
    assert all(r["predicted_lift"] == pytest.approx(1.5) for r in inputs)
    gains = np.array([np.array(r["lifted_clipped"]) - r["input_clipped"] for r in inputs])
    fams = np.array([r["family"] for r in inputs])
    means = [gains[fams == f, j].mean() for f in ("sRGB", "gamma", "gamma+S")]
    assert rows["the weights' lift, predicted per photo"]["mean"] == pytest.approx(np.mean(means))
    # The best lift per input bounds every other row, family by family.
    best = rows["best lift per input (analysis)"]
    for name, row in rows.items():
        assert all(row[f] <= best[f] + 1e-9 for f in row), name
    assert rows["best constant lift on these inputs (analysis)"]["mean"] >= max(
        rows["no lift (the merge)"]["mean"], rows["the weights' lift, predicted per photo"]["mean"])
    assert "best constant lift is" in (out / "results.md").read_text()
    # An existing result is not overwritten without the flag.
    again = subprocess.run(args, capture_output=True, text=True)
    assert again.returncode != 0 and "exist" in again.stderr
