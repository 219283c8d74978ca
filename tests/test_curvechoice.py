"""Response shapes up to the exponent, the blind curve choice's cues, its fit and its place in the
pipeline."""

from __future__ import annotations

import json
import shutil

import cv2
import jax
import numpy as np
import pytest
from conftest import make_photo, run_python_checked, save_clip_level

from hdr_jax import bundle, pipeline
from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera import shapes
from hdr_jax.eval import protocol
from hdr_jax.models import curvechoice, level, registry

F = len(curvechoice.FEATURES)


# -- shapes -------------------------------------------------------------------------------------


def test_exponent_twins_share_their_canonical_twin():
    grey = float(crf_lib.apply_crf(crf_lib.srgb_crf(), np.float64(shapes.MID_GREY)))
    canon = {}
    for g in (1.8, 2.2, 2.6):
        curve, p = shapes.canonical(crf_lib.gamma_crf(g))
        # x^(1/g) at x^p codes mid-grey as sRGB does: p = g ln(grey) / ln(0.18)
        assert p == pytest.approx(g * np.log(grey) / np.log(shapes.MID_GREY), rel=1e-3)
        assert float(crf_lib.apply_crf(curve, np.float64(shapes.MID_GREY))) == pytest.approx(
            grey, abs=2e-3)
        canon[g] = curve
    # Equal above the first radiances (where resampling a steep start on the grid blurs it).
    top = slice(64, None)
    np.testing.assert_allclose(canon[1.8][top], canon[2.6][top], atol=1e-4)
    s = crf_lib.s_curve_crf(6.0, pivot=0.5, gamma=2.2)
    assert np.abs(shapes.canonical(s)[0] - canon[2.2])[top].max() > 0.05  # another shape
    np.testing.assert_allclose(shapes.with_exponent(s, 1.0), s, atol=1e-6)
    x = crf_lib.GRID.astype(np.float64)
    np.testing.assert_allclose(shapes.with_exponent(crf_lib.gamma_crf(2.0), 0.5),
                               x ** 0.25, atol=2e-3)


def test_prototypes_are_pool_members_at_their_clusters_typical_exponent():
    gammas = [crf_lib.gamma_crf(g) for g in np.linspace(1.6, 2.8, 12)]
    esses = [crf_lib.s_curve_crf(c, pivot=0.5, gamma=2.2) for c in np.linspace(6.0, 9.0, 12)]
    pool, powers = zip(*(shapes.canonical(c) for c in gammas + esses))
    pool, powers = np.stack(pool), np.array(powers)
    feats = np.stack([shapes.shape_features(c) for c in pool])
    canon, typical, pf = shapes.shape_prototypes(pool, powers, feats, 2)
    assert canon.shape == typical.shape == (2, crf_lib.N_SAMPLES)
    members = [int(np.flatnonzero((pool == c).all(1))[0]) for c in canon]
    assert sorted(m < 12 for m in members) == [False, True]  # one power, one S-curve
    for m, t, f in zip(members, typical, pf):
        group = powers[:12] if m < 12 else powers[12:]
        np.testing.assert_allclose(t, shapes.with_exponent(pool[m], 1.0 / np.median(group)))
        np.testing.assert_allclose(f, feats[m])


# -- cues ---------------------------------------------------------------------------------------


def _profile_by_loops(codes, step):
    """The step profile with explicit loops over the pixel pairs."""
    nb = len(curvechoice.BAND_EDGES) - 1
    total, count = np.zeros(nb), np.zeros(nb)
    h, w, _ = codes.shape
    for y in range(h):
        for x in range(w):
            for dy, dx in ((0, step), (step, 0)):
                if y + dy >= h or x + dx >= w:
                    continue
                for c in range(3):
                    a, b = codes[y + dy, x + dx, c], codes[y, x, c]
                    band = np.digitize(0.5 * (a + b), curvechoice.BAND_EDGES) - 1
                    if max(a, b) < protocol.CLIP_LEVEL - 1e-6 and 0 <= band < nb:
                        total[band] += abs(a - b)
                        count[band] += 1
    prof = np.log(total / np.maximum(count, 1) + 1e-4)
    mid = np.average(prof[curvechoice.MID_BANDS], weights=count[curvechoice.MID_BANDS] + 1e-9)
    return np.where(count >= curvechoice.MIN_PAIRS, prof, mid) - mid, count / count.sum()


def test_step_profile_matches_a_loop_over_the_pixel_pairs():
    codes = make_photo(seed=3, hw=(20, 24))
    for step in curvechoice.STEPS:
        got, share = curvechoice.step_profile(codes, step)
        want, want_share = _profile_by_loops(codes, step)
        np.testing.assert_allclose(got, want, atol=1e-9)
        np.testing.assert_allclose(share, want_share, atol=1e-12)


def _materials(curve, hw=(60, 60), seed=0):
    """Patches of coloured materials under smooth random shading, through ``curve``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: hw[0], : hw[1]] / hw[0]
    shade = np.exp(1.2 * np.sin(6 * x + rng.uniform(0, 6)) * np.cos(5 * y))
    colour = np.repeat(np.repeat(rng.uniform(0.2, 1.0, (hw[0] // 6, hw[1] // 6, 3)), 6, 0), 6, 1)
    radiance = 0.35 * shade[..., None] * colour
    return np.asarray(crf_lib.apply_crf(curve, np.clip(radiance, 0.0, 1.0)), np.float32)


def test_material_cue_is_zero_on_a_power_law_and_positive_on_a_shoulder():
    power = curvechoice.material_cue(_materials(crf_lib.gamma_crf(2.2)))
    shoulder = curvechoice.material_cue(_materials(crf_lib.s_curve_crf(8.0, pivot=0.5,
                                                                       gamma=2.2)))
    assert power[-1] > np.log1p(20) and shoulder[-1] > np.log1p(20)  # enough patches
    np.testing.assert_allclose(power[:3], 0.0, atol=0.02)
    assert shoulder[2] > 0.1 and shoulder[2] > power[2] + 0.1


def test_cues_are_named_and_read_at_the_estimates_pixel_scale():
    photo = make_photo(seed=1, hw=(40, 56))
    cues = curvechoice.photo_cues(photo, -0.3)
    assert cues.shape == (F,) and cues.dtype == np.float32 and np.all(np.isfinite(cues))
    np.testing.assert_array_equal(cues[: len(level.FEATURES)],
                                  level.photo_features(photo, -0.3))
    # A photo larger than the estimate's side is read shrunk as the clip level's network reads it.
    big = cv2.resize(photo, (56 * 8, 40 * 8), interpolation=cv2.INTER_NEAREST)
    small = cv2.resize(big, (358, 256), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(curvechoice.photo_cues(big, 0.0)[len(level.FEATURES):],
                               curvechoice.photo_cues(small, 0.0)[len(level.FEATURES):],
                               atol=1e-5)
    with pytest.raises(ValueError, match="expected an"):
        curvechoice.photo_cues(photo[..., 0], 0.0)


# -- the network and its fit --------------------------------------------------------------------


def test_network_is_a_linear_map_of_the_standardised_cues_with_a_pinned_size():
    module = registry.build("curvechoice", {"mean": [1.0] * F, "scale": [2.0] * F,
                                            "num_options": 5})
    variables = registry.init("curvechoice", module, jax.random.key(0),
                              *registry.example_inputs("curvechoice", module, batch=3))
    assert sum(int(np.size(v)) for v in jax.tree.leaves(variables)) == F * 5 + 5 == 310
    kernel = np.random.default_rng(0).normal(size=(F, 5)).astype(np.float32)
    bias = np.arange(5, dtype=np.float32)
    x = np.random.default_rng(1).normal(size=(3, F)).astype(np.float32)
    got = module.apply({"params": {"choice": {"kernel": kernel, "bias": bias}}}, x)
    np.testing.assert_allclose(got, ((x - 1.0) / 2.0) @ kernel + bias, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="num_options"):
        registry.build("curvechoice", {"mean": [0.0] * F, "scale": [1.0] * F,
                                       "num_options": 1}).init(jax.random.key(0), x)


def test_fit_learns_which_option_pays_from_the_cues():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    # option 0 pays 1 dB everywhere; option 1 pays 3 dB where the first cue is positive and
    # costs 3 dB elsewhere; option 2 never pays.
    gains = np.stack([np.ones(400), np.where(x[:, 0] > 0, 3.0, -3.0), -np.ones(400)], 1)
    mean, scale, params = curvechoice.fit_choice(x, gains, np.ones(400), l2=1e-4, steps=500)
    logits = (x - mean) / scale @ params["choice"]["kernel"] + params["choice"]["bias"]
    choice = np.argmax(logits, 1)
    assert np.mean(choice == np.where(x[:, 0] > 0, 1, 0)) > 0.95
    # Heavier L2: closer to the best constant option.
    _, _, flat = curvechoice.fit_choice(x, gains, np.ones(400), l2=100.0, steps=500)
    assert np.abs(flat["choice"]["kernel"]).max() < np.abs(params["choice"]["kernel"]).max()


# -- the pipeline -------------------------------------------------------------------------------


def _save_choice(directory, option, num_prototypes=2):
    """A curve choice whose bias always picks ``option``; prototypes gamma 1.8 and an S-curve."""
    n = len(curvechoice.BENT) + num_prototypes
    bias = np.full(n, -5.0, np.float32)
    bias[option] = 5.0
    curves = np.stack([crf_lib.gamma_crf(1.8), crf_lib.s_curve_crf(6.0, pivot=0.5, gamma=2.2)])
    variables = {"params": {"choice": {"kernel": np.zeros((F, n), np.float32), "bias": bias}},
                 "options": {"curves": curves[:num_prototypes].astype(np.float32)}}
    bundle.save_network(directory, "curvechoice", variables,
                        {"mean": [0.0] * F, "scale": [1.0] * F, "num_options": n},
                        dtype="float32")


@pytest.fixture(scope="module")
def choice_weights(tiny_weights, tmp_path_factory):
    """The tiny weights plus a clip-level estimate and both lifts (blind 1.5, known 0.5)."""
    directory = tmp_path_factory.mktemp("choice") / "weights"
    shutil.copytree(tiny_weights, directory)
    save_clip_level(directory)
    for name, bias in (("level", 1.5), ("level_known", 0.5)):
        variables = {"params": {"lift": {"kernel": np.zeros((len(level.FEATURES), 1), np.float32),
                                         "bias": np.float32([bias])}}}
        bundle.save_network(directory, name, variables,
                            {"mean": [0.0] * len(level.FEATURES),
                             "scale": [1.0] * len(level.FEATURES)}, dtype="float32")
    return directory


@pytest.mark.parametrize("option", [0, 1, 3])
def test_the_pipeline_merges_and_lifts_with_the_chosen_option(choice_weights, tmp_path, option):
    directory = tmp_path / "weights"
    shutil.copytree(choice_weights, directory)
    _save_choice(directory, option)
    pipe = pipeline.Pipeline.load(directory)
    photo = make_photo(seed=4, hw=(48, 64))
    k = pipeline.blind_clip_level(pipe, photo)
    assert pipeline.blind_choice(pipe, photo, k) == option
    est = pipeline.blind_estimate(pipe, photo)
    out = pipeline.reconstruct(pipe, photo, scale=None)
    plain = pipeline.reconstruct(pipe, photo, scale=None, highlights=False)
    if option == 0:
        curve, gain, lift, whole = crf_lib.srgb_crf(), 1.0, 1.5, False
    elif option == 1:
        (curve, gain), lift, whole = pipeline.blind_linearisation(pipe, photo, k), 1.5, False
    else:
        curve, gain, lift, whole = crf_lib.s_curve_crf(6.0, pivot=0.5, gamma=2.2), 1.0, 0.5, True
    assert est.whole_curve == whole and est.gain == pytest.approx(gain)
    np.testing.assert_allclose(est.curve, curve, atol=1e-6)
    merged, _ = pipeline.merge_photo_stack(out.stack, photo, "anchored", curve)
    np.testing.assert_allclose(plain.hdr, merged * np.float32(gain), rtol=1e-5)
    clip = gain * float(crf_lib.apply_inverse_crf(curve, np.float32(protocol.CLIP_LEVEL)))
    np.testing.assert_allclose(out.hdr, level.lift(plain.hdr, photo, lift, clip), rtol=1e-5)


def test_weights_without_a_choice_keep_the_bent_linearisation(choice_weights):
    pipe = pipeline.Pipeline.load(choice_weights)
    photo = make_photo(seed=4, hw=(48, 64))
    k = pipeline.blind_clip_level(pipe, photo)
    assert pipe.curvechoice is None and pipeline.blind_choice(pipe, photo, k) is None
    est = pipeline.blind_estimate(pipe, photo)
    curve, gain = pipeline.blind_linearisation(pipe, photo, k)
    assert est.clip_level == k and not est.whole_curve and est.gain == gain
    np.testing.assert_array_equal(est.curve, curve)


def test_a_choice_with_a_bad_option_curve_or_size_is_a_weights_error(choice_weights, tmp_path):
    directory = tmp_path / "weights"
    shutil.copytree(choice_weights, directory)
    _save_choice(directory, 2)
    manifest = bundle.read_manifest(directory)
    variables, _ = bundle.load_network(directory, "curvechoice")
    variables["options"]["curves"] = variables["options"]["curves"][:, ::-1].copy()
    bundle.save_network(directory, "curvechoice", variables,
                        manifest["curvechoice"]["config"], dtype="float32")
    with pytest.raises(bundle.WeightsError, match="non-monotone"):
        pipeline.Pipeline.load(directory)
    variables["options"]["curves"] = variables["options"]["curves"][:1, ::-1].copy()
    bundle.save_network(directory, "curvechoice", variables,
                        manifest["curvechoice"]["config"], dtype="float32")
    with pytest.raises(bundle.WeightsError, match="do not match the model config"):
        pipeline.Pipeline.load(directory)


def test_experiment_tabulates_fits_and_writes_the_choice(fake_hdr_dir, choice_weights, tmp_path,
                                                         cli_env):
    out = tmp_path / "weights"
    shutil.copytree(choice_weights, out)
    work = tmp_path / "w"
    args = ["-m", "experiments.fit_choice", "--hdr_dir", str(fake_hdr_dir), "--emor_dir", "",
            "--weights", str(choice_weights), "--workdir", str(work), "--views", "6",
            "--parts", "2", "--procs", "1", "--dev_views", "1", "--prototypes", "2",
            "--l2", "0.01,10", "--fit_steps", "50", "--out", str(out)]
    run_python_checked(args, cli_env, timeout=900)
    rep = json.loads((work / "report.json").read_text())
    assert rep["views"] == 6 and set(rep["fits"]) == {"0.01", "10.0"}
    assert rep["kept l2"] == max((0.01, 10.0), key=lambda v: rep["fits"][str(v)][
        "development inputs"]["the choice"]["mean"])
    parts = [np.load(work / f"part{p}.npz") for p in range(2)]
    assert [len(q["family"]) for q in parts] == [3, 3]
    assert parts[0]["cues"].shape == (3, F) and parts[0]["gains"].shape == (3, 4)
    dev = np.load(work / "development1.npz")
    fits = rep["fits"][str(rep["kept l2"])]["development inputs"]
    for j, name in enumerate(["inverse sRGB", "bent", "prototype 0", "prototype 1"]):
        assert fits[name]["mean"] == pytest.approx(np.mean(
            [dev["gains"][dev["family"] == f, j].mean() for f in np.unique(dev["family"])]))
    assert np.all(fits["the best option per input (oracle)"]["mean"] >= fits["bent"]["mean"])
    pipe = pipeline.Pipeline.load(out)
    assert pipe.curvechoice.entry["recipe"] == "experiments/fit_choice.py"
    assert pipe.curvechoice.variables["options"]["curves"].shape == (2, crf_lib.N_SAMPLES)
    photo = make_photo(seed=4, hw=(48, 64))
    assert 0 <= pipeline.blind_choice(pipe, photo, pipeline.blind_clip_level(pipe, photo)) < 4
    # A rerun renders nothing (the parts are cached) and fits the same.
    stamp = (work / "part0.npz").stat().st_mtime_ns
    run_python_checked(args, cli_env, timeout=900)
    assert (work / "part0.npz").stat().st_mtime_ns == stamp
    again = json.loads((work / "report.json").read_text())
    assert again["fits"] == rep["fits"]


def test_the_bundled_weights_have_a_curve_choice_among_inverse_srgb_bent_and_prototypes():
    pipe = pipeline.Pipeline()  # the bundled weights; only what the blind estimate needs loads
    net = pipe.curvechoice
    assert net.entry["recipe"] == "experiments/fit_choice.py"
    curves = np.asarray(net.variables["options"]["curves"])
    assert net.module.num_options == len(curvechoice.BENT) + len(curves) == 18
    assert all(crf_lib.is_valid_crf(c) for c in curves)
    # Sixteen distinct shapes (one of them sRGB's own: the sampler's sRGB draws are a cluster).
    gaps = np.abs(curves[:, None] - curves[None]).max(-1) + np.eye(len(curves))
    assert gaps.min() > 1e-3
    photo = make_photo(seed=2, hw=(64, 96))
    est = pipeline.blind_estimate(pipe, photo)
    option = pipeline.blind_choice(pipe, photo, pipeline.blind_clip_level(pipe, photo))
    assert 0 <= option < 18 and est.whole_curve == (option >= len(curvechoice.BENT))
