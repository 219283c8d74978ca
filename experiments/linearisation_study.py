"""How much of the clipped-pixel score is the linearisation: fixed blind curves and one scalar.

    python -m experiments.linearisation_study [--split heldout|train] [--hdr_dir DIR] \
        [--emor_dir DIR] [--size 256] [--out docs/results/linearisation/heldout] [--overwrite]

No network runs here. Every input of the camera-response protocol (:mod:`hdr_jax.eval.responses`:
four families, PNG and JPEG q90/q75, 2/5/15 % clipped) is linearised by curves that need no
knowledge of the camera, and scored with the same PU21 protocol:

* the inverse sRGB curve (what a blind tool does);
* fixed compromise curves: the EMoR mean response f0 (the average of the measured camera
  responses the model was built from), the inverse whose log is the average over the four
  families of the log inverse responses of a training-type pool (the three gammas, the three
  gamma+S curves, 50 EMoR curves drawn with the training seed, sRGB), and two log-domain blends
  of that with inverse sRGB;
* the true inverse response (oracle);
* inverse sRGB with its clipped pixels scaled by the one number per input that the oracle gets
  right and inverse sRGB does not, the ratio of the two gains fitted on the unclipped pixels
  (an oracle analysis: what a perfect estimate of where the clip level sits above the midtones,
  and nothing else, would give);
* the same scalar as a curve (:func:`hdr_jax.eval.protocol.linearise_warped`): inverse sRGB,
  unchanged up to the photo's median code and bent in the log domain from there to the scalar at
  the clip, so the result stays continuous and increasing (a blind estimate of the scalar would
  be used so; scaling the clipped pixels alone leaves a step at the clip's border).

``--split train`` renders the training scenes instead (four other view angles, EMoR curves drawn
with the training seed): a development set on which blind estimators can be chosen without
touching the held-out scenes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags, logging

from hdr_jax import io as hdr_io
from hdr_jax import metrics
from hdr_jax.camera import crf as crf_lib
from hdr_jax.data import hdr_brackets
from hdr_jax.eval import protocol, report, responses, system

_SPLIT = flags.DEFINE_enum("split", "heldout", ["heldout", "train"], "Scenes to render.")
_HDR_DIR = flags.DEFINE_string("hdr_dir", "../shared/data/hdri", "Folder of HDR panoramas.")
_EMOR_DIR = flags.DEFINE_string("emor_dir", "../shared/data/crf", "EMoR model folder.")
_SIZE = flags.DEFINE_integer("size", 256, "Side of the (square) input view, pixels.")
_OUT = flags.DEFINE_string("out", "docs/results/linearisation/heldout", "Output folder.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing result files.")

#: Weights of the family-average inverse in the two blends with inverse sRGB (log domain).
BLENDS = (0.25, 0.5)
ORACLE = "true inverse response (oracle)"
SCALAR = "inverse sRGB + the oracle's clip-level scalar (analysis)"
WARP = "inverse sRGB warped above the median code by that scalar (analysis)"

_Z = np.linspace(0.0, 1.0, crf_lib.N_SAMPLES)


def _log_inverse(curve: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(crf_lib.apply_inverse_crf(curve, _Z)), 1e-6))


def _from_log_inverse(log_inv: np.ndarray) -> np.ndarray:
    return np.asarray(crf_lib.invert_crf(np.exp(log_inv).astype(np.float32)))


def fixed_curves(emor: crf_lib.EMoR) -> dict[str, np.ndarray]:
    """{row: response} of the blind fixed linearisations, inverse sRGB first."""
    pool = {
        "sRGB": [crf_lib.srgb_crf()],
        "gamma": [crf_lib.gamma_crf(g) for g in (1.8, 2.2, 2.6)],
        "gamma+S": [crf_lib.s_curve_crf(6.0, gamma=g) for g in (1.8, 2.2, 2.6)],
        "EMoR": list(crf_lib.sample_emor_crfs(emor, 50, np.random.default_rng(0))),
    }
    mix = np.mean([np.mean([_log_inverse(c) for c in cs], axis=0) for cs in pool.values()], 0)
    srgb = _log_inverse(crf_lib.srgb_crf())
    out = {"inverse sRGB": crf_lib.srgb_crf(), "EMoR mean response f0": emor.f0,
           "family-average inverse": _from_log_inverse(mix)}
    for w in BLENDS:
        out[f"inverse sRGB / family average, {w:g}"] = _from_log_inverse((1 - w) * srgb + w * mix)
    return out


def _views(split: str, size: int):
    if split == "heldout":
        yield from ((s, lr) for s, _, lr, _ in
                    system.heldout_views(_HDR_DIR.value, size=size, scale=1, views=responses.VIEWS))
        return
    files = {f.stem: f for f in hdr_io.list_images(Path(_HDR_DIR.value), kinds=("hdr",))}
    for stem in hdr_brackets.split_scenes(list(files))[0]:
        img = hdr_io.read_hdr(files[stem])
        for view in responses.DEV_VIEWS:
            yield stem, system.render_view(img, view, size, 1)[0]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    report.refuse_existing(_OUT.value, overwrite=_OVERWRITE.value)
    t0 = time.perf_counter()
    emor = crf_lib.load_emor(_EMOR_DIR.value)
    families = responses.response_families(_EMOR_DIR.value,
                                           training_seed=_SPLIT.value == "train")
    blind = fixed_curves(emor)
    views = list(_views(_SPLIT.value, _SIZE.value))
    if not views:
        sys.exit(f"{_HDR_DIR.value}: no view to evaluate")
    records = []
    for item, scene, radiance, curve, ldr, clipped, _ in responses.rendered_inputs(views,
                                                                                 families):
        preds = {name: protocol.linearise_srgb(ldr, c) for name, c in blind.items()}
        preds[ORACLE] = protocol.linearise_srgb(ldr, curve)
        gains = [float(metrics.align_gain(preds[k], radiance, ~clipped))
                 for k in ("inverse sRGB", ORACLE)]
        log2_scalar = float(np.log2(gains[1] / gains[0]))
        scalar = preds["inverse sRGB"].copy()
        scalar[clipped] *= gains[1] / gains[0]
        preds[SCALAR] = scalar
        preds[WARP] = protocol.linearise_warped(ldr, log2_scalar)
        scores = {}
        for name, pred in preds.items():
            s = protocol.pu21_protocol(pred, radiance, clipped)
            scores[name] = {k: float(s[k]) for k in ("pu21", "pu21_clipped")}
        records.append({**item, "scene": scene, "scores": scores,
                        "log2_clip_scalar": log2_scalar})
    logging.info("%d inputs, %.0f s", len(records), time.perf_counter() - t0)
    rows = list(records[0]["scores"])
    summary = responses.summarise(records)
    for family in families:
        ks = np.array([r["log2_clip_scalar"] for r in records if r["family"] == family])
        summary[family]["log2_clip_scalar"] = {"mean": float(ks.mean()), "sd": float(ks.std())}
    res = {"protocol": {"split": _SPLIT.value, "views": len(views), "size": _SIZE.value,
                        "scenes": sorted({v[0] for v in views}),
                        "families": {f: list(c) for f, c in families.items()}},
           "summary": summary, "inputs": records, "total_s": time.perf_counter() - t0}
    fams = list(families)
    table = []
    for row in rows:
        clipped = [summary[f][row]["pu21_clipped"] for f in fams]
        base = [summary[f]["inverse sRGB"]["pu21_clipped"] for f in fams]
        table.append([row] + [f"{c:.2f} ({summary[f][row]['pu21']:.2f})"
                              for c, f in zip(clipped, fams)]
                     + [f"{np.mean(clipped) - np.mean(base):+.2f}"])
    md = [f"## Blind linearisations of the response protocol's inputs ({_SPLIT.value} scenes, "
          f"{len(views)} views, {_SIZE.value} px, {len(records)} inputs)", "",
          "PU21-PSNR on the clipped pixels (overall in brackets), mean per family; last column: "
          "mean over the families minus inverse sRGB's.", "",
          report.markdown_table(["linearisation"] + fams + ["vs inverse sRGB"], table), "",
          "log2 of the oracle's clip-level scalar (mean, sd): " + ", ".join(
              f"{f} {summary[f]['log2_clip_scalar']['mean']:+.2f} "
              f"({summary[f]['log2_clip_scalar']['sd']:.2f})" for f in fams), ""]
    report.publish(Path(_OUT.value), res, "\n".join(md), overwrite=True)


if __name__ == "__main__":
    app.run(main)
