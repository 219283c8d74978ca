"""The papers' claims the ablation grids test, as data, and their verdicts from the runs.

A claim compares two variants (or a variant and a baseline) on one per-example metric with
:func:`hdr_jax.eval.stats.compare`: every variant is evaluated on the same held-out examples,
so the comparison is paired where the two sides have the same examples. The standard error
covers the sampling of the evaluation set only: every run uses one training seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from experiments.ablations import grid
from hdr_jax.eval import stats


@dataclasses.dataclass(frozen=True)
class Claim:
    """A statement about variant ``a`` versus variant ``b`` on ``metric`` (a per-example key).

    ``a``/``b`` name variants, or '<variant>@<metric>' to compare two metrics of one run set,
    or 'baseline:<name>'. ``kind``: 'runs' (pooled over a DrTMO variant's up and down runs, or
    the CF-Net run), 'hdr' (PU21 of the merged stack).
    """

    suite: str
    text: str
    source: str
    a: str
    b: str
    metric: str = "psnr"
    kind: str = "runs"
    claim: str = "greater"
    paired: bool = True
    unit: str = "dB"


CLAIMS = (
    Claim(
        "drtmo",
        "U-Net skip connections improve the predicted exposures",
        "DrTMO architecture (skips carry image detail to the decoder)",
        "full",
        "no_skips",
    ),
    Claim(
        "drtmo",
        "The residual unit improves them",
        "DrTMO public code (here the residual adds the naive bracket, the CPU recipe)",
        "full",
        "no_residual",
    ),
    Claim(
        "drtmo",
        "Skips and residual together beat neither",
        "DrTMO public code",
        "full",
        "no_skips_no_residual",
    ),
    Claim(
        "drtmo",
        "A 3D decoder beats a 2D decoder",
        "DrTMO (3D deconvolutions relate neighbouring exposures)",
        "full",
        "decoder_2d",
    ),
    Claim(
        "drtmo",
        "Training on 5 CRFs generalises to other cameras better than on 1",
        "DrTMO (5 representative CRFs)",
        "full",
        "crfs_1",
    ),
    Claim(
        "drtmo",
        "10 CRFs bring no gain over 5",
        "DrTMO's choice of 5",
        "crfs_10",
        "full",
        claim="no_gain",
    ),
    Claim(
        "drtmo",
        "Averaging the L1 over valid slots helps the far exposures (|step| >= 6)",
        "DrTMO eq. 3/4 (the public code's 'all' denominator down-weights them)",
        "l1_valid",
        "full",
        metric="psnr_far",
    ),
    Claim(
        "drtmo",
        "The halved width loses quality",
        "DrTMO (the paper's widths against half of them)",
        "full",
        "width_half",
    ),
    Claim(
        "drtmo",
        "Exposures further from the input are harder (step 1 beats step 8)",
        "DrTMO (why the merge keeps only a monotone sub-stack)",
        "full@psnr_step1",
        "full@psnr_step8",
        paired=False,
    ),
    Claim(
        "drtmo",
        "The network beats naive re-exposure of the input",
        "DrTMO (learned brackets vs inverse CRF + gain)",
        "full",
        "baseline:naive",
    ),
    Claim(
        "drtmo",
        "Merged HDR beats the linearised LDR input on PU21-PSNR",
        "single-image HDR evaluation (the linearised input is a strong baseline)",
        "full",
        "baseline:linearised_input",
        metric="pu21",
        kind="hdr",
    ),
    Claim(
        "drtmo",
        "Skips improve the merged HDR (PU21-PSNR)",
        "DrTMO architecture",
        "full",
        "no_skips",
        metric="pu21",
        kind="hdr",
    ),
    Claim(
        "drtmo",
        "The 3D decoder improves the merged HDR (PU21-PSNR)",
        "DrTMO",
        "full",
        "decoder_2d",
        metric="pu21",
        kind="hdr",
    ),
    Claim(
        "cfnet",
        "Later feedback steps are better (I_T beats I_1)",
        "CF-Net feedback refinement",
        "full@psnr_step3",
        "full@psnr_step1",
    ),
    Claim("cfnet", "T = 2 beats T = 1", "CF-Net study of T", "T2", "T1"),
    Claim("cfnet", "T = 3 beats T = 2", "CF-Net study of T (T = 3 chosen)", "full", "T2"),
    Claim(
        "cfnet",
        "T = 4 brings no gain over T = 3",
        "CF-Net's choice of T = 3",
        "T4",
        "full",
        claim="no_gain",
    ),
    Claim(
        "cfnet",
        "Coupling the two branches helps",
        "CF-Net (its central claim)",
        "full",
        "uncoupled",
    ),
    Claim("cfnet", "Coupling helps on SSIM", "CF-Net", "full", "uncoupled", metric="ssim", unit=""),
    Claim(
        "cfnet",
        "Separate step weights beat shared ones",
        "CF-Net (separate CFB weights per step)",
        "full",
        "shared_weights",
    ),
    Claim(
        "cfnet", "The SRB loss terms help the fused output", "CF-Net eq. 19", "full", "no_srb_loss"
    ),
    Claim(
        "cfnet",
        "x2 scores higher than x4",
        "CF-Net (x4 is the harder task)",
        "full",
        "x4",
        paired=False,
    ),
    Claim(
        "cfnet",
        "CF-Net beats Mertens fusion + bicubic upscaling",
        "CF-Net comparisons",
        "full",
        "baseline:Mertens + bicubic",
    ),
)


def hdr_row(rows: Iterable[str], *, ours: bool) -> str | None:
    """The merge row (:data:`hdr_jax.eval.stage1.MERGE_ROWS`) the ablations compare networks by
    (robust, sRGB inverse CRF: it uses the whole generated stack, where the pipeline's anchored
    merge mostly keeps the input), or that of the linearised input (inverse sRGB)."""
    for r in rows:
        if ours and r.startswith("ours") and "robust" in r and "sRGB" in r:
            return r
        if not ours and r.startswith("linearised") and "sRGB" in r:
            return r
    return None


def pooled(per_examples: Sequence[Mapping[str, Any]], metric: str) -> np.ndarray | None:
    """``metric`` of several runs' per-example records, concatenated (None if one lacks it).

    'psnr_far' is the mean PSNR over exposure steps 6..8 of an example (those it has)."""
    out = []
    for pe in per_examples:
        if metric == "psnr_far":
            steps = [
                np.asarray(pe[f"psnr_step{k}"], np.float64)
                for k in (6, 7, 8)
                if f"psnr_step{k}" in pe
            ]
            if not steps:
                return None
            stacked = np.stack(steps)
            ok = ~np.isnan(stacked)
            total = np.where(ok, stacked, 0.0).sum(0)
            out.append(np.where(ok.any(0), total / np.maximum(ok.sum(0), 1), np.nan))
        elif metric in pe:
            out.append(np.asarray(pe[metric], np.float64))
        else:
            return None
    return np.concatenate(out) if out else None


def _values(
    suite_result: Mapping[str, Any], spec: str, metric: str, kind: str
) -> np.ndarray | None:
    """Per-example values a claim compares (None when the run is missing)."""
    if "@" in spec:
        spec, metric = spec.split("@")
    if kind == "hdr":
        if spec.startswith("baseline:"):
            # The linearised input does not depend on the variant: take it from any pair.
            for h in suite_result.get("hdr", {}).values():
                row = hdr_row(h["per_example"], ours=False)
                if row:
                    return np.asarray(h["per_example"][row][metric], np.float64)
            return None
        h = suite_result.get("hdr", {}).get(spec)
        if not h:
            return None
        row = hdr_row(h["per_example"], ours=True)
        return np.asarray(h["per_example"][row][metric], np.float64) if row else None
    if spec.startswith("baseline:"):
        base = suite_result.get("baselines", {}).get(spec.split(":", 1)[1])
        if base is None:
            return None
        parts = (
            [base]
            if "psnr" in base or "ssim" in base
            else [base[d] for d in grid.DIRECTIONS if d in base]
        )
        return pooled(parts, metric)
    runs = suite_result.get("runs", {})
    names = grid.run_names(suite_result["suite"], spec)
    if not all(n in runs for n in names):
        return None
    return pooled([runs[n]["per_example"] for n in names], metric)


def findings(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every claim of :data:`CLAIMS` checked against the per-example numbers of ``results``."""
    out = []
    for c in CLAIMS:
        sr = results.get("suites", {}).get(c.suite)
        if sr is None:
            continue
        a_spec = c.a
        if c.suite == "cfnet" and c.a == "full@psnr_step3":
            # I_T of the full model: its T is in its config.
            t = sr.get("runs", {}).get("full", {}).get("num_steps", 3)
            a_spec = f"full@psnr_step{t}"
        a = _values(sr, a_spec, c.metric, c.kind)
        b = _values(sr, c.b, c.metric, c.kind)
        rec = {
            "suite": c.suite,
            "claim": c.text,
            "source": c.source,
            "metric": c.metric,
            "a": a_spec,
            "b": c.b,
            "unit": c.unit,
        }
        if a is None or b is None:
            rec.update(
                verdict="not run", delta=float("nan"), two_se=float("nan"), n=0, paired=c.paired
            )
        else:
            paired = c.paired and a.shape == b.shape
            rec.update(stats.compare(a, b, paired=paired, claim=c.claim))
        out.append(rec)
    return out
