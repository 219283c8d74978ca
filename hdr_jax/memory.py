"""Memory budgets: compiled peak memory of training and inference, and settings that fit.

Everything here is *compile-only*: functions are lowered on abstract shapes
(`jax.ShapeDtypeStruct`) and compiled, and XLA's buffer assignment is read back from
`compiled.memory_analysis()`. Nothing is executed and no array of the model's size is allocated,
so a budget can be checked on a laptop CPU before a long run on a small GPU.

Peak = argument + output - alias + temp bytes: the buffers XLA allocates for one call. Outputs
aliased to donated arguments (the train state, donated as `training.loop` does) are counted
once. Not counted: the runtime's own allocations, Python, and (on a GPU) the framework's
workspace and fragmentation, so leave some headroom in the budget. The buffer assignment is that
of the CPU backend; a GPU's fusion decisions differ a little.

Buffer assignment happens before code generation, so the analysis compiles with
`xla_backend_optimization_level=0` (`ANALYSIS_OPTIONS`): the same numbers, several times faster.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from hdr_jax.models import registry
from hdr_jax.training import parallel

__all__ = [
    "ANALYSIS_OPTIONS",
    "MemoryBudgetError",
    "MemoryStats",
    "apply_training_budget",
    "choose_pipeline_tiles",
    "choose_tile",
    "choose_training_settings",
    "cfnet_settings",
    "drtmo_settings",
    "compiled_peak_bytes",
    "format_bytes",
    "inference_analysis",
    "inference_fn",
    "lower_inference",
    "lower_training",
    "memory_stats",
    "param_bytes",
    "parse_bytes",
    "training_analysis",
    "training_candidates",
    "training_step_fn",
]

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
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"memory size must be positive, got {text!r}")
    return round(value * _UNITS[unit])


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


# -- configs ------------------------------------------------------------------------------------


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


def _set_patch(config: ml_collections.ConfigDict, patch: int) -> None:
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
    _set_patch(config, patch)
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


# (kind, config, batch, size[, options]) -> (memory, FLOPs). Compiles with and without
# ANALYSIS_OPTIONS assign the same buffers (tests/test_benchmarks.py), so both share an entry.
_ANALYSES: dict[str, tuple[MemoryStats, float]] = {}


def _analyse(kind, config, batch_size, size, settings, options, compiled) -> Any:
    cfg = _apply_settings(_experiment_config(config), settings)
    extra = [] if options is None else [dict(options)]
    key = json.dumps([kind, cfg.to_dict(), batch_size, size, *extra], sort_keys=True, default=str)
    if compiled is None and key in _ANALYSES:
        return _ANALYSES[key]
    if compiled is None:
        lower = lower_training if kind == "train" else lower_inference
        compiled = lower(cfg, batch_size, size).compile(
            compiler_options=ANALYSIS_OPTIONS if options is None else dict(options)
        )
    _ANALYSES[key] = (memory_stats(compiled), float(compiled.cost_analysis()["flops"]))
    return _ANALYSES[key]


def training_analysis(
    config: Any,
    batch_size: int,
    patch: int,
    settings: Mapping[str, Any] | None = None,
    compiler_options: Mapping[str, Any] | None = None,
    *,
    compiled: Any = None,
) -> tuple[MemoryStats, float]:
    """(memory, FLOPs) of the compiled train step (state donated), cached per arguments.

    `compiled`: the caller's own compile of `lower_training(...)` (e.g. for timing), recorded
    instead of compiling again.
    """
    return _analyse("train", config, batch_size, patch, settings, compiler_options, compiled)


def inference_analysis(
    config: Any,
    batch_size: int,
    tile: int,
    settings: Mapping[str, Any] | None = None,
    compiler_options: Mapping[str, Any] | None = None,
    *,
    compiled: Any = None,
) -> tuple[MemoryStats, float]:
    """(memory, FLOPs) of compiled inference on a tile^2 input; as `training_analysis`."""
    return _analyse("infer", config, batch_size, tile, settings, compiler_options, compiled)


def param_bytes(config: Any) -> int:
    """Bytes of a network's variables (parameters and batch-norm statistics)."""
    _, variables = _model_and_params(_experiment_config(config))
    return sum(math.prod(a.shape) * jnp.dtype(a.dtype).itemsize for a in jax.tree.leaves(variables))


# -- choosing settings --------------------------------------------------------------------------


def training_candidates(config: Any, batch_size: int | None = None) -> list[tuple[str, dict]]:
    """Settings from the cheapest (fastest, most exact) to the most memory-saving, as measured by
    `benchmarks/run.py` (docs/benchmarks.md). Parameters stay float32 throughout.

    CF-Net: the 'xla' stride-1 conv everywhere (no per-tap input copies); remat of every SRB /
    feedback step in a rolled loop ('step'); plus bf16 compute and bf16 Adam moments; then
    gradient accumulation over 2, 4, ... slices of the batch (`microbatches`, the divisors of
    `batch_size`); the bf16 settings also split the dense 1x1 transitions (`split_concat`).
    DrTMO (batch norm: no microbatches): 'xla' conv; plus bf16 Adam moments;
    plus bf16 compute (per-layer remat measured no smaller). The memory savers cost CPU time
    (XLA:CPU: 'xla' 2-tap and 3-d conv gradients, rolled loops; docs/benchmarks.md), not GPU
    time, which is where budgets matter.
    """
    task = _experiment_config(config).task
    if task == "cfnet":
        bf16 = {"dtype": "bfloat16", "split_concat": True}  # split: measured to help with bf16 only
        cands = [
            ("xla", cfnet_settings("xla")),
            ("xla+remat:step", cfnet_settings("xla", "step")),
            ("xla+remat:step+bf16", cfnet_settings("xla", "step", **bf16)),
        ]
        for m in range(2, int(batch_size or 0) + 1):
            if batch_size % m == 0:
                cands.append((f"xla+remat:step+bf16+microbatches:{m}",
                              cfnet_settings("xla", "step", **bf16, microbatches=m)))
        return cands
    return [
        ("xla", drtmo_settings("xla")),
        ("xla+adam_bf16", drtmo_settings("xla", adam_dtype="bfloat16")),
        ("xla+bf16", drtmo_settings("xla", dtype="bfloat16")),
    ]


def _adam(dtype: str) -> dict:
    moments = "" if dtype == "float32" else dtype
    return {"mu_dtype": moments, "nu_dtype": moments}


def cfnet_settings(conv_impl: str, remat: str = "none", dtype: str = "float32", *,
                   split_concat: bool = False, adam_dtype: str | None = None,
                   microbatches: int = 0) -> dict:
    """CF-Net training settings (config overrides): conv implementation, remat policy, compute
    dtype (bf16 also stores the Adam moments in bf16 unless ``adam_dtype`` says otherwise),
    split dense transitions, gradient-accumulation slices."""
    out = {"model": {"remat_policy": remat, "dtype": dtype, "conv_impl": conv_impl,
                     "split_concat": split_concat},
           "optimizer": _adam(adam_dtype or dtype)}
    if microbatches:
        out["microbatches"] = microbatches
    return out


def drtmo_settings(conv_impl: str, remat: bool | str = False, dtype: str = "float32", *,
                   adam_dtype: str | None = None) -> dict:
    """DrTMO training settings (config overrides): conv implementation, remat (a bool or a
    checkpoint policy name), compute dtype, Adam moment dtype (default: the compute dtype)."""
    return {"model": {"remat": remat, "dtype": dtype, "conv_impl": conv_impl},
            "optimizer": _adam(adam_dtype or dtype)}


def _train_peak(config, batch_size, patch, settings, compiler_options) -> int:
    return training_analysis(config, batch_size, patch, settings, compiler_options)[0].peak


def choose_training_settings(
    config: Any,
    batch_size: int,
    patch: int,
    budget: str | int,
    *,
    candidates: Sequence[tuple[str, Mapping[str, Any]]] | None = None,
    compiler_options: Mapping[str, Any] | None = None,
) -> dict:
    """The cheapest training settings whose compiled train-step peak fits `budget`.

    `config`: an experiment config (or its `model` section); `patch`: CF-Net LR patch or DrTMO
    crop size. Candidates (default `training_candidates(config)`) are tried cheapest first; if
    the cheapest does not fit, the most memory-saving is tried next so that a hopeless budget
    fails after two compiles. Returns {'name', 'model', 'optimizer' (config overrides),
    'peak_bytes', 'budget_bytes', 'tried': [(name, peak_bytes), ...]}; raises
    `MemoryBudgetError` when nothing fits.
    """
    limit = parse_bytes(budget)
    cands = list(candidates) if candidates is not None else training_candidates(config, batch_size)
    if not cands:
        raise ValueError("no candidate settings to try")
    tried: dict[int, int] = {}

    def peak(i: int) -> int:
        if i not in tried:
            tried[i] = _train_peak(config, batch_size, patch, cands[i][1], compiler_options)
        return tried[i]

    last = len(cands) - 1
    if peak(0) <= limit:
        pick = 0
    elif peak(last) <= limit:
        pick = next(i for i in range(1, last + 1) if peak(i) <= limit)
    else:
        pick = None
    if pick is not None:
        name, settings = cands[pick]
        return {
            "name": name,
            "model": dict(settings.get("model") or {}),
            "optimizer": dict(settings.get("optimizer") or {}),
            "microbatches": int(settings.get("microbatches") or 0),
            "peak_bytes": tried[pick],
            "budget_bytes": limit,
            "tried": [(cands[k][0], tried[k]) for k in sorted(tried)],
        }
    best = min(tried, key=tried.get)
    raise MemoryBudgetError(
        f"no training setting fits {format_bytes(limit)} at batch {batch_size}, patch {patch}: "
        f"the smallest, {cands[best][0]!r}, needs {format_bytes(tried[best])} "
        "(reduce the batch size or the patch)"
    )


def _tile_candidates(config: ml_collections.ConfigDict) -> list[int]:
    if config.task == "cfnet":
        return [32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
    mult = 2 ** registry.build(config.task, config.model).depth
    return [mult * k for k in (1, 2, 3, 4, 6, 8, 12, 16) if mult * k <= 4096]


def choose_tile(
    config: Any,
    budget: str | int,
    *,
    candidates: Sequence[int] | None = None,
    batch_size: int = 1,
    resident_bytes: int = 0,
    settings: Mapping[str, Any] | None = None,
    compiler_options: Mapping[str, Any] | None = None,
) -> dict:
    """The largest inference tile (pixels per side) whose compiled peak plus `resident_bytes`
    fits `budget`, for `pipeline` tiling.

    CF-Net: LR tile (`fuse_pair(tile=)`); DrTMO: input tile, a multiple of 2^depth
    (`generate_stack(tile=)`; pass the second network's `param_bytes` as `resident_bytes`,
    both stay loaded). Peak memory grows with the tile, so this bisects the sorted candidates.
    Returns {'tile', 'peak_bytes', 'budget_bytes', 'tried': [(tile, bytes), ...]}; raises
    `MemoryBudgetError` if the smallest candidate does not fit.
    """
    limit = parse_bytes(budget)
    cfg = _experiment_config(config)
    cands = sorted({int(c) for c in (candidates or _tile_candidates(cfg))})
    if not cands or cands[0] < 1:
        raise ValueError(f"tile candidates must be positive, got {candidates}")
    tried: dict[int, int] = {}

    def peak(tile: int) -> int:
        if tile not in tried:
            stats, _ = inference_analysis(cfg, batch_size, tile, settings, compiler_options)
            tried[tile] = resident_bytes + stats.peak
        return tried[tile]

    lo, hi = 0, len(cands) - 1  # invariant: everything below lo fits
    if peak(cands[0]) > limit:
        raise MemoryBudgetError(
            f"no inference tile fits {format_bytes(limit)}: the smallest, {cands[0]}, needs "
            f"{format_bytes(tried[cands[0]])}"
        )
    lo = 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if peak(cands[mid]) <= limit:
            lo = mid + 1
        else:
            hi = mid - 1
    tile = cands[lo - 1]
    return {
        "tile": tile,
        "peak_bytes": tried[tile],
        "budget_bytes": limit,
        "tried": sorted(tried.items()),
    }


# -- applying a budget --------------------------------------------------------------------------


def apply_training_budget(
    config: ml_collections.ConfigDict, *, log: Callable[[str], None] | None = print
) -> tuple[ml_collections.ConfigDict, dict | None]:
    """`config.memory_budget` ('' or absent: off) applied to an experiment config, before the
    task is built.

    The analysis compiles one device's step: the per-device batch (`config.batch_size` over
    the devices of the run) with the whole train state (replicated; sharding the state with
    `config.state_sharding` only lowers the real peak). The config as given is tried first and
    kept when it fits; otherwise the cheapest of
    `training_candidates` that fits is applied (model conv/remat/dtype, optimizer moment dtypes,
    `microbatches`) to a
    copy of the config (not type-safe: DrTMO's `remat` may become a policy name). Raises
    `MemoryBudgetError` (one line) when nothing fits, before the real step is compiled.
    Returns (config, choice); choice is None when no budget is set.
    """
    budget = str(config.get("memory_budget", "") or "").strip()
    if not budget:
        return config, None
    try:
        parse_bytes(budget)
    except ValueError as e:
        raise MemoryBudgetError(f"memory_budget: {e}") from None
    task = config.task
    if task not in ("cfnet", "drtmo"):
        raise MemoryBudgetError(f"memory_budget applies to the cfnet and drtmo tasks, not {task!r}")
    patch = config.data.patch_size if task == "cfnet" else config.data.crop_size
    # A device holds its rows of the global batch (and, counted here, the whole state).
    try:
        batch = parallel.per_device_batch(config.batch_size)
    except parallel.ParallelConfigError as e:
        raise MemoryBudgetError(str(e)) from None
    cands = [("as configured", {})] + training_candidates(config, batch)
    choice = choose_training_settings(config, batch, patch, budget, candidates=cands)
    if choice["model"] or choice["optimizer"] or choice["microbatches"]:
        config = _apply_settings(
            ml_collections.ConfigDict(config.to_dict(), type_safe=False), choice
        )
    if log is not None:
        tried = ", ".join(f"{n} {format_bytes(b)}" for n, b in choice["tried"])
        log(
            f"memory budget {format_bytes(choice['budget_bytes'])}: training with "
            f"{choice['name']!r}, compiled peak {format_bytes(choice['peak_bytes'])} (tried: {tried})"
        )
    return config, choice


def _tree_bytes(tree: Any) -> int:
    return sum(math.prod(a.shape) * jnp.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree))


def _capped(candidates: Sequence[int], side: int, smallest: int) -> list[int]:
    """Candidates from `smallest` up to the first one that covers `side` (a larger tile costs
    memory for nothing: tiles never exceed the image). A tile that covers the image is always
    allowed, whatever `smallest`."""
    cands = sorted(candidates)
    covering = [c for c in cands if c >= side][:1]
    return [c for c in cands if smallest <= c < side] + covering


def choose_pipeline_tiles(
    pipe: Any,
    budget: str | int,
    image_hw: tuple[int, int],
    *,
    stage1: bool,
    scale: int | None,
    min_tiles: tuple[int, int] = (128, 32),
) -> dict:
    """Tile sizes for `pipeline.generate_stack` (stage 1) and `pipeline.fuse_pair` (stage 2, at
    `scale`; None: no stage 2) of a loaded `pipeline.Pipeline` on an image of `image_hw`.

    Counted against the budget: the compiled network call at the tile size (its variables,
    input, output, temporaries) plus the variables of the other loaded networks (both stage-1
    networks stay loaded). Not counted: the host arrays of the photo and its 17 exposures
    (about 200 MB per megapixel). Returns {'stage1_tile', 'stage2_tile'} (None where a stage is
    not run) and the `choose_tile` results under 'stage1' / 'stage2'. `min_tiles`: the
    smallest tile of each stage, twice the pipeline's overlap (64 and 16 pixels) so that tiles
    advance by at least the overlap.
    """
    side = max(image_hw)
    out: dict[str, Any] = {"stage1_tile": None, "stage2_tile": None}
    up, down = pipe.up, pipe.down
    stage1_bytes = _tree_bytes(up.variables) + _tree_bytes(down.variables)
    if stage1:
        cfg = _experiment_config(up.entry["config"])
        cands = _capped(_tile_candidates(cfg), side, min_tiles[0])
        try:
            res = choose_tile(
                cfg, budget, candidates=cands, resident_bytes=_tree_bytes(down.variables)
            )
        except MemoryBudgetError as e:
            raise MemoryBudgetError(f"stage 1 (DrTMO): {e}") from None
        out["stage1"], out["stage1_tile"] = res, res["tile"]
    if scale:
        cfg = _experiment_config(pipe.cfnet(scale).entry["config"])
        cands = _capped(_tile_candidates(cfg), side, min_tiles[1])
        try:
            res = choose_tile(cfg, budget, candidates=cands, resident_bytes=stage1_bytes)
        except MemoryBudgetError as e:
            raise MemoryBudgetError(f"stage 2 (CF-Net x{scale}): {e}") from None
        out["stage2"], out["stage2_tile"] = res, res["tile"]
    return out
