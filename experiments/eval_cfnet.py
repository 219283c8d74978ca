"""Evaluates stage 2 on the held-out scenes of the synthetic pairs (or a SICE folder) and writes
a table with baseline rows (Mertens + bicubic, bicubic of each input) computed by the same code.

  python -m experiments.eval_cfnet --scale 2 --out docs/results/cfnet_x2
  python -m experiments.eval_cfnet --sice_dir /data/SICE --scale 2 --out results/sice_x2
"""

from __future__ import annotations

import time

import tensorflow_datasets as tfds
from absl import app, flags

from hdr_jax import evaluation
from hdr_jax.data import synthetic_pairs

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
        evaluation.evaluate_sice_cli(
            data_dir=_SICE_DIR.value,
            weights=_WEIGHTS.value,
            scale=scale,
            out_dir=_OUT.value,
            tfds_dir=_DATA_DIR.value,
            limit=_LIMIT.value,
            overwrite=True,
        )
        return
    builder = synthetic_pairs.SyntheticPairs(
        config=f"x{scale}", data_dir=_DATA_DIR.value, file_format="array_record"
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=_HDR_DIR.value)
    )
    methods = {
        "CF-Net (ours)": evaluation.model_method(_WEIGHTS.value, scale),
        **evaluation.baseline_methods(),
    }
    t0 = time.perf_counter()
    examples = evaluation.iterate_split(
        builder.as_data_source("test"), scale=scale, limit=_LIMIT.value
    )
    results = evaluation.evaluate_methods(examples, methods, scale)
    title = (
        f"Synthetic pairs from held-out scenes, x{scale} "
        f"(HR {builder.builder_config.crop_size}px, {time.perf_counter() - t0:.0f} s)"
    )
    evaluation.write_results(_OUT.value, results, title, overwrite=True)
    print(evaluation.to_markdown(results, title))


if __name__ == "__main__":
    app.run(main)
