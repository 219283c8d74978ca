"""How well ``hdr-jax calibrate`` recovers a camera, and what it is worth on the response protocol.

    python -m experiments.calibration_study [--hdr_dir DIR] [--emor_dir DIR] \
        [--out docs/results/calibration] [--size 256] [--limit N] [--overwrite]

For every curve of the held-out response families (``hdr_jax.eval.responses``) a bracket of
three photos (EV -2, 0, +2 around the exposure that clips 5 % of the pixels) of one view of a
training scene (a different scene per curve, cycling) is rendered through the curve, as PNG and
as JPEG q90, and calibrated (:func:`crf.calibrate_response`). Reported per curve: the RMS log2
error of the recovered inverse response over codes 0.05-1. Then the inputs of
``experiments/eval_responses.py`` (held-out views, every encoding and clip fraction) are
linearised with inverse sRGB, with the true inverse response and with each recovered one, and
scored with the HDR protocol (PU21-PSNR, overall and on the clipped pixels): the linearised
photo alone, no network, so the rows compare what the merge is given. With ``--pipeline`` the
pipeline itself runs too, given the curve calibrated from the PNG bracket (``--response``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from hdr_jax import io as hdr_io
from hdr_jax import pipeline
from hdr_jax.camera import crf as crf_lib
from hdr_jax.data import hdr_brackets
from hdr_jax.eval import protocol, report, responses, system

_HDR_DIR = flags.DEFINE_string("hdr_dir", "../shared/data/hdri", "Folder of HDR panoramas.")
_EMOR_DIR = flags.DEFINE_string("emor_dir", "", "EMoR model folder (adds the EMoR family).")
_OUT = flags.DEFINE_string("out", "docs/results/calibration", "Output folder.")
_SIZE = flags.DEFINE_integer("size", 256, "Side of the (square) views, pixels.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Evaluate N held-out views (0: all).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing result files.")
_PIPELINE = flags.DEFINE_bool("pipeline", False, "Also run the pipeline with the curve "
                              "calibrated from the PNG bracket.")
_WEIGHTS = flags.DEFINE_string("weights", None, "Weights for --pipeline (default: bundled).")

#: The calibration bracket, stops around the exposure that clips CALIBRATION_CLIP of the pixels.
BRACKET_EV = (-2.0, 0.0, 2.0)
CALIBRATION_CLIP = 0.05
#: Encodings of the calibration bracket.
BRACKET_ENCODINGS = {"PNG": None, "JPEG q90": 90}
ROWS = ("inverse sRGB", "true inverse response (oracle)",
        "calibrated from a PNG bracket", "calibrated from a JPEG q90 bracket")
PIPELINE_ROW = "the pipeline, --response calibrated from the PNG bracket"


def bracket(radiance: np.ndarray, curve: np.ndarray, jpeg_quality: int | None) -> list:
    """The calibration photos of one view through ``curve`` (:data:`BRACKET_EV`)."""
    a = protocol.clipping_exposure(radiance, CALIBRATION_CLIP, curve=curve)
    photos = [protocol.render_srgb8(radiance, a * 2.0 ** ev, curve) for ev in BRACKET_EV]
    return [protocol.jpeg_roundtrip(p, jpeg_quality) if jpeg_quality else p for p in photos]


def markdown(res: dict) -> str:
    what = ("the linearised photo alone, and the pipeline" if res["protocol"]["pipeline"]
            else "the linearised photo alone")
    out = [f"## Camera calibration on the response protocol ({res['protocol']['inputs']} "
           f"held-out inputs, {what})", "",
           "PU21-PSNR on the clipped pixels (overall in brackets), mean per family.", ""]
    fams = list(res["summary"])
    rows = list(res["summary"][fams[0]])
    table = [[row] + [f"{res['summary'][f][row]['pu21_clipped']:.2f} "
                      f"({res['summary'][f][row]['pu21']:.2f})" for f in fams] for row in rows]
    out += [report.markdown_table(["linearisation"] + fams, table), "",
             "RMS log2 error of the recovered inverse response (codes 0.05-1), per curve:", ""]
    table = [[c["family"], c["curve"], c["scene"]] + [f"{c['rms_log2'][e]:.3f}"
                                                      for e in BRACKET_ENCODINGS]
             for c in res["curves"]]
    out += [report.markdown_table(["family", "curve", "calibration scene"]
                                  + [f"{e} bracket" for e in BRACKET_ENCODINGS], table), ""]
    return "\n".join(out)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    report.refuse_existing(_OUT.value, overwrite=_OVERWRITE.value)
    t0 = time.perf_counter()
    pipe = pipeline.Pipeline.load(_WEIGHTS.value) if _PIPELINE.value else None
    families = responses.response_families(_EMOR_DIR.value or None)
    files = {f.stem: f for f in hdr_io.list_images(Path(_HDR_DIR.value), kinds=("hdr",))}
    training = hdr_brackets.split_scenes(list(files))[0]
    if not training:
        sys.exit(f"{_HDR_DIR.value}: no training scene to calibrate on")
    calibrated, curves = {}, []
    for i, (family, name) in enumerate((f, n) for f in families for n in families[f]):
        scene = training[i % len(training)]
        pano = np.maximum(hdr_io.read_hdr(files[scene]), 0.0).astype(np.float32)
        view = system.render_view(pano, responses.DEV_VIEWS[0], _SIZE.value, 1)[0]
        truth = families[family][name]
        got = {e: crf_lib.calibrate_response(bracket(view, truth, q), list(BRACKET_EV),
                                             lossy=q is not None)
               for e, q in BRACKET_ENCODINGS.items()}
        calibrated[name] = got
        curves.append({"family": family, "curve": name, "scene": scene,
                       "rms_log2": {e: crf_lib.inverse_error(c, truth) for e, c in got.items()}})
    views = responses.heldout_protocol_views(_HDR_DIR.value, _SIZE.value, _LIMIT.value)
    records = []
    for item in responses.plan(len(views), families):
        scene, _, radiance, _ = views[item["view"]]
        truth = families[item["family"]][item["curve"]]
        ldr, clipped, _ = responses.render_input(
            radiance, truth, fraction=item["fraction"],
            jpeg_quality=responses.ENCODINGS[item["encoding"]])
        lin = [crf_lib.srgb_crf(), truth] + list(calibrated[item["curve"]].values())
        preds = {row: crf_lib.apply_inverse_crf(c, ldr) for row, c in zip(ROWS, lin)}
        if pipe is not None:
            preds[PIPELINE_ROW] = pipeline.reconstruct(
                pipe, ldr, scale=None, response_curve=calibrated[item["curve"]]["PNG"]).hdr
        scores = {}
        for row, pred in preds.items():
            s = protocol.pu21_protocol(pred, radiance, clipped)
            scores[row] = {"pu21": s["pu21"], "pu21_clipped": s["pu21_clipped"]}
        records.append({**item, "scene": scene, "scores": scores})
    summary = responses.summarise(records)
    res = {"protocol": {"inputs": len(records), "views": len(views), "size": _SIZE.value,
                        "bracket_ev": list(BRACKET_EV), "bracket_clip": CALIBRATION_CLIP,
                        "pipeline": _PIPELINE.value},
           "summary": summary, "curves": curves, "inputs": records,
           "total_s": time.perf_counter() - t0}
    report.publish(Path(_OUT.value), res, markdown(res), overwrite=True)


if __name__ == "__main__":
    app.run(main)
