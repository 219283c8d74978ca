"""Inference tile sizes that fit a memory budget, for the pipeline's tiled stages."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from hdr_jax.memory.analysis import (
    MemoryBudgetError,
    _experiment_config,
    format_bytes,
    inference_analysis,
    parse_bytes,
)
from hdr_jax import pipeline
from hdr_jax.models import registry

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
    smallest tile of each stage (stage 1: the network's input, margin included), at least twice
    the pipeline's overlap (64 and 16 pixels) so that tiles advance by at least the overlap.
    """
    side = max(image_hw)
    out: dict[str, Any] = {"stage1_tile": None, "stage2_tile": None}
    up, down = pipe.up, pipe.down
    stage1_bytes = _tree_bytes(up.variables) + _tree_bytes(down.variables)
    if stage1:
        # The networks see a stage-1 tile with its mirrored margin: the candidates are those
        # network inputs, and the pipeline gets the tile inside the margin.
        margin = 2 * pipeline.STAGE1_MARGIN
        cfg = _experiment_config(up.entry["config"])
        cands = _capped(_tile_candidates(cfg), side + margin, min_tiles[0])
        try:
            res = choose_tile(
                cfg, budget, candidates=cands, resident_bytes=_tree_bytes(down.variables)
            )
        except MemoryBudgetError as e:
            raise MemoryBudgetError(f"stage 1 (DrTMO): {e}") from None
        out["stage1"], out["stage1_tile"] = res, res["tile"] - margin
    if scale:
        cfg = _experiment_config(pipe.cfnet(scale).entry["config"])
        cands = _capped(_tile_candidates(cfg), side, min_tiles[1])
        try:
            res = choose_tile(cfg, budget, candidates=cands, resident_bytes=stage1_bytes)
        except MemoryBudgetError as e:
            raise MemoryBudgetError(f"stage 2 (CF-Net x{scale}): {e}") from None
        out["stage2"], out["stage2_tile"] = res, res["tile"]
    return out
