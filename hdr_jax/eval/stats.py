"""Aggregation of per-example metrics and paired comparisons.

Every evaluator of :mod:`hdr_jax.eval` returns one value per example; a value that is undefined
for an example (a bracket slot past the end, PU21 on the clipped pixels of an image without
any) is NaN, so NaN is the mask: it is left out of every sum and count here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["Collector", "compare", "summarise"]

Key = tuple[str, ...] | str


def _key(key: Key) -> tuple[str, ...]:
    return (key,) if isinstance(key, str) else tuple(key)


class Collector:
    """Per-example values under named keys (a str or a tuple of str), in insertion order.

    ``add`` takes a scalar or an array of per-example values; ``update`` a dict of them (one
    ``eval_step`` output). Means and counts leave NaN out; :meth:`arrays` keeps it (per-example
    records for paired comparisons).
    """

    def __init__(self) -> None:
        self._values: dict[tuple[str, ...], list[np.ndarray]] = {}

    def add(self, key: Key, values: Any) -> None:
        v = np.asarray(values, np.float64).ravel()
        self._values.setdefault(_key(key), []).append(v)

    def update(self, values: Mapping[str, Any]) -> None:
        for k, v in values.items():
            self.add(k, v)

    def all_values(self, key: Key) -> np.ndarray:
        """Every value added under ``key``, NaN included (empty if none)."""
        parts = self._values.get(_key(key), [])
        return np.concatenate(parts) if parts else np.zeros((0,), np.float64)

    def values(self, key: Key) -> np.ndarray:
        v = self.all_values(key)
        return v[~np.isnan(v)]

    def mean(self, key: Key) -> float:
        v = self.values(key)
        return float(np.mean(v)) if len(v) else float("nan")

    def count(self, key: Key) -> int:
        return len(self.values(key))

    def names(self) -> list[tuple[str, ...]]:
        return list(self._values)

    def arrays(self) -> dict[str, np.ndarray]:
        """{key: all per-example values} for single-string keys (an ``eval_step``'s names)."""
        return {"/".join(k): self.all_values(k) for k in self._values}

    def means(self) -> dict[str, float]:
        """{key: mean} of the keys with at least one defined value."""
        return {"/".join(k): self.mean(k) for k in self._values if self.count(k)}


def summarise(values: Iterable[float] | np.ndarray) -> dict[str, float]:
    """Mean, standard error of the mean and count of the non-NaN values (JSON null reads back
    as NaN through ``np.asarray(..., float)``)."""
    v = np.asarray(values if isinstance(values, np.ndarray) else list(values), np.float64)
    v = v[~np.isnan(v)]
    n = v.size
    mean = float(v.mean()) if n else float("nan")
    se = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": mean, "se": se, "n": int(n)}


def compare(
    a: Iterable[float], b: Iterable[float], *, paired: bool, claim: str = "greater"
) -> dict[str, Any]:
    """Evidence that mean(a) > mean(b) (``claim='greater'``), or that a brings no gain over b
    (``claim='no_gain'``).

    Paired (both evaluated on the same examples): mean and standard error of a - b over the
    examples where both are defined. Unpaired: difference of the means with standard error
    sqrt(se_a^2 + se_b^2). The difference is 'confirmed' when it has the claimed sign and exceeds
    two standard errors, 'contradicted' when it exceeds them with the other sign, 'not resolved'
    otherwise; for 'no_gain', a significant gain contradicts the claim and anything else
    confirms it. The standard error covers the sampling of the evaluation set only.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if paired:
        if a.shape != b.shape:
            raise ValueError(f"paired comparison needs equal shapes, got {a.shape} and {b.shape}")
        ok = ~(np.isnan(a) | np.isnan(b))
        s = summarise(a[ok] - b[ok])
        n, delta, se = s["n"], s["mean"], s["se"]
    else:
        sa, sb = summarise(a), summarise(b)
        n = min(sa["n"], sb["n"])
        delta = sa["mean"] - sb["mean"]
        se = math.hypot(sa["se"], sb["se"])
    if claim not in ("greater", "no_gain"):
        raise ValueError(f"claim must be 'greater' or 'no_gain', got {claim!r}")
    if not (n > 1 and math.isfinite(delta) and math.isfinite(se)):
        verdict = "not resolved (too few examples)"
    elif claim == "greater":
        if delta > 2 * se:
            verdict = "confirmed"
        elif delta < -2 * se:
            verdict = "contradicted"
        else:
            verdict = "not resolved (|Δ| < 2 SE)"
    else:
        verdict = "contradicted" if delta > 2 * se else "confirmed (no significant gain)"
    return {"delta": delta, "two_se": 2 * se, "n": n, "paired": paired, "verdict": verdict}
