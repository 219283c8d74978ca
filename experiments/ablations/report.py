"""The ablation report: Markdown tables of every group, the per-step tables, the claims'
verdicts and plots, all computed from the per-run results (so it rebuilds without training).

Cells are 'mean ± SE' over the held-out examples (:func:`hdr_jax.eval.stats.summarise`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from experiments.ablations import claims, grid
from hdr_jax import io as hdr_io
from hdr_jax.eval import report as eval_report
from hdr_jax.eval import stats

_fmt = eval_report.fmt
_table = eval_report.markdown_table


def _pm(s: Mapping[str, float] | None, digits: int = 2) -> str:
    """'mean ± se' of a summary."""
    if not s or not math.isfinite(s.get("mean", float("nan"))):
        return "–"
    se = s.get("se", float("nan"))
    tail = f" ± {se:.{digits}f}" if math.isfinite(se) else ""
    return f"{s['mean']:.{digits}f}{tail}"


def _metric_summary(per_examples: Sequence[Mapping[str, Any]], key: str) -> dict[str, float] | None:
    v = claims.pooled(per_examples, key)
    return None if v is None else stats.summarise(v)


def _drtmo_row_metrics(sr: Mapping[str, Any], variant: str) -> dict[str, Any]:
    runs = sr.get("runs", {})
    m: dict[str, Any] = {}
    for d in grid.DIRECTIONS:
        r = runs.get(f"{variant}/{d}")
        m[d] = _metric_summary([r["per_example"]], "psnr") if r else None
        m[f"{d}_wall"] = r["wall_s"] if r else float("nan")
        m[f"{d}_params"] = r["num_params"] if r else None
    h = sr.get("hdr", {}).get(variant)
    row = claims.hdr_row(h["per_example"], ours=True) if h else None
    m["pu21"] = stats.summarise(h["per_example"][row]["pu21"]) if row else None
    m["pu21_clipped"] = stats.summarise(h["per_example"][row]["pu21_clipped"]) if row else None
    m["kept"] = stats.summarise(h["kept"]) if h and "kept" in h else None
    return m


def _cfnet_row_metrics(sr: Mapping[str, Any], variant: str) -> dict[str, Any]:
    r = sr.get("runs", {}).get(variant)
    if not r:
        return {}
    pe = r["per_example"]
    m = {k: stats.summarise(pe[k]) for k in pe}
    m["wall"] = r["wall_s"]
    m["params"] = r["num_params"]
    m["num_steps"] = r.get("num_steps")
    return m


def drtmo_tables(sr: Mapping[str, Any]) -> str:
    out = []
    for g in grid.GROUPS["drtmo"]:
        rows = []
        for name, label in g.rows.items():
            m = _drtmo_row_metrics(sr, name)
            rows.append(
                [
                    label,
                    _fmt(m["up_params"]),
                    _pm(m["up"]),
                    _pm(m["down"]),
                    _pm(m["pu21"]),
                    _pm(m["pu21_clipped"]),
                    _fmt((m["kept"] or {}).get("mean"), 1),
                    _fmt(m["up_wall"] + m["down_wall"], 0),
                ]
            )
        out.append(
            f"#### {g.title}\n\n"
            + _table(
                [
                    "variant",
                    "params (each net)",
                    "PSNR up (dB)",
                    "PSNR down (dB)",
                    "PU21-PSNR merged HDR",
                    "PU21-PSNR clipped px",
                    "images merged (of 17)",
                    "train wall s (up + down)",
                ],
                rows,
            )
        )
    return "\n".join(out)


def drtmo_step_table(sr: Mapping[str, Any], num_exposures: int = 8) -> str:
    """PSNR per exposure step, down (-N..-1) then up (+1..+N), per variant and naive baseline."""
    header = (
        ["variant"]
        + [f"{-k:+d}" for k in range(num_exposures, 0, -1)]
        + [f"{k:+d}" for k in range(1, num_exposures + 1)]
    )
    rows = []
    entries = [
        (v.name, sr.get("runs", {}).get(f"{v.name}/down"), sr.get("runs", {}).get(f"{v.name}/up"))
        for v in grid.DRTMO_VARIANTS
    ]
    base = sr.get("baselines", {}).get("naive")
    if base:
        entries.append(
            (
                "naive re-exposure (sRGB)",
                {"per_example": base.get("down", {})},
                {"per_example": base.get("up", {})},
            )
        )
    for name, down, up in entries:
        if not (down or up):
            continue
        cells = [name]
        for run, ks in ((down, range(num_exposures, 0, -1)), (up, range(1, num_exposures + 1))):
            for k in ks:
                pe = run["per_example"] if run else {}
                v = pe.get(f"psnr_step{k}")
                cells.append(_fmt(stats.summarise(v)["mean"]) if v is not None else "–")
        rows.append(cells)
    return _table(header, rows)


#: The stage-2 scores of a run or a baseline (``hdr_jax.eval.stage2.fused_scores``): key, column,
#: digits. Runs made before a metric existed show '–' there.
_CFNET_SCORES = (
    ("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 4), ("mef_ssim", "MEF-SSIM", 4),
    ("ciede2000", "CIEDE2000", 2), ("mef_ssim_c", "MEF-SSIMc", 4), ("saturation", "bright sat.", 3),
)


def cfnet_tables(sr: Mapping[str, Any]) -> str:
    max_t = max([r.get("num_steps", 0) or 0 for r in sr.get("runs", {}).values()] + [1])
    scores = [h for _, h, _ in _CFNET_SCORES]
    header = (
        ["variant", "params", *scores]
        + [f"PSNR I_{t}" for t in range(1, max_t + 1)]
        + ["train wall s"]
    )
    out = []
    for g in grid.GROUPS["cfnet"]:
        rows = []
        for name, label in g.rows.items():
            m = _cfnet_row_metrics(sr, name)
            if not m:
                rows.append([label] + ["–"] * (len(header) - 1))
                continue
            rows.append(
                [label, _fmt(m["params"])]
                + [_pm(m.get(k), d) for k, _, d in _CFNET_SCORES]
                + [
                    _fmt(m[f"psnr_step{t}"]["mean"]) if f"psnr_step{t}" in m else "–"
                    for t in range(1, max_t + 1)
                ]
                + [_fmt(m["wall"], 0)]
            )
        out.append(f"#### {g.title}\n\n" + _table(header, rows))
    base = sr.get("baselines", {})
    if base:
        rows = [
            [name, "–"]
            + [_pm(stats.summarise(d[k]), dg) if k in d else "–" for k, _, dg in _CFNET_SCORES]
            for name, d in base.items()
            if isinstance(d, Mapping) and "psnr" in d
        ]
        out.append(
            "#### Baselines on the same x2 evaluation crops\n\n"
            + _table(header[: 2 + len(_CFNET_SCORES)], rows)
        )
    return "\n".join(out)


def findings_markdown(found: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for f in found:
        unit = f" {f['unit']}" if f.get("unit") else ""
        digits = 2 if f.get("unit") else 4
        if f["verdict"] == "not run":
            ev = "–"
        else:
            ev = (
                f"Δ = {f['delta']:+.{digits}f}{unit} (2 SE {f['two_se']:.{digits}f}), "
                f"n = {f['n']}{' paired' if f['paired'] else ', unpaired'}"
            )
        names = {"pu21": "PU21-PSNR", "psnr_far": "PSNR steps ±6..8"}
        metric = names.get(f["metric"], f["metric"])
        rows.append(
            [
                f["suite"],
                f["claim"],
                f["source"],
                metric,
                f"{f['a']} vs {f['b']}",
                ev,
                f"**{f['verdict']}**",
            ]
        )
    return _table(["stage", "claim", "from", "metric", "compared", "evidence", "verdict"], rows)


# -- plots --------------------------------------------------------------------------------------


def _figure(nrows: int, ncols: int, size: tuple[float, float]):
    # Figure + Agg canvas directly: no pyplot state, no global backend switch.
    # A fixed layout: tight/constrained layout draws every figure twice (slow on 2 cores).
    fig = Figure(figsize=size)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.22, top=0.85, wspace=0.3)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _label(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with hdr_io.atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def plot_curves(results: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Validation PSNR against training step, one line per run (from each metrics.jsonl)."""
    paths = []
    for suite, sr in results.get("suites", {}).items():
        runs = sr.get("runs", {})
        if not runs:
            continue
        panels = list(grid.DIRECTIONS) if suite == "drtmo" else [None]
        fig, axes = _figure(1, len(panels), (6 * len(panels), 4))
        for ax, d in zip(axes[0], panels):
            for name, r in runs.items():
                if d is not None and not name.endswith(f"/{d}"):
                    continue
                curve = r.get("curve") or []
                if curve:
                    s, v = zip(*curve)
                    ax.plot(s, v, marker="o", ms=3, label=name.split("/")[0])
            _label(ax, "training step", "PSNR (dB)", f"{suite} {d or ''} validation".strip())
        paths.append(_save(fig, out_dir / f"{suite}_curves.png"))
    return paths


def plot_per_step(results: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """PSNR per exposure step (DrTMO) and per feedback step (CF-Net)."""
    paths = []
    sr = results.get("suites", {}).get("drtmo")
    if sr and sr.get("runs"):
        fig, axes = _figure(1, 1, (8, 4.5))
        ax = axes[0, 0]
        entries = {
            v.name: {
                d: sr["runs"].get(f"{v.name}/{d}", {}).get("per_example") for d in grid.DIRECTIONS
            }
            for v in grid.DRTMO_VARIANTS
        }
        if sr.get("baselines", {}).get("naive"):
            entries["naive re-exposure"] = sr["baselines"]["naive"]
        for name, by_dir in entries.items():
            xs, ys = [], []
            for d, sign in (("down", -1), ("up", 1)):
                pe = by_dir.get(d) or {}
                for k in range(1, 9):
                    if f"psnr_step{k}" in pe:
                        xs.append(sign * k)
                        ys.append(stats.summarise(pe[f"psnr_step{k}"])["mean"])
            if xs:
                order = np.argsort(xs)
                ax.plot(
                    np.asarray(xs)[order],
                    np.asarray(ys)[order],
                    marker="o",
                    ms=3,
                    label=name,
                    ls="--" if name.startswith("naive") else "-",
                )
        _label(
            ax,
            "exposure step (half stops from the input)",
            "PSNR (dB)",
            "DrTMO: PSNR of each predicted exposure",
        )
        paths.append(_save(fig, out_dir / "drtmo_per_step.png"))
    sr = results.get("suites", {}).get("cfnet")
    if sr and sr.get("runs"):
        fig, axes = _figure(1, 1, (6, 4))
        ax = axes[0, 0]
        for name, r in sr["runs"].items():
            pe = r["per_example"]
            ts = sorted(int(k[len("psnr_step") :]) for k in pe if k.startswith("psnr_step"))
            if ts:
                means = [stats.summarise(pe[f"psnr_step{t}"])["mean"] for t in ts]
                ax.plot(ts, means, marker="o", label=name)
        _label(ax, "feedback step t", "PSNR of I_t (dB)", "CF-Net: quality of each feedback step")
        paths.append(_save(fig, out_dir / "cfnet_per_step.png"))
    return paths


def plot_bars(results: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """One bar chart per table: one panel per metric, bars = rows, error bars = 1 SE."""
    paths = []
    for suite, sr in results.get("suites", {}).items():
        if not sr.get("runs"):
            continue
        for g in grid.GROUPS[suite]:
            if suite == "drtmo":
                ms = {label: _drtmo_row_metrics(sr, name) for name, label in g.rows.items()}
                panels = [
                    ("PSNR up (dB)", "up"),
                    ("PSNR down (dB)", "down"),
                    ("PU21-PSNR merged HDR", "pu21"),
                ]
            else:
                ms = {label: _cfnet_row_metrics(sr, name) for name, label in g.rows.items()}
                panels = [("PSNR (dB)", "psnr"), ("SSIM", "ssim"), ("MEF-SSIM", "mef_ssim")]
            fig, axes = _figure(1, len(panels), (4.2 * len(panels), 3.6))
            for ax, (title, key) in zip(axes[0], panels):
                labels = list(ms)
                vals = [(ms[lab].get(key) or {}).get("mean", np.nan) for lab in labels]
                errs = [(ms[lab].get(key) or {}).get("se", np.nan) for lab in labels]
                x = np.arange(len(labels))
                ax.bar(
                    x,
                    np.nan_to_num(vals),
                    yerr=np.nan_to_num(errs),
                    capsize=3,
                    color=[f"C{i}" for i in range(len(labels))],
                )
                finite = [v for v in vals if math.isfinite(v)]
                if finite:  # zoom on the differences: they are small next to the values
                    lo, hi = min(finite), max(finite)
                    pad = max(0.15 * (hi - lo), 0.02 * abs(hi), 1e-3)
                    ax.set_ylim(lo - 3 * pad, hi + 2 * pad)
                for xi, v in zip(x, vals):
                    if not math.isfinite(v):
                        ax.text(
                            xi,
                            0.5,
                            "not run",
                            transform=ax.get_xaxis_transform(),
                            ha="center",
                            va="center",
                            rotation=90,
                            fontsize=7,
                            color="0.4",
                        )
                ax.set_xticks(x)
                ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=7)
                ax.set_title(title, fontsize=9)
                ax.grid(axis="y", alpha=0.3)
            fig.suptitle(f"{suite}: {g.title}", fontsize=10)
            paths.append(_save(fig, out_dir / f"{suite}_{g.id}.png"))
    return paths


# -- the report ---------------------------------------------------------------------------------


_DRTMO_NOTE = (
    "Mean ± SE over the held-out examples. PSNR up/down: mean over the valid predicted exposures "
    "of an example. PU21-PSNR: the 17-image stack (down + input + up) of the variant's two "
    "networks, robust merge with the sRGB inverse CRF, protocol of `hdr_jax/eval/protocol.py`."
)
_CFNET_NOTE = (
    "Mean ± SE over the held-out crops. PSNR/SSIM (RGB) and CIEDE2000 against the fused label, "
    "MEF-SSIM and its colour variant MEF-SSIMc against the HR under/over pair (need HR crops >= "
    "41 px), bright sat.: mean HSV saturation where the largest channel is above 0.6. PSNR I_t: "
    "0.5 (I_over_t + I_under_t) of feedback step t against the label."
)


def _suite_intro(title: str, sr: Mapping[str, Any], note: str) -> list[str]:
    """A suite's heading, its settings and the note on how its cells are computed."""
    return [f"## {title}", "", *sr.get("settings", {}).get("description", []), "", note, ""]


def report_markdown(results: Mapping[str, Any], plots: Sequence[Path], root: Path) -> str:
    md = ["# Ablations", ""]
    md += [
        (
            "Generated by `python -m experiments.ablations` from the runs under this directory; "
            "every number below is computed from them (rerun the command to refresh)."
        ),
        "",
    ]
    md += ["## Reproduce", ""]
    for c in results.get("commands", []):
        wall = f", {c['wall_s'] / 60:.1f} min" if c.get("wall_s") else ""
        md.append(f"- `{c['command']}`  (started {c['time']}{wall})")
    md.append("")
    env = results.get("environment", {})
    md += ["## Setting", ""]
    md.append(
        f"- Seeds: {results.get('seed')} for every run (parameter init, data order, "
        "dropout); evaluation examples and input exposures are fixed, so every variant is "
        "scored on the same examples."
    )
    quick = "--quick (smoke test: numbers are meaningless)"
    md.append(f"- Mode: {quick if results.get('quick') else 'default grid'}.")
    for k, v in env.items():
        md.append(f"- {k}: {v}")
    data = results.get("data", {})
    if data:
        md.append(
            f"- HDR data: `{data.get('hdr_dir')}`, {data.get('num_scenes')} scenes; "
            f"held out (both stages): {', '.join(data.get('heldout', [])) or '–'}."
        )
    for suite, sr in results.get("suites", {}).items():
        for line in sr.get("settings", {}).get("notes", []):
            md.append(f"- {suite}: {line}")
    md.append("")
    timing = results.get("timing", {})
    md += ["## Wall time", ""]
    rows = []
    for suite, sr in results.get("suites", {}).items():
        for name, r in sr.get("runs", {}).items():
            rows.append(
                [
                    f"{suite}/{name}",
                    r.get("steps"),
                    _fmt(r.get("wall_s"), 1),
                    "trained now" if r.get("trained_now") else "cached",
                ]
            )
    md.append(_table(["run", "steps", "train wall s (all sessions)", "this invocation"], rows))
    md.append(
        f"Total training wall time (sum over runs): {_fmt(timing.get('runs_total_s'), 0)} s; "
        f"whole command (the last one that trained): {_fmt(timing.get('invocation_s'), 0)} s "
        f"(including dataset builds, evaluation and the report). A run's train wall time "
        f"includes its XLA compilations and in-training evaluations.\n"
    )

    sr = results.get("suites", {}).get("drtmo")
    if sr:
        md += _suite_intro("Stage 1: DrTMO", sr, _DRTMO_NOTE)
        md.append(drtmo_tables(sr))
        md += ["#### PSNR per exposure step (dB)", "", drtmo_step_table(sr)]
        hdr = sr.get("hdr", {})
        if hdr:
            any_h = next(iter(hdr.values()))
            rows = []
            for row in any_h["per_example"]:
                if row.startswith("linearised"):
                    rows.append(
                        [
                            row,
                            _pm(stats.summarise(any_h["per_example"][row]["pu21"])),
                            _pm(stats.summarise(any_h["per_example"][row]["pu21_clipped"])),
                        ]
                    )
            md += [
                "#### HDR baselines (same examples)",
                "",
                _table(["method", "PU21-PSNR", "PU21-PSNR clipped px"], rows),
            ]
    sr = results.get("suites", {}).get("cfnet")
    if sr:
        md += _suite_intro("Stage 2: CF-Net", sr, _CFNET_NOTE)
        md.append(cfnet_tables(sr))
    found = results.get("findings", [])
    if found:
        md += [
            "## What this confirms or contradicts at this scale",
            "",
            (
                "Computed from the per-example numbers above (rule: confirmed / contradicted when "
                "the paired mean difference exceeds 2 standard errors with the claimed / the "
                "opposite sign). One training seed per run and short trainings: a verdict says "
                "what these runs show, not what the method can do at full scale."
            ),
            "",
        ]
        counts = {}
        for f in found:
            counts[f["verdict"].split(" (")[0]] = counts.get(f["verdict"].split(" (")[0], 0) + 1
        md.append("Summary: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ".\n")
        md.append(findings_markdown(found))
    discussion = root / "discussion.md"
    if discussion.exists():
        md += [discussion.read_text().rstrip(), ""]
    if plots:
        md += ["## Plots", ""]
        for p in plots:
            rel = os.path.relpath(p, root)
            md.append(f"![{p.stem}]({rel})")
        md.append("")
    return "\n".join(md)


def write_report(
    results: dict[str, Any], root: str | os.PathLike, *, plots: bool = True
) -> dict[str, Path]:
    """Writes DIR/ablations.md, DIR/ablations.json and DIR/plots/*.png (``plots=False`` keeps
    the PNGs already there); returns their paths."""
    root = Path(root)
    results["findings"] = claims.findings(results)
    plot_dir = root / "plots"
    if plots:
        pngs = (
            plot_curves(results, plot_dir)
            + plot_per_step(results, plot_dir)
            + plot_bars(results, plot_dir)
        )
    else:
        pngs = sorted(plot_dir.glob("*.png"))
    eval_report.write_json(root / "ablations.json", results)
    paths = report_paths(root)
    with hdr_io.atomic_output(paths["markdown"], overwrite=True) as tmp:
        Path(tmp).write_text(report_markdown(results, pngs, root))
    return paths


def report_paths(root: str | os.PathLike) -> dict[str, Path]:
    """Where :func:`write_report` puts the report under ``root``."""
    root = Path(root)
    return {"markdown": root / "ablations.md", "json": root / "ablations.json",
            "plots": root / "plots"}
