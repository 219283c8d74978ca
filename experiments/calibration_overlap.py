"""When a calibration bracket is too clipped to trust: error of the curve against the overlap.

    python -m experiments.calibration_overlap [--hdr_dir DIR] [--emor_dir DIR] [--size 256] \
        [--scenes 8] [--choice 3] [--out docs/results/calibration/overlap] [--overwrite]

Brackets of two views of each of the first ``--scenes`` training scenes
(:func:`hdr_brackets.split_scenes`; no held-out scene), through sRGB, gamma 2.2, gamma 2.2 with
the protocol's S-curve and (with ``--emor_dir``) four EMoR curves of the training seed, with
exposures :data:`BRACKETS` around the exposure that clips :data:`FRACTIONS` of the pixels of
the EV 0 photo, as PNG and as JPEG q90, are calibrated (:func:`crf.calibrate_response`).
Per bracket: :func:`crf.bracket_overlap`, whether the solve refused it, and the RMS log2 error
of the recovered inverse response over codes 0.05-1 (:func:`crf.inverse_error`) and over the
upper half (0.5-1, what the highlights are linearised with). The table bins the brackets by
overlap, separately for the first ``--choice`` scenes (where
:data:`crf.CALIBRATION_MIN_OVERLAP` was chosen) and the others (a check).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from hdr_jax import io as hdr_io
from hdr_jax.camera import crf as crf_lib
from hdr_jax.data import hdr_brackets
from hdr_jax.eval import protocol, report, responses, system

_HDR_DIR = flags.DEFINE_string("hdr_dir", "../shared/data/hdri", "Folder of HDR panoramas.")
_EMOR_DIR = flags.DEFINE_string("emor_dir", "", "EMoR model folder (adds four EMoR curves).")
_SIZE = flags.DEFINE_integer("size", 256, "Side of the (square) views, pixels.")
_SCENES = flags.DEFINE_integer("scenes", 8, "How many training scenes (in sorted order).")
_CHOICE = flags.DEFINE_integer("choice", 3, "The first N scenes are the choice set.")
_OUT = flags.DEFINE_string("out", "docs/results/calibration/overlap", "Output folder.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing result files.")

VIEWS = (responses.DEV_VIEWS[0], responses.DEV_VIEWS[3])
BRACKETS = ((-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0), (-3.0, 0.0, 3.0), (-2.0, 0.0, 2.0, 4.0),
            (0.0, 2.0))
FRACTIONS = (0.05, 0.3, 0.7, 0.95)
ENCODINGS = {"PNG": None, "JPEG q90": 90}
BINS = (0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 1.01)
#: A curve further off than this (stops, RMS over codes 0.05-1) counts as wrong.
WRONG = 0.5


def curves() -> dict[str, np.ndarray]:
    out = {"sRGB": crf_lib.srgb_crf(), "gamma 2.2": crf_lib.gamma_crf(2.2),
           "gamma 2.2 + S": crf_lib.s_curve_crf(6.0, gamma=2.2)}
    if _EMOR_DIR.value:
        emor = responses.response_families(_EMOR_DIR.value, training_seed=True)["EMoR"]
        out.update(dict(list(emor.items())[:4]))
    return out


def summarise(records: list[dict], choice: list[str]) -> dict:
    out = {}
    for split in ("choice", "check"):
        for enc in ENCODINGS:
            rs = [r for r in records if r["encoding"] == enc
                  and (r["scene"] in choice) == (split == "choice")]
            solved = [r for r in rs if r["error"] is not None]
            ov = np.array([r["overlap"] for r in solved])
            err = np.array([r["error"] for r in solved])
            top = np.array([r["top_error"] for r in solved])
            bins = []
            for lo, hi in zip(BINS[:-1], BINS[1:]):
                m = (ov >= lo) & (ov < hi)
                bins.append({"from": lo, "to": hi, "n": int(m.sum()),
                             "median_error": float(np.median(err[m])) if m.any() else None,
                             "median_top_error": float(np.median(top[m])) if m.any() else None,
                             "wrong": int((err[m] > WRONG).sum()),
                             "wrong_top": int((top[m] > WRONG).sum())})
            warned = ov < crf_lib.CALIBRATION_MIN_OVERLAP
            out[f"{split}, {enc}"] = {
                "brackets": len(rs), "refused": len(rs) - len(solved), "bins": bins,
                "warned": int(warned.sum()), "wrong_warned": int((warned & (err > WRONG)).sum()),
                "wrong_not_warned": int((~warned & (err > WRONG)).sum()),
                "wrong_top_warned": int((warned & (top > WRONG)).sum()),
                "wrong_top_not_warned": int((~warned & (top > WRONG)).sum()),
                "right_warned": int((warned & (err <= WRONG)).sum())}
    return out


def markdown(res: dict) -> str:
    lines = [f"## Calibration error against the bracket's overlap ({len(res['inputs'])} "
             "brackets)", "",
             f"Brackets per bin of `crf.bracket_overlap`; a curve is wrong when its inverse is "
             f"more than {WRONG} stops off (RMS over codes 0.05-1). Error columns: median RMS "
             "log2 error over codes 0.05-1 / 0.5-1. Choice scenes: "
             f"{', '.join(res['choice'])}; check scenes: {', '.join(res['check'])}.", ""]
    for name, s in res["summary"].items():
        rows = [[f"{b['from']:.3f}-{b['to']:.3f}", b["n"],
                 "-" if b["median_error"] is None else
                 f"{b['median_error']:.2f} / {b['median_top_error']:.2f}", b["wrong"],
                 b["wrong_top"]]
                for b in s["bins"] if b["n"]]
        lines += [f"### {name}: {s['brackets']} brackets, {s['refused']} refused by the solve",
                  "", report.markdown_table(["overlap", "brackets", "median error", "wrong",
                                             "wrong over 0.5-1"],
                                            rows), "",
                  f"Warned (overlap below {res['min_overlap']:.1%}): {s['warned']}, of them "
                  f"wrong {s['wrong_warned']} ({s['wrong_top_warned']} over codes 0.5-1); wrong "
                  f"and not warned: {s['wrong_not_warned']} ({s['wrong_top_not_warned']}).",
                  ""]
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    report.refuse_existing(_OUT.value, overwrite=_OVERWRITE.value)
    t0 = time.perf_counter()
    files = {f.stem: f for f in hdr_io.list_images(Path(_HDR_DIR.value), kinds=("hdr",))}
    scenes = hdr_brackets.split_scenes(list(files))[0][: _SCENES.value]
    if not scenes:
        sys.exit(f"{_HDR_DIR.value}: no training scene")
    cameras = curves()  # read once (the EMoR model is a file)
    records = []
    for scene in scenes:
        pano = np.maximum(hdr_io.read_hdr(files[scene]), 0.0).astype(np.float32)
        for view in VIEWS:
            radiance = system.render_view(pano, view, _SIZE.value, 1)[0]
            for name, curve in cameras.items():
                for evs in BRACKETS:
                    for fraction in FRACTIONS:
                        a = protocol.clipping_exposure(radiance, fraction, curve=curve)
                        clean = [protocol.render_srgb8(radiance, a * 2.0 ** e, curve)
                                 for e in evs]
                        for enc, q in ENCODINGS.items():
                            photos = [protocol.jpeg_roundtrip(p, q) for p in clean] if q else clean
                            rec = {"scene": scene, "view": list(view), "curve": name,
                                   "ev": list(evs), "fraction": fraction, "encoding": enc,
                                   "overlap": crf_lib.bracket_overlap(photos, lossy=q is not None),
                                   "error": None, "top_error": None, "refused": None}
                            try:
                                got = crf_lib.calibrate_response(photos, list(evs),
                                                                 lossy=q is not None)
                                rec["error"] = crf_lib.inverse_error(got, curve)
                                rec["top_error"] = crf_lib.inverse_error(got, curve, (0.5, 1.0))
                            except ValueError as e:
                                rec["refused"] = str(e)
                            records.append(rec)
        print(f"{scene}: {len(records)} brackets, {time.perf_counter() - t0:.0f} s", flush=True)
    choice = scenes[: _CHOICE.value]
    res = {"choice": choice, "check": scenes[_CHOICE.value:],
           "min_overlap": crf_lib.CALIBRATION_MIN_OVERLAP,
           "summary": summarise(records, choice), "inputs": records,
           "total_s": time.perf_counter() - t0}
    report.publish(Path(_OUT.value), res, markdown(res), overwrite=_OVERWRITE.value)


if __name__ == "__main__":
    app.run(main)
