"""Stage 1 (DrTMO, Endo et al. 2017): predicted exposure brackets and the HDRs merged from them.

* :func:`exposure_scores` -- PSNR of every predicted exposure against the true one, per
  exposure step k (the target is tau^k times the input exposure); the metric of
  ``DrTMOTask.eval_step``, of the naive baseline and of :func:`evaluate_bracket_record`.
* :func:`merge_record` -- PU21 (:func:`protocol.pu21_protocol`) of the HDRs merged from the
  stack around the middle exposure, with the public code's Debevec merge, our robust and
  input-anchored merges, and the linearised input (:data:`MERGE_ROWS`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from hdr_jax import merge, pipeline
from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera.exposure import TAU, naive_bracket_baseline
from hdr_jax.eval import protocol

__all__ = [
    "MERGE_ROWS",
    "evaluate_bracket_record",
    "exposure_scores",
    "merge_candidates",
    "merge_record",
    "record_bracket",
]

#: Row names of the stage-1 merge comparison, in table order.
MERGE_ROWS = (
    "linearised LDR input (inverse sRGB)",
    "linearised LDR input (true inverse CRF)",
    "ours + Debevec merge, linear response (public code)",
    "ours + robust merge, sRGB inverse CRF",
    "ours + robust merge, true inverse CRF (reference)",
    "ours + input-anchored merge, sRGB (the pipeline's default)",
    "ours + input-anchored merge, true inverse CRF (reference)",
)


def exposure_scores(pred: ArrayLike, target: ArrayLike, mask: ArrayLike) -> dict[str, jnp.ndarray]:
    """Per example of a (B, N, H, W, 3) prediction: 'psnr_step{k}' (B,), the capped PSNR of
    slot k - 1, NaN where the slot is padded (``mask`` (B, N) is 0: its target lies outside the
    bracket), and 'psnr', the mean over the valid slots (NaN when there is none)."""
    psnr = protocol.psnr(pred, target)  # (B, N)
    valid = jnp.asarray(mask) > 0
    count = jnp.sum(valid, axis=1)
    mean = jnp.sum(jnp.where(valid, psnr, 0.0), axis=1) / jnp.maximum(count, 1)
    out = {"psnr": jnp.where(count > 0, mean, jnp.nan)}
    for k in range(psnr.shape[1]):
        out[f"psnr_step{k + 1}"] = jnp.where(valid[:, k], psnr[:, k], jnp.nan)
    return out


def record_bracket(record: Mapping[str, Any]) -> np.ndarray:
    """The (T+1, H, W, 3) float32 bracket in [0, 1] of an ``hdr_brackets`` record."""
    return np.asarray(record["bracket"], np.float32) / 255.0


def merge_candidates(
    stack: np.ndarray, image: np.ndarray, curve: np.ndarray
) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
    """The HDRs of the merge comparison, one per :data:`MERGE_ROWS` entry, from a
    (2N+1, H, W, 3) stack around the input ``image`` whose true response is ``curve``; and the
    index range the monotone selection kept."""
    debevec, kept = merge.merge_stack(stack, method="debevec", tau=TAU)
    hdrs = (
        protocol.linearise_srgb(image),
        crf_lib.apply_inverse_crf(curve, image),
        debevec,
        merge.merge_stack(stack, method="robust", tau=TAU)[0],
        merge.merge_stack(stack, method="robust", tau=TAU, curve=curve)[0],
        merge.merge_stack(stack, method="anchored", tau=TAU)[0],
        merge.merge_stack(stack, method="anchored", tau=TAU, curve=curve)[0],
    )
    return dict(zip(MERGE_ROWS, hdrs, strict=True)), kept


def merge_record(
    record: Mapping[str, Any], down: np.ndarray, up: np.ndarray
) -> dict[str, Any]:
    """The merge comparison of one record, with the middle exposure j = T/2 as the input and
    ``down`` / ``up`` (N, H, W, 3) the exposures predicted from it (step -1..-N, +1..+N).

    Returns ``{'merge': {row: pu21_protocol dict}, 'kept': (lo, hi), 'clipped_fraction'}``;
    every score is NaN when the whole input is clipped (no pixel to fit the gain on).
    """
    bracket = record_bracket(record)
    x = bracket[(bracket.shape[0] - 1) // 2]
    stack = np.concatenate([np.asarray(down)[::-1], x[None], np.asarray(up)], axis=0)
    curve = np.asarray(record["crf_curve"], np.float32)
    ref = np.asarray(record["hdr"], np.float32)
    clipped = protocol.clipped_mask(x)
    candidates, kept = merge_candidates(stack, x, curve)
    if clipped.all():
        merged = {name: {"pu21": float("nan"), "pu21_clipped": float("nan")} for name in MERGE_ROWS}
    else:
        merged = {name: protocol.pu21_protocol(h, ref, clipped) for name, h in candidates.items()}
    return {"merge": merged, "kept": kept, "clipped_fraction": float(clipped.mean())}


def evaluate_bracket_record(
    pipe: Any, record: Mapping[str, Any], input_indices: Sequence[int] | None = None
) -> dict[str, Any]:
    """Stage-1 scores of one ``hdr_brackets`` record (keys 'bracket' (T+1, H, W, 3) uint8, 'hdr',
    'crf_curve').

    For every input index j in ``input_indices`` (default all) the pipeline predicts N exposures
    each way (up: re-exposure with the recognised response when the weights have a classifier,
    see :func:`pipeline.up_brackets`; down: the DownExposureNet); each prediction with a target
    inside the bracket is scored by PSNR against the true exposure, as are two naive re-exposures
    (inverse CRF, x tau^step, CRF, clip) with the sRGB curve and with the true curve, and the
    DrTMO network of that direction alone. Returns :func:`merge_record`'s keys and
    ``'psnr': [(step, j, ours, naive_srgb, naive_true, network)...]``.
    """
    bracket = record_bracket(record)
    d = bracket.shape[0]
    middle = (d - 1) // 2
    js = list(range(d)) if input_indices is None else sorted({int(j) for j in input_indices})
    if any(not 0 <= j < d for j in js):
        raise ValueError(f"input indices must lie in [0, {d - 1}], got {js}")
    curve = np.asarray(record["crf_curve"], np.float32)
    # All d inputs in one batch whatever the subset: one compiled shape, and j = T/2 is needed
    # for the merge rows anyway.
    x = bracket
    n = pipe.up.module.num_exposures
    steps = {"up": np.arange(1, n + 1), "down": -np.arange(1, n + 1)}
    networks = {
        "up": np.asarray(pipe.up.apply(pipe.up.variables, x)),
        "down": np.asarray(pipe.down.apply(pipe.down.variables, x)),
    }
    preds = dict(networks)
    if pipe.response is not None:
        preds["up"] = pipeline.up_brackets(pipe, x, "response")
    rows = []
    for direction, pred in preds.items():
        st = steps[direction]
        naive_s = naive_bracket_baseline(x, st, TAU, "srgb")
        naive_t = naive_bracket_baseline(x, st, TAU, curve)
        for j in js:
            idx = j + st
            ok = (idx >= 0) & (idx < d)
            if not ok.any():
                continue
            target = bracket[idx[ok]]
            scores = [
                np.asarray(protocol.psnr(p[j][ok], target))
                for p in (pred, naive_s, naive_t, networks[direction])
            ]
            for k, step in enumerate(st[ok]):
                rows.append((int(step), j, *(float(s[k]) for s in scores)))
    return {"psnr": rows, **merge_record(record, preds["down"][middle], preds["up"][middle])}
