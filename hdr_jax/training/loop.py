"""The generic train-and-evaluate loop shared by both stages (cf. the Flax imagenet example).

A *task* supplies the model-specific pieces as plain functions:

    init_state(rng) -> TrainState
    train_step(state, batch) -> (state, metrics)       # pure; jitted here with the state donated
    eval_step(state, batch) -> dict of per-example metric arrays (shape (B,))   # pure; jitted here
    train_iterator() -> grain iterator with get_state/set_state
    eval_batches() -> iterable of batches (one finite pass)
    previews(state, batch) -> dict[name, HxWx3 float image]   (optional)

Determinism: the step RNG is derived from (state.rng, state.step) inside the task's train step, and
the data iterator is checkpointed with the state, so kill + rerun reproduces an uninterrupted run.

Devices and processes (:mod:`hdr_jax.training.parallel`): the steps are jitted over a mesh of
every device with explicit shardings (the batch split over ``data``, the state replicated or
sharded per ``config.state_sharding``); every process runs this loop, loads its own rows of each
batch and takes part in each checkpoint; only process 0 writes metrics and previews.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np
import tqdm
from absl import logging

from hdr_jax import interrupts
from hdr_jax import io as hdr_io
from hdr_jax.eval import stats
from hdr_jax.training import checkpoint, parallel


class ConfigError(ValueError):
    """A training config that cannot describe a run (one line)."""


def validate_config(config: ml_collections.ConfigDict) -> None:
    """:class:`ConfigError` for a schedule or optimiser setting no run can have (a step count,
    batch size or cadence below 1, a learning rate that is not a finite number), before any
    data is built or any file written."""
    def whole(name: str, value: Any, least: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ConfigError(f"config.{name} must be a whole number >= {least}, got {value!r}")

    for name, least in (("num_train_steps", 1), ("batch_size", 1), ("log_every", 1),
                        ("checkpoint_every", 1), ("eval_every", 0)):
        whole(name, config.get(name), least)
    if config.get("microbatches") is not None:
        whole("microbatches", config.microbatches, 1)
    lr = config.get("optimizer", {}).get("learning_rate")
    if lr is not None and not (isinstance(lr, (int, float)) and np.isfinite(lr)):
        raise ConfigError(f"config.optimizer.learning_rate must be a finite number, got {lr!r}")


class Task(Protocol):
    def init_state(self, rng: jax.Array) -> Any: ...
    def train_step(self, state: Any, batch: dict) -> tuple[Any, dict]: ...
    def eval_step(self, state: Any, batch: dict) -> dict: ...
    def train_iterator(self) -> Any: ...
    def eval_batches(self) -> Iterable[dict]: ...


class MetricWriter:
    """TensorBoard event files (tensorboardX) plus an append-only metrics.jsonl for scripts.

    Inactive (every method a no-op) on all processes but the first.
    """

    def __init__(self, workdir: str, active: bool = True):
        from tensorboardX import SummaryWriter  # imported lazily: only training needs it

        self.active = active
        if not active:
            return
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

    def scalars(self, step: int, prefix: str, values: dict[str, float]) -> None:
        if not self.active:
            return
        for k, v in values.items():
            self._tb.add_scalar(f"{prefix}/{k}", v, step)
        self._jsonl.write(json.dumps({"step": step, "split": prefix, **values}) + "\n")
        self._jsonl.flush()

    def images(self, step: int, images: dict[str, np.ndarray]) -> None:
        if not self.active:
            return
        for k, v in images.items():
            self._tb.add_image(k, np.clip(v, 0, 1), step, dataformats="HWC")

    def close(self) -> None:
        if not self.active:
            return
        self._tb.close()
        self._jsonl.close()


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """The records of a run's metrics.jsonl (:class:`MetricWriter`), oldest first; a torn last
    line of a killed writer is skipped."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def numeric(batch: dict) -> dict:
    """The array entries of a batch (drops names/ids, which jit cannot take)."""
    return {k: v for k, v in batch.items() if np.asarray(v).dtype.kind in "biuf"}


def evaluate_per_example(task: Task, state: Any, eval_step: Callable) -> stats.Collector:
    """The per-example metrics of one pass of the evaluation data, in example order."""
    metrics = stats.Collector()
    for batch in task.eval_batches():
        metrics.update(jax.device_get(eval_step(state, numeric(batch))))
    return metrics


def evaluate(task: Task, state: Any, eval_step: Callable) -> dict[str, float]:
    """Mean of per-example metrics over one pass of the evaluation data.

    NaN entries mark undefined values (e.g. a bracket slot past the end) and are not counted
    (:class:`hdr_jax.eval.stats.Collector`).
    """
    return evaluate_per_example(task, state, eval_step).means()


def train_and_evaluate(
    task: Task,
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    previews: bool = True,
    on_eval: Callable[[int, stats.Collector], None] | None = None,
) -> Any:
    """Trains `task` for config.num_train_steps, resuming from the latest checkpoint in workdir.

    On `mesh` (default: every device of every process, `parallel.make_mesh`); a checkpoint saved
    on any number of devices resumes on any other. ``previews``: after each evaluation, write
    the task's preview images (when it has a ``previews`` method); off, no forward pass is
    compiled for them. ``on_eval(step, metrics)`` receives each evaluation's per-example
    metrics (e.g. to keep the final one without evaluating and compiling the step again).
    """
    validate_config(config)
    mesh = parallel.make_mesh() if mesh is None else mesh
    parallel.per_process_batch(config.batch_size, mesh)  # fails before anything is written
    primary = parallel.is_primary()
    os.makedirs(workdir, exist_ok=True)
    checkpoint.write_config(workdir, config, write=primary)
    checkpoints = os.path.join(workdir, "checkpoints")
    # A checkpoint folder that is a file or cannot be written fails here, not at the first save
    # after minutes of training (where the checkpointer waits on it).
    if os.path.lexists(checkpoints) and not os.path.isdir(checkpoints):
        raise NotADirectoryError(errno.ENOTDIR, "its checkpoints is a file, not a folder")
    os.makedirs(checkpoints, exist_ok=True)
    with tempfile.TemporaryFile(dir=checkpoints):
        pass
    manager = checkpoint.make_manager(checkpoints, max_to_keep=config.get("max_checkpoints", 3))
    state, (train_step, eval_step), batch_sharding = jit_steps(task, config, mesh)
    train_iter = task.train_iterator()
    if manager.latest_step() is not None:
        try:
            state = checkpoint.restore(manager, state, train_iter)
        except BaseException:
            manager.close()  # its threads, left running, print noise at exit
            raise
        logging.info("Resumed from step %d", int(state.step))
    start = int(jax.device_get(state.step))

    total = config.num_train_steps
    if start >= total and primary:
        print(f"{workdir}: already at step {start} (config.num_train_steps {total}): nothing "
              "to train", file=sys.stderr, flush=True)
    # A run killed after a checkpoint but before that step's evaluation resumes after it: the
    # evaluation is made up first, so the records are those of an uninterrupted run.
    missed = bool(start and config.eval_every and (start % config.eval_every == 0
                                                   or start == total))
    if missed:
        missed = not any(r.get("split") == "eval" and r.get("step") == start
                         for r in read_metrics(workdir))
    writer = MetricWriter(workdir, active=primary)
    progress = progress and primary
    bar = tqdm.tqdm(total=total, initial=start, disable=not progress, desc="train", unit="step")
    acc: dict[str, list] = {}
    t0 = time.perf_counter()
    saved = start
    previous = None

    def evaluate_and_record(step: int) -> None:
        collected = evaluate_per_example(task, state, eval_step)
        if on_eval is not None:
            on_eval(step, collected)
        results = collected.means()
        writer.scalars(step, "eval", results)
        text = ", ".join(f"{k}={v:.4f}" for k, v in sorted(results.items()))
        if primary:
            _say(progress, bar, f"step {step} eval: {text}")
        if previews and hasattr(task, "previews"):
            _write_previews(workdir, step, task, state, writer)

    try:
        if missed:
            evaluate_and_record(start)
        # SIGINT/SIGTERM, where the caller routes them (interrupts.handled), end the loop after
        # the step in flight, and that step is checkpointed.
        for step in _steps(start, total):
            batch = parallel.global_batch(numeric(next(train_iter)), batch_sharding)
            state, metrics = train_step(state, batch)
            # Dispatch is asynchronous: unbounded, the host would queue every step up to the
            # next log line, and a signal would wait for all of them to compute. One step is
            # queued behind the one computing (its batch loads meanwhile), no more.
            if previous is not None:
                jax.block_until_ready(previous)
            previous = metrics
            for k, v in metrics.items():
                acc.setdefault(k, []).append(v)
            bar.update(1)
            if step % config.log_every == 0 or step == total:
                summary = {k: float(np.mean(jax.device_get(v))) for k, v in acc.items()}
                summary["steps_per_sec"] = len(next(iter(acc.values()))) / (
                    time.perf_counter() - t0
                )
                writer.scalars(step, "train", summary)
                bar.set_postfix({k: f"{v:.4g}" for k, v in summary.items() if k != "steps_per_sec"})
                if not progress and primary:
                    _say(
                        progress,
                        bar,
                        f"step {step} train: "
                        + ", ".join(f"{k}={v:.4g}" for k, v in summary.items()),
                    )
                acc, t0 = {}, time.perf_counter()
            if step % config.checkpoint_every == 0 or step == total:
                checkpoint.save(manager, state, train_iter)
                saved = step
            if config.eval_every and (step % config.eval_every == 0 or step == total):
                evaluate_and_record(step)
                t0 = time.perf_counter()  # evaluation time is not training throughput
        if interrupts.pending() and saved != int(jax.device_get(state.step)):
            checkpoint.save(manager, state, train_iter)
    finally:
        # Let an in-flight async save finish (or fail) before the interpreter tears down.
        try:
            checkpoint.finish(manager)
        finally:
            bar.close()
            writer.close()
    if interrupts.pending():
        raise interrupts.Interrupted(interrupts.pending())
    return state


def _steps(start: int, total: int):
    """start + 1 .. total, ending early (after the step in flight) once a signal is pending."""
    with interrupts.deferred(raise_at_end=False):
        for step in range(start + 1, total + 1):
            yield step
            if interrupts.pending():
                return


#: The initial state is computed once, so its program is compiled without XLA's backend
#: optimisations: on a CPU their LLVM passes cost far more time than they save (a CF-Net init:
#: threefry for every parameter plus the traced forward pass; see docs/benchmarks_notes.md).
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def jit_steps(
    task: Task, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
) -> tuple[Any, tuple[Callable, Callable], jax.sharding.NamedSharding]:
    """The initial state, placed on `mesh`, and the train and eval steps jitted for it.

    train_step(state, batch) takes the batch split over ``data`` and donates the state;
    eval_step(state, batch) takes a replicated batch (evaluation batches are small and may not
    split over the devices). Metrics come back replicated, readable on every process.
    """
    # The key is made inside jit so every process computes its shards of the same state.
    def init():
        key = jax.random.key(config.seed)
        impl = config.get("init_rng_impl", "")
        if not impl:
            return task.init_state(key)
        # Another generator for the initial draw only (e.g. 'unsafe_rbg', XLA's own RNG: other
        # numbers than threefry, about half the compile time of a CF-Net init); the steps
        # keep the threefry key.
        return task.init_state(jax.random.key(config.seed, impl=impl)).replace(rng=key)

    shardings = parallel.state_shardings(
        jax.eval_shape(init), mesh, config.get("state_sharding", "replicated")
    )
    state = jax.jit(init, out_shardings=shardings, compiler_options=INIT_COMPILER_OPTIONS)()
    batch, everywhere = parallel.batch_sharding(mesh), parallel.replicated(mesh)
    train_step = jax.jit(
        task.train_step,
        in_shardings=(shardings, batch),
        out_shardings=(shardings, everywhere),
        donate_argnums=0,
    )
    eval_step = jax.jit(
        task.eval_step, in_shardings=(shardings, everywhere), out_shardings=everywhere
    )
    return state, (train_step, eval_step), batch


def _say(progress: bool, bar: Any, text: str) -> None:
    if progress:
        bar.write(text)
    else:
        print(text, flush=True)


def _write_previews(workdir: str, step: int, task: Any, state: Any, writer: MetricWriter) -> None:
    # Every process joins the gather of a sharded state; process 0 alone renders and writes.
    state = state.replace(
        params=parallel.host_copy(state.params), batch_stats=parallel.host_copy(state.batch_stats)
    )
    if not writer.active:
        return
    batch = next(iter(task.eval_batches()), None)
    if batch is None:
        return
    images = task.previews(state, batch)
    writer.images(step, images)
    out = os.path.join(workdir, "previews")
    os.makedirs(out, exist_ok=True)
    for name, img in images.items():
        hdr_io.write_ldr(
            os.path.join(out, f"{name}_{step:07d}.png"), np.asarray(img), overwrite=True
        )
