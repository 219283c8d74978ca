"""Held-out evaluation of both stages and of the two-stage system.

One implementation of each piece, shared by the training loop's ``eval_step``s, the evaluation
scripts (``experiments/eval_*.py``), the ablation runner and the ``hdr-jax evaluate`` command:

* :mod:`~hdr_jax.eval.protocol`  -- input rendering (8-bit sRGB with a target clipped fraction,
  JPEG), the PU21 protocol, the capped PSNR;
* :mod:`~hdr_jax.eval.baselines` -- the non-learned stage-2 rows (Mertens fusion, bicubic);
* :mod:`~hdr_jax.eval.stage1`    -- per-exposure-step PSNR of predicted brackets and the merge
  comparison;
* :mod:`~hdr_jax.eval.stage2`    -- PSNR / SSIM / MEF-SSIM of a fused image, per method;
* :mod:`~hdr_jax.eval.system`    -- the two-stage pipeline on held-out panorama views;
* :mod:`~hdr_jax.eval.stats`     -- aggregation of per-example metrics (NaN marks undefined)
  and paired comparisons;
* :mod:`~hdr_jax.eval.report`    -- Markdown tables and strict-JSON result files.

Evaluators return *per-example* values (an undefined value is NaN, which doubles as the mask);
means, standard errors and counts are computed in one place, :mod:`~hdr_jax.eval.stats`.
"""
