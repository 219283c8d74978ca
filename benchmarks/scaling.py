"""Step time of data-parallel training: 1 vs 4 virtual CPU devices of one process, and 1 vs 2
processes (jax.distributed on 127.0.0.1, gloo, one device each), on the same global batch.

    python -m benchmarks.scaling                          # CF-Net 'cpu' x2, batch 8, LR 32
    python -m benchmarks.scaling --config=drtmo:up,tiny --batch_size=8 --patch=32

It prints the median step time of each layout and the ratios (each measured in this one run).
Every layout runs the training loop's own jitted step (`training.loop.jit_steps`) on random
batches. On a CPU the virtual devices and the processes share the same cores, so the ratios
measure the cost of the sharded step (collectives, partitioning), not a speed-up.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import jax
from absl import app, flags

from benchmarks.measure import random_batch
from hdr_jax import memory
from hdr_jax.training import loop, parallel, tasks

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("config", "cfnet:x2,cpu", "experiments/configs module[:variant].")
    flags.DEFINE_integer("batch_size", 8, "Global batch.")
    flags.DEFINE_integer("patch", 32, "CF-Net LR patch / DrTMO crop.")
    flags.DEFINE_integer("steps", 5, "Timed steps (after 2 warm-up steps).")
    flags.DEFINE_enum("role", "main", ["main", "worker"], "main starts the workers.")
    flags.DEFINE_integer("devices", 0, "worker: devices of the mesh (0: all).")
    parallel.define_flags()


def _config():
    name, _, variant = FLAGS.config.partition(":")
    config = importlib.import_module(f"experiments.configs.{name}").get_config(variant)
    config.batch_size = FLAGS.batch_size
    memory.set_patch(config, FLAGS.patch)
    return config


def time_steps(config, mesh, steps: int) -> float:
    """Median seconds of the loop's train step on `mesh` (2 warm-up steps first)."""
    task = tasks.make_task(config, builder=object())
    state, (train_step, _), sharding = loop.jit_steps(task, config, mesh)
    _, (_, shapes) = memory.training_step_fn(config, config.batch_size, FLAGS.patch)
    rows = parallel.per_process_batch(config.batch_size, mesh)
    start = jax.process_index() * rows
    local = {k: v[start : start + rows] for k, v in random_batch(shapes).items()}
    batch = parallel.global_batch(local, sharding)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        state, metrics = train_step(state, batch)
        jax.block_until_ready(metrics)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def worker() -> None:
    parallel.initialize_from_flags()
    config = _config()
    devices = jax.devices()[: FLAGS.devices] if FLAGS.devices else None
    seconds = time_steps(config, parallel.make_mesh(devices), FLAGS.steps)
    if parallel.is_primary():
        row = {"devices": len(devices or jax.devices()), "processes": jax.process_count()}
        print(json.dumps({**row, "seconds": seconds}), flush=True)


def _spawn(extra: list[str], env: dict) -> subprocess.Popen:
    common = [f"--config={FLAGS.config}", f"--batch_size={FLAGS.batch_size}",
              f"--patch={FLAGS.patch}", f"--steps={FLAGS.steps}", "--role=worker"]
    return subprocess.Popen([sys.executable, "-m", "benchmarks.scaling", *common, *extra],
                            env=env, stdout=subprocess.PIPE, text=True)


def _result(procs: list[subprocess.Popen], timeout: float = 1800) -> dict:
    try:
        out = procs[0].communicate(timeout=timeout)[0]
        for p in procs[1:]:
            p.wait(timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    if any(p.returncode for p in procs):
        codes = [p.returncode for p in procs]
        raise SystemExit(f"benchmarks.scaling: error: a worker failed (exit codes {codes})")
    return json.loads(out.strip().splitlines()[-1])


def main(argv) -> None:
    del argv
    if FLAGS.role == "worker":
        return worker()
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    xla_flags = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    four = {**env, "XLA_FLAGS": xla_flags}
    rows = [_result([_spawn(["--devices=1"], four)]), _result([_spawn(["--devices=4"], four)])]
    rows.append(_result([_spawn([], env)]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist = [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
    rows.append(_result([_spawn([*dist, f"--process_id={i}"], env) for i in range(2)]))
    print(f"{FLAGS.config}, global batch {FLAGS.batch_size}, patch {FLAGS.patch}, "
          f"median of {FLAGS.steps} steps, {os.cpu_count()} CPU cores")
    for r in rows:
        layout = f"{r['processes']} process(es), {r['devices']} device(s)"
        print(f"  {layout}: {r['seconds']:.3f} s/step")
    print(f"  4 virtual devices / 1 device: {rows[1]['seconds'] / rows[0]['seconds']:.2f}")
    print(f"  2 processes / 1 process:      {rows[3]['seconds'] / rows[2]['seconds']:.2f}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
