"""Stage-1 (DrTMO) evaluation on the held-out scenes of the training data.

    python -m experiments.eval_drtmo [--weights DIR] [--hdr_dir DIR] [--data_dir DIR] \
        [--out docs/results/drtmo] [--limit N] [--input_indices all|2,3,4,5,6] [--overwrite]

Data: the 'validation' split of ``hdr_brackets`` config 'small' (128x128 views, parametric
CRFs), the config the bundled networks were trained on (experiments/configs/drtmo.py); built in
``--data_dir`` from ``--hdr_dir`` on first use. Tables:

1. PSNR (RGB, [0, 1], capped at 100 dB) of every predicted exposure against the true one, per
   exposure step (-8..-1 down, +1..+8 up), averaged over (record, input index j) pairs whose
   target lies inside the 9-image bracket; with the naive re-exposure baseline (inverse sRGB,
   x tau^step, sRGB, clip), the same with the true CRF (an oracle), and the DrTMO network of
   each direction alone ('ours' up = re-exposure with the recognised response, when the
   weights have a response classifier).
2. Merge comparison at j = T/2: PU21-PSNR of HDRs merged from our stack (Debevec with linear
   response = public code; our robust merge with the sRGB or the true inverse CRF) and of the
   linearised input, against the true radiance; protocol in :mod:`hdr_jax.eval.protocol`, rows
   in :mod:`hdr_jax.eval.stage1`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags, logging

from hdr_jax import bundle, pipeline
from hdr_jax import io as hdr_io
from hdr_jax.data import hdr_brackets
from hdr_jax.eval import protocol, report, stage1, stats

_WEIGHTS = flags.DEFINE_string("weights", None, "Weights directory (default: bundled weights).")
_HDR_DIR = flags.DEFINE_string("hdr_dir", "../shared/data/hdri", "Folder of HDR panoramas.")
_DATA_DIR = flags.DEFINE_string("data_dir", "workdirs/tfds_eval", "tfds data directory.")
_BUILDER_CONFIG = flags.DEFINE_enum(
    "builder_config",
    "small",
    ["small", "small_emor"],
    "hdr_brackets config: 'small' (parametric CRFs, what the bundled networks trained on) or "
    "'small_emor' (CRFs drawn from the EMoR model, needs --emor_dir).",
)
_EMOR_DIR = flags.DEFINE_string("emor_dir", None, "EMoR data folder (for small_emor).")
_OUT = flags.DEFINE_string("out", "docs/results/drtmo", "Output folder for results.json/.md.")
_LIMIT = flags.DEFINE_integer(
    "limit", 0, "Evaluate N validation records spread evenly over the split (0: all)."
)
_INDICES = flags.DEFINE_string(
    "input_indices", "all", "Input exposure indices j: 'all' (0..T) or a comma list, e.g. 2,3,4."
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing result files.")

TITLE = "Stage 1 (DrTMO) on the held-out scenes"
#: Per-prediction PSNR columns (stage1.evaluate_bracket_record's row order after step, j).
PSNR_COLUMNS = ("ours", "naive_srgb", "naive_true_crf", "network")
_HEADER = ["ours", "naive (sRGB)", "naive (true CRF, oracle)", "DrTMO network alone"]


def _load_validation(
    data_dir: str, hdr_dir: str, config: str = "small", emor_dir: str | None = None
):
    builder = hdr_brackets.HdrBrackets(
        config=config,
        data_dir=os.path.abspath(data_dir),
        file_format="array_record",
        emor_dir=emor_dir,
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.path.abspath(hdr_dir))
    )
    if "validation" not in builder.info.splits:
        raise hdr_io.ImageIOError(f"{hdr_dir}: no held-out scene (validation split is empty)")
    return builder.as_data_source(split="validation")


def _weights_info(directory: Path) -> dict:
    manifest = bundle.read_manifest(directory)
    return {
        name: {k: manifest[name].get(k) for k in ("steps", "sha256", "eval")}
        for name in ("drtmo_up", "drtmo_down", "response")
        if name in manifest
    }


def summarise(records: list[dict], input_indices) -> dict:
    """Aggregates :func:`stage1.evaluate_bracket_record` outputs into the results dict."""
    psnr = stats.Collector()
    by_crf = stats.Collector()
    for r in records:
        for step, _j, *scores in r["psnr"]:
            for name, v in zip(PSNR_COLUMNS, scores, strict=True):
                psnr.add((f"{step:+d}", name), v)
                psnr.add(("all", name), v)
                by_crf.add((r["crf"], name), v)
    crfs = sorted({r["crf"] for r in records})
    per_crf = {
        c: {"n": by_crf.count((c, "ours"))} | {m: by_crf.mean((c, m)) for m in PSNR_COLUMNS}
        for c in crfs
    }
    steps = [f"{s:+d}" for s in list(range(-8, 0)) + list(range(1, 9))]
    per_step = {
        s: {"n": psnr.count((s, "ours"))} | {m: psnr.mean((s, m)) for m in PSNR_COLUMNS}
        for s in steps + ["all"]
        if psnr.count((s, "ours"))
    }
    mrg = stats.Collector()
    for r in records:
        for name, d in r["merge"].items():
            mrg.add((name, "pu21"), d["pu21"])
            mrg.add((name, "pu21_clipped"), d["pu21_clipped"])
    merge_rows = {
        name: {
            "pu21": mrg.mean((name, "pu21")),
            "pu21_clipped": mrg.mean((name, "pu21_clipped")),
            "n": mrg.count((name, "pu21")),
            "n_clipped": mrg.count((name, "pu21_clipped")),
        }
        for name in stage1.MERGE_ROWS
    }
    kept = np.asarray([r["kept"][1] - r["kept"][0] + 1 for r in records])
    return {
        "title": TITLE,
        "protocol": {
            "split": f"hdr_brackets/{_BUILDER_CONFIG.value} validation (held-out scenes)",
            "scenes": sorted({r["scene"] for r in records}),
            "records": len(records),
            "input_indices": input_indices,
            "psnr": "RGB on [0,1], per image, capped at 100 dB, mean over (record, j) pairs",
            "merge_input_index": 4,
            "pu21": "gain fitted on pixels not clipped in the input (any channel >= 254/255), "
            "then 99.9th-percentile reference luminance -> 1000 cd/m^2, PU21 per RGB channel, "
            "peak 256",
        },
        "psnr_per_step": per_step,
        "psnr_per_crf": per_crf,
        "merge": merge_rows,
        "merge_images_kept": {
            "mean": float(kept.mean()),
            "min": int(kept.min()),
            "max": int(kept.max()),
        },
        "mean_clipped_fraction_at_middle_input": float(
            np.mean([r["clipped_fraction"] for r in records])
        ),
    }


def to_markdown(res: dict) -> str:
    p = res["protocol"]
    idx = p["input_indices"]
    idx = "all j = 0..8" if idx == "all" else "j = " + ", ".join(map(str, idx))
    out = [
        f"## {res['title']}",
        "",
        f"Data: {p['split']}; {p['records']} records (view x CRF) of {len(p['scenes'])} scenes "
        f"({', '.join(p['scenes'])}); input exposures {idx}. Weights: "
        + ", ".join(f"{k} ({v.get('steps')} steps)" for k, v in res.get("weights", {}).items())
        + ".",
        "",
        "### Predicted exposures: PSNR (dB) per exposure step",
        "",
        (
            "Step k: the target is tau^k times the input exposure (tau = sqrt 2, half a stop). "
            f"{p['psnr']}. Naive: linearise, multiply by tau^k, re-encode, clip. Ours: up = "
            "the naive re-exposure with the response the classifier recognises "
            "(hdr_jax/models/response.py), down = the DownExposureNet; 'DrTMO network alone': "
            "the UpExposureNet / DownExposureNet output."
        ),
        "",
    ]
    rows = []
    for step, d in res["psnr_per_step"].items():
        label = "mean (all steps)" if step == "all" else step
        rows.append((label, d["n"], *(d.get(m) for m in PSNR_COLUMNS)))
    out.append(report.markdown_table(["step", "n", *_HEADER], rows))
    out += [
        "Mean over all steps, per camera response of the input:",
        "",
        report.markdown_table(
            ["CRF", "n", *_HEADER],
            [
                (c, d["n"], *(d.get(m) for m in PSNR_COLUMNS))
                for c, d in res["psnr_per_crf"].items()
            ],
        ),
    ]
    m = res["merge_images_kept"]
    out += [
        "### Merged HDR from the middle exposure (j = 4): PU21-PSNR (dB)",
        "",
        (
            f"Protocol: {p['pu21']}. 'clipped': pixels clipped in the input "
            f"(mean {100 * res['mean_clipped_fraction_at_middle_input']:.1f}% of the pixels; "
            "records without any are left out of that column). The monotone selection kept "
            f"{m['mean']:.1f} of 17 images on average (min {m['min']}, max {m['max']})."
        ),
        "",
    ]
    rows = [
        (name, d["pu21"], d["pu21_clipped"], d["n"], d["n_clipped"])
        for name, d in res["merge"].items()
    ]
    out.append(
        report.markdown_table(["HDR", "PU21-PSNR", "PU21-PSNR (clipped)", "n", "n clipped"], rows)
    )
    if "runtime_s" in res:
        out.append(f"\nRuntime: {res['runtime_s']:.0f} s.\n")
    return "\n".join(out)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    t_start = time.perf_counter()
    out_dir = Path(_OUT.value)
    if not _OVERWRITE.value and (existing := report.existing_results(out_dir)):
        sys.exit(f"{existing[0]}: exists (use --overwrite to replace it)")
    indices = (
        "all"
        if _INDICES.value == "all"
        else [int(v) for v in _INDICES.value.split(",") if v.strip()]
    )
    pipe = pipeline.Pipeline.load(_WEIGHTS.value)
    source = _load_validation(
        _DATA_DIR.value, _HDR_DIR.value, _BUILDER_CONFIG.value, _EMOR_DIR.value
    )
    keep = protocol.spread_indices(len(source), _LIMIT.value)
    n = len(keep)
    records = []
    for count, i in enumerate(keep):
        rec = source[i]
        r = stage1.evaluate_bracket_record(pipe, rec, None if indices == "all" else indices)
        for key in ("scene", "crf"):
            v = rec[key]
            r[key] = v.decode() if isinstance(v, bytes) else str(v)
        records.append(r)
        if (count + 1) % 20 == 0 or count + 1 == n:
            logging.info("%d/%d records, %.0f s", count + 1, n, time.perf_counter() - t_start)
    res = summarise(records, indices)
    res["weights"] = _weights_info(pipe.directory)
    res["runtime_s"] = time.perf_counter() - t_start
    report.publish(out_dir, res, to_markdown(res), overwrite=_OVERWRITE.value)


if __name__ == "__main__":
    app.run(main)
