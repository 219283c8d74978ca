"""Ablation grids (experiments/ablations.py, hdr_jax/ablations.py).

The integration tests run the whole `--suite all --quick` grid once (tiny networks, 2 steps per
run) on generated HDR scenes (no /work/shared), then rerun, interrupt and resume it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import scipy.stats
from PIL import Image

from experiments import ablations as exp
from hdr_jax import ablations as abl
from hdr_jax.data import testing
from hdr_jax.models import drtmo
from hdr_jax.training import state as state_lib

# -- statistics ---------------------------------------------------------------------------------


def test_compare_paired_matches_scipy():
    rng = np.random.default_rng(0)
    b = rng.normal(30.0, 2.0, 40)
    a = b + 0.5 + rng.normal(0.0, 0.3, 40)
    a[3] = np.nan  # dropped from both sides
    r = abl.compare(a, b, paired=True)
    d = (a - b)[~np.isnan(a)]
    assert r["n"] == 39
    assert r["delta"] == pytest.approx(d.mean())
    assert r["two_se"] == pytest.approx(2 * scipy.stats.sem(d))
    assert r["verdict"] == "confirmed"
    assert abl.compare(b, a, paired=True)["verdict"] == "contradicted"
    # Pure noise: the claimed sign cannot be read off 40 examples.
    c = b + rng.normal(0.0, 0.3, 40) - 0.02
    assert abl.compare(c, b, paired=True)["verdict"].startswith("not resolved")
    # 'no gain' holds unless a is significantly better.
    assert abl.compare(c, b, paired=True, claim="no_gain")["verdict"].startswith("confirmed")
    assert abl.compare(a, b, paired=True, claim="no_gain")["verdict"] == "contradicted"


def test_compare_unpaired_and_degenerate():
    rng = np.random.default_rng(1)
    a, b = rng.normal(2.0, 1.0, 30), rng.normal(0.0, 1.0, 12)
    r = abl.compare(a, b, paired=False)
    se = math.hypot(scipy.stats.sem(a), scipy.stats.sem(b))
    assert r["delta"] == pytest.approx(a.mean() - b.mean())
    assert r["two_se"] == pytest.approx(2 * se)
    assert r["verdict"] == "confirmed"
    assert abl.compare([1.0], [0.0], paired=True)["verdict"].startswith("not resolved")
    with pytest.raises(ValueError, match="equal shapes"):
        abl.compare([1.0, 2.0], [1.0], paired=True)


def test_summarise_caps_and_skips_nan():
    v = np.array([10.0, np.inf, np.nan, 20.0])
    s = abl.summarise(v)
    ref = np.array([10.0, 100.0, 20.0])
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(ref.mean())
    assert s["se"] == pytest.approx(scipy.stats.sem(ref))
    assert abl.summarise([None, 1.0, 3.0])["mean"] == 2.0  # JSON null reads back as NaN


def test_undefined_drtmo_psnr_becomes_nan():
    pe = {
        "psnr": np.array([0.0, 25.0]),  # example 0: input at the end of the bracket
        "psnr_step1": np.array([np.nan, 26.0]),
        "psnr_step2": np.array([np.nan, 24.0]),
    }
    out = abl._undefined_to_nan(dict(pe))
    assert np.isnan(out["psnr"][0]) and out["psnr"][1] == 25.0


# -- grid and bookkeeping -----------------------------------------------------------------------


def test_grid_definitions_and_overrides():
    for suite in abl.SUITES:
        names = [v.name for v in abl.VARIANTS[suite]]
        assert len(set(names)) == len(names) and names[0] == "full"
        for g in abl.GROUPS[suite]:
            assert set(g.rows) <= set(names), g.id
    assert [v.name for v in abl.select_variants("cfnet", ["x4", "full", "crfs_1"])] == [
        "full",
        "x4",
    ]
    with pytest.raises(ValueError, match="unknown variant"):
        abl.select_variants("drtmo", ["no_such_thing"])
    cfg = exp.drtmo_config(abl.VARIANTS["drtmo"][0], "down", quick=True, seed=3)
    assert cfg.direction == "down" and cfg.seed == 3 and cfg.data.num_crfs == exp.BASE_CRFS
    v = {v.name: v for v in abl.DRTMO_VARIANTS}
    cfg = exp.drtmo_config(v["no_skips_no_residual"], "up", quick=False, seed=0)
    assert not cfg.model.use_skips and not cfg.model.use_residual and cfg.model.decoder_3d
    assert cfg.data.crop_size % 2**cfg.model.depth == 0
    c2 = exp.cfnet_config(abl.CFNET_VARIANTS[0], quick=False, seed=0)
    c4 = exp.cfnet_config({v.name: v for v in abl.CFNET_VARIANTS}["x4"], quick=False, seed=0)
    # Same HR evaluation crop at both scales.
    assert c2.data.eval_patch_size * 2 == c4.data.eval_patch_size * 4
    with pytest.raises(KeyError, match="no field"):
        abl.apply_overrides(cfg, {"model.no_such_field": 1})


@pytest.mark.parametrize("quick", [True, False])
def test_cfnet_crops_fit_the_data(quick):
    """Training and evaluation crops of every CF-Net variant fit the LR images of the synthetic
    pairs it reads (an x4 LR test image of the default data is 64x64), and x2/x4 share the HR
    crop sizes."""
    from hdr_jax.data import synthetic_pairs

    sizes = {c.name: c.crop_size // c.scale for c in synthetic_pairs.SyntheticPairs.BUILDER_CONFIGS}
    hr = set()
    for v in abl.CFNET_VARIANTS:
        cfg = exp.cfnet_config(v, quick=quick, seed=0)
        s = cfg.model.scale
        name = f"{cfg.data.builder_config}_x{s}" if cfg.data.builder_config else f"x{s}"
        assert 0 < cfg.data.patch_size <= sizes[name], (v.name, cfg.data.patch_size)
        assert 0 < cfg.data.eval_patch_size <= sizes[name], (v.name, cfg.data.eval_patch_size)
        hr.add((cfg.data.patch_size * s, cfg.data.eval_patch_size * s))
    assert len(hr) == 1


def test_run_status(tmp_path):
    wd = tmp_path / "run"
    assert abl.run_status(wd, 4) == "new"
    (wd / "checkpoints" / "2").mkdir(parents=True)
    (wd / "checkpoints" / "4.orbax-checkpoint-tmp-123").mkdir()  # unfinished save: ignored
    assert abl.latest_checkpoint_step(wd) == 2
    assert abl.run_status(wd, 4) == "partial"
    (wd / "checkpoints" / "4").mkdir()
    assert abl.run_status(wd, 4) == "partial"  # no eval record yet
    abl.append_eval_record(wd, 4, {"psnr": 20.0})
    with open(wd / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "spl')  # torn line of a killed writer
    assert abl.run_status(wd, 4) == "done"
    assert abl.eval_curve(wd) == [(4, 20.0)]
    (wd / "checkpoints" / "6").mkdir()
    with pytest.raises(ValueError, match="past num_train_steps"):
        abl.run_status(wd, 4)
    assert abl.add_wall_time(wd, 1.5) == 1.5 and abl.add_wall_time(wd, 2.0) == 3.5


# -- integration: the 'full' variants of the --quick grid ----------------------------------------


@pytest.fixture(scope="module")
def hdr_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hdr")
    testing.write_fake_hdr_folder(d)
    return d


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, hdr_dir, persistent_compilation_cache):
    root = tmp_path_factory.mktemp("ablations")
    paths = exp.run_ablations(
        suite="all",
        workdir=root,
        quick=True,
        hdr_dir=str(hdr_dir),
        command="test run 1",
    )
    return root, paths


def test_quick_report_files(quick_run):
    _, paths = quick_run
    results = json.loads(paths["json"].read_text())
    runs = {
        **{f"drtmo/{k}": r for k, r in results["suites"]["drtmo"]["runs"].items()},
        **{f"cfnet/{k}": r for k, r in results["suites"]["cfnet"]["runs"].items()},
    }
    expected = [f"drtmo/{v.name}/{d}" for v in abl.DRTMO_VARIANTS for d in abl.DIRECTIONS]
    expected += [f"cfnet/{v.name}" for v in abl.CFNET_VARIANTS]
    assert sorted(runs) == sorted(expected)
    for name, r in runs.items():
        assert r["steps"] == 2 and r["trained_now"], name
        assert [s for s, _ in r["curve"]] == [2], name  # --quick evaluates at the end only
        assert r["wall_s"] > 0, name
        assert np.isfinite(abl.summarise(r["per_example"]["psnr"])["mean"]), name
    # Per-feedback-step PSNR; the last step's image is the output.
    full = runs["cfnet/full"]["per_example"]
    assert {k for k in full if k.startswith("psnr_step")} == {
        "psnr_step1",
        "psnr_step2",
        "psnr_step3",
    }
    np.testing.assert_allclose(full["psnr_step3"], full["psnr"], atol=1e-4)
    # PU21 of the trained pair and of the linearised input, per example.
    h = results["suites"]["drtmo"]["hdr"]["full"]
    for ours in (True, False):
        row = abl.hdr_row(h["per_example"], ours=ours)
        assert np.all(np.isfinite(np.asarray(h["per_example"][row]["pu21"], float))), row
    assert len(h["kept"]) == exp.SIZES["drtmo"][True]["num_hdr"]
    assert sorted(results["suites"]["drtmo"]["hdr"]) == sorted(v.name for v in abl.DRTMO_VARIANTS)
    # Per-step PSNR of I_t for every T, and the x4 run at x4.
    for v in abl.CFNET_VARIANTS:
        r = runs[f"cfnet/{v.name}"]
        t = r["num_steps"]
        assert {k for k in r["per_example"] if k.startswith("psnr_step")} == {
            f"psnr_step{i}" for i in range(1, t + 1)
        }, v.name
    assert [runs[f"cfnet/{n}"]["num_steps"] for n in ("T1", "T2", "full", "T4")] == [1, 2, 3, 4]
    assert runs["cfnet/x4"]["scale"] == 4 and runs["cfnet/full"]["scale"] == 2
    assert all(1 <= k <= 17 for k in h["kept"])
    naive = results["suites"]["drtmo"]["baselines"]["naive"]
    assert len(naive["up"]["psnr"]) == len(runs["drtmo/full/up"]["per_example"]["psnr"])
    md = paths["markdown"].read_text()
    assert "`test run 1`" in md and "Seeds: 0" in md and "Total training wall time" in md
    for name in expected:
        assert f"| {name} | 2 |" in md, name
    assert "## What this confirms or contradicts at this scale" in md
    # Every claim has its runs.
    assert results["findings"] and not any(f["verdict"] == "not run" for f in results["findings"])
    for f in results["findings"]:
        assert f["verdict"] in md
    pngs = {p.name for p in paths["plots"].glob("*.png")}
    groups = {f"{s}_{g.id}.png" for s in abl.SUITES for g in abl.GROUPS[s]}
    curves = {f"{s}_{k}.png" for s in abl.SUITES for k in ("curves", "per_step")}
    assert groups | curves <= pngs
    for p in paths["plots"].glob("*.png"):
        assert f"]({p.parent.name}/{p.name})" in md, p.name
        with Image.open(p) as im:
            assert im.format == "PNG" and min(im.size) > 100
            assert im.convert("L").getextrema()[0] < 200  # something was drawn


def test_quick_runs_match_the_training_loop(quick_run):
    """The report's per-example means equal the loop's own final eval record (an independent
    aggregation)."""
    root, _ = quick_run
    for run in ("cfnet/full", "drtmo/full/down", "drtmo/full/up"):
        wd = root / run
        res = json.loads((wd / abl.RESULT_FILE).read_text())
        last = [r for r in abl.read_metrics(wd) if r["split"] == "eval" and r["step"] == 2][-1]
        keys = [k for k in ("psnr_step1", "psnr_step2", "ssim") if k in last]
        assert keys, run
        for key in keys:
            assert abl.summarise(res["per_example"][key])["mean"] == pytest.approx(
                last[key], abs=1e-4
            ), (run, key)


def test_crf_builders(quick_run, hdr_dir):
    """The CRF ablation's datasets: the evaluation set has every parametric CRF, a K = 1 training
    set has one."""
    from hdr_jax.camera import crf

    root, _ = quick_run
    s = exp.SIZES["drtmo"][True]
    builders = exp.Builders(str(root / "tfds"), str(hdr_dir))
    ev = builders.brackets(
        view=s["view"], num_crfs=exp.EVAL_CRFS, views=s["eval_views"], crops=s["crops"]
    )
    val = ev.as_data_source(split="validation")
    names = {val[i]["crf"] for i in range(len(val))}
    names = {n.decode() if isinstance(n, bytes) else str(n) for n in names}
    assert names == set(crf.parametric_crfs())
    one = builders.brackets(view=s["view"], num_crfs=1, views=s["views"], crops=s["crops"])
    train = one.as_data_source(split="train")
    assert len({str(train[i]["crf"]) for i in range(len(train))}) == 1
    cfg = exp.drtmo_config(
        {v.name: v for v in abl.DRTMO_VARIANTS}["crfs_1"], "up", quick=True, seed=0
    )
    assert cfg.data.builder_config == one.builder_config.name


def test_hdr_eval_matches_the_library_protocol(quick_run, hdr_dir):
    """The ablations' PU21 evaluation (networks run on the middle exposure only) gives the
    numbers of hdr_eval.evaluate_bracket_record (which runs them on all 9)."""
    import types

    from hdr_jax.eval import stage1 as hdr_eval

    root, _ = quick_run
    s = exp.SIZES["drtmo"][True]
    builders = exp.Builders(str(root / "tfds"), str(hdr_dir))
    ev = builders.brackets(
        view=s["view"], num_crfs=exp.EVAL_CRFS, views=s["eval_views"], crops=s["crops"]
    )
    source = ev.as_data_source(split="validation")
    nets = {}
    for d in abl.DIRECTIONS:
        cfg = exp.drtmo_config(abl.DRTMO_VARIANTS[0], d, quick=True, seed=0)
        task = abl.DrTMOVariantTask(cfg, builder=object())
        state = abl.restore_final_state(task, cfg, root / "drtmo" / "full" / d)
        nets[d] = (task, state)
    ours = abl.drtmo_hdr_eval(nets["up"], nets["down"], source, limit=2)
    cached = json.loads((root / "drtmo" / "full" / abl.HDR_FILE).read_text())

    def net(task_state):
        task, state = task_state
        apply = jax.jit(lambda v, x: task.model.apply(v, x, train=False))
        return types.SimpleNamespace(module=task.model, variables=state.variables, apply=apply)

    # No response classifier: the ablation networks make both directions of the stack.
    pipe = types.SimpleNamespace(up=net(nets["up"]), down=net(nets["down"]), response=None)
    middle = (np.shape(source[0]["bracket"])[0] - 1) // 2
    for i in range(2):
        ref = hdr_eval.evaluate_bracket_record(pipe, source[i], input_indices=[middle])
        assert ours["kept"][i] == ref["kept"][1] - ref["kept"][0] + 1
        assert set(ours["per_example"]) == set(ref["merge"]) == set(hdr_eval.MERGE_ROWS)
        for row, scores in ref["merge"].items():
            for k in ("pu21", "pu21_clipped"):
                np.testing.assert_allclose(
                    ours["per_example"][row][k][i], scores[k], rtol=1e-4, err_msg=(row, k)
                )
                np.testing.assert_allclose(
                    np.asarray(cached["per_example"][row][k], float)[i],
                    scores[k],
                    rtol=1e-4,
                    err_msg=(row, k),
                )


def test_width_half_builds_the_halved_network():
    variants = {v.name: v for v in abl.DRTMO_VARIANTS}

    def num_params(name: str) -> int:
        cfg = exp.drtmo_config(variants[name], "up", quick=True, seed=0)
        task = abl.DrTMOVariantTask(cfg, builder=object())
        state = jax.eval_shape(task.init_state, jax.random.key(0))
        return state_lib.count_params(state.params)

    half = {
        k: tuple(max(1, round(c / 2)) for c in v)
        for k, v in drtmo.width_preset("tiny", depth=exp.SIZES["drtmo"][True]["depth"]).items()
    }
    net = drtmo.ExposureBracketNet(**half)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(0)}
    ref = jax.eval_shape(lambda x: net.init(rngs, x, train=False), x)
    assert num_params("width_half") == state_lib.count_params(ref["params"])
    assert num_params("width_half") < num_params("full") / 3


def test_rerun_skips_and_resume_is_exact(quick_run, hdr_dir):
    root, paths = quick_run
    wd = root / "drtmo/full/up"
    before = (wd / "metrics.jsonl").read_bytes()
    ckpts = sorted(p.name for p in (wd / "checkpoints").iterdir())
    exp.run_ablations(
        suite="all",
        workdir=root,
        quick=True,
        hdr_dir=str(hdr_dir),
        command="test run 2",
        plots=False,
    )
    results = json.loads(paths["json"].read_text())
    for sr in results["suites"].values():
        assert not any(r["trained_now"] for r in sr["runs"].values())
    assert (wd / "metrics.jsonl").read_bytes() == before
    assert sorted(p.name for p in (wd / "checkpoints").iterdir()) == ckpts
    assert [c["command"] for c in results["commands"]] == ["test run 1", "test run 2"]

    # Interrupt drtmo/full/up after step 1: drop the step-2 checkpoint, records and result.
    old = json.loads((wd / abl.RESULT_FILE).read_text())
    old_hdr = json.loads((wd.parent / abl.HDR_FILE).read_text())
    hdr_mtime = (wd.parent / abl.HDR_FILE).stat().st_mtime_ns
    shutil.rmtree(wd / "checkpoints" / "2")
    keep = [r for r in abl.read_metrics(wd) if r["step"] < 2]
    (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))
    (wd / abl.RESULT_FILE).unlink()
    assert abl.run_status(wd, 2) == "partial"
    exp.run_ablations(
        suite="drtmo",
        workdir=root,
        quick=True,
        hdr_dir=str(hdr_dir),
        variants=["full"],
        command="test run 3",
        plots=False,
    )
    assert abl.run_status(wd, 2) == "done"
    new = json.loads((wd / abl.RESULT_FILE).read_text())
    for k, v in old["per_example"].items():
        np.testing.assert_allclose(
            np.asarray(new["per_example"][k], float), np.asarray(v, float), rtol=1e-5, err_msg=k
        )
    # The pair's HDR evaluation was redone (the up network is new) and agrees.
    assert (wd.parent / abl.HDR_FILE).stat().st_mtime_ns > hdr_mtime
    new_hdr = json.loads((wd.parent / abl.HDR_FILE).read_text())
    np.testing.assert_allclose(
        np.asarray(abl._pooled([r for r in new_hdr["per_example"].values()], "pu21"), float),
        np.asarray(abl._pooled([r for r in old_hdr["per_example"].values()], "pu21"), float),
        rtol=1e-5,
    )
    # The CF-Net suite, not requested this time, is still in the report (from its cache).
    results = json.loads(paths["json"].read_text())
    assert "full" in results["suites"]["cfnet"]["runs"]
    assert results["suites"]["drtmo"]["runs"]["full/up"]["trained_now"]
    assert not results["suites"]["drtmo"]["runs"]["full/down"]["trained_now"]

    # --report_only: nothing trains, the report goes elsewhere and keeps its discussion.md.
    out = root.parent / (root.name + "_report")
    out.mkdir()
    (out / "discussion.md").write_text("## Discussion\n\nHand-written paragraph.\n")
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("metrics.jsonl")}
    rep = exp.run_ablations(
        suite="all",
        workdir=root,
        quick=True,
        hdr_dir=str(hdr_dir),
        report_only=True,
        report_dir=out,
    )
    assert rep["markdown"] == out / "ablations.md"
    results = json.loads(rep["json"].read_text())
    assert [c["command"] for c in results["commands"]] == [f"test run {i}" for i in (1, 2, 3)]
    assert len(results["suites"]["drtmo"]["runs"]) == 2 * len(abl.DRTMO_VARIANTS)
    assert len(results["suites"]["cfnet"]["runs"]) == len(abl.CFNET_VARIANTS)
    assert not any(
        r["trained_now"] for sr in results["suites"].values() for r in sr["runs"].values()
    )
    assert {p: p.stat().st_mtime_ns for p in root.rglob("metrics.jsonl")} == mtimes
    md = rep["markdown"].read_text()
    assert "Hand-written paragraph." in md and "](plots/" in md
    assert (out / "plots" / "cfnet_steps.png").exists()


def test_cli_bad_variant_is_one_line(tmp_path, hdr_dir):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(__file__)), env.get("PYTHONPATH", "")]
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.ablations",
            "--suite",
            "drtmo",
            "--quick",
            "--workdir",
            str(tmp_path / "w"),
            "--hdr_dir",
            str(hdr_dir),
            "--variants",
            "nope",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "Warning" not in ln]
    assert proc.returncode == 1, proc.stderr
    assert lines[-1].startswith("ablations: error: unknown variant(s) ['nope']"), proc.stderr
    assert "Traceback" not in proc.stderr
