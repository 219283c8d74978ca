"""Two hand-made cues for the clip-level scalar of a photo of an unknown camera (analysis).

    python -m experiments.curve_cues [--hdr_dir DIR] [--emor_dir DIR] [--weights DIR] \
        [--size 256] [--limit N] [--out docs/results/linearisation/cues] [--overwrite]

The blind linearisation bends inverse sRGB at the clip by a scalar k read from the photo by a
small network (:mod:`hdr_jax.models.cliplevel`), which learns what the training scenes look like
and carries to unseen scenes only in part. Two cues that do not depend on the scene's content,
each scored by the k it picks on the grid :data:`GRID` of :func:`protocol.warp_codes` (the
family the pipeline bends):

* ``edge``: colour edges. A pixel that straddles two regions integrates a mix of their radiances,
  so in linear RGB it lies on the segment between them, and a wrong inverse response bends it off
  (Lin, Gu, Yamazaki and Shum, "Radiometric calibration from a single image", CVPR 2004). Triples
  (the pixels r before and after a pixel along a row, column or diagonal, and the pixel) are kept
  where both ends are flat (the next pixel out within 5 % of the ends' distance), differ in colour,
  the profile is monotone and nothing is clipped or black; the cost is the mean of the sines of
  the triple's angles at both ends (a distance to the line would prefer curves that collapse the
  middle pixel onto an end).
* ``tail``: the highlight tail. If the brightest pixels' radiance follows a power law (a straight
  line of log survival against log radiance, continuing into the clipped pixels' share), the
  right k makes the upper third of the brightest-channel histogram straightest.

Inputs: the development scenes (:func:`hdr_brackets.split_development`; no held-out scene),
:data:`responses.DEV_VIEWS`, every family with the training seed's EMoR curves, the protocol's
encodings and clip fractions (:func:`responses.rendered_inputs`). Rows: the clipped-pixel
PU21-PSNR gain over the inverse-sRGB input of the photo linearised by :func:`protocol.
linearise_warped` with each k: the weights' estimate, the two cues, the true k (the best this
family can do), and the true inverse response; plus each estimate's correlation and rms error
against the true k (:func:`protocol.clip_level_scalar`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from hdr_jax import pipeline
from hdr_jax.eval import protocol, report, responses

_HDR_DIR = flags.DEFINE_string("hdr_dir", "../shared/data/hdri", "Folder of HDR panoramas.")
_EMOR_DIR = flags.DEFINE_string("emor_dir", "", "EMoR model folder (adds the EMoR family).")
_WEIGHTS = flags.DEFINE_string("weights", None, "Weights directory (default: bundled weights).")
_SIZE = flags.DEFINE_integer("size", 256, "Side of the (square) input view, pixels.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Views per scene (0: all of responses.DEV_VIEWS).")
_OUT = flags.DEFINE_string("out", "docs/results/linearisation/cues", "Output folder.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing result files.")

#: The k searched by both cues (log2 of the clip level relative to inverse sRGB).
GRID = np.linspace(-2.5, 1.5, 41)
#: Edge triples: half-length in px, least code distance and colour difference of the two ends.
EDGE_RADIUS, EDGE_MIN_STEP, EDGE_MIN_CHROMA = 2, 0.2, 0.08
#: Fewer edge triples than this: no estimate (k = 0, inverse sRGB).
EDGE_MIN_TRIPLES = 50
#: The tail cue fits the codes whose survival (share of pixels at or above) is at most this.
TAIL_SHARE = 0.3
ESTIMATES = ("the weights' estimate", "edge cue", "tail cue", "true k")
ROWS = ESTIMATES + ("true inverse response",)


def edge_triples(ldr: np.ndarray) -> np.ndarray:
    """(N, 3, 3) codes of (one end, other end, middle pixel) of the photo's edge triples."""
    z = np.asarray(ldr, np.float32)
    h, w, _ = z.shape
    r = EDGE_RADIUS
    ys, xs = np.mgrid[r + 1:h - r - 1, r + 1:w - r - 1]
    out = []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        def at(s):
            return z[ys + s * dy, xs + s * dx]
        m1, m2, mp, a1, a2 = at(-r), at(r), at(0), at(-1), at(1)
        d = m2 - m1
        dn = np.linalg.norm(d, axis=-1)
        flat = np.maximum(np.abs(at(-r - 1) - m1).max(-1), np.abs(at(r + 1) - m2).max(-1))
        t = ((mp - m1) * d).sum(-1) / np.maximum(dn ** 2, 1e-9)
        mono = np.all([((q - p) * d).sum(-1) >= 0 for p, q in ((m1, a1), (a1, mp), (mp, a2),
                                                               (a2, m2))], axis=0)
        chroma = np.abs(m1 / np.maximum(m1.sum(-1, keepdims=True), 1e-6)
                        - m2 / np.maximum(m2.sum(-1, keepdims=True), 1e-6)).sum(-1)
        ends = np.stack([m1, m2, mp])
        ok = ((ends.max((0, -1)) < 0.97) & (ends.min((0, -1)) > 0.04) & (dn > EDGE_MIN_STEP)
              & (flat < 0.05 * dn) & (t > 0.25) & (t < 0.75) & (chroma > EDGE_MIN_CHROMA) & mono)
        out.append(np.stack([m1[ok], m2[ok], mp[ok]], 1))
    return np.concatenate(out)


def _sine(v: np.ndarray, d: np.ndarray) -> np.ndarray:
    cross = np.linalg.norm(np.cross(v, d), axis=-1)
    return cross / np.maximum(np.linalg.norm(v, axis=-1) * np.linalg.norm(d, axis=-1), 1e-12)


def edge_scalar(ldr: np.ndarray) -> float:
    """The k of :data:`GRID` whose bent linearisation makes the edge triples straightest."""
    t = edge_triples(ldr)
    if len(t) < EDGE_MIN_TRIPLES:
        return 0.0
    zm = np.float32(protocol.warp_median_code(ldr))
    costs = []
    for k in GRID:
        g = np.asarray(protocol.warp_codes(t, np.float32(k), zm))
        d = g[:, 1] - g[:, 0]
        costs.append(float(np.mean(_sine(g[:, 2] - g[:, 0], d) + _sine(g[:, 2] - g[:, 1], d))))
    return float(GRID[int(np.argmin(costs))])


def tail_scalar(ldr: np.ndarray) -> float:
    """The k of :data:`GRID` under which log2 survival of the brightest channel is straightest
    against log2 linear value over the codes with survival at most :data:`TAIL_SHARE` (the
    clipped share is the point at the clip)."""
    ldr = np.asarray(ldr, np.float32)
    m = np.round(ldr.max(-1) * 255).astype(int).ravel()
    hist = np.bincount(m, minlength=256)
    survival = np.cumsum(hist[::-1])[::-1] / m.size
    sel = (survival <= TAIL_SHARE) & (hist > 0)
    sel[255] = True
    if sel.sum() < 4 or hist[255] == 0:
        return 0.0
    codes = np.arange(256, dtype=np.float32) / 255
    zm = np.float32(protocol.warp_median_code(ldr))
    y = np.log2(survival[sel])
    costs = []
    for k in GRID:
        g = np.asarray(protocol.warp_codes(codes[None, :, None], np.float32(k), zm))[0, :, 0]
        x = np.log2(np.maximum(g[sel], 1e-12) / g[-1])
        a = np.stack([x, np.ones_like(x)], 1)
        coef = np.linalg.lstsq(a, y, rcond=None)[0]
        costs.append(float(np.sqrt(np.mean((a @ coef - y) ** 2))))
    return float(GRID[int(np.argmin(costs))])


def summarise(records: list[dict]) -> dict:
    families = list(dict.fromkeys(r["family"] for r in records))
    gains = {row: {} for row in ROWS}
    for row in ROWS:
        for f in families:
            gains[row][f] = float(np.nanmean([r["gains"][row] for r in records
                                              if r["family"] == f]))
        gains[row]["mean"] = float(np.mean([gains[row][f] for f in families]))
    true = np.array([r["k"]["true k"] for r in records])
    fit = {}
    for est in ESTIMATES[:-1]:
        e = np.array([r["k"][est] for r in records])
        fit[est] = {"corr": float(np.corrcoef(true, e)[0, 1]) if e.std() > 0 else float("nan"),
                    "rmse": float(np.sqrt(np.mean((e - true) ** 2)))}
    fit["k = 0 (inverse sRGB)"] = {"corr": float("nan"), "rmse": float(np.sqrt(np.mean(true**2)))}
    return {"families": families, "gains": gains, "fit": fit}


def markdown(res: dict) -> str:
    s = res["summary"]
    fams = s["families"]
    gain_rows = [[row] + [f"{s['gains'][row][f]:+.2f}" for f in fams + ["mean"]] for row in ROWS]
    fit_rows = [[name, report.fmt(v["corr"]), report.fmt(v["rmse"])]
                for name, v in s["fit"].items()]
    return "\n".join([
        f"## Hand-made clip-level cues on the development scenes ({len(res['inputs'])} inputs)",
        "", "Clipped-pixel PU21-PSNR gain (dB) over the inverse-sRGB input of the photo "
        "linearised with inverse sRGB bent at the clip by each k, mean per family:", "",
        report.markdown_table(["k from"] + fams + ["mean"], gain_rows), "",
        "Each estimate against the true k (all inputs):", "",
        report.markdown_table(["estimate", "correlation", "rms error (stops)"], fit_rows), ""])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    report.refuse_existing(_OUT.value, overwrite=_OVERWRITE.value)
    t0 = time.perf_counter()
    views = [(scene, radiance) for scene, _, radiance in
             responses.development_views(_HDR_DIR.value, _SIZE.value, _LIMIT.value)]
    if not views:
        sys.exit(f"{_HDR_DIR.value}: no development scene")
    dev = list(dict.fromkeys(scene for scene, _ in views))
    pipe = pipeline.Pipeline.load(_WEIGHTS.value)
    families = responses.response_families(_EMOR_DIR.value or None, training_seed=True)
    records = []
    for item, scene, radiance, curve, ldr, clipped, _ in responses.rendered_inputs(views,
                                                                                   families):
        if clipped.all() or not clipped.any():
            continue
        k_true = protocol.clip_level_scalar(ldr, radiance, curve, clipped)
        k = dict(zip(ESTIMATES, (pipeline.blind_clip_level(pipe, ldr) or 0.0, edge_scalar(ldr),
                                 tail_scalar(ldr), k_true)))
        base = protocol.pu21_protocol(protocol.linearise_srgb(ldr), radiance, clipped)
        preds = {name: protocol.linearise_warped(ldr, v) for name, v in k.items()}
        preds["true inverse response"] = protocol.linearise_srgb(ldr, curve)
        gains = {name: protocol.pu21_protocol(p, radiance, clipped)["pu21_clipped"]
                 - base["pu21_clipped"] for name, p in preds.items()}
        records.append({**item, "scene": scene, "k": k, "gains": gains})
    res = {"scenes": dev, "size": _SIZE.value, "grid": GRID.tolist(),
           "summary": summarise(records), "inputs": records,
           "total_s": time.perf_counter() - t0}
    report.publish(Path(_OUT.value), res, markdown(res), overwrite=_OVERWRITE.value)


if __name__ == "__main__":
    app.run(main)
