"""Training settings that fit a memory budget: the candidate settings, cheapest first, and the
search over them (compile-only, through :mod:`hdr_jax.memory.analysis`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections

from hdr_jax.memory.analysis import (
    MemoryBudgetError,
    _apply_settings,
    _experiment_config,
    format_bytes,
    parse_bytes,
    training_analysis,
)
from hdr_jax.training import parallel

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
