"""The colour trade-off of stage 2: CF-Net weights x ``chroma_blend`` on synthetic pairs.

  python -m experiments.eval_colour --scale 2 --split train --limit 16 \
      --weights base=DIR_A --weights colour=DIR_B --out docs/results/colour_x2_train

Each row is a weights directory (``NAME=DIR``; default: the bundled weights as ``bundled``) with
its fused output re-coloured by :func:`hdr_jax.models.cfnet.restore_chroma` at one blend (0 =
the network's own output), scored like every stage-2 table (:mod:`hdr_jax.eval.stage2`), next to
the Mertens baselines. ``--split train`` scores pairs of the training scenes (where a blend is
chosen); ``test`` the held-out scenes.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import app, flags

from hdr_jax import pipeline
from hdr_jax.data import synthetic_pairs
from hdr_jax.eval import baselines, stage2
from hdr_jax.models.cfnet import restore_chroma

_WEIGHTS = flags.DEFINE_multi_string("weights", [], "NAME=DIR (default: bundled=<bundled>).")
_BLENDS = flags.DEFINE_list("blends", ["0", "0.35", "0.5", "0.65"], "chroma_blend values.")
_SCALE = flags.DEFINE_enum("scale", "2", ["2", "4"], "Super-resolution factor.")
_SPLIT = flags.DEFINE_enum("split", "train", ["train", "test"], "Pairs of which scenes.")
_HDR_DIR = flags.DEFINE_string("hdr_dir", "../shared/data/hdri", "HDR folder (synthetic pairs).")
_DATA_DIR = flags.DEFINE_string("data_dir", "workdirs/default/tfds", "tfds data directory.")
_LIMIT = flags.DEFINE_integer("limit", 16, "At most N images, spread evenly (0: all).")
_OUT = flags.DEFINE_string("out", None, "Output folder for results.json/.md.", required=True)


def blended_methods(name: str, weights: str | None, scale: int, blends) -> dict:
    """``{row: method}`` for one weights directory: the raw CF-Net run once per pair, re-coloured
    at each blend."""
    net = pipeline.Pipeline(weights).cfnet(scale)
    raw = net.module.clone(chroma_blend=0.0)
    apply = jax.jit(lambda v, over, under: raw.apply(v, over, under))
    last: dict = {}

    def outputs(under, over):
        key = (under.shape, hash(under.tobytes()), hash(over.tobytes()))
        if last.get("key") != key:  # every blend of one pair reuses one forward pass
            out = apply(net.variables, over[None], under[None])
            last.update(key=key, out={k: np.asarray(out[k][0]) for k in ("fused", "srb_under",
                                                                         "srb_over")})
        return last["out"]

    def method(blend):
        def fuse(under, over, s):
            o = outputs(under, over)
            return np.asarray(restore_chroma(o["fused"], o["srb_under"], o["srb_over"], blend))

        return fuse

    return {f"{name}, chroma blend {b:g}": method(b) for b in blends}


def main(argv):
    del argv
    scale = int(_SCALE.value)
    builder = synthetic_pairs.prepared(scale, _DATA_DIR.value, _HDR_DIR.value)
    blends = [float(b) for b in _BLENDS.value]
    named = [w.split("=", 1) for w in _WEIGHTS.value] or [("bundled", None)]
    methods = {}
    for name, weights in named:
        methods.update(blended_methods(name, weights, scale, blends))
    methods.update(baselines.baseline_methods())
    t0 = time.perf_counter()
    source = builder.as_data_source(_SPLIT.value)
    results = stage2.evaluate_methods(
        stage2.iterate_split(source, scale=scale, limit=_LIMIT.value), methods, scale
    )
    what = f"Colour trade-off, synthetic pairs of the {_SPLIT.value} scenes, x{scale}"
    stage2.publish(_OUT.value, results, what, builder.builder_config.crop_size,
                   time.perf_counter() - t0)


if __name__ == "__main__":
    app.run(main)
