"""Trains either stage from an ml_collections config.

    python -m experiments.train --config experiments/configs/drtmo.py:up --workdir DIR
    python -m experiments.train --config experiments/configs/cfnet.py:x2 --workdir DIR

Rerunning the same command resumes from the latest checkpoint in DIR.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from hdr_jax.training import tasks
from hdr_jax.training import loop

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, previews.")
_PREPARE_ONLY = flags.DEFINE_bool(
    "prepare_only", False, "Only build the tfds dataset the config names, then exit."
)
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    if not _PREPARE_ONLY.value and not _WORKDIR.value:
        raise app.UsageError("--workdir is required")
    if not flags.FLAGS["verbosity"].present:
        # Orbax and tfds log every file operation at INFO; keep the console to progress + eval.
        logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value
    task = tasks.make_task(config)
    if _PREPARE_ONLY.value:
        task.builder  # noqa: B018  (building is a side effect of first access)
        return
    loop.train_and_evaluate(
        task, config, _WORKDIR.value, progress=_PROGRESS.value
    )


if __name__ == "__main__":
    app.run(main)
