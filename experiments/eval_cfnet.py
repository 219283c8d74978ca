"""Evaluates stage 2 on the held-out scenes of the synthetic pairs (or a SICE folder) and writes
a table with baseline rows (Mertens + bicubic, bicubic of each input) computed by the same code
(:mod:`hdr_jax.eval.stage2`).

  python -m experiments.eval_cfnet --scale 2 --out docs/results/cfnet_x2
  python -m experiments.eval_cfnet --sice_dir /data/SICE --scale 2 --out results/sice_x2

With ``--sice_dir`` this is ``hdr-jax evaluate sice`` (the same command, same files).
"""

from __future__ import annotations

import sys
import time

from absl import app, flags

from hdr_jax import cli
from hdr_jax.data import synthetic_pairs
from hdr_jax.eval import stage2

_WEIGHTS = flags.DEFINE_string("weights", None, "Weights directory (default: bundled).")
_SCALE = flags.DEFINE_enum("scale", "2", ["2", "4"], "Super-resolution factor.")
_HDR_DIR = flags.DEFINE_string("hdr_dir", "../shared/data/hdri", "HDR folder (synthetic pairs).")
_SICE_DIR = flags.DEFINE_string("sice_dir", None, "Evaluate on SICE instead (its test split).")
_DATA_DIR = flags.DEFINE_string("data_dir", "workdirs/default/tfds", "tfds data directory.")
_OUT = flags.DEFINE_string("out", "docs/results/cfnet", "Output folder for results.json/.md.")
_LIMIT = flags.DEFINE_integer(
    "limit", 0, "At most N test images, spread evenly over the split (0: all)."
)


def main(argv):
    del argv
    scale = int(_SCALE.value)
    if _SICE_DIR.value:
        args = ["evaluate", "sice", "--data-dir", _SICE_DIR.value, "--scale", str(scale)]
        args += ["--out", _OUT.value, "--tfds-dir", _DATA_DIR.value]
        args += ["--limit", str(_LIMIT.value), "--overwrite"]
        sys.exit(cli.main(args + (["--weights", _WEIGHTS.value] if _WEIGHTS.value else [])))
    builder = synthetic_pairs.prepared(scale, _DATA_DIR.value, _HDR_DIR.value)
    t0 = time.perf_counter()
    results = stage2.evaluate_split(
        builder.as_data_source("test"), weights=_WEIGHTS.value, scale=scale, limit=_LIMIT.value
    )
    stage2.publish(_OUT.value, results, f"Synthetic pairs from held-out scenes, x{scale}",
                   builder.builder_config.crop_size, time.perf_counter() - t0)


if __name__ == "__main__":
    app.run(main)
