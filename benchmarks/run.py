"""Memory, FLOP and CPU-time benchmarks of both networks.

    python -m benchmarks.run                 # default grid, < 15 min on 2 quiet cores
    python -m benchmarks.run --grid=full     # every training variant at every shape (slow)
    python -m benchmarks.run --quick         # tiny shapes, seconds (tests)

Per configuration: parameter count; forward GFLOP (XLA cost analysis of the lowered inference);
compiled peak memory (XLA memory analysis, argument + output - alias + temp; the train state is
donated as in `training.loop`, so its outputs alias its inputs) of the training step and of
inference; and, for the timed subset, the median wall time after warm-up and the achieved
GFLOP/s (the compiled step's FLOPs, recomputation included, over its time). Variants: the
stride-1 conv as 'im2col' + matmul, as lax.conv ('xla'), or 'auto' (lax.conv for 2-d kernels of
more than 2 taps, im2col otherwise; CF-Net's training default); '+remat' (CF-Net: every SRB and
feedback step, the steps as a rolled loop; DrTMO: every layer); '+remat-save' (remat keeping the
projection outputs / the matmul outputs); '+bf16' (bf16 compute and bf16
Adam moments; parameters stay float32). The memory targets use `memory.choose_training_settings`,
whose last resort adds gradient accumulation (`microbatches`). Every batch here is one
device's: on N devices the same peak trains a global batch (`config.batch_size`) N times larger,
which is how `--memory_budget` sizes a multi-device run (`benchmarks/scaling.py` times the
layouts).

Compile-only numbers use `memory.ANALYSIS_OPTIONS` (same buffer assignment, faster compile);
timed ones the default options. A float32 matmul measured in the same run is the machine's
reference GFLOP/s. Results: a table on stdout, `<out>.json` and `<out>.md` (generated whole;
hand-written notes on the measurements live in docs/benchmarks_notes.md).

Modules: `grid` (what is measured), `measure` (how), `targets` (PASS/FAIL), `report` (output).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence

import jax
from absl import app, flags

from benchmarks import grid as grids
from benchmarks import measure, report, targets

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def define_flags() -> None:
    """The command-line flags (defined only when run as a program: importing this module, as
    the tests do, must not clash with other absl programs' flags such as --quick)."""
    flags.DEFINE_bool("quick", False, "Tiny shapes, one configuration per network (seconds).")
    flags.DEFINE_enum("grid", "default", ["default", "full"], "Compile-only coverage.")
    flags.DEFINE_bool("timing", True, "Run the timed subset (else compile-only).")
    flags.DEFINE_bool("profile", True, "Per-layer CF-Net timing (forward + gradient).")
    flags.DEFINE_integer("reps", 2, "Timed repetitions after one warm-up call (median).")
    flags.DEFINE_string("budget", "4GiB", "Memory budget of the targets.")
    flags.DEFINE_bool("pipeline", True, "Time the two-stage pipeline (bundled weights) on a photo.")
    flags.DEFINE_float("megapixels", 1.0, "Photo size of the pipeline timing.")
    flags.DEFINE_string("out", "docs/benchmarks", "Output prefix: writes <out>.json and <out>.md.")
    flags.DEFINE_string("baseline", "", "Another checkout of the project (e.g. a `git worktree` "
                        "of an older commit): time its pipeline in this run and report the speedup.")
    flags.DEFINE_string("torch_python", "", "An interpreter with torch: time the PyTorch CF-Net "
                        "(benchmarks/torch_reference.py) in this run and report the ratios.")


def run(
    *,
    quick: bool = False,
    grid: str = "default",
    timing: bool = True,
    profile: bool = True,
    reps: int = 2,
    budget: str = "4GiB",
    pipeline: bool = True,
    megapixels: float = 1.0,
    out: str | None = None,
    torch_python: str = "",
    baseline: str = "",
    log: Callable[[str], None] = print,
) -> dict:
    """Runs the benchmark; returns the JSON document (also written to `out` when given)."""
    t_start = time.perf_counter()
    env = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "loadavg_start": os.getloadavg(),
    }
    log(f"environment: {env}")
    mm = measure.matmul_gflops(512 if quick else 4096, reps)
    log(f"float32 matmul {mm['n']}^2: {mm['gflops']:.1f} GFLOP/s")
    log(" | ".join(c for c, _ in report.COLUMNS))
    results = []
    for row in grids.plan(quick, grid, timing):
        results += measure.measure_row(row, reps, log)
    prof = []
    if profile and timing:
        if quick:
            prof = measure.layer_profile(2, 8, reps, only=["up projection (LR->HR)"])
        else:
            prof = measure.layer_profile(2, 64, reps) + measure.layer_profile(4, 64, reps)
        log(report.profile_table(prof))
    pipes = {}
    if pipeline and timing and not quick:  # compiling both stages takes ~40 s even on a tiny photo
        # each in a fresh process, so that a baseline checkout is timed on equal terms
        runs = [("x2", ROOT, 2), ("hdr_only", ROOT, 0)] + ([("baseline", baseline, 2)]
                                                           if baseline else [])
        for key, code, scale in runs:
            pipes[key] = measure.pipeline_timing_in(code, megapixels, scale)
            if baseline and key == "baseline":
                pipes[key]["commit"] = measure.git_commit(baseline)
            log(f"pipeline ({key}): {json.dumps(pipes[key])}")
    torch_ref = {}
    if torch_python and timing:
        for scale in (2, 4):  # the shapes the JAX rows are timed at
            torch_ref[scale] = measure.torch_reference(torch_python, scale, 8 if quick else 64, reps)
            log(f"PyTorch reference x{scale}: {json.dumps(torch_ref[scale])}")
    checked, settings = targets.check_targets(results, mm, budget, quick, log, pipes, torch_ref)
    doc = {
        "quick": quick,
        "grid": grid,
        "environment": env,
        "matmul": mm,
        "results": results,
        "profile": prof,
        "targets": checked,
        "pipeline": pipes.get("x2"),
        "pipelines": pipes,
        "torch_reference": torch_ref,
        "chosen_settings": settings,
        "total_s": time.perf_counter() - t_start,
    }
    env["loadavg_end"] = os.getloadavg()
    log(f"total {doc['total_s']:.0f} s")
    if out:
        report.write_outputs(doc, out)
    return doc


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    run(
        quick=FLAGS.quick,
        grid=FLAGS.grid,
        timing=FLAGS.timing,
        profile=FLAGS.profile,
        reps=FLAGS.reps,
        budget=FLAGS.budget,
        pipeline=FLAGS.pipeline,
        megapixels=FLAGS.megapixels,
        out=FLAGS.out or None,
        torch_python=FLAGS.torch_python,
        baseline=FLAGS.baseline,
        log=lambda s: print(s, flush=True),
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
