"""Ablation grids of both stages at a CPU-feasible size, with a report computed from the runs.

    python -m experiments.ablations --suite drtmo|cfnet|all --workdir DIR [--quick]
        [--hdr_dir ../shared/data/hdri] [--variants full,no_skips,...] [--steps N] [--seed 0]

Each run is ``loop.train_and_evaluate`` in its own workdir (DIR/drtmo/<variant>/{up,down},
DIR/cfnet/<variant>), so an interrupted grid resumes where it stopped and a finished run (latest
checkpoint at num_train_steps with an eval record for it) is skipped. The report
(DIR/ablations.md, DIR/ablations.json, DIR/plots/) is rebuilt from every run found under DIR.

Grids and sizes (the default grid; --quick uses test-sized models, data and 2 steps):

* Stage 1 (DrTMO), every variant trained in both directions (the merged HDR needs the pair):
  full (the CPU recipe of configs/drtmo.py: residual on the naive bracket, no dropout) | no
  skips | no residual | neither | 2D decoder | 1 / 10 training CRFs | L1 over valid slots |
  halved width (the 'cpu' preset halved: the papers' full/half widths do not train on a CPU).
  Width preset 'cpu' at depth 5, 32x32 training crops of 128x128 views, batch 4, 300 steps.
  All variants are validated on one held-out set: the held-out scenes rendered through all 11
  parametric CRFs (so the CRF variants meet cameras they never saw), on whole 128x128 views;
  PU21 of the merged 17-image stack of each variant's pair.
* Stage 2 (CF-Net, synthetic pairs): full (T = 3, coupled, separate weights, SRB loss, x2) |
  T = 1, 2, 4 | uncoupled | shared step weights | no SRB loss | x4. 16 features, 3 groups,
  32x32 HR training crops (LR 16 at x2, 8 at x4), batch 4, 150 steps; evaluated on 96x96 HR
  centre crops of the test split (LR 48 at x2, 24 at x4).

The default grid takes about 50 minutes on one CPU core (most of it compiling: every variant is
a new XLA program).
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
from absl import app, flags, logging

from experiments.configs import cfnet as cfnet_configs
from experiments.configs import drtmo as drtmo_configs
from hdr_jax import ablations as abl
from hdr_jax import io as hdr_io
from hdr_jax.training import loop
from hdr_jax.training import state as state_lib

# Sizes of the default grid and of --quick (see the module docstring).
SIZES = {
    "drtmo": {
        False: {
            "width": "cpu",
            "depth": 5,
            "crop": 32,
            "view": 128,
            "views": 8,
            "crops": 4,
            "eval_views": 3,
            "batch": 4,
            "steps": 300,
            "eval_every": 100,
            "log_every": 25,
            "num_eval": 48,
            "num_hdr": 24,
        },
        True: {
            "width": "tiny",
            "depth": 3,  # the fewest layers the 3D decoder allows: compile time is the cost
            "crop": 32,
            "view": 32,
            "views": 2,
            "crops": 2,
            "eval_views": 2,
            "batch": 2,
            "steps": 2,
            "eval_every": 2,
            "checkpoint_every": 1,
            "log_every": 1,
            "num_eval": 2,
            "num_hdr": 2,
        },
    },
    "cfnet": {
        False: {
            "features": 16,
            "groups": 3,
            # Training crops of the same HR size at both scales (LR 16 at x2, 8 at x4).
            "patch_hr": 32,
            "eval_hr": 96,
            "data": "",
            "batch": 4,
            "steps": 150,
            "eval_every": 50,
            "log_every": 25,
            "num_eval": 40,
            "lr": 2e-4,
        },
        True: {
            "features": 8,
            "groups": 1,
            "patch_hr": 16,
            "eval_hr": 32,
            "data": "tiny",
            "batch": 2,
            "steps": 2,
            "eval_every": 2,
            "checkpoint_every": 1,
            "log_every": 1,
            "num_eval": 2,
            "lr": 2e-4,
        },
    },
}
BASE_CRFS = 5
EVAL_CRFS = 11  # every parametric CRF (hdr_jax.camera.crf.parametric_crfs)


# -- configs ------------------------------------------------------------------------------------


def drtmo_config(
    variant: abl.Variant, direction: str, *, quick: bool, seed: int, steps: int = 0
) -> ml_collections.ConfigDict:
    s = SIZES["drtmo"][quick]
    c = drtmo_configs.get_config(f"{direction},{'tiny' if quick else 'cpu'}")
    c.seed = seed
    c.model.update(width=s["width"], depth=s["depth"])
    c.model.width_factor = 1.0
    c.data.update(crop_size=s["crop"], num_eval=s["num_eval"])
    c.data.num_crfs = BASE_CRFS
    c.batch_size = s["batch"]
    c.num_train_steps = steps or s["steps"]
    c.log_every = min(s["log_every"], c.num_train_steps)
    c.eval_every = min(s["eval_every"], c.num_train_steps)
    c.checkpoint_every = s.get("checkpoint_every", c.eval_every)
    c.max_checkpoints = 2
    abl.apply_overrides(c, variant.overrides)
    c.data.builder_config = _bracket_config_name(s["view"], c.data.num_crfs, s["views"])
    return c


def cfnet_config(
    variant: abl.Variant, *, quick: bool, seed: int, steps: int = 0
) -> ml_collections.ConfigDict:
    s = SIZES["cfnet"][quick]
    c = cfnet_configs.get_config("x2,tiny" if quick else "x2,cpu")
    c.seed = seed
    c.model.update(features=s["features"], num_groups=s["groups"], num_steps=3)
    c.data.update(num_eval=s["num_eval"], builder_config=s["data"] or None)
    c.optimizer.learning_rate = s["lr"]
    c.batch_size = s["batch"]
    c.num_train_steps = steps or s["steps"]
    c.log_every = min(s["log_every"], c.num_train_steps)
    c.eval_every = min(s["eval_every"], c.num_train_steps)
    c.checkpoint_every = s.get("checkpoint_every", c.eval_every)
    c.max_checkpoints = 2
    abl.apply_overrides(c, variant.overrides)
    # Same HR training and evaluation crops at every scale: x2 and x4 see the same regions.
    c.data.patch_size = s["patch_hr"] // c.model.scale
    c.data.eval_patch_size = s["eval_hr"] // c.model.scale
    return c


def _bracket_config_name(view: int, num_crfs: int, views: int) -> str:
    return f"ablation{view}_v{views}_k{num_crfs}"


# -- data ---------------------------------------------------------------------------------------


class Builders:
    """tfds builders, prepared once each (a build is minutes for the real data)."""

    def __init__(self, tfds_dir: str, hdr_dir: str):
        self.tfds_dir = os.path.abspath(tfds_dir)
        self.hdr_dir = os.path.abspath(hdr_dir)
        self._cache: dict[str, Any] = {}

    def _prepare(self, key: str, make) -> Any:
        if key not in self._cache:
            import tensorflow_datasets as tfds

            builder = make()
            t0 = time.perf_counter()
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=self.hdr_dir)
            )
            if time.perf_counter() - t0 > 5:
                print(f"prepared {key} in {time.perf_counter() - t0:.0f} s", flush=True)
            self._cache[key] = builder
        return self._cache[key]

    def brackets(self, *, view: int, num_crfs: int, views: int, crops: int) -> Any:
        from hdr_jax.data import hdr_brackets

        name = _bracket_config_name(view, num_crfs, views)
        cfg = hdr_brackets.HdrBracketsConfig(
            name=name,
            description=f"ablations: {view}px, {views} views/panorama, {num_crfs} parametric CRFs",
            crop_size=view,
            views_per_panorama=views,
            crops_per_photo=crops,
            num_crfs=num_crfs,
        )
        return self._prepare(
            f"hdr_brackets/{name}",
            lambda: hdr_brackets.HdrBrackets(config=cfg, data_dir=self.tfds_dir),
        )

    def pairs(self, config_name: str) -> Any:
        from hdr_jax.data import synthetic_pairs

        return self._prepare(
            f"synthetic_pairs/{config_name}",
            lambda: synthetic_pairs.SyntheticPairs(
                config=config_name, data_dir=self.tfds_dir, file_format="array_record"
            ),
        )


def _task(cls: type, config: Any, quick: bool, **kwargs: Any) -> Any:
    task = cls(config, **kwargs)
    task.fast_init_rng = quick  # compile time is most of a --quick run
    return task


# -- one run ------------------------------------------------------------------------------------


def _run(task: Any, config: Any, workdir: Path, *, progress: bool) -> tuple[dict, Any]:
    """Trains (or resumes, or skips) one run and returns (its result record, a state or None)."""
    total = config.num_train_steps
    status = abl.run_status(workdir, total)
    state = None
    trained_now = False
    if status != "done":
        if status == "partial" and abl.latest_checkpoint_step(workdir) == total:
            # Killed during the final evaluation: nothing left to train, evaluate below.
            loop_state = None
        else:
            print(
                f"[{workdir}] {'resuming' if status == 'partial' else 'training'} ({total} steps)",
                flush=True,
            )
            t0 = time.perf_counter()
            loop_state = loop.train_and_evaluate(task, config, str(workdir), progress=progress)
            abl.add_wall_time(workdir, time.perf_counter() - t0)
            trained_now = True
        state = loop_state
    result = abl.read_json(workdir / abl.RESULT_FILE)
    if trained_now or result is None or result.get("steps") != total:
        if state is None:
            state = abl.restore_final_state(task, config, workdir)
        per_example = abl.per_example_eval(task, state)
        means = {k: abl.summarise(v)["mean"] for k, v in per_example.items()}
        if abl.run_status(workdir, total) != "done":
            abl.append_eval_record(workdir, total, means)
        result = {
            "steps": total,
            "num_params": state_lib.count_params(state.params),
            "per_example": per_example,
            "means": means,
        }
        abl.write_json(workdir / abl.RESULT_FILE, result)
    result.update(
        wall_s=abl.wall_time(workdir),
        curve=abl.eval_curve(workdir),
        trained_now=trained_now,
        workdir=str(workdir),
    )
    return result, state


# -- suites -------------------------------------------------------------------------------------


def run_drtmo(
    root: Path,
    builders: Builders,
    variants: Sequence[abl.Variant],
    *,
    quick: bool,
    seed: int,
    steps: int,
    progress: bool,
    train: bool = True,
) -> dict:
    s = SIZES["drtmo"][quick]
    eval_builder = (
        builders.brackets(
            view=s["view"], num_crfs=EVAL_CRFS, views=s["eval_views"], crops=s["crops"]
        )
        if train
        else None
    )
    out: dict[str, Any] = {"suite": "drtmo", "runs": {}, "hdr": {}, "baselines": {}}
    base = drtmo_config(abl.DRTMO_VARIANTS[0], "up", quick=quick, seed=seed, steps=steps)
    out["settings"] = {
        "description": [
            (
                f"Width preset '{base.model.width}' at depth {base.model.depth}, "
                f"{base.data.crop_size}x{base.data.crop_size} training crops of "
                f"{s['view']}x{s['view']} views ({s['views']} per panorama), batch "
                f"{base.batch_size}, {base.num_train_steps} steps, Adam lr "
                f"{base.optimizer.learning_rate} (b1 {base.optimizer.b1}), dropout "
                f"{base.model.dropout_rate}, residual base '{base.model.residual_base}', batch "
                "norm with running averages at inference (the CPU recipe of "
                "experiments/configs/drtmo.py)."
            ),
            (
                f"Validation: the first {s['num_eval']} held-out views of the held-out scenes "
                f"rendered through all {EVAL_CRFS} parametric CRFs ({s['eval_views']} views per "
                f"panorama), at {s['view']}x{s['view']}, one input exposure per view drawn from the "
                f"seed; PU21 on the first {s['num_hdr']} of them with the middle exposure as input."
            ),
        ],
        "config": base.to_dict(),
    }
    states: dict[str, dict[str, tuple]] = {}
    for v in variants:
        for d in abl.DIRECTIONS:
            cfg = drtmo_config(v, d, quick=quick, seed=seed, steps=steps)
            wd = root / "drtmo" / v.name / d
            if not train:
                res = abl.read_json(wd / abl.RESULT_FILE)
                if res:
                    res.update(
                        wall_s=abl.wall_time(wd),
                        curve=abl.eval_curve(wd),
                        trained_now=False,
                        workdir=str(wd),
                    )
                    out["runs"][f"{v.name}/{d}"] = res
                continue
            builder = builders.brackets(
                view=s["view"], num_crfs=cfg.data.num_crfs, views=s["views"], crops=s["crops"]
            )
            task = _task(
                abl.DrTMOVariantTask, cfg, quick, builder=builder, eval_builder=eval_builder
            )
            res, st = _run(task, cfg, wd, progress=progress)
            res["direction"] = d
            out["runs"][f"{v.name}/{d}"] = res
            states.setdefault(v.name, {})[d] = (task, cfg, wd, st, res["trained_now"])
        hdr_path = root / "drtmo" / v.name / abl.HDR_FILE
        cached = abl.read_json(hdr_path)
        if train and len(states.get(v.name, {})) == 2:
            pair = states[v.name]
            fresh = any(p[4] for p in pair.values())
            if cached is None or fresh or cached.get("num") != s["num_hdr"]:
                nets = {}
                for d, (task, cfg, wd, st, _) in pair.items():
                    nets[d] = (
                        task,
                        st if st is not None else abl.restore_final_state(task, cfg, wd),
                    )
                source = eval_builder.as_data_source(split="validation")
                cached = {
                    "num": s["num_hdr"],
                    **abl.drtmo_hdr_eval(nets["up"], nets["down"], source, s["num_hdr"]),
                }
                abl.write_json(hdr_path, cached)
            states.pop(v.name)  # free the parameters
        if cached:
            out["hdr"][v.name] = cached
    base_path = root / "drtmo" / abl.BASELINE_FILE
    baselines = abl.read_json(base_path)
    if train and (baselines is None or baselines.get("num_eval") != s["num_eval"]):
        baselines = {"num_eval": s["num_eval"], "naive": {}}
        for d in abl.DIRECTIONS:
            cfg = drtmo_config(abl.DRTMO_VARIANTS[0], d, quick=quick, seed=seed, steps=steps)
            task = _task(
                abl.DrTMOVariantTask,
                cfg,
                quick,
                builder=builders.brackets(
                    view=s["view"], num_crfs=BASE_CRFS, views=s["views"], crops=s["crops"]
                ),
                eval_builder=eval_builder,
            )
            baselines["naive"][d] = abl.drtmo_naive_baseline(task)
        abl.write_json(base_path, baselines)
    if baselines:
        out["baselines"] = {"naive": baselines["naive"]}
    return out


def run_cfnet(
    root: Path,
    builders: Builders,
    variants: Sequence[abl.Variant],
    *,
    quick: bool,
    seed: int,
    steps: int,
    progress: bool,
    train: bool = True,
) -> dict:
    s = SIZES["cfnet"][quick]
    out: dict[str, Any] = {"suite": "cfnet", "runs": {}, "baselines": {}}
    base = cfnet_config(abl.CFNET_VARIANTS[0], quick=quick, seed=seed, steps=steps)
    out["settings"] = {
        "description": [
            (
                f"{base.model.features} features, {base.model.num_groups} projection groups, "
                f"{s['patch_hr']}x{s['patch_hr']} HR training crops (LR {s['patch_hr'] // 2} "
                f"at x2, {s['patch_hr'] // 4} at x4), batch {base.batch_size}, "
                f"{base.num_train_steps} steps, Adam lr {base.optimizer.learning_rate}; synthetic "
                f"pairs (builder configs '{(s['data'] + '_') if s['data'] else ''}x2/x4')."
            ),
            (
                f"Evaluation: the first {s['num_eval']} test-split examples, {s['eval_hr']}x"
                f"{s['eval_hr']} HR centre crops (LR {s['eval_hr'] // 2} at x2, "
                f"{s['eval_hr'] // 4} at x4)."
            ),
        ],
        "config": base.to_dict(),
    }
    for v in variants:
        cfg = cfnet_config(v, quick=quick, seed=seed, steps=steps)
        wd = root / "cfnet" / v.name
        if not train:
            res = abl.read_json(wd / abl.RESULT_FILE)
            if res:
                res.update(
                    wall_s=abl.wall_time(wd),
                    curve=abl.eval_curve(wd),
                    trained_now=False,
                    workdir=str(wd),
                    num_steps=cfg.model.num_steps,
                    scale=cfg.model.scale,
                )
                out["runs"][v.name] = res
            continue
        name = f"{s['data']}_x{cfg.model.scale}" if s["data"] else f"x{cfg.model.scale}"
        task = _task(abl.CFNetVariantTask, cfg, quick, builder=builders.pairs(name))
        res, _ = _run(task, cfg, wd, progress=progress)
        res["num_steps"] = cfg.model.num_steps
        res["scale"] = cfg.model.scale
        out["runs"][v.name] = res
    base_path = root / "cfnet" / abl.BASELINE_FILE
    baselines = abl.read_json(base_path)
    if train and (baselines is None or baselines.get("num_eval") != s["num_eval"]):
        name = f"{s['data']}_x2" if s["data"] else "x2"
        task = _task(abl.CFNetVariantTask, base, quick, builder=builders.pairs(name))
        baselines = {"num_eval": s["num_eval"], "methods": abl.cfnet_baselines(task)}
        abl.write_json(base_path, baselines)
    if baselines:
        out["baselines"] = dict(baselines["methods"])
    return out


# -- the whole grid -----------------------------------------------------------------------------


def _environment() -> dict[str, str]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            check=False,
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "code": f"git {commit}" if commit else "unknown revision",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores ({platform.system()})",
        "software": f"Python {platform.python_version()}, jax {jax.__version__}",
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") or "(none)",
    }


def _data_info(hdr_dir: str) -> dict:
    from hdr_jax.data import hdr_brackets

    files = hdr_io.list_images(Path(hdr_dir), kinds=("hdr",))
    train, held = hdr_brackets.split_scenes([f.stem for f in files])
    return {"hdr_dir": hdr_dir, "num_scenes": len(files), "train": train, "heldout": held}


def run_ablations(
    *,
    suite: str,
    workdir: str | os.PathLike,
    quick: bool = False,
    hdr_dir: str = "../shared/data/hdri",
    tfds_dir: str = "",
    variants: Sequence[str] | None = None,
    seed: int = 0,
    steps: int = 0,
    progress: bool = False,
    command: str | None = None,
    plots: bool = True,
    report_only: bool = False,
    report_dir: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """Runs the requested grid(s) under ``workdir`` and rewrites the report from every run found
    there (a suite not requested now is reported from its cached results).

    ``report_only``: train and evaluate nothing, rebuild the report from the cached results.
    ``report_dir``: where the report goes (default ``workdir``); a ``discussion.md`` there is
    included in it.
    """
    t_start = time.perf_counter()
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    if not Path(hdr_dir).is_dir():
        raise hdr_io.ImageIOError(f"{hdr_dir}: HDR folder not found (pass --hdr_dir)")
    requested = list(abl.SUITES) if suite == "all" else [suite]
    if suite not in (*abl.SUITES, "all"):
        raise ValueError(f"--suite must be drtmo, cfnet or all, got {suite!r}")
    chosen = {s: abl.select_variants(s, variants) for s in requested}
    if variants and not any(chosen.values()):
        raise ValueError(f"none of the variants {list(variants)} belongs to suite {suite!r}")
    history = abl.read_json(root / "commands.json") or []
    if not report_only:
        history.append(
            {
                "command": command or "run_ablations(...)",
                "time": datetime.datetime.now().isoformat(timespec="seconds"),
            }
        )
        abl.write_json(root / "commands.json", history)

    builders = Builders(tfds_dir or str(root / "tfds"), hdr_dir)
    results: dict[str, Any] = {
        "commands": history,
        "seed": seed,
        "quick": quick,
        "environment": _environment(),
        "data": _data_info(hdr_dir),
        "suites": {},
    }
    runners = {"drtmo": run_drtmo, "cfnet": run_cfnet}
    for s in abl.SUITES:
        train = s in requested and not report_only
        sr = runners[s](
            root,
            builders,
            chosen[s] if train else abl.select_variants(s),
            quick=quick,
            seed=seed,
            steps=steps,
            progress=progress,
            train=train,
        )
        if sr["runs"]:
            results["suites"][s] = sr
    walls = [r.get("wall_s") for sr in results["suites"].values() for r in sr["runs"].values()]
    total = sum(w for w in walls if w is not None and math.isfinite(w))
    invocation = time.perf_counter() - t_start
    if report_only:  # the time of the last invocation that ran something
        last = abl.read_json(root / "ablations.json") or {}
        invocation = last.get("timing", {}).get("invocation_s")
    else:
        history[-1]["wall_s"] = invocation
        abl.write_json(root / "commands.json", history)
    results["timing"] = {"runs_total_s": total, "invocation_s": invocation}
    out = Path(report_dir) if report_dir else root
    return abl.write_report(results, out, plots=plots)


# -- command line -------------------------------------------------------------------------------


def _define_flags() -> None:
    """Defines the command-line flags (only when run as a program: the test suite imports this
    module next to other absl entry points that also define --workdir)."""
    global \
        _SUITE, \
        _WORKDIR, \
        _QUICK, \
        _HDR_DIR, \
        _TFDS_DIR, \
        _VARIANTS, \
        _SEED, \
        _STEPS, \
        _PROGRESS, \
        _REPORT_ONLY, \
        _REPORT_DIR, \
        _CACHE
    _SUITE = flags.DEFINE_enum("suite", None, ["drtmo", "cfnet", "all"], "Which grid to run.")
    _WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the runs and the report.")
    _QUICK = flags.DEFINE_bool("quick", False, "Test-sized models and data, 2 steps per run.")
    _HDR_DIR = flags.DEFINE_string("hdr_dir", "../shared/data/hdri", "Folder of HDR images.")
    _TFDS_DIR = flags.DEFINE_string("tfds_dir", "", "tfds data directory (default: WORKDIR/tfds).")
    _VARIANTS = flags.DEFINE_list("variants", [], "Only these variants (default: the whole grid).")
    _SEED = flags.DEFINE_integer("seed", 0, "Seed of every run.")
    _STEPS = flags.DEFINE_integer("steps", 0, "Training steps per run (0: the grid's default).")
    _PROGRESS = flags.DEFINE_bool("progress", False, "Progress bars instead of log lines.")
    _REPORT_ONLY = flags.DEFINE_bool(
        "report_only", False, "Train nothing: rebuild the report from the runs under --workdir."
    )
    _REPORT_DIR = flags.DEFINE_string(
        "report_dir",
        "",
        "Where to write the report (default --workdir); its discussion.md is kept.",
    )
    _CACHE = flags.DEFINE_bool(
        "compilation_cache",
        True,
        "Persistent XLA compilation cache in WORKDIR/xla_cache (up and down nets share executables; "
        "a rerun compiles nothing).",
    )


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    if not _SUITE.value or not _WORKDIR.value:
        raise app.UsageError("--suite and --workdir are required")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax/tfds log every file at INFO
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
    if _QUICK.value and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
        # Tiny shapes: LLVM optimisation costs far more than it saves (read at backend start).
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
        ).strip()
    if _CACHE.value:
        jax.config.update("jax_compilation_cache_dir", str(Path(_WORKDIR.value) / "xla_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    command = "python -m experiments.ablations " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        paths = run_ablations(
            suite=_SUITE.value,
            workdir=_WORKDIR.value,
            quick=_QUICK.value,
            hdr_dir=_HDR_DIR.value,
            tfds_dir=_TFDS_DIR.value,
            variants=_VARIANTS.value,
            seed=_SEED.value,
            steps=_STEPS.value,
            progress=_PROGRESS.value,
            command=command,
            report_only=_REPORT_ONLY.value,
            report_dir=_REPORT_DIR.value or None,
        )
    except (ValueError, KeyError, hdr_io.ImageIOError) as e:
        print(
            f"ablations: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
            file=sys.stderr,
        )
        sys.exit(1)
    print(f"wrote {paths['markdown']}, {paths['json']} and {paths['plots']}/")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
