"""At which short side stage 1 should make the HDR of a photo larger than its training views.

    python -m experiments.working_scale [--split dev|heldout] [--size 512] [--sides full,256] \
        [--hdr_dir DIR] [--emor_dir DIR] [--weights DIR] [--limit N] \
        [--out docs/results/working_scale/dev] [--overwrite]

The response protocol's inputs (every family, encoding and clip fraction of
:mod:`hdr_jax.eval.responses`) rendered at ``--size`` px, on the development views of the
training scenes (``dev``: :func:`hdr_brackets.split_development`, :data:`responses.DEV_VIEWS`,
the training seed's EMoR curves; where :data:`pipeline.HDR_SIDE` is chosen) or on the held-out
views (``heldout``: :func:`responses.heldout_protocol_views`, the held-out EMoR curves; a check
after the choice). Per input the default pipeline (:func:`pipeline.reconstruct`, no stage 2)
runs with each ``--sides`` (``full``: the HDR at full resolution; N: from the photo shrunk to an
N-px short side, :func:`pipeline.working_scale_hdr`), scored with :func:`protocol.pu21_protocol`
as gains over the inverse-sRGB input, overall and on the clipped pixels, with the time each took.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from hdr_jax import pipeline
from hdr_jax.eval import protocol, report, responses

_SPLIT = flags.DEFINE_enum("split", "dev", ["dev", "heldout"], "Development or held-out views.")
_SIZE = flags.DEFINE_integer("size", 512, "Side of the (square) input view, pixels.")
_SIDES = flags.DEFINE_list("sides", ["full", "192", "256", "384"], "Working sides to compare.")
_HDR_DIR = flags.DEFINE_string("hdr_dir", "../shared/data/hdri", "Folder of HDR panoramas.")
_EMOR_DIR = flags.DEFINE_string("emor_dir", "", "EMoR model folder (adds the EMoR family).")
_WEIGHTS = flags.DEFINE_string("weights", None, "Weights directory (default: bundled weights).")
_LIMIT = flags.DEFINE_integer("limit", 0, "Views (dev: per scene; heldout: in all; 0: all).")
_OUT = flags.DEFINE_string("out", "docs/results/working_scale/dev", "Output folder.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing result files.")


def views() -> list[tuple[str, np.ndarray]]:
    if _SPLIT.value == "heldout":
        return [(v[0], v[2]) for v in responses.heldout_protocol_views(
            _HDR_DIR.value, _SIZE.value, _LIMIT.value)]
    return [(scene, radiance) for scene, _, radiance in
            responses.development_views(_HDR_DIR.value, _SIZE.value, _LIMIT.value)]


def summarise(records: list[dict], sides: list[str]) -> dict:
    families = list(dict.fromkeys(r["family"] for r in records))
    out = {}
    for side in sides:
        row = {}
        for f in families:
            rs = [r for r in records if r["family"] == f]
            row[f] = {m: float(np.nanmean([r["gains"][side][m] for r in rs]))
                      for m in ("pu21", "pu21_clipped")}
        row["mean"] = {m: float(np.mean([row[f][m] for f in families]))
                       for m in ("pu21", "pu21_clipped")}
        row["seconds"] = float(np.mean([r["seconds"][side] for r in records]))
        out[side] = row
    return out


def markdown(res: dict) -> str:
    s = res["summary"]
    fams = [f for f in next(iter(s.values())) if f not in ("mean", "seconds")]
    rows = [[("full resolution" if side == "full" else f"{side} px")]
            + [f"{row[f]['pu21_clipped']:+.2f} ({row[f]['pu21']:+.2f})" for f in fams + ["mean"]]
            + [f"{row['seconds']:.1f}"] for side, row in s.items()]
    return "\n".join([
        f"## Stage 1's working scale, {res['split']} views at {res['size']} px "
        f"({len(res['inputs'])} inputs)", "",
        "PU21-PSNR gain (dB) over the inverse-sRGB input on the clipped pixels (overall in "
        "brackets), mean per family; seconds per input for the HDR (stage 1, merge, lift).", "",
        report.markdown_table(["HDR made at"] + fams + ["mean", "s"], rows), ""])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    report.refuse_existing(_OUT.value, overwrite=_OVERWRITE.value)
    t0 = time.perf_counter()
    sides = list(_SIDES.value)
    bad = [s for s in sides if s != "full" and not s.isdigit()]
    if bad:
        sys.exit(f"--sides: 'full' or a number of pixels, got {bad}")
    vs = views()
    if not vs:
        sys.exit(f"{_HDR_DIR.value}: no view to evaluate")
    pipe = pipeline.Pipeline.load(_WEIGHTS.value)
    families = responses.response_families(_EMOR_DIR.value or None,
                                           training_seed=_SPLIT.value == "dev")
    records = []
    for item, scene, radiance, _, ldr, clipped, _ in responses.rendered_inputs(vs, families):
        if clipped.all() or not clipped.any():
            continue
        base = protocol.pu21_protocol(protocol.linearise_srgb(ldr), radiance, clipped)
        gains, seconds = {}, {}
        for side in sides:
            t = time.perf_counter()
            hdr = pipeline.reconstruct(pipe, ldr, scale=None, full_stack=False,
                                       hdr_side=None if side == "full" else int(side)).hdr
            seconds[side] = time.perf_counter() - t
            sc = protocol.pu21_protocol(hdr, radiance, clipped)
            gains[side] = {m: sc[m] - base[m] for m in ("pu21", "pu21_clipped")}
        records.append({**item, "scene": scene, "gains": gains, "seconds": seconds})
        print(f"{len(records)} inputs, {time.perf_counter() - t0:.0f} s", flush=True)
    res = {"split": _SPLIT.value, "size": _SIZE.value, "sides": sides,
           "summary": summarise(records, sides), "inputs": records,
           "total_s": time.perf_counter() - t0}
    report.publish(Path(_OUT.value), res, markdown(res), overwrite=_OVERWRITE.value)


if __name__ == "__main__":
    app.run(main)
