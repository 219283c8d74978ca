"""Exports the latest checkpoints of trained networks into a weights directory (+ manifest).

  python -m experiments.export_weights --workdir workdirs/default --out hdr_jax/weights

`--workdir` holds one sub-workdir per network, named as the bundle expects: drtmo_up, drtmo_down,
response, highlight (optional: the default bundle has none), cfnet_x2, cfnet_x4 (missing ones are
skipped with a warning). Parameters are stored in float16 by
default; the manifest records the model config, training steps, the last evaluation metrics,
the training data and the file's SHA-256.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
from absl import app, flags, logging

from hdr_jax import bundle
from hdr_jax.training import checkpoint, loop, tasks

_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of per-network workdirs.", required=True)
_OUT = flags.DEFINE_string("out", "hdr_jax/weights", "Weights directory to write.")
_DTYPE = flags.DEFINE_enum("dtype", "float16", ["float16", "float32"], "Storage precision.")
_COMPRESS = flags.DEFINE_bool("compress", True, "zlib-compress the weight files (~8% smaller).")


def _last_eval(workdir: str) -> dict:
    evals = [r for r in loop.read_metrics(workdir) if r.get("split") == "eval"]
    return evals[-1] if evals else {}


def export_one(workdir: str, name: str, out: str, dtype: str, compress: bool = True) -> None:
    with open(os.path.join(workdir, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
    task = tasks.make_task(config, builder=object())  # no data needed to rebuild the model
    # The response classifier and its curves are a few kB: kept in float32, whatever --dtype.
    dtype = getattr(task, "export_dtype", None) or dtype
    manager = checkpoint.make_manager(os.path.join(workdir, "checkpoints"))
    if manager.latest_step() is None:
        raise app.UsageError(f"{workdir}: no checkpoint")
    template = jax.eval_shape(task.init_state, jax.random.key(0))
    state = checkpoint.restore(manager, template)
    manager.close()
    if hasattr(task, "variables_to_export"):
        variables = task.variables_to_export(state)
    else:
        variables = {"params": state.params}
        if state.batch_stats:
            variables["batch_stats"] = state.batch_stats
    model_config = (
        task.model_config_to_export()
        if hasattr(task, "model_config_to_export")
        else config.model.to_dict()
    )
    info = {
        "steps": int(state.step),
        "eval": _last_eval(workdir),
        "training_data": {
            "builder": config.data.builder,
            "builder_config": config.data.builder_config,
            "manual_dir": os.path.basename(os.path.normpath(config.data.manual_dir)),
        },
        "train_config": json.loads(config.to_json_best_effort()),
    }
    path = bundle.save_network(
        out, name, variables, model_config, dtype=dtype, info=info, compress=compress
    )
    print(f"{name}: step {info['steps']} -> {path} ({os.path.getsize(path) / 1e6:.1f} MB)")


def main(argv):
    del argv
    for name in bundle.NETWORKS:
        wd = os.path.join(_WORKDIR.value, name)
        if not os.path.isdir(os.path.join(wd, "checkpoints")):
            logging.warning("%s: no workdir at %s, skipped", name, wd)
            continue
        export_one(wd, name, _OUT.value, _DTYPE.value, _COMPRESS.value)


if __name__ == "__main__":
    app.run(main)
