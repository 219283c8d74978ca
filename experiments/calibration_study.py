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

The same view also gives one shot saved as a camera raw file and as the camera's own photo
(:func:`crf.response_from_raw_pair`, ``hdr-jax calibrate RAW PHOTO``): the photo is the bracket's
middle exposure (PNG or JPEG q90); the raw file a DNG of the same exposure
(:func:`hdr_jax.data.testing.write_dng`: 14 bits above a black level of 512, a camera that sees
white as (0.5, 1, 0.7)) whose sensor saturates :data:`RAW_HEADROOM` stops above the photo's clip,
read back through LibRaw as ``hdr-jax`` reads it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from hdr_jax import io as hdr_io
from hdr_jax import pipeline
from hdr_jax.camera import crf as crf_lib
from hdr_jax.data import hdr_brackets, testing
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
#: Stops a camera's raw data keeps above the clip of its own photo, in the one-shot rows.
RAW_HEADROOM = 0.7
#: Names of the calibrations per curve, in the order of their rows below.
CALIBRATIONS = ("PNG bracket", "JPEG q90 bracket", "raw file + its PNG",
                "raw file + its JPEG q90")
ROWS = ("inverse sRGB", "true inverse response (oracle)",
        "calibrated from a PNG bracket", "calibrated from a JPEG q90 bracket",
        "calibrated from one shot: raw file + its PNG",
        "calibrated from one shot: raw file + its JPEG q90")
PIPELINE_ROW = "the pipeline, --response calibrated from the PNG bracket"


def bracket(radiance: np.ndarray, curve: np.ndarray, jpeg_quality: int | None) -> list:
    """The calibration photos of one view through ``curve`` (:data:`BRACKET_EV`)."""
    a = protocol.clipping_exposure(radiance, CALIBRATION_CLIP, curve=curve)
    photos = [protocol.render_srgb8(radiance, a * 2.0 ** ev, curve) for ev in BRACKET_EV]
    return [protocol.jpeg_roundtrip(p, jpeg_quality) if jpeg_quality else p for p in photos]


def raw_pair(radiance: np.ndarray, curve: np.ndarray, jpeg_quality: int | None,
             folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(linear data of the raw file, the camera's photo) of one shot of a view through
    ``curve``: the bracket's middle exposure, and a DNG of it saturating :data:`RAW_HEADROOM`
    stops above the photo's clip, decoded as ``hdr-jax`` decodes raw files."""
    a = protocol.clipping_exposure(radiance, CALIBRATION_CLIP, curve=curve)
    photo = protocol.render_srgb8(radiance, a, curve)
    photo = protocol.jpeg_roundtrip(photo, jpeg_quality) if jpeg_quality else photo
    path = testing.write_dng(folder / "shot.dng", radiance * a * 2.0 ** -RAW_HEADROOM,
                             black=512, white=16383, neutral=(0.5, 1.0, 0.7))
    return np.asarray(crf_lib.srgb_decode(hdr_io.read_ldr(path)), np.float32), photo


def one_shot(pano: np.ndarray, curve: np.ndarray, folder: Path) -> tuple[dict, int]:
    """({"raw file + its PNG" / "... JPEG q90": response}, view index) of the first of the
    development view angles whose shot, at twice the bracket's size (a camera's photo is larger
    than the protocol's views; the pair is compared at 384 px), shows enough tones for
    :func:`crf.response_from_raw_pair`."""
    for v, angles in enumerate(responses.DEV_VIEWS):
        view = system.render_view(pano, angles, 2 * _SIZE.value, 1)[0]
        try:
            return {f"raw file + its {e}": crf_lib.response_from_raw_pair(
                *raw_pair(view, curve, q, folder)) for e, q in BRACKET_ENCODINGS.items()}, v
        except ValueError:
            continue
    raise ValueError("no development view of the scene calibrates from one shot")


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
    names = list(res["curves"][0]["rms_log2"])
    table = [[c["family"], c["curve"], c["scene"], str(c["shot_view"])]
             + [f"{c['rms_log2'][e]:.3f}" for e in names] for c in res["curves"]]
    means = [f"{np.mean([c['rms_log2'][e] for c in res['curves']]):.3f}" for e in names]
    table.append(["mean", "", "", ""] + means)
    out += [report.markdown_table(["family", "curve", "calibration scene", "one-shot view"]
                                  + names, table), "",
            "(The brackets are of development view 0 at the protocol's size; the one shot is of "
            "the first development view, at twice that size, with enough tones for it.)", ""]
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
    folder = Path(tempfile.mkdtemp(prefix="calibration_study_"))
    for i, (family, name) in enumerate((f, n) for f in families for n in families[f]):
        scene = training[i % len(training)]
        pano = np.maximum(hdr_io.read_hdr(files[scene]), 0.0).astype(np.float32)
        view = system.render_view(pano, responses.DEV_VIEWS[0], _SIZE.value, 1)[0]
        truth = families[family][name]
        got = {f"{e} bracket": crf_lib.calibrate_response(bracket(view, truth, q),
                                                          list(BRACKET_EV), lossy=q is not None)
               for e, q in BRACKET_ENCODINGS.items()}
        shot, shot_view = one_shot(pano, truth, folder)
        got |= shot
        assert list(got) == list(CALIBRATIONS)
        calibrated[name] = got
        curves.append({"family": family, "curve": name, "scene": scene, "shot_view": shot_view,
                       "rms_log2": {e: crf_lib.inverse_error(c, truth) for e, c in got.items()}})
    shutil.rmtree(folder, ignore_errors=True)
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
                pipe, ldr, scale=None,
                response_curve=calibrated[item["curve"]]["PNG bracket"]).hdr
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
