"""Trains either stage from an ml_collections config.

    python -m experiments.train --config experiments/configs/drtmo.py:up --workdir DIR
    python -m experiments.train --config experiments/configs/cfnet.py:x2 --workdir DIR

Rerunning the same command resumes from the latest checkpoint in DIR. SIGTERM or SIGINT ends
the run after the step in flight with a checkpoint of it (exit 143 / 130, one line); a checkpoint
that cannot be written ends it with one line and exit 1, the earlier checkpoints intact, and so
does a workdir (or checkpoint) that holds a different model than the config describes.

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
    if not _PREPARE_ONLY.value and not _WORKDIR.value:
        raise app.UsageError("--workdir is required")
    if not flags.FLAGS["verbosity"].present:
        # Orbax and tfds log every file operation at INFO; keep the console to progress + eval.
        logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value
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
        except checkpoint.CheckpointMismatchError as e:
            raise SystemExit(f"experiments.train: error: {e}") from None
        except OSError as e:  # CheckpointWriteError, or a workdir that cannot be created
            text = str(e) if isinstance(e, checkpoint.CheckpointWriteError) else (
                f"{_WORKDIR.value}: {e.strerror or e}"
            )
            raise SystemExit(f"experiments.train: error: {text}") from None


if __name__ == "__main__":
    app.run(main)
