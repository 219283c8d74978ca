"""Training and evaluation of the ablation grids, one loop workdir per run.

Layout under the ablation directory ``DIR``::

    DIR/drtmo/<variant>/{up,down}/   one loop workdir per direction (checkpoints, metrics.jsonl,
                                     config.json, ablation_result.json, ablation_timing.json)
    DIR/drtmo/<variant>/hdr_eval.json   PU21 of the merged stack of that variant's up + down pair
    DIR/cfnet/<variant>/             one loop workdir
    DIR/<suite>/baselines.json       non-learned baselines on the same evaluation examples
    DIR/ablations.{md,json}, DIR/plots/*.png

Every stage-1 variant is trained in both directions: PU21 needs the merged 17-image stack, and
pairing a variant's network with the full model's other one would halve the effect being
measured. All stage-1 variants are validated on one set, the held-out scenes rendered through
all 11 parametric CRFs, so that the CRF-count variants are compared on cameras some of them
never saw (and all variants on the same examples). Per-example metrics come from the tasks'
own ``eval_step`` (:mod:`hdr_jax.eval.stage1` / :mod:`hdr_jax.eval.stage2`), aggregated by
:mod:`hdr_jax.eval.stats`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import tensorflow_datasets as tfds

from experiments.ablations import grid
from experiments.ablations import report as ablation_report
from hdr_jax import io as hdr_io
from hdr_jax.data import hdr_brackets, synthetic_pairs
from hdr_jax.camera.exposure import naive_bracket_baseline
from hdr_jax.eval import baselines, stage1, stage2, stats
from hdr_jax.eval import report as eval_report
from hdr_jax.models import drtmo
from hdr_jax.training import checkpoint, loop, parallel, tasks
from hdr_jax.training import state as state_lib

RESULT_FILE = "ablation_result.json"
TIMING_FILE = "ablation_timing.json"
HDR_FILE = "hdr_eval.json"
BASELINE_FILE = "baselines.json"


# -- data ---------------------------------------------------------------------------------------


class Builders:
    """tfds builders, prepared once each per invocation (the real data builds slowly)."""

    def __init__(self, tfds_dir: str, hdr_dir: str):
        self.tfds_dir = os.path.abspath(tfds_dir)
        self.hdr_dir = os.path.abspath(hdr_dir)
        self._cache: dict[str, Any] = {}

    def _prepare(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
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
        name = grid.bracket_config_name(view, num_crfs, views)
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
        return self._prepare(
            f"synthetic_pairs/{config_name}",
            lambda: synthetic_pairs.SyntheticPairs(
                config=config_name, data_dir=self.tfds_dir, file_format="array_record"
            ),
        )


class SplitSources:
    """A data-source provider with one builder per split: the stage-1 tasks train on their own
    data and validate on the common held-out set (``builder=`` of the library tasks only needs
    ``as_data_source``)."""

    def __init__(self, **builders: Any):
        self._builders = builders

    def as_data_source(self, split: str) -> Any:
        return self._builders[split].as_data_source(split=split)


# -- tasks --------------------------------------------------------------------------------------


def scaled_widths(model_config: Any) -> dict[str, tuple[int, ...]]:
    """DrTMO widths of the config's preset and depth, times ``width_factor`` (at least 1)."""
    preset = drtmo.width_preset(model_config["width"], depth=model_config.get("depth"))
    f = float(model_config.get("width_factor", 1.0))
    return {k: tuple(max(1, round(c * f)) for c in v) for k, v in preset.items()}


def make_task(config: Any, builder: Any) -> Any:
    """The library task of ``config`` on ``builder``. A DrTMO ``model.width_factor`` other than
    1 scales every preset width (the width ablation at CPU scale, where the paper's full/half
    presets do not train)."""
    task = tasks.make_task(config, builder=builder)
    if config.task == "drtmo" and float(config.model.get("width_factor", 1.0)) != 1.0:
        task.model = task.model.clone(**scaled_widths(config.model))
    return task


# -- run bookkeeping ----------------------------------------------------------------------------


def latest_checkpoint_step(workdir: str | os.PathLike) -> int | None:
    """The latest finished checkpoint step of a run (orbax's own reading of the directory)."""
    directory = Path(workdir) / "checkpoints"
    if not directory.is_dir():
        return None
    manager = checkpoint.make_manager(str(directory))
    try:
        return manager.latest_step()
    finally:
        manager.close()


def eval_curve(workdir: str | os.PathLike, key: str = "psnr") -> list[tuple[int, float]]:
    """(step, value) of the evaluation records of a run; the last record of a step wins."""
    by_step = {
        int(r["step"]): float(r[key])
        for r in loop.read_metrics(workdir)
        if r.get("split") == "eval" and key in r
    }
    return sorted(by_step.items())


def run_status(workdir: str | os.PathLike, num_train_steps: int) -> str:
    """'done' (latest checkpoint at num_train_steps and an eval record for it), 'partial' or
    'new'. A run that went past num_train_steps raises: it was trained with another setting."""
    step = latest_checkpoint_step(workdir)
    if step is None:
        return "new"
    if step > num_train_steps:
        raise ValueError(
            f"{workdir}: checkpoint at step {step} is past num_train_steps={num_train_steps}; "
            "use a new --workdir"
        )
    if step == num_train_steps and any(s == step for s, _ in eval_curve(workdir)):
        return "done"
    return "partial"


def _write_json(path: str | os.PathLike, obj: Any) -> None:
    """Result files are written by process 0 only (every process computes the same values)."""
    if parallel.is_primary():
        eval_report.write_json(path, obj)


def append_eval_record(workdir: str | os.PathLike, step: int, means: dict[str, float]) -> None:
    """Adds an eval record through the loop's writer (for a run whose final evaluation was
    interrupted: the checkpoint is final but the loop has no step left to evaluate at)."""
    writer = loop.MetricWriter(str(workdir), active=parallel.is_primary())
    try:
        writer.scalars(int(step), "eval", means)
    finally:
        writer.close()


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def add_wall_time(workdir: str | os.PathLike, seconds: float) -> float:
    """Accumulates the training wall time of a run over resumptions; returns the total."""
    path = Path(workdir) / TIMING_FILE
    rec = read_json(path) or {"wall_s": 0.0, "sessions": 0}
    rec["wall_s"] = float(rec["wall_s"]) + float(seconds)
    rec["sessions"] = int(rec["sessions"]) + 1
    _write_json(path, rec)
    return rec["wall_s"]


def wall_time(workdir: str | os.PathLike) -> float:
    rec = read_json(Path(workdir) / TIMING_FILE)
    return float(rec["wall_s"]) if rec else float("nan")


def restore_final_state(task: Any, config: Any, workdir: str | os.PathLike) -> Any:
    """The train state of the latest checkpoint (model only; the data iterator is not needed)."""
    manager = checkpoint.make_manager(os.path.join(workdir, "checkpoints"))
    try:
        template = jax.eval_shape(task.init_state, jax.random.key(config.seed))
        return checkpoint.restore(manager, template)
    finally:
        manager.close()


# -- evaluation ---------------------------------------------------------------------------------


def drtmo_naive_baseline(task: Any) -> dict[str, np.ndarray]:
    """Per-example PSNR of the naive re-exposure (inverse sRGB, x tau^step, sRGB, clip) on the
    task's evaluation examples, keyed like the DrTMO ``eval_step``."""
    acc = stats.Collector()
    for batch in task.eval_batches():
        pred = naive_bracket_baseline(
            np.asarray(batch["input"]), np.asarray(batch["exposure_step"])
        )
        acc.update(jax.device_get(stage1.exposure_scores(pred, batch["target"], batch["mask"])))
    return acc.arrays()


def cfnet_baselines(task: Any) -> dict[str, dict[str, np.ndarray]]:
    """Per-example scores of the stage-2 baselines on the task's evaluation crops."""

    def examples():
        for batch in task.eval_batches():
            for b in range(np.shape(batch["label_hr"])[0]):
                yield {k: np.asarray(batch[k][b], np.float32) for k in stage2.EXAMPLE_KEYS}

    methods = baselines.baseline_methods()
    return stage2.per_example_scores(examples(), methods, task.config.model.scale)


def drtmo_hdr_eval(
    up: tuple[Any, Any], down: tuple[Any, Any], source: Any, limit: int
) -> dict[str, Any]:
    """:func:`hdr_jax.eval.stage1.merge_record` of an (up, down) pair of (task, state), per
    example, on the first ``limit`` records of ``source``: only the middle exposure, the merge
    input, goes through the networks.

    Returns ``{'per_example': {row: {'pu21': (n,), 'pu21_clipped': (n,)}}, 'kept': (n,),
    'clipped_fraction': (n,)}``; 'kept' counts the stack images the monotone selection keeps
    (1 = the input alone)."""

    def forward(task_state: tuple[Any, Any]) -> Callable[[np.ndarray], np.ndarray]:
        task, state = task_state
        fn = jax.jit(lambda v, x: task.model.apply(v, x, train=False))
        return lambda x: np.asarray(fn(state.variables, x[None]))[0]

    nets = {"up": forward(up), "down": forward(down)}
    acc = stats.Collector()
    for i in range(min(limit, len(source))):
        record = source[i]
        bracket = stage1.record_bracket(record)
        x = bracket[(bracket.shape[0] - 1) // 2]
        r = stage1.merge_record(record, down=nets["down"](x), up=nets["up"](x))
        for row, scores in r["merge"].items():
            for k in ("pu21", "pu21_clipped"):
                acc.add((row, k), scores[k])
        acc.add("kept", r["kept"][1] - r["kept"][0] + 1)
        acc.add("clipped_fraction", r["clipped_fraction"])
    rows = {row: {k: acc.all_values((row, k)) for k in ("pu21", "pu21_clipped")}
            for row in stage1.MERGE_ROWS}  # fmt: skip
    return {
        "per_example": rows,
        "kept": acc.all_values("kept"),
        "clipped_fraction": acc.all_values("clipped_fraction"),
    }


# -- one run ------------------------------------------------------------------------------------


def _run(task: Any, config: Any, workdir: Path, *, progress: bool) -> tuple[dict, Any]:
    """Trains (or resumes, or skips) one run and returns (its result record, a state or None)."""
    total = config.num_train_steps
    status = run_status(workdir, total)
    state = None
    trained_now = False
    evaluated: dict[int, stats.Collector] = {}
    if status != "done" and not (status == "partial" and latest_checkpoint_step(workdir) == total):
        # (A partial run with its final checkpoint was killed during the final evaluation:
        # nothing is left to train, it is evaluated below.)
        print(
            f"[{workdir}] {'resuming' if status == 'partial' else 'training'} ({total} steps)",
            flush=True,
        )
        t0 = time.perf_counter()
        state = loop.train_and_evaluate(
            task, config, str(workdir), progress=progress, previews=False,
            on_eval=lambda step, metrics: evaluated.update({step: metrics}),
        )
        add_wall_time(workdir, time.perf_counter() - t0)
        trained_now = True
    result = read_json(workdir / RESULT_FILE)
    if trained_now or result is None or result.get("steps") != total:
        if state is None:
            state = restore_final_state(task, config, workdir)
        # The loop's own evaluation, kept per example for the paired comparisons (the one the
        # loop just ran at the final step, when it did: no second compile of the eval step).
        if total in evaluated:
            metrics = evaluated[total]
        else:
            metrics = loop.evaluate_per_example(task, state, jax.jit(task.eval_step))
        per_example, means = metrics.arrays(), metrics.means()
        if run_status(workdir, total) != "done":
            append_eval_record(workdir, total, means)
        result = {
            "steps": total,
            "num_params": state_lib.count_params(state.params),
            "per_example": per_example,
            "means": means,
        }
        _write_json(workdir / RESULT_FILE, result)
    result.update(_run_info(workdir), trained_now=trained_now)
    return result, state


def _run_info(workdir: Path) -> dict[str, Any]:
    return {"wall_s": wall_time(workdir), "curve": eval_curve(workdir), "workdir": str(workdir)}


def _cached_run(workdir: Path) -> dict | None:
    """The stored result of a run, for a report that trains nothing."""
    res = read_json(workdir / RESULT_FILE)
    if res:
        res.update(_run_info(workdir), trained_now=False)
    return res


# -- suites -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Options:
    """What every run of one invocation shares."""

    quick: bool
    seed: int
    steps: int
    progress: bool

    def config_args(self) -> dict[str, Any]:
        """The keyword arguments of :func:`grid.drtmo_config` / :func:`grid.cfnet_config`."""
        return {"quick": self.quick, "seed": self.seed, "steps": self.steps}


def run_drtmo(
    root: Path, builders: Builders, variants: Sequence[grid.Variant], opts: Options, *, train: bool
) -> dict:
    s = grid.SIZES["drtmo"][opts.quick]
    eval_builder = (
        builders.brackets(
            view=s["view"], num_crfs=grid.EVAL_CRFS, views=s["eval_views"], crops=s["crops"]
        )
        if train
        else None
    )

    def task_for(cfg: Any) -> Any:
        train_builder = builders.brackets(
            view=s["view"], num_crfs=cfg.data.num_crfs, views=s["views"], crops=s["crops"]
        )
        return make_task(cfg, SplitSources(train=train_builder, validation=eval_builder))

    out: dict[str, Any] = {"suite": "drtmo", "runs": {}, "hdr": {}, "baselines": {}}
    base = grid.drtmo_config(grid.DRTMO_VARIANTS[0], "up", **opts.config_args())
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
                f"rendered through all {grid.EVAL_CRFS} parametric CRFs ({s['eval_views']} views "
                f"per panorama), at {s['view']}x{s['view']}, one input exposure per view drawn "
                f"from the seed; PU21 on the first {s['num_hdr']} of them with the middle "
                "exposure as input."
            ),
        ],
        "config": base.to_dict(),
    }
    for v in variants:
        pair: dict[str, tuple[Any, Any, Path, Any, bool]] = {}
        for d in grid.DIRECTIONS:
            wd = root / "drtmo" / v.name / d
            if not train:
                res = _cached_run(wd)
                if res:
                    out["runs"][f"{v.name}/{d}"] = res
                continue
            cfg = grid.drtmo_config(v, d, **opts.config_args())
            task = task_for(cfg)
            res, st = _run(task, cfg, wd, progress=opts.progress)
            res["direction"] = d
            out["runs"][f"{v.name}/{d}"] = res
            pair[d] = (task, cfg, wd, st, res["trained_now"])
        hdr_path = root / "drtmo" / v.name / HDR_FILE
        cached = read_json(hdr_path)
        if len(pair) == 2:
            fresh = any(p[4] for p in pair.values())
            if cached is None or fresh or cached.get("num") != s["num_hdr"]:
                nets = {
                    d: (task, st if st is not None else restore_final_state(task, cfg, wd))
                    for d, (task, cfg, wd, st, _) in pair.items()
                }
                source = eval_builder.as_data_source(split="validation")
                cached = {
                    "num": s["num_hdr"],
                    **drtmo_hdr_eval(nets["up"], nets["down"], source, s["num_hdr"]),
                }
                _write_json(hdr_path, cached)
        if cached:
            out["hdr"][v.name] = cached
    base_path = root / "drtmo" / BASELINE_FILE
    base_results = read_json(base_path)
    if train and (base_results is None or base_results.get("num_eval") != s["num_eval"]):
        base_results = {"num_eval": s["num_eval"], "naive": {}}
        for d in grid.DIRECTIONS:
            cfg = grid.drtmo_config(grid.DRTMO_VARIANTS[0], d, **opts.config_args())
            base_results["naive"][d] = drtmo_naive_baseline(task_for(cfg))
        _write_json(base_path, base_results)
    if base_results:
        out["baselines"] = {"naive": base_results["naive"]}
    return out


def run_cfnet(
    root: Path, builders: Builders, variants: Sequence[grid.Variant], opts: Options, *, train: bool
) -> dict:
    s = grid.SIZES["cfnet"][opts.quick]
    out: dict[str, Any] = {"suite": "cfnet", "runs": {}, "baselines": {}}
    base = grid.cfnet_config(grid.CFNET_VARIANTS[0], **opts.config_args())
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
        cfg = grid.cfnet_config(v, **opts.config_args())
        wd = root / "cfnet" / v.name
        if train:
            data = builders.pairs(grid.pairs_config_name(opts.quick, cfg.model.scale))
            task = make_task(cfg, data)
            res, _ = _run(task, cfg, wd, progress=opts.progress)
        else:
            res = _cached_run(wd)
        if res:
            res.update(num_steps=cfg.model.num_steps, scale=cfg.model.scale)
            out["runs"][v.name] = res
    base_path = root / "cfnet" / BASELINE_FILE
    base_results = read_json(base_path)
    if train and (base_results is None or base_results.get("num_eval") != s["num_eval"]):
        task = make_task(base, builders.pairs(grid.pairs_config_name(opts.quick, 2)))
        base_results = {"num_eval": s["num_eval"], "methods": cfnet_baselines(task)}
        _write_json(base_path, base_results)
    if base_results:
        out["baselines"] = dict(base_results["methods"])
    return out


# -- the whole grid -----------------------------------------------------------------------------


def _environment() -> dict[str, str]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            check=False,
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
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
    if suite not in (*grid.SUITES, "all"):
        raise ValueError(f"--suite must be drtmo, cfnet or all, got {suite!r}")
    requested = list(grid.SUITES) if suite == "all" else [suite]
    chosen = {s: grid.select_variants(s, variants) for s in requested}
    if variants and not any(chosen.values()):
        raise ValueError(f"none of the variants {list(variants)} belongs to suite {suite!r}")
    history = read_json(root / "commands.json") or []
    if not report_only:
        history.append(
            {
                "command": command or "run_ablations(...)",
                "time": datetime.datetime.now().isoformat(timespec="seconds"),
            }
        )
        _write_json(root / "commands.json", history)

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
    opts = Options(quick=quick, seed=seed, steps=steps, progress=progress)
    for s in grid.SUITES:
        train = s in requested and not report_only
        names = chosen[s] if train else grid.select_variants(s)
        sr = runners[s](root, builders, names, opts, train=train)
        if sr["runs"]:
            results["suites"][s] = sr
    walls = [r.get("wall_s") for sr in results["suites"].values() for r in sr["runs"].values()]
    total = sum(w for w in walls if w is not None and math.isfinite(w))
    invocation = time.perf_counter() - t_start
    if report_only:  # the time of the last invocation that ran something
        last = read_json(root / "ablations.json") or {}
        invocation = last.get("timing", {}).get("invocation_s")
    else:
        history[-1]["wall_s"] = invocation
        _write_json(root / "commands.json", history)
    results["timing"] = {"runs_total_s": total, "invocation_s": invocation}
    out = Path(report_dir) if report_dir else root
    if not parallel.is_primary():  # one process writes the report (all took part in the runs)
        return ablation_report.report_paths(out)
    return ablation_report.write_report(results, out, plots=plots)
