"""Stage-1 HDR of camera raw files against 8-bit photos of the same held-out views.

    python -m experiments.eval_raw [--weights DIR] [--hdr_dir DIR] [--size 256] [--limit N] \
        [--out docs/results/raw] [--overwrite]

The views, exposures and scoring of the response protocol's sRGB family
(:func:`responses.heldout_protocol_views`, clip fractions :data:`responses.CLIP_FRACTIONS` cycled
over the views, :func:`protocol.pu21_protocol` on the pixels the protocol's 8-bit photo clips).
Each view is recorded as a camera's sensor records it, a DNG (:func:`testing.write_dng`: the
exposed linear scene clipped at the sensor's white, an RGGB mosaic of 14 bits above a black
level of 512, a camera that sees white as (0.5, 1, 0.7)), read back the way ``hdr-jax`` reads
a raw file (:func:`hdr_io.read_ldr`: LibRaw's demosaicing and white balance, exact sRGB codes in
float). The same decoded data rounded to 8 bits is the photo a user would have without the raw
file: the reference every gain is measured from (both carry the mosaic's loss; the protocol's
own render, which has none, is a row for scale). Rows, scored against the true radiance: the
protocol's 8-bit render linearised with inverse sRGB; the 8-bit photo of the raw data linearised
so, and through the pipeline as a blind user runs it; the raw file's decoded linear data; the
pipeline on the raw file as the CLI runs it (its sRGB response known: ``cli._photo_response``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags, logging

from hdr_jax import io as hdr_io
from hdr_jax import pipeline
from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera import exposure
from hdr_jax.data import testing
from hdr_jax.eval import protocol, report, responses, stats

_WEIGHTS = flags.DEFINE_string("weights", None, "Weights directory (default: bundled weights).")
_HDR_DIR = flags.DEFINE_string("hdr_dir", "../shared/data/hdri", "Folder of HDR panoramas.")
_OUT = flags.DEFINE_string("out", "docs/results/raw", "Output folder.")
_SIZE = flags.DEFINE_integer("size", 256, "Side of the (square) view, pixels.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Evaluate N views spread over the scenes (0: all).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing result files.")

REFERENCE = "8-bit photo of the raw data, linearised (inverse sRGB)"
ROWS = (
    "the protocol's 8-bit render (no mosaic), linearised",
    REFERENCE,
    "8-bit photo of the raw data, ours (blind, default pipeline)",
    "raw file, its decoded linear data",
    "raw file, ours (as hdr-jax runs it: response known)",
)
#: The simulated camera: black level, white level, response to white (AsShotNeutral).
BLACK, WHITE, NEUTRAL = 512, 16383, (0.5, 1.0, 0.7)


def evaluate_view(pipe, radiance: np.ndarray, fraction: float, workdir: Path) -> dict:
    """Scores of the :data:`ROWS` for one view exposed so that ``fraction`` of it clips."""
    srgb = crf_lib.srgb_crf()
    a = protocol.clipping_exposure(radiance, fraction, curve=srgb)
    png = protocol.render_srgb8(radiance, a, srgb)
    clipped = protocol.clipped_mask(png)
    dng = testing.write_dng(workdir / "view.dng", np.asarray(radiance, np.float64) * a,
                            black=BLACK, white=WHITE, neutral=NEUTRAL)
    raw = hdr_io.read_ldr(dng)
    photo8 = exposure.quantize_8bit(raw)
    preds = dict(zip(ROWS, (
        protocol.linearise_srgb(png),
        protocol.linearise_srgb(photo8),
        pipeline.reconstruct(pipe, photo8, scale=None).hdr,
        crf_lib.srgb_decode(raw),
        pipeline.reconstruct(pipe, raw, scale=None, response_curve=srgb).hdr,
    )))
    return {"scores": responses.score_rows(preds, radiance, clipped, a),
            "clipped_fraction": float(clipped.mean()), "exposure": a}


def summarise(records: list[dict]) -> dict:
    """Per row: mean PU21 overall and on the clipped pixels, and the paired gain over
    :data:`REFERENCE` on each (:func:`stats.compare`)."""
    out = {}
    for row in ROWS:
        out[row] = {}
        for metric in ("pu21", "pu21_clipped"):
            v = [r["scores"][row][metric] for r in records]
            ref = [r["scores"][REFERENCE][metric] for r in records]
            out[row][metric] = stats.summarise(v)["mean"]
            out[row][f"{metric}_gain"] = stats.compare(v, ref, paired=True)
        out[row]["log2_ratio_median"] = float(np.nanmean(
            [r["scores"][row]["log2_ratio_median"] for r in records]))
    return out


def markdown(res: dict) -> str:
    p = res["protocol"]
    head = ["HDR", "PU21-PSNR", "gain (+-2 SE)", "clipped", "gain (+-2 SE)",
            "median log2(pred/true), clipped"]
    table = []
    for row, v in res["summary"].items():
        g, gc = v["pu21_gain"], v["pu21_clipped_gain"]
        table.append([row, f"{v['pu21']:.2f}", f"{g['delta']:+.2f} ({g['two_se']:.2f})",
                      f"{v['pu21_clipped']:.2f}", f"{gc['delta']:+.2f} ({gc['two_se']:.2f})",
                      f"{v['log2_ratio_median']:+.2f}"])
    return "\n".join([
        f"## Camera raw files against 8-bit photos ({p['views']} held-out views, "
        f"{p['size']}x{p['size']})", "",
        f"Clip fractions {p['clip_fractions']} (cycled over the views); the simulated camera: "
        f"black {p['black']}, white {p['white']}, neutral {p['neutral']}. Gains are paired over "
        f"the views against the {REFERENCE}.", "",
        report.markdown_table(head, table), ""])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    report.refuse_existing(_OUT.value, overwrite=_OVERWRITE.value)
    t0 = time.perf_counter()
    pipe = pipeline.Pipeline.load(_WEIGHTS.value)
    views = responses.heldout_protocol_views(_HDR_DIR.value, _SIZE.value, _LIMIT.value)
    if not views:
        sys.exit(f"{_HDR_DIR.value}: no held-out view to evaluate")
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (scene, angles, lr, _) in enumerate(views):
            fraction = responses.CLIP_FRACTIONS[i % len(responses.CLIP_FRACTIONS)]
            r = evaluate_view(pipe, lr, fraction, Path(tmp))
            records.append({"view": i, "scene": scene, "angles": angles, "fraction": fraction,
                            **r})
            logging.info("%s view %d done, %.0f s", scene, i, time.perf_counter() - t0)
    res = {
        "protocol": {"views": len(views), "size": _SIZE.value,
                     "clip_fractions": list(responses.CLIP_FRACTIONS),
                     "scenes": sorted({v[0] for v in views}), "black": BLACK, "white": WHITE,
                     "neutral": list(NEUTRAL)},
        "summary": summarise(records),
        "inputs": records,
        "total_s": time.perf_counter() - t0,
    }
    report.publish(Path(_OUT.value), res, markdown(res), overwrite=True)


if __name__ == "__main__":
    app.run(main)
