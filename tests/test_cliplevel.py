"""The clip-level estimate: network, warp, the pipeline's blind linearisation, the experiment."""

import json
import math
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    TINY_CLIPLEVEL,
    make_photo,
    random_variables,
    run_python_checked,
    save_clip_level,
)

from hdr_jax import bundle, pipeline
from hdr_jax.camera import crf as crf_lib
from hdr_jax.eval import protocol
from hdr_jax.models import cliplevel, registry

CONFIG = TINY_CLIPLEVEL


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_parameter_counts():
    # conv0..conv6 (3x3, bias) + the 1x1 estimate, per member:
    # 3*9*32+32 + 32*9*32+32 + 32*9*64+64 + 64*9*64+64 + 64*9*128+128 + 2*(128*9*128+128) + 129
    full = registry.build("cliplevel", {"features": [32, 64, 128]})
    assert _count(registry.abstract_variables("cliplevel", full)) == 2 * 434_721
    tiny = registry.build("cliplevel", CONFIG)
    per = 112 + 148 + 296 + 4 * 584 + 9
    assert _count(registry.abstract_variables("cliplevel", tiny)) == 2 * per


def _shoulder_reference(z: np.ndarray) -> np.ndarray:
    """NumPy: any shoulder code within the 22-px window (XLA 'SAME': 10 before, 11 after),
    then the mean over 4x4 blocks."""
    s = np.any((z >= cliplevel.SHOULDER_LO) & (z < cliplevel.SHOULDER_HI), axis=-1)
    h, w = s.shape
    near = np.zeros_like(s)
    for i in range(h):
        for j in range(w):
            near[i, j] = s[max(0, i - 10):i + 12, max(0, j - 10):j + 12].any()
    return near.reshape(h // 4, 4, w // 4, 4).mean((1, 3))


def test_shoulder_weight_and_the_shrunk_mean_against_numpy():
    rng = np.random.default_rng(0)
    z = rng.uniform(0.0, 0.7, (1, 48, 40, 3)).astype(np.float32)
    z[0, 5, 7, 1] = 0.8  # one shoulder code: its window lights up
    z[0, 40:44, 30:36] = 0.99  # clipped, not shoulder
    want = _shoulder_reference(z[0])
    got = np.asarray(cliplevel.shoulder_weight(jnp.asarray(z)))[0]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert 0 < want.sum() < want.size
    # Estimate layer zero with bias b: every position says b, the photo says b sum(w)/(sum(w)+S).
    module = registry.build("cliplevel", CONFIG)
    variables = random_variables(registry.abstract_variables("cliplevel", module), seed=1)
    for member, b in (("member0", 0.5), ("member1", -1.5)):
        variables["params"][member]["estimate"]["bias"] = np.full((1,), b, np.float32)
        variables["params"][member]["estimate"]["kernel"][...] = 0.0
    k = float(module.apply(variables, jnp.asarray(z))[0])
    s = want.sum()
    assert k == pytest.approx(-0.5 * s / (s + cliplevel.SHRINK), rel=1e-5)
    # A ceiling bounds the mean of the members, not each member.
    capped = registry.build("cliplevel", CONFIG | {"ceiling": -0.2})
    assert capped.ceiling == -0.2 and module.ceiling is None
    assert float(capped.apply(variables, jnp.asarray(z))[0]) == pytest.approx(min(k, -0.2))
    shifted = registry.build("cliplevel", CONFIG | {"ceiling": 0.0, "offset": 0.05})
    assert float(shifted.apply(variables, jnp.asarray(z))[0]) == pytest.approx(min(k + 0.05, 0.0))
    assert k + 0.05 < 0.0  # the offset moved the estimate, the ceiling did not cut it
    variables["params"]["member1"]["estimate"]["bias"] = np.full((1,), 1.0, np.float32)
    up = float(module.apply(variables, jnp.asarray(z))[0])
    assert up == pytest.approx(0.75 * s / (s + cliplevel.SHRINK), rel=1e-5)
    assert float(registry.build("cliplevel", CONFIG | {"ceiling": 0.0}).apply(
        variables, jnp.asarray(z))[0]) == 0.0
    # Zero-initialised estimate: k = 0, i.e. inverse sRGB.
    fresh = registry.init("cliplevel", module, jax.random.key(0), jnp.asarray(z))
    assert float(module.apply(fresh, jnp.asarray(z))[0]) == 0.0


def test_warp_codes_numpy_and_jax_agree_and_differentiate():
    rng = np.random.default_rng(1)
    z = rng.uniform(0.0, 1.0, (2, 6, 5, 3)).astype(np.float32)
    k, zm = np.float32([-0.4, 0.6]), np.float32([0.3, 0.5])
    a = protocol.warp_codes(z, k, zm)
    b = np.asarray(protocol.warp_codes(jnp.asarray(z), jnp.asarray(k), jnp.asarray(zm)))
    np.testing.assert_allclose(a, b, rtol=1e-6)
    # d/dk sum = sum(lin ln2 w) where k is above its bound.
    g = jax.grad(lambda kk: protocol.warp_codes(jnp.asarray(z), kk, jnp.asarray(zm)).sum())(
        jnp.asarray(k))
    w = np.clip((z - zm[:, None, None, None]) / (1 - zm[:, None, None, None]), 0, 1)
    np.testing.assert_allclose(np.asarray(g), (a * math.log(2) * w).sum((1, 2, 3)), rtol=1e-4)


@pytest.mark.parametrize("k", [-1.5, -0.3, 0.0, 0.4])
def test_warped_response_is_the_warp_as_a_curve(k):
    photo = make_photo(seed=2, hw=(40, 48))
    curve, gain = cliplevel.warped_response(photo, k)
    assert crf_lib.is_valid_crf(curve, tol=1e-5)
    lower = -0.9 * crf_lib.SRGB_EXPONENT / (1 + crf_lib.SRGB_OFFSET) * (
        1 - protocol.warp_median_code(photo)) / math.log(2)
    assert gain == pytest.approx(2.0 ** max(k, lower), rel=1e-5)
    got = gain * crf_lib.apply_inverse_crf(curve, photo)
    want = protocol.linearise_warped(photo, k)
    ok = photo > 0.02  # the 1024-sample curve is coarse in the toe
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-2)


def test_any_photo_size_is_estimated_on_its_whole_blocks(clip_weights):
    # Sides that are not multiples of the stride (the working-scale resize gives any size).
    module = registry.build("cliplevel", CONFIG)
    variables = random_variables(registry.abstract_variables("cliplevel", module), seed=3)
    z = make_photo(seed=5, hw=(45, 78))
    k = float(module.apply(variables, jnp.asarray(z[None]))[0])
    whole = float(module.apply(variables, jnp.asarray(z[None, :44, :76]))[0])
    assert math.isfinite(k) and k != 0.0
    # The cropped photo has the same whole blocks; only the convs' border context differs.
    assert k == pytest.approx(whole, abs=0.05)
    pipe = pipeline.Pipeline.load(clip_weights)
    assert math.isfinite(pipeline.estimate_clip_level(pipe, make_photo(seed=6, hw=(342, 257))))


def test_estimator_reads_photos_at_its_working_scale():
    big = make_photo(seed=3, hw=(300, 900))
    assert cliplevel.estimator_input(big).shape == (1, 256, 768, 3)
    small = make_photo(seed=3, hw=(64, 80))
    np.testing.assert_array_equal(cliplevel.estimator_input(small)[0], small)


@pytest.fixture(scope="module")
def clip_weights(tiny_weights, tmp_path_factory):
    """The tiny weights plus a clip-level estimate that says k = -0.8 on shoulder photos."""
    directory = tmp_path_factory.mktemp("cliplevel") / "weights"
    shutil.copytree(tiny_weights, directory)
    save_clip_level(directory)
    return directory


def test_pipeline_merges_a_photo_of_an_unknown_camera_with_the_bent_curve(clip_weights,
                                                                          tiny_weights):
    photo = make_photo(seed=4, hw=(48, 64))
    pipe = pipeline.Pipeline.load(clip_weights)
    k = pipeline.estimate_clip_level(pipe, photo)
    assert -0.8 < k < -0.05  # random conv features, estimate layer mostly the bias
    out = pipeline.reconstruct(pipe, photo, scale=None)
    curve, gain = cliplevel.warped_response(photo, k)
    merged, _ = pipeline.merge_photo_stack(out.stack, photo, "anchored", curve)
    np.testing.assert_allclose(out.hdr, merged * gain, rtol=1e-6)
    # The anchored merge keeps the input's (bent) linear values where nothing clipped.
    unclipped = photo.max(-1) < 0.9
    np.testing.assert_allclose(out.hdr[unclipped],
                               (gain * crf_lib.apply_inverse_crf(curve, photo))[unclipped],
                               rtol=1e-5, atol=1e-7)
    # Below the median code the midtones keep inverse sRGB.
    dark = (photo.max(-1) < protocol.warp_median_code(photo) - 0.02)
    np.testing.assert_allclose(out.hdr[dark], protocol.linearise_srgb(photo)[dark], rtol=2e-2,
                               atol=1e-4)
    # Without the network the merge is inverse sRGB's; the stack does not depend on it.
    bare = pipeline.reconstruct(pipeline.Pipeline.load(tiny_weights), photo, scale=None)
    np.testing.assert_array_equal(bare.stack, out.stack)
    assert not np.allclose(bare.hdr, out.hdr)
    np.testing.assert_array_equal(
        bare.hdr, pipeline.merge_photo_stack(out.stack, photo, "anchored")[0])
    # A response the user gives wins; a degenerate photo is its own linearised value.
    srgb = pipeline.reconstruct(pipe, photo, scale=None, response_curve=crf_lib.srgb_crf())
    np.testing.assert_array_equal(srgb.hdr, bare.hdr)
    black = np.zeros((16, 16, 3), np.float32)
    assert pipeline.blind_linearisation(pipe, black)[1] == 1.0


def test_weights_without_the_estimate_have_none(tiny_weights):
    pipe = pipeline.Pipeline.load(tiny_weights)
    assert pipe.cliplevel is None
    with pytest.raises(bundle.WeightsError, match="no 'cliplevel' network"):
        pipeline.estimate_clip_level(pipe, make_photo(hw=(8, 8)))
    curve, gain = pipeline.blind_linearisation(pipe, make_photo(hw=(8, 8)))
    assert gain == 1.0 and np.array_equal(curve, crf_lib.srgb_crf())


def test_experiment_trains_both_objectives_evaluates_and_exports(fake_hdr_dir, tiny_weights,
                                                                 tmp_path):
    common = ["--hdr_dir", str(fake_hdr_dir), "--emor_dir", "", "--views", "8", "--procs", "1",
              "--steps", "3", "--batch_size", "2", "--features", "4,8,8",
              "--checkpoint_every", "2"]
    run = [sys.executable, "-m", "experiments.clip_scalar"]
    subprocess.run(run + ["--mode", "train", "--workdir", str(tmp_path / "a")] + common,
                   check=True, capture_output=True)
    subprocess.run(run + ["--mode", "train", "--objective", "metric", "--init",
                          str(tmp_path / "a"), "--workdir", str(tmp_path / "b"), "--ceiling", "0"]
                   + common, check=True, capture_output=True)
    out = tmp_path / "results"
    subprocess.run(run + ["--mode", "evaluate", "--split", "dev", "--estimators",
                          f"{tmp_path / 'a'},{tmp_path / 'b'}", "--hdr_dir", str(fake_hdr_dir),
                          "--emor_dir", "", "--out", str(out)], check=True, capture_output=True)
    res = json.loads((out / "results.json").read_text())
    fams = {r["family"] for r in res["inputs"]}
    assert fams == {"sRGB", "gamma", "gamma+S"}
    for r in res["inputs"]:
        s = r["scores"]
        assert s["inverse sRGB"]["k"] == 0.0 and s["oracle scalar (analysis)"]["k"] == r["target"]
        assert np.isfinite(s["blind estimate"]["pu21"])
        if r["family"] == "sRGB":
            assert r["target"] == pytest.approx(0.0, abs=1e-6)
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    subprocess.run(run + ["--mode", "export", "--estimators", f"{tmp_path / 'a'},{tmp_path / 'b'}",
                          "--out", str(weights)], check=True, capture_output=True)
    entry = bundle.read_manifest(weights)["cliplevel"]
    assert entry["config"] == CONFIG | {"ceiling": None, "offset": 0.0}
    assert [m["objective"] for m in entry["members"]] == ["scalar", "metric"]
    assert [m["ceiling"] for m in entry["members"]] == [None, 0.0]
    photos = [make_photo(seed=s, hw=(32, 32)) for s in range(6)]
    free = [pipeline.estimate_clip_level(pipeline.Pipeline.load(weights), p) for p in photos]
    assert all(math.isfinite(k) for k in free)
    # Exported with a ceiling: the same estimates, bounded.
    subprocess.run(run + ["--mode", "export", "--estimators", f"{tmp_path / 'a'},{tmp_path / 'b'}",
                          "--ceiling", "0", "--offset", "0.01", "--out", str(weights)], check=True,
                   capture_output=True)
    assert bundle.read_manifest(weights)["cliplevel"]["config"] == CONFIG | {"ceiling": 0.0,
                                                                             "offset": 0.01}
    bounded = [pipeline.estimate_clip_level(pipeline.Pipeline.load(weights), p) for p in photos]
    np.testing.assert_allclose(bounded, np.minimum(np.add(free, 0.01), 0.0), rtol=1e-5,
                               atol=1e-7)


def test_clip_level_scalar_against_numpy():
    rng = np.random.default_rng(6)
    from hdr_jax.data import testing

    radiance = testing.fake_radiance(rng, 48, 64, stops=10.0).astype(np.float32)
    w709 = np.array([0.2126, 0.7152, 0.0722])
    for curve in (crf_lib.gamma_crf(2.6), crf_lib.s_curve_crf(6.0, gamma=1.8)):
        a = protocol.clipping_exposure(radiance, 0.05, curve=curve)
        ldr = protocol.render_srgb8(radiance, a, curve)
        clipped = protocol.clipped_mask(ldr)

        def gain(lin):
            lp, lr = lin @ w709, radiance @ w709
            ok = ~clipped & (lp > 0) & (lr > 0)
            return np.exp(np.median(np.log(lr[ok]) - np.log(lp[ok])))

        true, srgb_lin = protocol.linearise_srgb(ldr, curve), protocol.linearise_srgb(ldr)
        want = math.log2(gain(true) / gain(srgb_lin))
        got = protocol.clip_level_scalar(ldr, radiance, curve, clipped)
        assert got == pytest.approx(want, abs=1e-4) and abs(got) > 0.05
    srgb = protocol.render_srgb8(radiance, 1.0)
    assert protocol.clip_level_scalar(srgb, radiance, crf_lib.srgb_crf(),
                                      protocol.clipped_mask(srgb)) == 0.0


_EDGE_CHECK = """
import json
import numpy as np
from experiments import curve_cues
from hdr_jax.camera import crf

# Two flat colours meeting along a column, mixed linearly in radiance over 3 px, then sRGB.
a, b = np.array([0.6, 0.2, 0.05]), np.array([0.05, 0.3, 0.5])
t = np.clip((np.arange(64) - 30) / 3.0, 0.0, 1.0)[None, :, None]
photo = np.round(np.asarray(crf.srgb_encode(np.broadcast_to(a * (1 - t) + b * t, (32, 64, 3))))
                 * 255) / 255
triples = curve_cues.edge_triples(photo)

def cost(linear):
    g = linear(triples)
    d = g[:, 1] - g[:, 0]
    return float(np.mean(curve_cues._sine(g[:, 2] - g[:, 0], d)
                         + curve_cues._sine(g[:, 2] - g[:, 1], d)))

print(json.dumps({"n": len(triples), "true": cost(lambda z: np.asarray(crf.srgb_decode(z))),
                  "codes": cost(lambda z: z), "k": curve_cues.edge_scalar(photo),
                  "k_flat": curve_cues.edge_scalar(np.zeros((32, 32, 3)))}))
"""


def test_edge_cue_triples_are_straight_under_the_true_curve():
    # In a subprocess: the experiment module defines absl flags that other experiments, imported
    # by other tests in this process, define too.
    r = subprocess.run([sys.executable, "-c", _EDGE_CHECK], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["n"] > 50
    assert got["true"] < 0.05 and got["codes"] > 3 * got["true"]  # the codes themselves bend
    assert abs(got["k"]) <= 0.1  # an sRGB photo: no bend
    assert got["k_flat"] == 0.0  # no edge: inverse sRGB


@pytest.mark.slow
def test_curve_cues_experiment_runs_and_reports(fake_hdr_dir, tiny_weights, cli_env, tmp_path):
    out = tmp_path / "cues"
    run_python_checked(["-m", "experiments.curve_cues", "--hdr_dir", fake_hdr_dir, "--weights",
                        tiny_weights, "--size", "64", "--limit", "1", "--out", out],
                       cli_env, timeout=600)
    res = json.loads((out / "results.json").read_text())
    rows = res["summary"]["gains"]
    # On sRGB photos the true k is 0 and the true inverse response is inverse sRGB.
    assert rows["true k"]["sRGB"] == rows["true inverse response"]["sRGB"] == 0.0
    assert all(x["k"]["true k"] == 0.0 for x in res["inputs"] if x["family"] == "sRGB")
    assert "edge cue" in (out / "results.md").read_text()


@pytest.mark.slow
def test_blind_limits_experiment_runs_and_reports(fake_hdr_dir, cli_env, tmp_path):
    out = tmp_path / "limits"
    run_python_checked(["-m", "experiments.blind_limits", "--hdr_dir", fake_hdr_dir, "--size",
                        "64", "--limit", "1", "--views_per_scene", "4", "--out",
                        out], cli_env, timeout=600)
    res = json.loads((out / "results.json").read_text())
    tables = res["accuracy"]["rows"]
    inputs = res["accuracy"]["inputs"]
    assert set(tables) == {"lifted", "linearised alone"}
    assert len(inputs) == 3 * 3  # 1 development scene: 3 families x 3 encodings
    # On sRGB photos the true k is 0 (so are its twins').
    assert all(x["k_true"] == x["k_twins"] == 0.0 for x in inputs if x["family"] == "sRGB")
    # A gamma photo's twins are the family's three gammas.
    assert all(math.isfinite(x["k_twins"]) for x in inputs if x["family"] == "gamma")
    for rows in tables.values():
        assert len(rows) == 8
        assert rows["true k"]["sRGB"] == pytest.approx(rows["k = 0 (inverse sRGB)"]["sRGB"],
                                                       abs=1e-6)
        assert rows["true k"]["rmse_k"] == 0.0
        # Moving the estimate half way to the truth halves its rms error.
        half = rows["the estimate moved 50% of the way to the true k"]["rmse_k"]
        assert half == pytest.approx(rows["the weights' estimate"]["rmse_k"] / 2, rel=1e-6)
        # The best constant of each family is at least as good as k = 0 (a point of the grid).
        best = rows["best constant k per family (the family known)"]
        for f in ("sRGB", "gamma", "gamma+S"):
            assert best[f] >= rows["k = 0 (inverse sRGB)"][f] - 1e-9
    # Linearised alone, k = 0 is the inverse-sRGB input itself.
    unbent = tables["linearised alone"]["k = 0 (inverse sRGB)"]
    assert all(unbent[f] == 0.0 for f in ("sRGB", "gamma", "gamma+S", "mean"))
    for split in res["spread"].values():
        assert split["quantiles"]["0.1"] <= split["quantiles"]["0.9"]
        # five statistics, and all of them together where the views outnumber them
        assert len(split["cues"]) == (6 if split["views"] > 6 else 5)
        assert all(0 < c["best_corr"] <= 1 and c["sd_ln"] >= 0 for c in split["cues"].values())
    assert "q90 / q10" in (out / "results.md").read_text()
    assert "median log step, 4 px" in (out / "results.md").read_text()
    assert "curves" not in res  # run only when named

    out = tmp_path / "curves"
    run_python_checked(["-m", "experiments.blind_limits", "--hdr_dir", fake_hdr_dir, "--size",
                        "64", "--limit", "1", "--parts", "curves", "--parts", "prototypes",
                        "--out", out], cli_env, timeout=600)
    res = json.loads((out / "results.json").read_text())
    assert set(res) == {"grid", "split", "closer", "curves", "prototypes", "total_s"}
    inputs = res["curves"]["inputs"]
    assert len(inputs) == 3 * 3
    for x in inputs:
        # an sRGB photo's only twin is its own curve; a gamma family's are its three gammas,
        # the middle one gamma 2.2 (so a gamma 2.2 photo's middle twin is its true curve)
        assert len(x["twins"]) == (1 if x["family"] == "sRGB" else 3)
        if x["family"] == "sRGB" or x["curve"].startswith("gamma 2.2"):
            assert x["twins"][x["middle"]] == x["true"]
        else:
            assert x["twins"][x["middle"]] != x["true"]
    alone = res["curves"]["rows"]["linearised alone"]
    # the sRGB photos' true curve is inverse sRGB, the baseline itself
    assert all(row["sRGB"] == 0.0 for row in alone.values())
    assert "Whole curves with the exponent unknown" in (out / "results.md").read_text()
    # Prototypes: k real, increasing curves for each k; one prototype is every input's nearest.
    proto = res["prototypes"]
    radiance = proto["prototypes"].pop("radiance")
    for k, both in proto["prototypes"].items():
        for curves in both.values():
            assert len(curves) == int(k) and all(np.all(np.diff(c) >= 0) for c in curves)
            assert all(len(c) == len(radiance) and c[0] == 0 and c[-1] == 1 for c in curves)
    assert {x["nearest"]["1"] for x in proto["inputs"]} == {0}
    for scoring, table in proto["rows"].items():
        fams = [x["family"] for x in proto["inputs"]]
        srgb = [i for i, f in enumerate(fams) if f == "sRGB"]
        # sRGB's canonical twin is sRGB itself; the gated rows keep today's sRGB and gamma
        assert table["its shape known, its exponent the canonical one"]["sRGB"] == pytest.approx(
            table["the true curve (oracle)"]["sRGB"], abs=1e-3), scoring
        for k in (1, 16):
            gated = table[f"sRGB and gamma as today, the others the nearest of {k} (typical "
                          "exponent)"]
            assert [gated[f] for f in ("sRGB", "gamma")] == [
                table["today's estimate (the weights' k)"][f] for f in ("sRGB", "gamma")]
            assert gated["gamma+S"] == table[f"the nearest of {k} shape prototypes, typical "
                                             "exponent"]["gamma+S"]
        assert srgb and all(proto["inputs"][i]["canonical"] == pytest.approx(
            proto["inputs"][i]["true"], abs=1e-3) for i in srgb)
    assert "Shape prototypes, the exponent canonical" in (out / "results.md").read_text()


_SCALING_CHECK = """
import json
import numpy as np
from experiments import blind_limits

rng = np.random.default_rng(0)
lum = np.exp(rng.normal(0.0, 0.6, (48, 64)) + np.linspace(0, 1, 64))
print(json.dumps({str(p): blind_limits.scaling_cues(lum ** p) for p in (1.0, 0.8, 1.44)}))
"""


def test_scaling_cues_scale_with_the_scene_exponent():
    """Each cue of a scene raised to a power p is p times the scene's: what makes them read
    the exponent (scenes whose range lies within the cues' floor, so the same pixels count).
    In a subprocess: the experiment module defines absl flags that other experiments, imported
    by other tests in this process, define too."""
    r = subprocess.run([sys.executable, "-c", _SCALING_CHECK], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    base = got.pop("1.0")
    assert len(base) == 5
    for p, cues in got.items():
        assert set(cues) == set(base)
        for name, v in cues.items():
            assert v == pytest.approx(float(p) * base[name], rel=1e-6), name