"""Tests for hdr_jax.eval: input rendering with a target clipped fraction, the PU21 protocol
(against a NumPy re-implementation), per-example metrics, aggregation, result files, and the
per-item evaluators end to end on tiny random networks and generated data."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from conftest import REPO_ROOT, run_python_checked

from hdr_jax import bundle, pipeline
from hdr_jax import io as hdr_io
from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera import exposure
from hdr_jax.data import hdr_brackets, testing
from hdr_jax.eval import baselines, protocol, report, responses, stage1, stage2, stats, system
from hdr_jax.models import factory


def _srgb_iec(x: np.ndarray) -> np.ndarray:
    x = np.clip(np.asarray(x, np.float64), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


def _radiance(seed: int = 0, h: int = 48, w: int = 64) -> np.ndarray:
    return testing.fake_radiance(np.random.default_rng(seed), h, w, stops=12.0)


# -- inputs -------------------------------------------------------------------------------------


def test_clipped_mask_matches_loop():
    rng = np.random.default_rng(0)
    img = rng.integers(240, 256, size=(9, 7, 3)).astype(np.float32) / 255.0
    want = np.zeros((9, 7), bool)
    for i in range(9):
        for j in range(7):
            want[i, j] = any(round(float(v) * 255) >= 254 for v in img[i, j])
    np.testing.assert_array_equal(protocol.clipped_mask(img), want)
    assert want.any() and not want.all()


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.2])
def test_clipping_exposure_hits_target(fraction):
    e = _radiance(1)
    a = protocol.clipping_exposure(e, fraction)
    # Independent rendering: the IEC sRGB formula, 8-bit rounding, any channel >= 254.
    levels = np.rint(_srgb_iec(e * a) * 255.0)
    measured = np.mean(np.any(levels >= 254, axis=-1))
    assert abs(measured - fraction) <= 0.005
    # And the library's own renderer agrees with its mask.
    ldr = protocol.render_srgb8(e, a)
    assert abs(protocol.clipped_mask(ldr).mean() - fraction) <= 0.005


def test_clipping_exposure_is_scale_covariant():
    e = _radiance(2)
    a1 = protocol.clipping_exposure(e)
    a2 = protocol.clipping_exposure(e * 1000.0)
    assert a2 * 1000.0 == pytest.approx(a1, rel=1e-3)


def test_clipping_exposure_errors():
    with pytest.raises(ValueError, match="positive"):
        protocol.clipping_exposure(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="fraction"):
        protocol.clipping_exposure(_radiance(), 1.5)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        protocol.clipping_exposure(np.ones((8, 8), np.float32))
    bad = _radiance()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        protocol.clipping_exposure(bad)


def test_render_and_linearise_match_the_srgb_formula():
    e = _radiance(3)
    ldr = protocol.render_srgb8(e, 0.5)
    np.testing.assert_allclose(ldr * 255.0, np.rint(ldr * 255.0), atol=1e-4)  # 8-bit levels
    np.testing.assert_allclose(ldr, _srgb_iec(e * 0.5), atol=0.5 / 255 + 2e-3)
    lin = protocol.linearise_srgb(ldr)
    ok = (ldr > 0.2) & (ldr < 0.9)
    np.testing.assert_allclose(lin[ok], (e * 0.5)[ok], rtol=0.03)


def test_linearise_warped_is_a_two_point_correction_of_inverse_srgb():
    # Every 8-bit level once per row (grey, so the channel mean is the level), 4 rows.
    levels = np.arange(256, dtype=np.float32) / 255.0
    ldr = np.repeat(np.tile(levels, (4, 1))[..., None], 3, axis=-1)
    srgb_inv = np.where(levels <= 0.04045, levels / 12.92, ((levels + 0.055) / 1.055) ** 2.4)
    base = protocol.linearise_srgb(ldr)[0, :, 0]
    np.testing.assert_allclose(base, srgb_inv, rtol=1e-2, atol=1e-6)  # sampled-curve accuracy
    zm = np.median(levels[levels < 254.0 / 255.0])
    for s in (-0.5, 0.7):
        out = protocol.linearise_warped(ldr, s)[0, :, 0]
        w = np.clip((levels - zm) / (1 - zm), 0, 1)
        np.testing.assert_allclose(out, base * 2.0 ** (s * w), rtol=1e-5, atol=1e-9)
        below = levels <= zm
        np.testing.assert_array_equal(out[below], base[below])
        assert out[-1] == pytest.approx(2.0**s, rel=1e-5)
    # A scalar too negative for the curve to keep rising is bounded; the curve still rises.
    steep = protocol.linearise_warped(ldr, -10.0)[0, :, 0]
    assert np.all(np.diff(steep[levels > 0.05]) > 0)
    assert steep[-1] > steep[int(zm * 255)]
    np.testing.assert_array_equal(protocol.linearise_warped(ldr, 0.0), protocol.linearise_srgb(ldr))


def test_jpeg_roundtrip():
    ldr = protocol.render_srgb8(_radiance(4), 0.2)
    out = protocol.jpeg_roundtrip(ldr, 90)
    assert out.shape == ldr.shape and out.dtype == np.float32
    assert not np.array_equal(out, ldr)
    assert 10 * math.log10(1 / np.mean((out - ldr) ** 2)) > 30
    with pytest.raises(ValueError, match="quality"):
        protocol.jpeg_roundtrip(ldr, 0)


def test_render_view_lr_is_box_average_of_hr():
    pano = _radiance(5, 32, 64)
    lr, hr = system.render_view(pano, (80.0, 10.0, 30.0), 12, 2)
    assert lr.shape == (12, 12, 3) and hr.shape == (24, 24, 3)
    want = cv2.resize(hr, (12, 12), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(lr, want, rtol=1e-5, atol=1e-6)


def test_heldout_scenes_and_views_follow_the_training_split(tmp_path):
    scenes = {f"s{i}": (16, 32) for i in range(6)} | {"photo": (20, 24)}
    testing.write_fake_hdr_folder(tmp_path, scenes)
    held = system.heldout_scenes(tmp_path)
    want = hdr_brackets.split_scenes(list(scenes))[1]
    assert [p.stem for p in held] == want and want
    views = list(system.heldout_views(tmp_path, size=8, scale=2))
    per_scene = {s: 1 if s == "photo" else len(system.HELDOUT_VIEWS) for s in want}
    assert len(views) == sum(per_scene.values())
    for _scene, view, lr, hr in views:
        assert lr.shape == (8, 8, 3) and hr.shape == (16, 16, 3)
        np.testing.assert_allclose(lr, hr.reshape(8, 2, 8, 2, 3).mean((1, 3)), rtol=1e-5)
        assert view is None or view in system.HELDOUT_VIEWS
    with pytest.raises(ValueError, match="held-out"):
        list(system.heldout_views(tmp_path, size=8, scale=2, scenes=["nope"]))


# -- PU21 protocol ------------------------------------------------------------------------------


def _pu21_numpy(y: np.ndarray) -> np.ndarray:
    p1, p2, p3, p4, p5, p6, p7 = (
        0.353487901, 0.3734658629, 8.277049286e-05, 0.9062562627,
        0.09150303166, 0.9099517204, 596.3148142,
    )  # fmt: skip
    y = np.clip(np.asarray(y, np.float64), 0.005, 10000.0)
    return np.maximum(p7 * (((p1 + p2 * y**p4) / (1 + p3 * y**p4)) ** p5 - p6), 0.0)


def _protocol_numpy(pred, ref, clipped):
    w = np.array([0.2126, 0.7152, 0.0722])
    lp, lr = pred.astype(np.float64) @ w, ref.astype(np.float64) @ w
    ok = ~clipped & (lp > 0) & (lr > 0)
    gain = np.exp(np.median(np.log(lr[ok]) - np.log(lp[ok])))
    s = 1000.0 / np.percentile(lr, 99.9)
    d2 = (_pu21_numpy(pred * gain * s) - _pu21_numpy(ref * s)) ** 2
    overall = 10 * np.log10(256.0**2 / d2.mean())
    on_clipped = 10 * np.log10(256.0**2 / d2[clipped].mean())
    return overall, on_clipped, gain


def _hdr_case(seed=6):
    rng = np.random.default_rng(seed)
    ref = _radiance(seed)
    clipped = protocol.clipped_mask(protocol.render_srgb8(ref, protocol.clipping_exposure(ref)))
    pred = ref * np.exp(0.3 * rng.standard_normal(ref.shape)).astype(np.float32) * 0.37
    pred[clipped] *= 0.2  # much worse where the input clipped
    return pred.astype(np.float32), ref, clipped


def test_pu21_protocol_matches_numpy_reference():
    pred, ref, clipped = _hdr_case()
    got = protocol.pu21_protocol(pred, ref, clipped)
    overall, on_clipped, gain = _protocol_numpy(pred, ref, clipped)
    assert got["gain"] == pytest.approx(gain, rel=1e-4)
    assert got["pu21"] == pytest.approx(overall, abs=0.02)
    assert got["pu21_clipped"] == pytest.approx(on_clipped, abs=0.02)
    assert got["pu21_clipped"] < got["pu21"] - 3


def test_pu21_protocol_perfect_prediction_and_invariances():
    pred, ref, clipped = _hdr_case(7)
    perfect = protocol.pu21_protocol(ref, ref, clipped)
    assert perfect["pu21"] == np.inf and perfect["pu21_clipped"] == np.inf
    assert protocol.pu21_protocol(ref * 3.0, ref, clipped)["pu21"] > 80
    base = protocol.pu21_protocol(pred, ref, clipped)
    gained = protocol.pu21_protocol(pred * 13.7, ref, clipped)
    both = protocol.pu21_protocol(pred * 0.01, ref * 0.01, clipped)
    for other in (gained, both):
        assert other["pu21"] == pytest.approx(base["pu21"], abs=1e-3)
        assert other["pu21_clipped"] == pytest.approx(base["pu21_clipped"], abs=1e-3)


def test_pu21_protocol_gain_ignores_clipped_pixels():
    _, ref, clipped = _hdr_case(8)
    pred = ref * 2.0
    pred[clipped] = 0.0  # no effect on the gain: fitted on unclipped pixels only
    r = protocol.pu21_protocol(pred, ref, clipped)
    assert r["gain"] == pytest.approx(0.5, rel=1e-5)
    # Unclipped pixels are exact, so the overall MSE is the clipped MSE times their fraction.
    frac = clipped.mean()
    assert r["pu21"] == pytest.approx(r["pu21_clipped"] - 10 * math.log10(frac), abs=0.01)


def test_pu21_protocol_edge_cases():
    _, ref, _ = _hdr_case(9)
    none = np.zeros(ref.shape[:2], bool)
    assert math.isnan(protocol.pu21_protocol(ref * 0.9, ref, none)["pu21_clipped"])
    with pytest.raises(ValueError, match="every pixel"):
        protocol.pu21_protocol(ref, ref, ~none)
    with pytest.raises(ValueError, match="mask"):
        protocol.pu21_protocol(ref, ref, none[1:])
    with pytest.raises(ValueError, match="black"):
        protocol.pu21_protocol(ref, ref * 0, none)


# -- small helpers ------------------------------------------------------------------------------


def test_psnr_is_capped():
    a = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    b = a.copy()
    b[1] += 0.1
    got = protocol.psnr(a, b)
    assert got[0] == protocol.MAX_PSNR_DB
    assert got[1] == pytest.approx(20.0, abs=1e-3)


def test_exposure_scores_mask_undefined_slots():
    """Per slot PSNR with NaN on padded slots; an example with no valid slot (input at the end
    of the bracket in the network's direction) has no PSNR: NaN, not 0, so that it does not
    pull a mean down."""
    rng = np.random.default_rng(0)
    target = rng.random((3, 2, 8, 8, 3)).astype(np.float32)
    pred = target + 0.1
    pred[1, 1] = target[1, 1]  # an exact slot: capped, not inf
    mask = np.array([[1, 1], [1, 1], [0, 0]], np.float32)
    mask[0, 1] = 0
    got = jax.device_get(stage1.exposure_scores(pred, target, mask))
    np.testing.assert_allclose(got["psnr_step1"][:2], 20.0, atol=1e-3)
    assert np.isnan(got["psnr_step2"][0]) and got["psnr_step2"][1] == protocol.MAX_PSNR_DB
    assert np.isnan(got["psnr_step1"][2]) and np.isnan(got["psnr_step2"][2])
    np.testing.assert_allclose(got["psnr"][:2], [20.0, 60.0], atol=1e-3)
    assert np.isnan(got["psnr"][2])


def test_fused_scores_batched_and_single():
    rng = np.random.default_rng(1)
    e = np.stack([_radiance(s, 48, 48) for s in (1, 2)])
    under, over = protocol.render_srgb8(e, 0.3), protocol.render_srgb8(e, 3.0)
    label = protocol.render_srgb8(e, 1.0)
    fused = np.clip(label + 0.05 * rng.standard_normal(label.shape), 0, 1).astype(np.float32)
    batched = jax.device_get(stage2.fused_scores(fused, label, under, over))
    assert set(batched) == set(stage2.METRICS) and batched["psnr"].shape == (2,)
    one = jax.device_get(stage2.fused_scores(fused[1], label[1], under[1], over[1]))
    for k in stage2.METRICS:
        assert one[k] == pytest.approx(batched[k][1], rel=1e-5), k
    # Too small for three MEF-SSIM scales: left out rather than computed on padding.
    crop = (slice(None), slice(0, 16), slice(0, 16))
    small = stage2.fused_scores(fused[crop], label[crop], under[crop], over[crop])
    assert set(small) == set(stage2.METRICS) - {"mef_ssim"}
    # The colour columns: the label's saturation is the same whatever the method.
    np.testing.assert_allclose(batched["label_saturation"],
                               jax.device_get(stage2.fused_scores(label, label, under, over))["saturation"])
    assert stage2.fused_scores(label, label, under, over)["psnr"][0] == protocol.MAX_PSNR_DB


def test_stage2_methods_and_markdown():
    rng = np.random.default_rng(2)
    examples = []
    for _ in range(3):
        hr = rng.random((48, 48, 3)).astype(np.float32)
        lr = hr.reshape(24, 2, 24, 2, 3).mean(axis=(1, 3))
        examples.append(
            {"under_lr": lr * 0.5, "over_lr": np.minimum(lr * 2, 1), "under_hr": hr * 0.5,
             "over_hr": np.minimum(hr * 2, 1), "label_hr": hr}  # fmt: skip
        )
    methods = baselines.baseline_methods()
    per = stage2.per_example_scores(examples, methods, 2)
    res = stage2.evaluate_methods(examples, methods, 2)
    assert list(res) == list(methods)
    for name in methods:
        assert res[name]["n"] == 3
        for k in stage2.METRICS:  # NaN (no bright pixel) is left out of a mean
            vals = np.asarray(per[name][k], np.float64)
            expected = vals[~np.isnan(vals)].mean() if (~np.isnan(vals)).any() else np.nan
            assert res[name][k] == pytest.approx(expected, nan_ok=True)
    md = stage2.markdown(res, "t")
    assert md.startswith("### t\n\n| method | PSNR (RGB) | SSIM (RGB) | CIEDE2000 | MEF-SSIM |")
    assert f"| Mertens + bicubic | {res['Mertens + bicubic']['psnr']:.2f} |" in md
    with pytest.raises(ValueError, match="no evaluation examples"):
        stage2.evaluate_methods([], methods, 2)


def test_collector_and_markdown():
    avg = stats.Collector()
    for v in (1.0, float("nan"), 3.0):
        avg.add(("a", "x"), v)
    avg.add("b", 5.0)
    avg.update({"c": np.array([1.0, np.nan]), "d": np.array([np.nan])})
    assert avg.mean(("a", "x")) == 2.0 and avg.count(("a", "x")) == 2
    assert avg.mean("b") == 5.0 and math.isnan(avg.mean("missing"))
    assert avg.means() == {"a/x": 2.0, "b": 5.0, "c": 1.0}  # 'd' has no defined value
    np.testing.assert_array_equal(avg.arrays()["c"], [1.0, np.nan])
    table = report.markdown_table(["m", "v"], [["x", 1.234], ["y", float("nan")], ["z", None]])
    assert table.splitlines() == [
        "| m | v |", "| --- | --- |", "| x | 1.23 |", "| y | – |", "| z | – |"
    ]  # fmt: skip


def test_write_results_strict_json_and_no_overwrite(tmp_path):
    res = {"a": float("nan"), "b": np.float32(1.5), "c": np.arange(2), "d": (1, float("inf"))}
    out = tmp_path / "r"
    paths = report.write_results(out, res, "# md\n", overwrite=False)
    assert [p.name for p in paths] == list(report.RESULT_FILES)
    text = paths[0].read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": 1.5, "c": [0, 1], "d": [1, None]}
    assert report.existing_results(out) == list(paths)
    with pytest.raises(hdr_io.ImageIOError, match="exists"):
        report.write_results(out, {"a": 1}, "other\n", overwrite=False)
    assert paths[1].read_text() == "# md\n"  # untouched
    report.write_results(out, {"a": 1}, "other\n", overwrite=True)
    assert json.loads(paths[0].read_text()) == {"a": 1}


def test_compare_paired_matches_scipy():
    rng = np.random.default_rng(0)
    b = rng.normal(30.0, 2.0, 40)
    a = b + 0.5 + rng.normal(0.0, 0.3, 40)
    a[3] = np.nan  # dropped from both sides
    r = stats.compare(a, b, paired=True)
    d = (a - b)[~np.isnan(a)]
    assert r["n"] == 39
    assert r["delta"] == pytest.approx(d.mean())
    assert r["two_se"] == pytest.approx(2 * scipy.stats.sem(d))
    assert r["verdict"] == "confirmed"
    assert stats.compare(b, a, paired=True)["verdict"] == "contradicted"
    # Pure noise: the claimed sign cannot be read off 40 examples.
    c = b + rng.normal(0.0, 0.3, 40) - 0.02
    assert stats.compare(c, b, paired=True)["verdict"].startswith("not resolved")
    # 'no gain' holds unless a is significantly better.
    assert stats.compare(c, b, paired=True, claim="no_gain")["verdict"].startswith("confirmed")
    assert stats.compare(a, b, paired=True, claim="no_gain")["verdict"] == "contradicted"


def test_compare_unpaired_and_degenerate():
    rng = np.random.default_rng(1)
    a, b = rng.normal(2.0, 1.0, 30), rng.normal(0.0, 1.0, 12)
    r = stats.compare(a, b, paired=False)
    se = math.hypot(scipy.stats.sem(a), scipy.stats.sem(b))
    assert r["delta"] == pytest.approx(a.mean() - b.mean())
    assert r["two_se"] == pytest.approx(2 * se)
    assert r["verdict"] == "confirmed"
    assert stats.compare([1.0], [0.0], paired=True)["verdict"].startswith("not resolved")
    with pytest.raises(ValueError, match="equal shapes"):
        stats.compare([1.0, 2.0], [1.0], paired=True)


def test_summarise_skips_nan():
    v = np.array([10.0, np.nan, 20.0, 100.0])
    s = stats.summarise(v)
    ref = np.array([10.0, 20.0, 100.0])
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(ref.mean())
    assert s["se"] == pytest.approx(scipy.stats.sem(ref))
    assert stats.summarise([None, 1.0, 3.0])["mean"] == 2.0  # JSON null reads back as NaN


# -- end to end on tiny random networks ---------------------------------------------------------


def _random_variables(init, seed: int) -> dict:
    """Variables shaped like ``init()`` without running it (compiling the init costs more than
    the tests): N(0, 0.02) weights as the models' own init, zero biases/means, unit scales/vars."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "var" in name or "scale" in name:
            return np.ones(leaf.shape, np.float32)
        if "bias" in name or "mean" in name:
            return np.zeros(leaf.shape, np.float32)
        return (0.02 * rng.standard_normal(leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, jax.eval_shape(init))


@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    drtmo_cfg = {
        "width": "tiny",
        "depth": 5,
        "num_exposures": 8,
        "bn_use_running_average_at_inference": True,
    }
    x = jnp.zeros((1, 32, 32, 3))
    m = factory.make_drtmo(drtmo_cfg)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(0)}
    for i, name in enumerate(("drtmo_up", "drtmo_down")):
        v = _random_variables(lambda: m.init(rngs, x, train=False), i)
        bundle.save_network(d, name, v, drtmo_cfg)
    cf_cfg = {"features": 8, "num_groups": 2, "num_steps": 2, "scale": 2}
    m2 = factory.make_cfnet(cf_cfg)
    y = x[:, :16, :16]
    v = _random_variables(lambda: m2.init(jax.random.key(0), y, y), 2)
    bundle.save_network(d, "cfnet_x2", v, cf_cfg)
    return pipeline.Pipeline.load(d)


def test_evaluate_bracket_record(tiny_pipe):
    e = exposure.normalise_radiance(_radiance(10, 32, 32))
    curve = crf_lib.srgb_crf()
    bracket = exposure.simulate_bracket(e, curve, normalise=False)
    record = {"bracket": np.rint(bracket * 255).astype(np.uint8), "hdr": e.astype(np.float16),
              "crf_curve": curve}  # fmt: skip
    r = stage1.evaluate_bracket_record(tiny_pipe, record)
    # Every (j, step) with a target inside the 9-image bracket: 2 * sum_j (8 - j) = 72.
    assert len(r["psnr"]) == 72
    assert {s for s, *_ in r["psnr"]} == set(range(-8, 0)) | set(range(1, 9))
    for step, j, ours, naive_s, naive_t, network in r["psnr"]:
        assert 0 <= j + step <= 8
        assert np.isfinite(ours) and 0 < naive_s <= protocol.MAX_PSNR_DB
        assert naive_s == pytest.approx(naive_t, abs=0.5)  # the true CRF is sRGB here
        assert ours == network  # no response classifier in these weights: up = the network
    assert set(r["merge"]) == set(stage1.MERGE_ROWS)
    lin_s, lin_t = (r["merge"][k]["pu21"] for k in stage1.MERGE_ROWS[:2])
    assert lin_s == pytest.approx(lin_t, abs=0.1)
    sub = stage1.evaluate_bracket_record(tiny_pipe, record, input_indices=[2, 6])
    assert {j for _, j, *_ in sub["psnr"]} == {2, 6} and len(sub["psnr"]) == 16
    with pytest.raises(ValueError, match="input indices"):
        stage1.evaluate_bracket_record(tiny_pipe, record, input_indices=[9])


def test_evaluate_view(tiny_pipe):
    pano = _radiance(11, 64, 128)
    lr, hr = system.render_view(pano, system.HELDOUT_VIEWS[0], 32, 2)
    r = system.evaluate_view(tiny_pipe, lr, hr, jpeg_quality=90)
    assert abs(r.info["clipped_fraction"] - protocol.CLIP_FRACTION) <= 0.005
    assert set(r.hdr_scores) == set(system.HDR_ROWS)
    assert set(r.fused_scores) == set(system.FUSED_ROWS)
    for s in r.hdr_scores.values():
        assert np.isfinite(s["pu21"]) and np.isfinite(s["pu21_clipped"])
    for s in r.fused_scores.values():
        assert 0 < s["ssim"] <= 1 and 0 < s["mef_ssim"] <= 1 and np.isfinite(s["psnr"])
    # The oracle row does not depend on the networks: Mertens of the true pair is close to the
    # Mertens label of the dense true bracket (a 1/255 scaling bug would give ~5 dB).
    assert r.fused_scores[system.FUSED_ROWS[2]]["psnr"] > 15
    assert r.images["fused"].shape == hr.shape and r.images["input"].shape == lr.shape
    # The photo-region saturation, recomputed: HSV saturation over the pixels the photo shows
    # bright and unclipped, on the fused image (nearest-upsampled mask) and on the photo.
    photo = r.images["input"]
    clean = protocol.render_srgb8(lr, r.info["exposure"])  # clipping is judged before the JPEG
    region = (photo.max(-1) > 0.6) & np.all(clean < 254 / 255 - 1e-6, axis=-1)
    assert region.any()

    def hsv_s(im):
        return (im.max(-1) - im.min(-1)) / np.maximum(im.max(-1), 1e-12)

    region_hr = np.kron(region, np.ones((2, 2), bool))  # each LR pixel covers 2x2 HR pixels
    for s in r.fused_scores.values():
        assert s["photo_saturation"] == pytest.approx(hsv_s(photo)[region].mean(), rel=1e-4)
    got = r.fused_scores[system.FUSED_ROWS[0]]["photo_region_saturation"]
    assert got == pytest.approx(hsv_s(r.images["fused"])[region_hr].mean(), rel=1e-4)
    lo, hi = r.info["kept"]
    assert lo <= 8 + r.info["pair_steps"][0] <= 8 + r.info["pair_steps"][1] <= hi
    with pytest.raises(ValueError, match="not 2x"):
        system.evaluate_view(tiny_pipe, lr, hr[:-2])


# -- the response-family protocol ---------------------------------------------------------------


def test_highlight_levels_against_numpy():
    rng = np.random.default_rng(5)
    ref = rng.uniform(0.5, 4.0, (6, 7, 3)).astype(np.float32)
    clipped = ref.max(-1) > 2.0
    pred = ref * 0.5  # half as bright everywhere: -1 stop after a gain of 1
    got = protocol.highlight_levels(pred, ref, clipped, 1.0, 2.0)
    assert got["log2_ratio_median"] == pytest.approx(-1.0, abs=1e-5)
    lum = ref @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    assert got["p90_true_over_clip"] == pytest.approx(np.percentile(lum[clipped], 90) / 2.0, rel=1e-5)
    assert got["p90_pred_over_clip"] == pytest.approx(got["p90_true_over_clip"] / 2, rel=1e-5)
    assert protocol.highlight_levels(pred, ref, clipped, 2.0, 2.0)["log2_ratio_median"] == pytest.approx(0.0, abs=1e-5)
    assert np.isnan(protocol.highlight_levels(pred, ref, np.zeros_like(clipped), 1.0, 2.0)["log2_ratio_median"])


def test_response_families_and_plan():
    fams = responses.response_families()
    assert list(fams) == ["sRGB", "gamma", "gamma+S"]  # EMoR needs its files
    assert all(crf_lib.is_valid_crf(c) for f in fams.values() for c in f.values())
    p = responses.plan(4, fams)
    assert len(p) == 4 * len(fams) * len(responses.ENCODINGS)
    assert [r["curve"] for r in p if r["family"] == "gamma" and r["encoding"] == "PNG"] == [
        "gamma 1.8", "gamma 2.2", "gamma 2.6", "gamma 1.8"]
    assert {r["fraction"] for r in p} == set(responses.CLIP_FRACTIONS)


def test_evaluate_input_rows_and_the_oracle(tiny_weights):
    """On a gamma-2.6 camera the oracle (true inverse response) beats the sRGB linearisation
    overall, and so does the pipeline given the response; every row is scored with the clipped
    mask of the rendering."""
    pipe = pipeline.Pipeline.load(tiny_weights)
    radiance = _radiance(3, 64, 64)
    out = responses.evaluate_input(pipe, radiance, crf_lib.gamma_crf(2.6), fraction=0.05,
                                   jpeg_quality=None)
    assert set(out["scores"]) == set(responses.ROWS)
    assert out["clipped_fraction"] == pytest.approx(0.05, abs=0.02)
    s = out["scores"]
    ours, no_head, given, given_plain, plain, srgb, bent, oracle = (
        s[row] for row in responses.ROWS)
    assert ours == no_head  # weights without a highlight head
    assert given == given_plain  # nor a lift for a given response
    assert ours == plain and bent == srgb  # nor a clip-level estimate: inverse sRGB
    assert oracle["pu21"] > srgb["pu21"]
    # The pipeline told the camera's response linearises with it: near the oracle, above the
    # blind run.
    assert given["pu21"] > ours["pu21"] and given["pu21"] > oracle["pu21"] - 1.0
    assert np.isfinite(ours["log2_ratio_median"])
    summary = responses.summarise([{"family": "gamma", **out}, {"family": "gamma", **out}])
    assert summary["gamma"][responses.ROWS[0]]["n"] == 2
    assert summary["gamma"][responses.ROWS[0]]["pu21"] == pytest.approx(s[responses.ROWS[0]]["pu21"])


def test_per_response_gains_are_paired_differences_per_curve():
    rng = np.random.default_rng(0)
    records, expected = [], {}
    for family, curves in (("gamma", ("gamma 1.8", "gamma 2.6")), ("sRGB", ("sRGB",))):
        for curve in curves:
            ours, ref = rng.normal(20.0, 3.0, 7), rng.normal(19.0, 3.0, 7)
            ours[2] = np.nan  # an input without clipped pixels leaves its pair out
            expected[curve] = (ours, ref)
            for i in range(7):
                scores = {row: {"pu21_clipped": 0.0} for row in responses.ROWS}
                scores[responses.ROWS[0]]["pu21_clipped"] = ours[i]
                scores[responses.ROWS[2]]["pu21_clipped"] = ref[i] + 1.0
                scores[responses.INPUT_ROW]["pu21_clipped"] = ref[i]
                records.append({"family": family, "curve": curve, "scores": scores,
                                "fraction": (0.02, 0.15)[i % 2]})
    out = responses.per_response(records)
    assert list(out) == ["gamma", "sRGB"] and list(out["gamma"]) == ["gamma 1.8", "gamma 2.6"]
    for family, curves in out.items():
        for curve, e in curves.items():
            ours, ref = expected[curve]
            d = (ours - ref)[~np.isnan(ours)]
            blind = e[responses.ROWS[0]]
            assert blind["n"] == 6 and e["fractions"] == [0.02, 0.15]
            assert blind["delta"] == pytest.approx(d.mean())
            assert blind["two_se"] == pytest.approx(2 * scipy.stats.sem(d))
            assert blind["below"] == pytest.approx(np.mean(d < 0))
            given = e[responses.ROWS[2]]
            assert given["delta"] == pytest.approx(1.0) and given["below"] == 0.0
            assert given["n"] == 7


@pytest.mark.slow
def test_eval_responses_runs_and_rewrites_its_report(fake_hdr_dir, tiny_weights, cli_env,
                                                     tmp_path):
    out = tmp_path / "responses"
    run_python_checked(["-m", "experiments.eval_responses", "--hdr_dir", fake_hdr_dir,
                        "--weights", tiny_weights, "--size", "48", "--limit", "1", "--out", out],
                       cli_env, timeout=600)
    res = json.loads((out / "results.json").read_text())
    assert len(res["inputs"]) == 3 * 3  # one view: 3 families (no EMoR files) x 3 encodings
    text = (out / "results.md").read_text()
    assert "### Clipped pixels per camera response" in text and "| gamma | gamma 1.8 |" in text
    # The report is rewritten from the JSON alone, to the same text.
    (out / "results.md").write_text("stale")
    before = (out / "results.json").read_bytes()
    run_python_checked(["-m", "experiments.eval_responses", "--rewrite_report", "--out", out],
                       cli_env, timeout=120)
    assert (out / "results.md").read_text() == text
    assert (out / "results.json").read_bytes() == before
    # Nothing to rewrite from: one line, non-zero exit, nothing written.
    empty = tmp_path / "empty"
    r = subprocess.run([sys.executable, "-m", "experiments.eval_responses", "--rewrite_report",
                        "--out", str(empty)], env=cli_env, cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 1 and "no results to rewrite the report from" in r.stderr
    assert not empty.exists()


@pytest.mark.slow
def test_eval_raw_runs_and_scores_every_row(fake_hdr_dir, tiny_weights, cli_env, tmp_path):
    # Not imported here: its absl flags would clash with other experiments' in this process.
    raw_row, reference = ("raw file, its decoded linear data",
                          "8-bit photo of the raw data, linearised (inverse sRGB)")
    out = tmp_path / "raw"
    run_python_checked(["-m", "experiments.eval_raw", "--hdr_dir", fake_hdr_dir, "--weights",
                        tiny_weights, "--size", "48", "--limit", "1", "--out", out],
                       cli_env, timeout=600)
    res = json.loads((out / "results.json").read_text())
    assert len(res["inputs"]) == 1 and len(res["summary"]) == 5
    scores = res["inputs"][0]["scores"]
    assert set(scores) == set(res["summary"])
    # The raw file's decoded data and the same data rounded to 8 bits are one photo.
    assert abs(scores[raw_row]["pu21"] - scores[reference]["pu21"]) < 1.0
    assert res["summary"][reference]["pu21_gain"]["delta"] == 0.0
    assert "raw file, ours" in (out / "results.md").read_text()
