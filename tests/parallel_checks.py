"""Multi-device checks for tests/test_parallel.py, run in a subprocess with 4 virtual CPU devices
(the test suite's own process keeps one device).

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/parallel_checks.py \
        HDR_DIR TFDS_DIR WORKDIR OUT.json

Writes OUT.json: per check, the largest differences between the runs it compares and what the
arrays' shardings were. The tests hold the tolerances; this script only measures.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np

from experiments.configs import cfnet as cfnet_config
from experiments.configs import drtmo as drtmo_config
from experiments.configs import response as response_config
from hdr_jax import memory
from hdr_jax.training import checkpoint, loop, parallel, tasks

GLOBAL_BATCH = 4


def tiny_configs(hdr_dir: str, tfds_dir: str) -> dict[str, ml_collections.ConfigDict]:
    configs = {
        "cfnet": cfnet_config.get_config("x2,tiny"),
        "drtmo": drtmo_config.get_config("up,tiny"),
        "response": response_config.get_config("tiny"),
    }
    for c in configs.values():
        c.data.manual_dir, c.data.data_dir = hdr_dir, tfds_dir
        c.batch_size = GLOBAL_BATCH
        c.eval_every = 0
        c.checkpoint_every = 1
    return configs


def host(tree) -> list[np.ndarray]:
    return [np.asarray(x, np.float64) for x in jax.tree.leaves(parallel.host_copy(tree))]


def max_diff(a, b) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(host(a), host(b)))


def sharded_fraction(tree) -> float:
    """Share of the tree's elements in arrays split over the devices (not fully replicated)."""
    leaves = jax.tree.leaves(tree)
    total = sum(x.size for x in leaves)
    return sum(x.size for x in leaves if not x.sharding.is_fully_replicated) / max(total, 1)


def one_step(task, config, devices: int, mode: str, batch: dict) -> dict:
    config = config.copy_and_resolve_references()
    config.state_sharding = mode
    mesh = parallel.make_mesh(jax.devices()[:devices])
    state, (train_step, _), sharding = loop.jit_steps(task, config, mesh)
    initial = parallel.host_copy(state.params)  # (the step donates the state)
    new_state, metrics = train_step(state, parallel.global_batch(batch, sharding))
    return {"state": new_state, "loss": float(metrics["loss"]), "initial": initial}


# CF-Net compiles slowest: its 4-device step runs with FSDP only (the state split as far as it
# goes); the stage-1 tasks with every state sharding.
STEP_MODES = {
    "cfnet": ("fsdp",),
    "drtmo": parallel.STATE_SHARDINGS,
    "response": parallel.STATE_SHARDINGS,
}


def step_checks(configs) -> dict:
    """One step of each task on 1 device and on 4, same global batch (the task's first)."""
    out = {}
    for name, config in configs.items():
        task = tasks.make_task(config)
        batch = loop.numeric(next(task.train_iterator()))
        ref = one_step(task, config, 1, "replicated", batch)
        for mode in STEP_MODES[name]:
            run = one_step(task, config, 4, mode, batch)
            out[f"{name}/{mode}"] = {
                "loss_1": ref["loss"],
                "loss_4": run["loss"],
                "params_diff": max_diff(ref["state"].params, run["state"].params),
                "opt_state_diff": max_diff(ref["state"].opt_state, run["state"].opt_state),
                "batch_stats_diff": max_diff(ref["state"].batch_stats, run["state"].batch_stats)
                if jax.tree.leaves(ref["state"].batch_stats)
                else 0.0,
                "changed": max_diff(ref["state"].params, ref["initial"]),
                "params_sharded": sharded_fraction(run["state"].params),
                "opt_state_sharded": sharded_fraction(run["state"].opt_state),
                "devices": len(jax.tree.leaves(run["state"].params)[0].sharding.device_set),
            }
    return out


def train(config, workdir: Path, steps: int, devices: int, mode: str):
    config = config.copy_and_resolve_references()
    config.num_train_steps, config.state_sharding = steps, mode
    config.eval_every = 4  # the evaluation of the FSDP state at step 4 runs on the mesh too
    mesh = parallel.make_mesh(jax.devices()[:devices])
    return loop.train_and_evaluate(
        tasks.make_task(config), config, str(workdir), progress=False, mesh=mesh
    )


def plain(state):
    """The state with its PRNG key as raw key data (comparable like the other arrays)."""
    return state.replace(rng=jax.random.key_data(state.rng))


def reshard_checks(configs, root: Path) -> dict:
    """The response classifier (batch norm; a smooth loss, so float reordering stays small)
    saved at step 2 on 4 devices with FSDP: restored on 1 device (replicated) and on 2 (FSDP),
    compared with the saved state, then trained on to step 4 and compared with 4 uninterrupted
    steps on 4 devices."""
    config = configs["response"]
    reference = train(config, root / "reference", 4, 4, "fsdp")
    saved = train(config, root / "on4", 2, 4, "fsdp")
    lines = (root / "reference" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    out = {
        "moved": max_diff(reference.params, saved.params),
        "reference_eval": [r for r in records if r["split"] == "eval"],
    }
    for devices, mode in ((1, "replicated"), (2, "fsdp")):
        cfg = config.copy_and_resolve_references()
        cfg.state_sharding = mode
        mesh = parallel.make_mesh(jax.devices()[:devices])
        template, _, _ = loop.jit_steps(tasks.make_task(cfg), cfg, mesh)
        manager = checkpoint.make_manager(str(root / "on4" / "checkpoints"))
        try:
            restored = checkpoint.restore(manager, template)
        finally:
            manager.close()
        workdir = root / f"on4_then_{devices}"
        shutil.copytree(root / "on4", workdir)
        state = train(config, workdir, 4, devices, mode)
        out[f"4->{devices}"] = {
            "restored_step": int(restored.step),
            "restore_diff": max_diff(plain(restored), plain(saved)),
            "restored_devices": len(jax.tree.leaves(restored.params)[0].sharding.device_set),
            "restored_params_sharded": sharded_fraction(restored.params),
            "step": int(state.step),
            "params_diff": max_diff(state.params, reference.params),
            "state_diff": max_diff(plain(state), plain(reference)),
            "devices": len(jax.tree.leaves(state.params)[0].sharding.device_set),
        }
    # DrTMO's evaluation and previews from an FSDP state split over 4 devices.
    train(configs["drtmo"], root / "drtmo_previews", 1, 4, "fsdp")
    out["drtmo_previews"] = sorted(os.listdir(root / "drtmo_previews" / "previews"))
    return out


def memory_checks(configs) -> dict:
    """`--memory_budget` analyses the per-device batch: DrTMO at global batch 4 on 4 devices
    compiles the step of batch 1 (the analyses are cached per batch size)."""
    config = configs["drtmo"].copy_and_resolve_references()
    config.memory_budget = "64GiB"
    _, choice = memory.apply_training_budget(config, log=None)
    crop = config.data.crop_size
    return {
        "chosen_peak": choice["peak_bytes"],
        "peak_batch_1": memory.training_analysis(config, 1, crop)[0].peak,
        "peak_batch_4": memory.training_analysis(config, GLOBAL_BATCH, crop)[0].peak,
    }


def main(hdr_dir: str, tfds_dir: str, workdir: str, out_path: str) -> None:
    assert jax.device_count() == 4, jax.devices()
    configs = tiny_configs(hdr_dir, tfds_dir)
    t0 = time.perf_counter()
    results = {"steps": step_checks(configs)}
    t1 = time.perf_counter()
    results["reshard"] = reshard_checks(configs, Path(workdir))
    results["memory"] = memory_checks(configs)
    results["seconds"] = {"steps": t1 - t0, "reshard": time.perf_counter() - t1}
    Path(out_path).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
