"""Stage-1 HDR on held-out views through many camera responses (hdr_jax.eval.responses).

    python -m experiments.eval_responses [--weights DIR] [--hdr_dir DIR] [--emor_dir DIR] \
        [--out docs/results/responses] [--size 256] [--limit N] [--overwrite]
    python -m experiments.eval_responses --rewrite_report [--out DIR]

Six views of each held-out panorama (:data:`responses.VIEWS`); per view and response family one
curve of the family (cycling), each as PNG, JPEG q90 and JPEG q75, exposed so that 2, 5 or 15 %
of the pixels clip (cycling over the views). One table per family, one of the clipped-pixel gain
over the inverse-sRGB input per camera response (:func:`responses.per_response`); every input's
scores in the JSON. ``--rewrite_report`` rewrites ``results.md`` from the folder's
``results.json`` (the tables of a run made before a table was added), evaluating nothing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from absl import app, flags, logging

from hdr_jax import pipeline
from hdr_jax.eval import report, responses

_WEIGHTS = flags.DEFINE_string("weights", None, "Weights directory (default: bundled weights).")
_HDR_DIR = flags.DEFINE_string("hdr_dir", "../shared/data/hdri", "Folder of HDR panoramas.")
_EMOR_DIR = flags.DEFINE_string("emor_dir", "", "EMoR model folder (adds the EMoR family).")
_OUT = flags.DEFINE_string("out", "docs/results/responses", "Output folder.")
_SIZE = flags.DEFINE_integer("size", 256, "Side of the (square) input view, pixels.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Evaluate N views spread over the scenes (0: all).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing result files.")
_REWRITE = flags.DEFINE_bool("rewrite_report", False, "Rewrite OUT/results.md from "
                             "OUT/results.json; evaluate nothing.")

_COLUMNS = (("pu21", "PU21-PSNR", "{:.2f}"), ("pu21_clipped", "clipped", "{:.2f}"),
            ("log2_ratio_median", "median log2(pred/true), clipped", "{:+.2f}"),
            ("p90_pred_over_clip", "p90 pred / clip", "{:.2f}"),
            ("p90_true_over_clip", "p90 true / clip", "{:.2f}"))


def markdown(res: dict) -> str:
    p = res["protocol"]
    out = [f"## Stage-1 HDR across camera responses ({p['views']} held-out views, "
           f"{p['size']}x{p['size']})", "",
           f"Encodings {', '.join(p['encodings'])}; clip fractions {p['clip_fractions']}. "
           f"PU21 protocol: {p['pu21']}.", ""]
    for family, rows in res["summary"].items():
        out += [f"### {family} ({next(iter(rows.values()))['n']} inputs)", ""]
        table = [[row] + [fmt.format(v[k]) for k, _, fmt in _COLUMNS] for row, v in rows.items()]
        out += [report.markdown_table(["HDR"] + [h for _, h, _ in _COLUMNS], table), ""]
    return "\n".join(out + per_response_markdown(res["inputs"]))


def per_response_markdown(records: list[dict]) -> list[str]:
    """The per-response table: each row's clipped-pixel gain over the inverse-sRGB input."""
    rows = (responses.ROWS[0], responses.ROWS[2])
    head = ["family", "camera response", "clip fractions", "inputs"]
    for label in ("blind (default pipeline)", "camera response given"):
        head += [f"{label}: gain (dB, +-2 SE)", "inputs below"]
    table = []
    for family, curves in responses.per_response(records, rows).items():
        for curve, e in curves.items():
            line = [family, curve, ", ".join(f"{100 * f:g} %" for f in e["fractions"]),
                    e[rows[0]]["n"]]
            for row in rows:
                line += [f"{e[row]['delta']:+.2f} ({e[row]['two_se']:.2f})",
                         f"{100 * e[row]['below']:.0f} %"]
            table.append(line)
    return ["### Clipped pixels per camera response", "",
            f"PU21-PSNR on the clipped pixels minus that of the {responses.INPUT_ROW}, paired "
            "over each response's inputs (every encoding), and the share of its inputs where "
            "the row is below it. A gamma or gamma+S curve meets one clip fraction only (the "
            "protocol cycles curves and fractions over the views), so its row is that curve "
            "at that fraction.", "", report.markdown_table(head, table), ""]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    if _REWRITE.value:
        path = Path(_OUT.value) / "results.json"
        if not path.is_file():
            sys.exit(f"{path}: no results to rewrite the report from")
        res = json.loads(path.read_text())
        report.publish(Path(_OUT.value), res, markdown(res), overwrite=True)
        return
    report.refuse_existing(_OUT.value, overwrite=_OVERWRITE.value)
    t0 = time.perf_counter()
    pipe = pipeline.Pipeline.load(_WEIGHTS.value)
    families = responses.response_families(_EMOR_DIR.value or None)
    views = responses.heldout_protocol_views(_HDR_DIR.value, _SIZE.value, _LIMIT.value)
    if not views:
        sys.exit(f"{_HDR_DIR.value}: no held-out view to evaluate")
    records = []
    for item in responses.plan(len(views), families):
        scene, angles, lr, _ = views[item["view"]]
        r = responses.evaluate_input(
            pipe, lr, families[item["family"]][item["curve"]], fraction=item["fraction"],
            jpeg_quality=responses.ENCODINGS[item["encoding"]])
        records.append({**item, "scene": scene, "angles": angles, **r})
        logging.info("%s %s %s %s done, %.0f s", scene, item["family"], item["curve"],
                     item["encoding"], time.perf_counter() - t0)
    res = {
        "protocol": {
            "views": len(views), "size": _SIZE.value, "view_angles": [list(v) for v in responses.VIEWS],
            "scenes": sorted({v[0] for v in views}), "encodings": list(responses.ENCODINGS),
            "clip_fractions": list(responses.CLIP_FRACTIONS), "emor_seed": responses.EMOR_SEED,
            "pu21": "gain fitted on pixels not clipped in the input, 99.9th-percentile reference "
            "luminance -> 1000 cd/m^2, PU21 per RGB channel, peak 256",
        },
        "summary": responses.summarise(records),
        "inputs": records,
        "total_s": time.perf_counter() - t0,
    }
    report.publish(Path(_OUT.value), res, markdown(res), overwrite=True)


if __name__ == "__main__":
    app.run(main)
