"""The whole two-stage system on held-out scenes.

    python -m experiments.eval_reconstruct [--weights DIR] [--hdr_dir DIR] \
        [--out docs/results/reconstruct] [--size 256] [--limit N] [--overwrite]

Scenes: the held-out split both stages were trained with (``hdr_brackets.split_scenes`` on the
file stems of ``--hdr_dir``; 8 of the 26 bundled panoramas), three fixed perspective views each
(:data:`hdr_jax.eval.system.HELDOUT_VIEWS`). Per view the linear radiance is rendered at
``size * scale`` (HR) and box-averaged to ``size`` (LR). Input: the LR radiance through sRGB,
8-bit, exposed so that 5% of the pixels clip; a second variant adds a JPEG (quality 90) round trip.

Tables: PU21-PSNR of the HDR (ours = ``pipeline.reconstruct``; the linearised input; the public
code's Debevec merge of our stack), overall and on the pixels clipped in the input; and for the
fused x``scale`` image, PSNR/SSIM (RGB) against the stage-2 label definition
(``synthetic_pairs.fuse_bracket`` of the true HR radiance) and MEF-SSIM against the true HR
under/over pair at the exposures the pipeline picked. Protocols in :mod:`hdr_jax.eval.system`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags, logging

from hdr_jax import bundle, pipeline
from hdr_jax.eval import protocol, report, stage2, stats, system

_WEIGHTS = flags.DEFINE_string("weights", None, "Weights directory (default: bundled weights).")
_HDR_DIR = flags.DEFINE_string("hdr_dir", "../shared/data/hdri", "Folder of HDR panoramas.")
_OUT = flags.DEFINE_string("out", "docs/results/reconstruct", "Output folder.")
_SIZE = flags.DEFINE_integer("size", 256, "Side of the (square) LR input view, pixels.")
_SCALE = flags.DEFINE_integer("scale", 2, "Stage-2 super-resolution factor.")
_JPEG = flags.DEFINE_integer("jpeg_quality", 90, "Quality of the JPEG variant (0: none).")
_LIMIT = flags.DEFINE_integer("limit", 0, "Evaluate only the first N views (0: all).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing result files.")

TITLE = "Two-stage system on the held-out scenes"
_HDR_METRICS = ("pu21", "pu21_clipped")
_FUSED_METRICS = (*stage2.METRICS, "photo_region_saturation", "photo_saturation")


def summarise(per_view: list[dict], variants: list[str]) -> dict:
    """Means over views of the per-view scores, per input variant."""
    avg = stats.Collector()
    for r in per_view:
        for table, rows in (("hdr", r["hdr"]), ("fused", r["fused"])):
            for name, scores in rows.items():
                for metric, v in scores.items():
                    avg.add((r["variant"], table, name, metric), v)
        for k, v in r["info"]["timings"].items():
            avg.add((r["variant"], "timing", k), v)
        avg.add((r["variant"], "clipped_fraction"), r["info"]["clipped_fraction"])
        avg.add((r["variant"], "kept"), r["info"]["kept"][1] - r["info"]["kept"][0] + 1)
    out = {}
    for var in variants:
        out[var] = {
            "hdr": {
                name: {m: avg.mean((var, "hdr", name, m)) for m in _HDR_METRICS}
                | {"n": avg.count((var, "hdr", name, "pu21"))}
                for name in system.HDR_ROWS
            },
            "fused": {
                name: {m: avg.mean((var, "fused", name, m)) for m in _FUSED_METRICS}
                | {"n": avg.count((var, "fused", name, "psnr"))}
                for name in system.FUSED_ROWS
            },
            "mean_clipped_fraction": avg.mean((var, "clipped_fraction")),
            "mean_images_kept": avg.mean((var, "kept")),
            # Medians: the first view also pays for compiling the networks.
            "median_timings_s": {
                k[2]: float(np.median(avg.values(k)))
                for k in avg.names()
                if k[0] == var and k[1] == "timing"
            },
        }
    return out


def to_markdown(res: dict) -> str:
    p = res["protocol"]
    variants = p["variants"]
    out = [
        f"## {res['title']}",
        "",
        f"{p['views']} views ({p['size']}x{p['size']} input, x{p['scale']} output) of "
        f"{len(p['scenes'])} held-out scenes ({', '.join(p['scenes'])}). Input: sRGB 8-bit, "
        f"exposed so that 5% of the pixels clip (measured: "
        + ", ".join(
            f"{v} {100 * res['summary'][v]['mean_clipped_fraction']:.2f}%" for v in variants
        )
        + "). Weights: "
        + ", ".join(
            k if v.get("steps") is None else f"{k} ({v['steps']} steps)"
            for k, v in res.get("weights", {}).items()
        )
        + ".",
        "",
        "### HDR: PU21-PSNR (dB)",
        "",
        (
            f"Protocol: {p['pu21']}. 'clipped': pixels clipped in the 8-bit rendering "
            "(before any JPEG step)."
        ),
        "",
    ]
    header = ["HDR"] + [f"{v}: {m}" for v in variants for m in ("PU21-PSNR", "clipped")]
    rows = [
        [name] + [res["summary"][v]["hdr"][name][m] for v in variants for m in _HDR_METRICS]
        for name in system.HDR_ROWS
    ]
    out.append(report.markdown_table(header, rows))
    out += [
        f"### Fused x{p['scale']} image",
        "",
        f"PSNR (dB) / SSIM / CIEDE2000 on RGB against {p['label']}; MEF-SSIM and MEF-SSIMc "
        f"against {p['mef_pair']}; mean HSV saturation of the bright pixels (max channel > 0.6) "
        "of the image and of the label, and over the pixels where the input photo is bright and "
        "unclipped: of the image ('sat. where photo bright') and of the photo itself.",
        "",
    ]
    photo_cols = (("photo_region_saturation", "sat. where photo bright"),
                  ("photo_saturation", "photo's sat. there"))
    header = ["fused image"] + [
        f"{v}: {m}" for v in variants for m in (*stage2.COLUMNS, *(c for _, c in photo_cols))
    ]
    rows = []
    for name in system.FUSED_ROWS:
        row = [name]
        for v in variants:
            scores = res["summary"][v]["fused"][name]
            row += stage2.format_row(scores)
            row += [f"{scores[k]:.3f}" if k in scores else "-" for k, _ in photo_cols]
        rows.append(row)
    out.append(report.markdown_table(header, rows))
    t = res["summary"][variants[0]]["median_timings_s"]
    out.append(
        "\nMonotone selection kept "
        + ", ".join(f"{v} {res['summary'][v]['mean_images_kept']:.1f}" for v in variants)
        + " of 17 images on average. Median time per view (PNG input): "
        + ", ".join(f"{k} {v:.2f} s" for k, v in t.items())
        + (f". Total runtime: {res['runtime_s']:.0f} s." if "runtime_s" in res else ".")
        + "\n"
    )
    return "\n".join(out)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    out_dir = Path(_OUT.value)
    if not _OVERWRITE.value and (existing := report.existing_results(out_dir)):
        sys.exit(f"{existing[0]}: exists (use --overwrite to replace it)")
    t_start = time.perf_counter()
    pipe = pipeline.Pipeline.load(_WEIGHTS.value)
    pipe.cfnet(_SCALE.value)  # fail on missing stage-2 weights before any work
    variants = {"PNG": None}
    if _JPEG.value:
        variants[f"JPEG q{_JPEG.value}"] = _JPEG.value
    per_view = []
    views = system.heldout_views(_HDR_DIR.value, size=_SIZE.value, scale=_SCALE.value)
    for i, (scene, v, lr, hr) in enumerate(views):
        if _LIMIT.value and i >= _LIMIT.value:
            break
        for name, quality in variants.items():
            r = system.evaluate_view(pipe, lr, hr, scale=_SCALE.value, jpeg_quality=quality)
            per_view.append(
                {
                    "scene": scene,
                    "view": None if v is None else list(v),
                    "variant": name,
                    "hdr": r.hdr_scores,
                    "fused": r.fused_scores,
                    "info": r.info,
                }
            )
        logging.info("%s view %s done, %.0f s", scene, v, time.perf_counter() - t_start)
    if not per_view:
        sys.exit(f"{_HDR_DIR.value}: no held-out view to evaluate")
    res = {
        "title": TITLE,
        "protocol": {
            "scenes": sorted({r["scene"] for r in per_view}),
            "views": len(per_view) // len(variants),
            "view_angles": [list(v) for v in system.HELDOUT_VIEWS],
            "size": _SIZE.value,
            "scale": _SCALE.value,
            "variants": list(variants),
            "clip_fraction": protocol.CLIP_FRACTION,
            "pu21": "gain fitted on pixels not clipped in the input (any channel >= 254/255), "
            "then 99.9th-percentile reference luminance -> 1000 cd/m^2, PU21 per RGB channel, "
            "peak 256",
            "label": "the stage-2 ground truth of the synthetic pairs: Mertens fusion of the "
            "true HR radiance rendered at EV -6..+3 about key 0.18 (synthetic_pairs.fuse_bracket)",
            "mef_pair": "the true HR under/over pair (sRGB, 8-bit) at the exposure steps the "
            "pipeline picked for stage 2",
        },
        "summary": summarise(per_view, list(variants)),
        "per_view": per_view,
    }
    manifest = bundle.read_manifest(pipe.directory)
    res["weights"] = {
        k: {f: manifest[k].get(f) for f in ("steps", "sha256")}
        for k in (
            "drtmo_up", "drtmo_down", "highlight", "cliplevel", "level", f"cfnet_x{_SCALE.value}"
        )
        if k in manifest
    }
    res["runtime_s"] = time.perf_counter() - t_start
    report.publish(out_dir, res, to_markdown(res), overwrite=_OVERWRITE.value)


if __name__ == "__main__":
    app.run(main)
