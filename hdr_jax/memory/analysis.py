"""Compile-only memory analysis: XLA's buffer assignment of a training step or of inference.

Functions are lowered on abstract shapes (`jax.ShapeDtypeStruct`) and compiled; nothing runs
and no array of the model's size is allocated. Peak = argument + output - alias + temp bytes:
the buffers XLA allocates for one call (outputs aliased to the donated train state counted
once). Buffer assignment happens before code generation, so the analysis compiles with
`xla_backend_optimization_level=0` (`ANALYSIS_OPTIONS`): the same numbers, several times faster.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from hdr_jax.models import registry

#: Compiler options for analysis-only compiles (identical buffer assignment, no LLVM -O2).
ANALYSIS_OPTIONS: dict[str, Any] = {"xla_backend_optimization_level": 0}

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "k": 2**10,
    "m": 2**20,
    "g": 2**30,
    "t": 2**40,
}


class MemoryBudgetError(ValueError):
    """No candidate setting fits the memory budget."""


def parse_bytes(text: str | float) -> int:
    """'4GiB' -> 4294967296. Units: B, KB/MB/GB/TB (powers of 10), KiB/MiB/GiB/TiB and the
    single letters K/M/G/T (powers of 2), any case; a bare number is bytes."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if m is None or m.group(2).lower() not in _UNITS:
            raise ValueError(f"cannot parse a memory size from {text!r} (e.g. '4GiB', '512MB')")
        value, unit = float(m.group(1)), m.group(2).lower()
    n = value * _UNITS[unit]
    if not math.isfinite(n) or n <= 0:
        raise ValueError(f"memory size must be a positive, finite number of bytes, got {text!r}")
    return round(n)


def format_bytes(n: float) -> str:
    """Bytes as GiB ('4.00 GiB'), MiB ('12.5 MiB'), KiB ('1.0 KiB') or bytes ('512 B')."""
    if abs(n) >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    if abs(n) >= 2**20:
        return f"{n / 2**20:.1f} MiB"
    if abs(n) >= 2**10:
        return f"{n / 2**10:.1f} KiB"
    return f"{int(n)} B"


@dataclasses.dataclass(frozen=True)
class MemoryStats:
    """XLA buffer sizes of one compiled function, in bytes."""

    argument: int
    output: int
    alias: int  # outputs that reuse (donated) argument buffers
    temp: int

    @property
    def peak(self) -> int:
        return self.argument + self.output - self.alias + self.temp

    def as_dict(self) -> dict[str, int]:
        return {**dataclasses.asdict(self), "peak": self.peak}


def memory_stats(compiled: Any) -> MemoryStats:
    """Reads `compiled.memory_analysis()` (a `jax.stages.Compiled`)."""
    m = compiled.memory_analysis()
    if m is None:
        raise RuntimeError("this backend reports no memory analysis")
    return MemoryStats(
        argument=int(m.argument_size_in_bytes),
        output=int(m.output_size_in_bytes),
        alias=int(m.alias_size_in_bytes),
        temp=int(m.temp_size_in_bytes),
    )


def compiled_peak_bytes(
    fn: Callable,
    *args: Any,
    donate_argnums: int | Sequence[int] = (),
    compiler_options: Mapping[str, Any] | None = None,
) -> int:
    """Peak bytes of `jax.jit(fn, donate_argnums)(*args)`, from compiling only.

    `args` may be arrays or `jax.ShapeDtypeStruct` pytrees. `compiler_options` defaults to
    `ANALYSIS_OPTIONS`.
    """
    options = ANALYSIS_OPTIONS if compiler_options is None else dict(compiler_options)
    lowered = jax.jit(fn, donate_argnums=donate_argnums).lower(*args)
    return memory_stats(lowered.compile(compiler_options=options)).peak


def _experiment_config(config: Any) -> ml_collections.ConfigDict:
    """A private copy of an experiment config; a bare `model` section gets default task pieces."""
    if isinstance(config, ml_collections.ConfigDict):
        config = config.to_dict()
    config = copy.deepcopy(dict(config))
    if "task" not in config:  # a model section: infer the network
        if "width" in config:
            task = "drtmo"
        elif "features" in config:
            task = "cfnet"
        else:
            raise ValueError("config must be an experiment config or a DrTMO/CF-Net model section")
        config = {"task": task, "model": config}
    task = config["task"]
    if task not in ("cfnet", "drtmo"):
        raise ValueError(f"unknown task {task!r}")
    config.setdefault("seed", 0)
    config.setdefault("direction", "up")
    opt = {
        "learning_rate": 2e-4 if task == "drtmo" else 1e-4,
        "b1": 0.5 if task == "drtmo" else 0.9,
    }
    opt.update(config.get("optimizer") or {})
    config["optimizer"] = opt
    loss = {"denominator": "all"} if task == "drtmo" else {"srb_weight": 1.0, "cfb_weight": 1.0}
    loss.update(config.get("loss") or {})
    config["loss"] = loss
    config.setdefault("data", {})
    # not type-safe: settings change e.g. DrTMO's remat from a bool to a policy name
    return ml_collections.ConfigDict(config, type_safe=False)


def _apply_settings(config: ml_collections.ConfigDict, settings: Mapping[str, Any] | None):
    if settings:
        for section in ("model", "optimizer"):
            for k, v in (settings.get(section) or {}).items():
                config[section][k] = v
        if settings.get("microbatches"):
            config.microbatches = int(settings["microbatches"])
    return config


def set_patch(config: ml_collections.ConfigDict, patch: int) -> None:
    if config.task == "cfnet":
        config.data.patch_size = patch
    else:
        config.data.crop_size = patch


def _check_sizes(batch_size: int, patch: int) -> None:
    if int(batch_size) < 1 or int(patch) < 1:
        raise ValueError(f"batch_size and patch must be >= 1, got {batch_size}, {patch}")


def training_step_fn(
    config: Any, batch_size: int, patch: int, settings: Mapping[str, Any] | None = None
) -> tuple[Callable, tuple[Any, Any]]:
    """The task's pure train step and abstract (state, batch) for batch_size x patch^2 inputs
    (CF-Net: LR patch; DrTMO: crop). Compile with `donate_argnums=0`, as the training loop does."""
    task, batch = training_setup(config, batch_size, patch, settings)
    state = jax.eval_shape(task.init_state, jax.random.key(int(task.config.seed)))
    return task.train_step, (state, batch)


def training_setup(
    config: Any, batch_size: int, patch: int, settings: Mapping[str, Any] | None = None
) -> tuple[Any, dict]:
    """The task (with `settings` applied, no data builder) and the abstract batch of a
    batch_size x patch^2 training step: what `training_step_fn` compiles, for callers that run it."""
    from hdr_jax.training import tasks  # heavy: data builders, metrics

    _check_sizes(batch_size, patch)
    config = _apply_settings(_experiment_config(config), settings)
    set_patch(config, patch)
    config.batch_size = batch_size
    task = tasks.make_task(config, builder=object())  # the builder is never touched
    return task, registry.train_batch(config.task, config.model, batch_size, patch)


def _model_and_params(config: ml_collections.ConfigDict) -> tuple[Any, Any]:
    module = registry.build(config.task, config.model)
    return module, registry.abstract_variables(config.task, module)


def inference_fn(
    config: Any, batch_size: int, tile: int, settings: Mapping[str, Any] | None = None
) -> tuple[Callable, tuple[Any, ...]]:
    """Inference as `pipeline` runs it, with abstract (variables, *inputs) for a tile^2 input:
    CF-Net's fused image from an LR pair; DrTMO's bracket (train=False)."""
    _check_sizes(batch_size, tile)
    config = _apply_settings(_experiment_config(config), settings)
    module, variables = _model_and_params(config)
    inputs = registry.example_inputs(config.task, module, batch_size, tile)
    return registry.inference(config.task, module), (variables, *inputs)


def lower_training(
    config: Any, batch_size: int, patch: int, settings: Mapping[str, Any] | None = None
) -> jax.stages.Lowered:
    """`training_step_fn` lowered with the state donated (as `training.loop` jits it)."""
    fn, args = training_step_fn(config, batch_size, patch, settings)
    return jax.jit(fn, donate_argnums=0).lower(*args)


def lower_inference(
    config: Any, batch_size: int, tile: int, settings: Mapping[str, Any] | None = None
) -> jax.stages.Lowered:
    """`inference_fn` lowered."""
    fn, args = inference_fn(config, batch_size, tile, settings)
    return jax.jit(fn).lower(*args)


def analysis(
    kind: str,
    config: Any,
    batch_size: int,
    size: int,
    settings: Mapping[str, Any] | None = None,
    compiler_options: Mapping[str, Any] | None = None,
    *,
    compiled: Any = None,
) -> tuple[MemoryStats, float]:
    """(memory, FLOPs) of the compiled train step (``kind`` 'train', state donated, ``size`` the
    patch) or of inference ('infer', on a size^2 tile), memoised per arguments.

    `compiled`: the caller's own compile of `lower_training(...)` / `lower_inference(...)` (e.g.
    for timing), read instead of compiling again.
    """
    if kind not in ("train", "infer"):
        raise ValueError(f"kind must be 'train' or 'infer', got {kind!r}")
    if compiled is not None:
        return memory_stats(compiled), float(compiled.cost_analysis()["flops"])
    cfg = _apply_settings(_experiment_config(config), settings)
    extra = [] if compiler_options is None else [dict(compiler_options)]
    return _cached_analysis(
        json.dumps([kind, cfg.to_dict(), batch_size, size, *extra], sort_keys=True, default=str)
    )


#: `analysis` of the train step: (config, batch_size, patch, settings, compiler_options).
training_analysis = functools.partial(analysis, "train")
#: `analysis` of inference: (config, batch_size, tile, settings, compiler_options).
inference_analysis = functools.partial(analysis, "infer")


@functools.lru_cache(maxsize=256)
def _cached_analysis(key: str) -> tuple[MemoryStats, float]:
    """(memory, FLOPs) of the compile that ``key`` = JSON [kind, config, batch, size[, options]]
    describes. Bounded memoisation: the budget searches and the benchmark ask for the same
    compile several times. Compiles with and without ANALYSIS_OPTIONS assign the same buffers
    (tests/test_memory.py), so both share an entry."""
    kind, config, batch_size, size, *extra = json.loads(key)
    lower = lower_training if kind == "train" else lower_inference
    compiled = lower(_experiment_config(config), batch_size, size).compile(
        compiler_options=ANALYSIS_OPTIONS if not extra else extra[0]
    )
    return memory_stats(compiled), float(compiled.cost_analysis()["flops"])


def param_bytes(config: Any) -> int:
    """Bytes of a network's variables (parameters and batch-norm statistics)."""
    _, variables = _model_and_params(_experiment_config(config))
    return sum(math.prod(a.shape) * jnp.dtype(a.dtype).itemsize for a in jax.tree.leaves(variables))
