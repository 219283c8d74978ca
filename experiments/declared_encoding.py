"""What a tone curve declared in the photo's file (ICC profile, PNG gAMA) is worth to the pipeline.

    python -m experiments.declared_encoding [--hdr_dir DIR] [--weights DIR] [--size 256] \
        [--limit N] [--out docs/results/declared_encoding] [--overwrite]

A file's profile states the encoding (ProPhoto RGB's 1.8 power, a linear profile's none) but not
the tone curve a camera or raw converter applies before it. The development scenes
(:func:`hdr_brackets.split_development`; no held-out scene) are rendered through pure power
encodings (gamma 1.0 / 1.8 / 2.6) and through the same encodings after the protocol's S-shaped
tone curve (contrast 6, pivot 0.5), JPEG q90, 2 % and 15 % clipped, and reconstructed three ways:

* as an sRGB photo (the pipeline without the declared curve);
* re-encoded to sRGB from the declared encoding (:func:`profile.to_srgb`), then as an sRGB photo
  (what ``hdr-jax reconstruct`` does for a scene-referred declared curve);
* with the declared encoding as the response (``--response``).

Scored with the protocol's PU21 (:func:`protocol.pu21_protocol`), overall and on the clipped
pixels; the linearised input (inverse sRGB) is the reference row.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from hdr_jax import pipeline
from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera import profile
from hdr_jax.eval import protocol, report, responses

_HDR_DIR = flags.DEFINE_string("hdr_dir", "../shared/data/hdri", "Folder of HDR panoramas.")
_WEIGHTS = flags.DEFINE_string("weights", None, "Weights directory (default: bundled weights).")
_SIZE = flags.DEFINE_integer("size", 256, "Side of the (square) input view, pixels.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Views per scene (0: all of responses.DEV_VIEWS).")
_OUT = flags.DEFINE_string("out", "docs/results/declared_encoding", "Output folder.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing result files.")

GAMMAS = (1.0, 1.8, 2.6)
#: The protocol's S-shaped tone curve (responses.response_families' gamma+S family).
S_CURVE = (6.0, 0.5)
FRACTIONS = (0.02, 0.15)
JPEG_QUALITY = 90
ROWS = ("linearised input (inverse sRGB)", "as an sRGB photo",
        "re-encoded to sRGB from the declared encoding", "declared encoding as --response")


def curves() -> dict[str, tuple[float, np.ndarray]]:
    """{name: (declared gamma, the camera's response)}: each encoding alone and after the S."""
    out = {}
    for g in GAMMAS:
        out[f"gamma {g:g}"] = (g, crf_lib.gamma_crf(g))
        out[f"gamma {g:g} + S"] = (g, crf_lib.s_curve_crf(*S_CURVE, gamma=g))
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    report.refuse_existing(_OUT.value, overwrite=_OVERWRITE.value)
    t0 = time.perf_counter()
    views = responses.development_views(_HDR_DIR.value, _SIZE.value, _LIMIT.value)
    if not views:
        sys.exit(f"{_HDR_DIR.value}: no development scene")
    dev = list(dict.fromkeys(scene for scene, _, _ in views))
    pipe = pipeline.Pipeline.load(_WEIGHTS.value)
    records = []
    for i, (scene, view, radiance) in enumerate(views):
        v = responses.DEV_VIEWS.index(view)
        for name, (g, camera) in curves().items():
            declared = crf_lib.gamma_crf(g)
            for fraction in FRACTIONS:
                ldr, clipped, _ = responses.render_input(
                    radiance, camera, fraction=fraction, jpeg_quality=JPEG_QUALITY)
                preds = dict(zip(ROWS, (
                    protocol.linearise_srgb(ldr),
                    pipeline.reconstruct(pipe, ldr, scale=None).hdr,
                    pipeline.reconstruct(pipe, profile.to_srgb(ldr, declared),
                                         scale=None).hdr,
                    pipeline.reconstruct(pipe, ldr, scale=None, response_curve=declared).hdr,
                )))
                scores = {}
                for row, pred in preds.items():
                    s = protocol.pu21_protocol(pred, radiance, clipped)
                    scores[row] = {"pu21": s["pu21"], "pu21_clipped": s["pu21_clipped"]}
                records.append({"scene": scene, "view": v, "curve": name, "fraction": fraction,
                                "scores": scores})
        if i + 1 == len(views) or views[i + 1][0] != scene:
            print(f"{scene}: {time.perf_counter() - t0:.0f} s", flush=True)
    summary = {}
    for name in curves():
        recs = [r for r in records if r["curve"] == name]
        summary[name] = {row: {m: float(np.nanmean([r["scores"][row][m] for r in recs]))
                               for m in ("pu21", "pu21_clipped")} for row in ROWS}
    table = [[row] + [f"{summary[c][row]['pu21_clipped']:.2f} ({summary[c][row]['pu21']:.2f})"
                      for c in curves()] for row in ROWS]
    md = "\n".join([
        f"## Declared encodings on the development scenes ({len(records)} inputs)", "",
        f"PU21-PSNR on the clipped pixels (overall in brackets), mean over {len(dev)} scenes x "
        f"{_LIMIT.value or len(responses.DEV_VIEWS)} views x {len(FRACTIONS)} clip fractions "
        f"({', '.join(f'{f:.0%}' for f in FRACTIONS)}), JPEG q{JPEG_QUALITY}. Columns: the "
        "camera's curve (the declared encoding alone, or after the S-shaped tone curve).", "",
        report.markdown_table(["reconstruction"] + list(curves()), table)])
    res = {"scenes": dev, "size": _SIZE.value, "fractions": list(FRACTIONS),
           "jpeg_quality": JPEG_QUALITY, "s_curve": list(S_CURVE), "summary": summary,
           "inputs": records, "total_s": time.perf_counter() - t0}
    report.publish(Path(_OUT.value), res, md, overwrite=_OVERWRITE.value)


if __name__ == "__main__":
    app.run(main)
