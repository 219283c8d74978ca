"""GPU benchmark: the 4-GiB training claims and the pipeline's time per megapixel, measured.

    bash benchmarks/gpu.sh                        # on a GPU machine (sets the 4-GiB cap)
    bash benchmarks/gpu.sh --platform cpu --quick # the dry run the tests do (tiny shapes)

For each training target (CF-Net x4, T = 3, LR 128, batch 4; DrTMO at paper width, 512^2,
batch 1): the memory chooser (`memory.choose_training_settings`) picks the cheapest setting
whose compiled peak fits the budget on *this* backend; the step is compiled with the state
donated (as `training.loop` jits it), XLA's memory analysis is recorded, and the step runs
`--steps` times on a fixed random batch (a speed and memory measurement, not a quality run)
under the process's memory cap, with the device's own peak (`Device.memory_stats()`, where the
backend reports one). Then `pipeline.reconstruct` with the bundled weights is timed per photo
size. Writes `<out>.json` and `<out>.md`.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from typing import Any

import jax
import numpy as np
from absl import app, flags

from benchmarks.measure import random_batch
from benchmarks.pipeline_timing import time_pipeline
from experiments.configs import cfnet as cfnet_configs
from experiments.configs import drtmo as drtmo_configs
from hdr_jax import memory

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_enum("platform", "gpu", ["gpu", "cpu"], "Backend that must run the benchmark.")
    flags.DEFINE_bool("quick", False, "Tiny configs and shapes (the CPU dry run).")
    flags.DEFINE_string("budget", "4GiB", "Memory budget the chooser fits each training step to.")
    flags.DEFINE_integer("steps", 50, "Training steps timed per target.")
    flags.DEFINE_list("pipeline_mp", ["0.25", "1", "4"], "Photo sizes (megapixels) to time.")
    flags.DEFINE_string("out", "docs/benchmarks_gpu", "Output prefix (.json and .md).")


def targets(quick: bool) -> list[dict]:
    """(name, config, batch, patch) of the training targets."""
    if quick:
        return [
            dict(name="cfnet_x4", config=cfnet_configs.get_config("x4,tiny"), batch=2, patch=8),
            dict(name="drtmo_up", config=drtmo_configs.get_config("up,tiny"), batch=1, patch=32),
        ]
    return [
        dict(name="cfnet_x4", config=cfnet_configs.get_config("x4"), batch=4, patch=128),
        dict(name="drtmo_up", config=drtmo_configs.get_config("up,paper"), batch=1, patch=512),
    ]


def device_peak_bytes() -> int | None:
    stats = jax.local_devices()[0].memory_stats()
    return None if not stats else int(stats.get("peak_bytes_in_use", 0)) or None


def device_limit_bytes() -> int | None:
    stats = jax.local_devices()[0].memory_stats()
    return None if not stats else int(stats.get("bytes_limit", 0)) or None


def train_target(name: str, config: Any, batch: int, patch: int, budget: str, steps: int) -> dict:
    row: dict[str, Any] = dict(name=name, batch=batch, patch=patch, budget=budget)
    try:
        choice = memory.choose_training_settings(config, batch, patch, budget)
    except memory.MemoryBudgetError as e:
        row.update(status="does not fit", error=str(e))
        return row
    row.update(setting=choice["name"], chooser_peak_bytes=choice["peak_bytes"],
               tried=choice["tried"])
    task, shapes = memory.training_setup(config, batch, patch, choice)
    try:
        state = jax.jit(task.init_state)(jax.random.key(0))
        data = jax.device_put(random_batch(shapes))
        t0 = time.perf_counter()
        compiled = jax.jit(task.train_step, donate_argnums=0).lower(state, data).compile()
        row["compile_s"] = time.perf_counter() - t0
        row["xla_memory"] = memory.memory_stats(compiled).as_dict()
        state, metrics = compiled(state, data)  # warm-up
        jax.block_until_ready(state)
        losses = []
        t0 = time.perf_counter()
        for _ in range(steps):
            state, metrics = compiled(state, data)
            losses.append(metrics["loss"])
        jax.block_until_ready(state)
        elapsed = time.perf_counter() - t0
    except Exception as e:  # an out-of-memory under the cap is a result, not a crash
        row.update(status="failed", error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
        return row
    losses = [float(v) for v in losses]
    row.update(
        status="ok" if np.all(np.isfinite(losses)) else "non-finite loss",
        steps=steps,
        steps_per_s=steps / elapsed,
        step_s=elapsed / steps,
        loss_first=losses[0],
        loss_last=losses[-1],
        device_peak_bytes=device_peak_bytes(),
    )
    return row


def markdown(report: dict) -> str:
    gib = 2.0**30

    def g(v):
        return "n/a" if v is None else f"{v / gib:.2f}"

    lines = [
        "# GPU benchmark",
        "",
        f"Run {report['date']} on {report['device']} ({report['backend']}), jax {report['jax']}; "
        f"memory cap {g(report['memory_limit_bytes'])} GiB "
        f"(XLA_PYTHON_CLIENT_MEM_FRACTION={report['mem_fraction']}). Command: `{report['command']}`.",
        "",
        "| training target | batch x patch | setting | XLA peak GiB | device peak GiB | steps/s | status |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["training"]:
        peak = r.get("xla_memory", {}).get("peak")
        sps = r.get("steps_per_s")
        lines.append(
            f"| {r['name']} | {r['batch']} x {r['patch']} | {r.get('setting', '-')} | {g(peak)} | "
            f"{g(r.get('device_peak_bytes'))} | {'-' if sps is None else f'{sps:.2f}'} | "
            f"{r['status']}{': ' + r['error'] if 'error' in r else ''} |"
        )
    lines += ["", "| photo | MP | first call s | s per MP | warm s |", "| --- | --- | --- | --- | --- |"]
    for p in report["pipeline"]:
        warm = p["warm"][0]["total_s"] if p["warm"] else None
        lines.append(
            f"| {p['width']}x{p['height']} | {p['megapixels']:.2f} | {p['first']['total_s']:.2f} | "
            f"{p['first']['total_s'] / p['megapixels']:.2f} | {'-' if warm is None else f'{warm:.2f}'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    del argv
    backend = jax.default_backend()
    if (FLAGS.platform == "gpu") != (backend == "gpu"):
        raise app.UsageError(f"--platform {FLAGS.platform} but JAX runs on {backend}")
    report = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        backend=backend,
        device=str(jax.local_devices()[0].device_kind),
        host=platform.node(),
        jax=jax.__version__,
        mem_fraction=os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"),
        memory_limit_bytes=device_limit_bytes(),
        command="bash benchmarks/gpu.sh" + (" --platform cpu --quick" if FLAGS.quick else ""),
        training=[],
        pipeline=[],
    )
    for t in targets(FLAGS.quick):
        row = train_target(t["name"], t["config"], t["batch"], t["patch"], FLAGS.budget, FLAGS.steps)
        print(json.dumps(row, default=str), flush=True)
        report["training"].append(row)
    for mp in FLAGS.pipeline_mp:
        row = time_pipeline(float(mp), reps=1)
        print(json.dumps(row, default=str), flush=True)
        report["pipeline"].append(row)
    os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
    with open(FLAGS.out + ".json", "w") as f:
        json.dump(report, f, indent=1, default=str)
    with open(FLAGS.out + ".md", "w") as f:
        f.write(markdown(report))
    print(f"wrote {FLAGS.out}.json and {FLAGS.out}.md")


if __name__ == "__main__":
    define_flags()
    app.run(main)
