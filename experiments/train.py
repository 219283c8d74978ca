"""Trains either stage from an ml_collections config.

    python -m experiments.train --config experiments/configs/drtmo.py:up --workdir DIR
    python -m experiments.train --config experiments/configs/cfnet.py:x2 --workdir DIR

Rerunning the same command resumes from the latest checkpoint in DIR. SIGTERM or SIGINT ends
the run after the step in flight with a checkpoint of it (exit 143 / 130, one line); a checkpoint
that cannot be written ends it with one line and exit 1, the earlier checkpoints intact, and so
does a workdir (or checkpoint) that holds a different model than the config describes. A config
no run can have, a config file or override that does not load (exit 2), a data folder without
examples and an unreadable workdir are one line each, before training.

The same command trains on every local device (the global batch, config.batch_size, split over
them). Several processes (hosts): start it once per process with

    --coordinator_address=HOST0:PORT --num_processes=P --process_id=I

(or the environment JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or
--distributed_auto on a cluster JAX detects); each process reads its own rows of every batch,
process 0 writes the metrics and previews, all write the checkpoint (README "Multi-device
training").

    --memory_budget=4GiB   (or --config.memory_budget=4GiB) picks remat / bf16 settings whose
                           compiled training step fits, or stops with a one-line error before
                           compiling the real step (hdr_jax/memory.py).
"""

import os
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from hdr_jax import interrupts, memory
from hdr_jax.training import checkpoint, loop, parallel, tasks

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, previews.")
_PREPARE_ONLY = flags.DEFINE_bool(
    "prepare_only", False, "Only build the tfds dataset the config names, then exit."
)
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
_MEMORY_BUDGET = flags.DEFINE_string(
    "memory_budget", None, "e.g. 4GiB; overrides config.memory_budget ('' = no budget)."
)
_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
parallel.define_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    checkpoint.drop_abandoned_read_errors()
    if not _PREPARE_ONLY.value and not _WORKDIR.value:
        raise app.UsageError("--workdir is required")
    if not flags.FLAGS["verbosity"].present:
        # Orbax and tfds log every file operation at INFO; keep the console to progress + eval.
        logging.set_verbosity(logging.WARNING)
    try:
        config = _CONFIG.value
        if config is not None:
            config.keys()  # a file that failed to load raises its error on first use
    except Exception as e:  # noqa: BLE001  (any error of a user's config file)
        print(f"experiments.train: error: {_config_error(e)}", file=sys.stderr)
        raise SystemExit(2) from None
    if config is None:
        raise app.UsageError("--config is required")
    try:
        loop.validate_config(config)
    except loop.ConfigError as e:
        raise SystemExit(f"experiments.train: error: {e}") from None
    try:  # before anything touches a device
        parallel.initialize_from_flags()
        parallel.per_process_batch(config.batch_size, parallel.make_mesh())
    except parallel.ParallelConfigError as e:
        raise SystemExit(f"experiments.train: error: {e}") from None
    if _MEMORY_BUDGET.value is not None:
        with config.unlocked():
            config.memory_budget = _MEMORY_BUDGET.value
    if not _PREPARE_ONLY.value:
        try:  # compile-only: fails before the real step is compiled
            config, _ = memory.apply_training_budget(config)
        except memory.MemoryBudgetError as e:
            raise SystemExit(f"experiments.train: error: {e}") from None
    task = tasks.make_task(config)
    if _PREPARE_ONLY.value:
        task.builder  # noqa: B018  (building is a side effect of first access)
        return
    with interrupts.handled(restore_after_signal=False):
        try:
            loop.train_and_evaluate(task, config, _WORKDIR.value, progress=_PROGRESS.value)
        except interrupts.Interrupted as e:
            print(
                f"experiments.train: interrupted ({signal.Signals(e.signum).name}); the last "
                "step is checkpointed, rerun the command to resume",
                file=sys.stderr,
            )
            raise SystemExit(e.exit_status) from None
        except (checkpoint.CheckpointMismatchError, tasks.DataError) as e:
            raise SystemExit(f"experiments.train: error: {e}") from None
        except OSError as e:  # CheckpointWriteError, or a workdir that cannot be created
            text = str(e) if isinstance(e, checkpoint.CheckpointWriteError) else (
                f"{_WORKDIR.value}: {e.strerror or e}"
            )
            raise SystemExit(f"experiments.train: error: {text}") from None


def _config_error(e: BaseException) -> str:
    """One line for an error of a config file or of a --config override (ml_collections raises
    them as they are: a KeyError of the missing key, absl a message with a traceback in it)."""
    if isinstance(e, AttributeError) and e.args and isinstance(e.args[0], KeyError):
        e = e.args[0]  # a misspelt key, with ml_collections' "Did you mean" hint
    if isinstance(e, KeyError) and e.args:
        key = "; ".join(ln for ln in str(e.args[0]).splitlines() if ln)
        return f"--config: the config has no key {key}"
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"--config: {lines[-1] if lines else type(e).__name__}"


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with an error of the config file or of an override as one line and
    exit status 2."""
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # noqa: BLE001  (any error of a user's config file or override)
        print(f"experiments.train: error: {_config_error(e)}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    try:
        app.run(main, flags_parser=_parse_flags)
    except SystemExit as e:
        if not isinstance(e.code, str):
            raise
        # An error line: leave without the interpreter's teardown, where the reads a failed
        # restore abandoned are collected and warn "coroutine ... was never awaited".
        print(e.code, file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)
