"""What one highlight lift per photo can reach on the held-out response protocol (analysis).

    python -m experiments.lift_ceiling [--weights DIR] [--hdr_dir DIR] [--emor_dir DIR] \
        [--out docs/results/level/ceiling] [--size 256] [--limit N] [--overwrite]

The inputs of ``experiments/eval_responses.py`` (same views, families, encodings and clip
fractions). Per input the pipeline's HDR before the lift (:func:`pipeline.reconstruct` with
``highlights=False``) is scored on its clipped pixels at every log2 lift of
:data:`level.GRID` (:func:`protocol.pu21_clipped_lifted` with :func:`level.lift_weight`). The
rows: no lift, the weights' lift (:func:`pipeline.estimate_lift`), the one constant lift best on
these inputs, and the best lift per input. The last two are read off the scored inputs
themselves: an upper bound of what any predictor of one lift per photo could reach there, not
a method (nothing may be chosen on the held-out scenes). Every input's table is in the JSON.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from hdr_jax import pipeline
from hdr_jax.eval import protocol, report, responses
from hdr_jax.models import level

_WEIGHTS = flags.DEFINE_string("weights", None, "Weights directory (default: bundled weights).")
_HDR_DIR = flags.DEFINE_string("hdr_dir", "../shared/data/hdri", "Folder of HDR panoramas.")
_EMOR_DIR = flags.DEFINE_string("emor_dir", "", "EMoR model folder (adds the EMoR family).")
_OUT = flags.DEFINE_string("out", "docs/results/level/ceiling", "Output folder.")
_SIZE = flags.DEFINE_integer("size", 256, "Side of the (square) input view, pixels.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Evaluate N views spread over the scenes (0: all).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing result files.")

ROWS = ("no lift (the merge)", "the weights' lift, predicted per photo",
        "best constant lift on these inputs (analysis)", "best lift per input (analysis)")


def summarise(gains: np.ndarray, predicted: np.ndarray, families: np.ndarray) -> dict:
    """Mean clipped-pixel gain over the input per family (and their mean) of each of
    :data:`ROWS`, from the (N, len(GRID)) ``gains`` and the (N,) ``predicted`` log2 lifts; the
    best constant is the one with the highest mean of the family means."""
    names = list(dict.fromkeys(families.tolist()))

    def per_family(g):
        out = {f: float(g[families == f].mean()) for f in names}
        out["mean"] = float(np.mean([out[f] for f in names]))
        return out

    by_lift = [per_family(gains[:, j])["mean"] for j in range(gains.shape[1])]
    best = int(np.argmax(by_lift))
    zero = int(np.argmin(np.abs(level.GRID)))
    rows = dict(zip(ROWS, (gains[:, zero], level.score_at(gains, predicted), gains[:, best],
                           gains.max(1))))
    return {"constant_lift": float(level.GRID[best]),
            "rows": {name: per_family(g) for name, g in rows.items()}}


def markdown(res: dict) -> str:
    s = res["summary"]
    fams = [f for f in next(iter(s["rows"].values())) if f != "mean"]
    table = [[name] + [f"{g[f]:+.2f}" for f in fams] + [f"{g['mean']:+.2f}"]
             for name, g in s["rows"].items()]
    return "\n".join([
        f"## One highlight lift per photo: held-out ceiling ({res['protocol']['inputs']} inputs)",
        "", "Clipped-pixel PU21-PSNR gain (dB) over the inverse-sRGB input, mean per family. The "
        f"best constant lift is {s['constant_lift']:+.2f} (log2). The analysis rows are read off "
        "these inputs: bounds, not methods.", "",
        report.markdown_table(["lift"] + fams + ["mean"], table), ""])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    report.refuse_existing(_OUT.value, overwrite=_OVERWRITE.value)
    t0 = time.perf_counter()
    pipe = pipeline.Pipeline.load(_WEIGHTS.value)
    if pipe.level is None:
        sys.exit(f"{pipe.directory}: no 'level' network in the weights")
    families = responses.response_families(_EMOR_DIR.value or None)
    views = responses.heldout_protocol_views(_HDR_DIR.value, _SIZE.value, _LIMIT.value)
    if not views:
        sys.exit(f"{_HDR_DIR.value}: no held-out view to evaluate")
    records = []
    for item in responses.plan(len(views), families):
        scene, angles, radiance, _ = views[item["view"]]
        ldr, clipped, _ = responses.render_input(
            radiance, families[item["family"]][item["curve"]], fraction=item["fraction"],
            jpeg_quality=responses.ENCODINGS[item["encoding"]])
        hdr = pipeline.reconstruct(pipe, ldr, scale=None, highlights=False).hdr
        k = pipeline.blind_clip_level(pipe, ldr)
        base = protocol.pu21_protocol(protocol.linearise_srgb(ldr), radiance, clipped)
        records.append({
            **item, "scene": scene, "angles": angles,
            "input_clipped": base["pu21_clipped"],
            "predicted_lift": pipeline.estimate_lift(pipe, ldr, k),
            "lifted_clipped": protocol.pu21_clipped_lifted(
                hdr, radiance, clipped, level.lift_weight(ldr), level.GRID).tolist()})
    gains = (np.array([r["lifted_clipped"] for r in records])
             - np.array([r["input_clipped"] for r in records])[:, None])
    res = {
        "protocol": {"inputs": len(records), "views": len(views), "size": _SIZE.value,
                     "scenes": sorted({v[0] for v in views}), "grid": level.GRID.tolist()},
        "summary": summarise(gains, np.array([r["predicted_lift"] for r in records]),
                             np.array([r["family"] for r in records])),
        "inputs": records,
        "total_s": time.perf_counter() - t0,
    }
    report.publish(Path(_OUT.value), res, markdown(res), overwrite=True)


if __name__ == "__main__":
    app.run(main)
