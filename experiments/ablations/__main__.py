"""Command line of the ablation grids (see :mod:`experiments.ablations`)."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import tensorflow_datasets as tfds
from absl import app, flags, logging

from experiments.ablations import run
from hdr_jax import io as hdr_io
from hdr_jax.training import parallel

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
    "report_dir", "", "Where to write the report (default --workdir); its discussion.md is kept."
)
_CACHE = flags.DEFINE_bool(
    "compilation_cache",
    True,
    "Persistent XLA compilation cache in WORKDIR/xla_cache (up and down nets share executables; "
    "a rerun compiles nothing).",
)


#: Flags passed to run.run_ablations under their own names.
_PASSED_FLAGS = (
    "suite", "workdir", "quick", "hdr_dir", "tfds_dir", "variants", "seed", "steps", "progress",
    "report_only",
)  # fmt: skip


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    if not _SUITE.value or not _WORKDIR.value:
        raise app.UsageError("--suite and --workdir are required")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax/tfds log every file at INFO
        tfds.disable_progress_bar()
    if _QUICK.value and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
        # Tiny shapes: LLVM optimisation costs far more than it saves (read at backend start).
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
        ).strip()
    if _CACHE.value:
        jax.config.update("jax_compilation_cache_dir", str(Path(_WORKDIR.value) / "xla_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    parallel.initialize_from_flags()  # before anything touches a device
    command = "python -m experiments.ablations " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        paths = run.run_ablations(
            **{name: flags.FLAGS[name].value for name in _PASSED_FLAGS},
            command=command,
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
    parallel.define_flags()  # the multi-process flags of experiments.train
    app.run(main)
