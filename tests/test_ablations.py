"""Ablation grids (experiments/ablations/).

The integration tests run the whole `--suite all --quick` grid once (tiny networks, 2 steps per
run) on generated HDR scenes (no /work/shared), then rerun, interrupt and resume it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from experiments.ablations import claims, grid, run
from hdr_jax.eval import stats
from hdr_jax.models import drtmo
from hdr_jax.training import loop
from hdr_jax.training import state as state_lib

# Trains the --quick ablation grid.
pytestmark = pytest.mark.slow

# -- grid and bookkeeping -----------------------------------------------------------------------


def test_grid_definitions_and_overrides():
    for suite in grid.SUITES:
        names = [v.name for v in grid.VARIANTS[suite]]
        assert len(set(names)) == len(names) and names[0] == "full"
        for g in grid.GROUPS[suite]:
            assert set(g.rows) <= set(names), g.id
    assert [v.name for v in grid.select_variants("cfnet", ["x4", "full", "crfs_1"])] == [
        "full",
        "x4",
    ]
    with pytest.raises(ValueError, match="unknown variant"):
        grid.select_variants("drtmo", ["no_such_thing"])
    cfg = grid.drtmo_config(grid.VARIANTS["drtmo"][0], "down", quick=True, seed=3)
    assert cfg.direction == "down" and cfg.seed == 3 and cfg.data.num_crfs == grid.BASE_CRFS
    v = {v.name: v for v in grid.DRTMO_VARIANTS}
    cfg = grid.drtmo_config(v["no_skips_no_residual"], "up", quick=False, seed=0)
    assert not cfg.model.use_skips and not cfg.model.use_residual and cfg.model.decoder_3d
    assert cfg.data.crop_size % 2**cfg.model.depth == 0
    c2 = grid.cfnet_config(grid.CFNET_VARIANTS[0], quick=False, seed=0)
    c4 = grid.cfnet_config({v.name: v for v in grid.CFNET_VARIANTS}["x4"], quick=False, seed=0)
    # Same HR evaluation crop at both scales.
    assert c2.data.eval_patch_size * 2 == c4.data.eval_patch_size * 4
    with pytest.raises(KeyError, match="no_such_field"):
        grid.apply_overrides(cfg, {"model.no_such_field": 1})
    with pytest.raises(TypeError):  # ml_collections' type check: a bool field stays a bool
        grid.apply_overrides(cfg, {"model.use_skips": "no"})
    grid.apply_overrides(cfg, {"model.width_factor": 0.5})  # the locked config is unlocked after
    cfg.extra_field = 1


@pytest.mark.parametrize("quick", [True, False])
def test_cfnet_crops_fit_the_data(quick):
    """Training and evaluation crops of every CF-Net variant fit the LR images of the synthetic
    pairs it reads (an x4 LR test image of the default data is 64x64), and x2/x4 share the HR
    crop sizes."""
    from hdr_jax.data import synthetic_pairs

    sizes = {c.name: c.crop_size // c.scale for c in synthetic_pairs.SyntheticPairs.BUILDER_CONFIGS}
    hr = set()
    for v in grid.CFNET_VARIANTS:
        cfg = grid.cfnet_config(v, quick=quick, seed=0)
        s = cfg.model.scale
        name = f"{cfg.data.builder_config}_x{s}" if cfg.data.builder_config else f"x{s}"
        assert 0 < cfg.data.patch_size <= sizes[name], (v.name, cfg.data.patch_size)
        assert 0 < cfg.data.eval_patch_size <= sizes[name], (v.name, cfg.data.eval_patch_size)
        hr.add((cfg.data.patch_size * s, cfg.data.eval_patch_size * s))
    assert len(hr) == 1


def test_run_status(tmp_path):
    wd = tmp_path / "run"
    assert run.run_status(wd, 4) == "new"
    (wd / "checkpoints" / "2").mkdir(parents=True)
    (wd / "checkpoints" / "4.orbax-checkpoint-tmp-123").mkdir()  # unfinished save: ignored
    assert run.latest_checkpoint_step(wd) == 2
    assert run.run_status(wd, 4) == "partial"
    (wd / "checkpoints" / "4").mkdir()
    assert run.run_status(wd, 4) == "partial"  # no eval record yet
    run.append_eval_record(wd, 4, {"psnr": 20.0})
    with open(wd / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "spl')  # torn line of a killed writer
    assert run.run_status(wd, 4) == "done"
    assert run.eval_curve(wd) == [(4, 20.0)]
    (wd / "checkpoints" / "6").mkdir()
    with pytest.raises(ValueError, match="past num_train_steps"):
        run.run_status(wd, 4)
    assert run.add_wall_time(wd, 1.5) == 1.5 and run.add_wall_time(wd, 2.0) == 3.5


# -- integration: the 'full' variants of the --quick grid ----------------------------------------


@pytest.fixture(scope="module")
def hdr_dir(fake_hdr_dir):
    return fake_hdr_dir


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, hdr_dir, persistent_compilation_cache):
    root = tmp_path_factory.mktemp("ablations")
    paths = run.run_ablations(
        suite="all",
        workdir=root,
        quick=True,
        hdr_dir=str(hdr_dir),
        command="test run 1",
    )
    return root, paths


def test_quick_report_files(quick_run):
    root, paths = quick_run
    # The loop's previews are off in ablation runs (the report does not use them).
    assert not list(root.rglob("previews")) and list(root.rglob("metrics.jsonl"))
    results = json.loads(paths["json"].read_text())
    runs = {
        **{f"drtmo/{k}": r for k, r in results["suites"]["drtmo"]["runs"].items()},
        **{f"cfnet/{k}": r for k, r in results["suites"]["cfnet"]["runs"].items()},
    }
    expected = [f"drtmo/{v.name}/{d}" for v in grid.DRTMO_VARIANTS for d in grid.DIRECTIONS]
    expected += [f"cfnet/{v.name}" for v in grid.CFNET_VARIANTS]
    assert sorted(runs) == sorted(expected)
    for name, r in runs.items():
        assert r["steps"] == 2 and r["trained_now"], name
        assert [s for s, _ in r["curve"]] == [2], name  # --quick evaluates at the end only
        assert r["wall_s"] > 0, name
        assert np.isfinite(stats.summarise(r["per_example"]["psnr"])["mean"]), name
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
        row = claims.hdr_row(h["per_example"], ours=ours)
        assert np.all(np.isfinite(np.asarray(h["per_example"][row]["pu21"], float))), row
    assert len(h["kept"]) == grid.SIZES["drtmo"][True]["num_hdr"]
    assert sorted(results["suites"]["drtmo"]["hdr"]) == sorted(v.name for v in grid.DRTMO_VARIANTS)
    # Per-step PSNR of I_t for every T, and the x4 run at x4.
    for v in grid.CFNET_VARIANTS:
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
    groups = {f"{s}_{g.id}.png" for s in grid.SUITES for g in grid.GROUPS[s]}
    curves = {f"{s}_{k}.png" for s in grid.SUITES for k in ("curves", "per_step")}
    assert groups | curves <= pngs
    for p in paths["plots"].glob("*.png"):
        assert f"]({p.parent.name}/{p.name})" in md, p.name
        with Image.open(p) as im:
            assert im.format == "PNG" and min(im.size) > 100
            assert im.convert("L").getextrema()[0] < 200  # something was drawn


def test_quick_runs_match_the_training_loop(quick_run):
    """The per-example results have the means of the loop's own final eval record (they are
    that evaluation, kept per example; a run whose final evaluation was interrupted is
    evaluated from its restored checkpoint: test_rerun_skips_and_resume_is_exact)."""
    root, _ = quick_run
    for name in ("cfnet/full", "drtmo/full/down", "drtmo/full/up"):
        wd = root / name
        res = json.loads((wd / run.RESULT_FILE).read_text())
        last = [r for r in loop.read_metrics(wd) if r["split"] == "eval" and r["step"] == 2][-1]
        keys = [k for k in ("psnr_step1", "psnr_step2", "ssim") if k in last]
        assert keys, name
        for key in keys:
            assert stats.summarise(res["per_example"][key])["mean"] == pytest.approx(
                last[key], abs=1e-4
            ), (name, key)


def test_crf_builders(quick_run, hdr_dir):
    """The CRF ablation's datasets: the evaluation set has every parametric CRF, a K = 1 training
    set has one."""
    from hdr_jax.camera import crf

    root, _ = quick_run
    s = grid.SIZES["drtmo"][True]
    builders = run.Builders(str(root / "tfds"), str(hdr_dir))
    ev = builders.brackets(
        view=s["view"], num_crfs=grid.EVAL_CRFS, views=s["eval_views"], crops=s["crops"]
    )
    val = ev.as_data_source(split="validation")
    names = {val[i]["crf"] for i in range(len(val))}
    names = {n.decode() if isinstance(n, bytes) else str(n) for n in names}
    assert names == set(crf.parametric_crfs())
    one = builders.brackets(view=s["view"], num_crfs=1, views=s["views"], crops=s["crops"])
    train = one.as_data_source(split="train")
    assert len({str(train[i]["crf"]) for i in range(len(train))}) == 1
    cfg = grid.drtmo_config(
        {v.name: v for v in grid.DRTMO_VARIANTS}["crfs_1"], "up", quick=True, seed=0
    )
    assert cfg.data.builder_config == one.builder_config.name


def test_width_half_builds_the_halved_network():
    variants = {v.name: v for v in grid.DRTMO_VARIANTS}

    def num_params(name: str) -> int:
        cfg = grid.drtmo_config(variants[name], "up", quick=True, seed=0)
        task = run.make_task(cfg, builder=object())
        state = jax.eval_shape(task.init_state, jax.random.key(0))
        return state_lib.count_params(state.params)

    half = {
        k: tuple(max(1, round(c / 2)) for c in v)
        for k, v in drtmo.width_preset("tiny", depth=grid.SIZES["drtmo"][True]["depth"]).items()
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
    run.run_ablations(
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
    old = json.loads((wd / run.RESULT_FILE).read_text())
    old_hdr = json.loads((wd.parent / run.HDR_FILE).read_text())
    hdr_mtime = (wd.parent / run.HDR_FILE).stat().st_mtime_ns
    def rerun_with_records(keep_record, command: str) -> list[dict]:
        """Keeps the metric records ``keep_record`` accepts, drops the result, and reruns
        drtmo/full: partial before, done after. Returns the records kept."""
        keep = [r for r in loop.read_metrics(wd) if keep_record(r)]
        (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))
        (wd / run.RESULT_FILE).unlink()
        assert run.run_status(wd, 2) == "partial"
        run.run_ablations(
            suite="drtmo",
            workdir=root,
            quick=True,
            hdr_dir=str(hdr_dir),
            variants=["full"],
            command=command,
            plots=False,
        )
        assert run.run_status(wd, 2) == "done"
        return keep

    shutil.rmtree(wd / "checkpoints" / "2")
    rerun_with_records(lambda r: r["step"] < 2, "test run 3")
    new = json.loads((wd / run.RESULT_FILE).read_text())
    for k, v in old["per_example"].items():
        np.testing.assert_allclose(
            np.asarray(new["per_example"][k], float), np.asarray(v, float), rtol=1e-5, err_msg=k
        )
    # The pair's HDR evaluation was redone (the up network is new) and agrees.
    assert (wd.parent / run.HDR_FILE).stat().st_mtime_ns > hdr_mtime
    new_hdr = json.loads((wd.parent / run.HDR_FILE).read_text())
    np.testing.assert_allclose(
        np.asarray(claims.pooled([r for r in new_hdr["per_example"].values()], "pu21"), float),
        np.asarray(claims.pooled([r for r in old_hdr["per_example"].values()], "pu21"), float),
        rtol=1e-5,
    )
    # The CF-Net suite, not requested this time, is still in the report (from its cache).
    results = json.loads(paths["json"].read_text())
    assert "full" in results["suites"]["cfnet"]["runs"]
    assert results["suites"]["drtmo"]["runs"]["full/up"]["trained_now"]
    assert not results["suites"]["drtmo"]["runs"]["full/down"]["trained_now"]

    # Killed during the final evaluation: the final checkpoint is there, its eval record and
    # the result are not. The rerun trains nothing, restores that checkpoint and evaluates it:
    # the scores of the loop's own final evaluation, and the eval record is written.
    records = loop.read_metrics(wd)
    ckpts = sorted(p.name for p in (wd / "checkpoints").iterdir())
    keep = rerun_with_records(lambda r: not (r["split"] == "eval" and r["step"] == 2), "test run 4")
    assert len(keep) == len(records) - 1
    assert sorted(p.name for p in (wd / "checkpoints").iterdir()) == ckpts
    assert [r["split"] for r in loop.read_metrics(wd)].count("train") == [
        r["split"] for r in keep].count("train")  # fmt: skip
    results = json.loads(paths["json"].read_text())
    assert not results["suites"]["drtmo"]["runs"]["full/up"]["trained_now"]
    again = json.loads((wd / run.RESULT_FILE).read_text())
    for k, v in new["per_example"].items():
        np.testing.assert_allclose(
            np.asarray(again["per_example"][k], float), np.asarray(v, float), rtol=1e-5, err_msg=k
        )

    # --report_only: nothing trains, the report goes elsewhere and keeps its discussion.md.
    out = root.parent / (root.name + "_report")
    out.mkdir()
    (out / "discussion.md").write_text("## Discussion\n\nHand-written paragraph.\n")
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("metrics.jsonl")}
    rep = run.run_ablations(
        suite="all",
        workdir=root,
        quick=True,
        hdr_dir=str(hdr_dir),
        report_only=True,
        report_dir=out,
    )
    assert rep["markdown"] == out / "ablations.md"
    results = json.loads(rep["json"].read_text())
    assert [c["command"] for c in results["commands"]] == [f"test run {i}" for i in (1, 2, 3, 4)]
    assert len(results["suites"]["drtmo"]["runs"]) == 2 * len(grid.DRTMO_VARIANTS)
    assert len(results["suites"]["cfnet"]["runs"]) == len(grid.CFNET_VARIANTS)
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


def test_cli_takes_the_multi_process_flags():
    """The ablation runner starts a multi-process run with experiments.train's flags."""
    root = os.path.dirname(os.path.dirname(__file__))
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "experiments.ablations", "--helpfull"],
                          check=False, capture_output=True, text=True, env=env, timeout=300,
                          cwd=root)
    text = proc.stdout + proc.stderr
    for flag in ("coordinator_address", "num_processes", "process_id", "distributed_auto"):
        assert flag in text, flag
