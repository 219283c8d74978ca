"""Stage 2 (CF-Net, Deng et al. 2021): scores of a fused, super-resolved image.

Columns: PSNR and SSIM on RGB (SSIM: Gaussian window 11, sigma 1.5, mean over channels) and the
mean CIEDE2000 colour difference against the label; MEF-SSIM (Ma et al. 2015, grey) and the
colour MEF-SSIMc (Ma et al. 2018) against the HR exposures the image fuses; and the mean HSV
saturation of the image's bright pixels (max channel > 0.6) next to the label's, which shows a
fusion that washes out bright colours. All on [0, 1] images. :func:`fused_scores` is the one implementation, used by ``CFNetTask.eval_step`` during
training and by the held-out evaluations here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hdr_jax import metrics, pipeline
from hdr_jax.data import pair_pipeline
from hdr_jax.eval import baselines, protocol, report, stats

__all__ = [
    "EXAMPLE_KEYS",
    "METRICS",
    "evaluate_methods",
    "evaluate_split",
    "fused_scores",
    "iterate_split",
    "markdown",
    "model_method",
    "per_example_scores",
    "publish",
]

METRICS = ("psnr", "ssim", "ciede2000", "mef_ssim", "mef_ssim_c", "saturation", "label_saturation")
#: The HWC float images of one evaluation example.
EXAMPLE_KEYS = ("under_lr", "over_lr", "under_hr", "over_hr", "label_hr")


def fused_scores(
    fused: jax.Array, label: jax.Array, under_hr: jax.Array, over_hr: jax.Array
) -> dict[str, jax.Array]:
    """Per image: capped PSNR, SSIM and CIEDE2000 of ``fused`` (..., H, W, 3) against
    ``label``, MEF-SSIM and MEF-SSIMc against the HR under/over pair it fuses, and the
    bright-region saturation of ``fused`` and of ``label`` (NaN where no pixel is bright).
    MEF-SSIM needs three scales of an 11x11 window, MEF-SSIMc one; each is left out for
    smaller images. Traced inside ``CFNetTask.eval_step``, jitted
    over an example loop by :func:`per_example_scores`, run op by op on single images."""
    out = {
        "psnr": protocol.psnr(fused, label),
        "ssim": metrics.ssim(fused, label),
        "ciede2000": metrics.mean_ciede2000(fused, label),
        "saturation": metrics.bright_saturation(fused),
        "label_saturation": metrics.bright_saturation(label),
    }
    pair = jnp.stack([under_hr, over_hr], axis=-4)
    if min(fused.shape[-3:-1]) >= metrics.MEF_SSIM_MIN_SIDE:
        out["mef_ssim"] = metrics.mef_ssim(fused, pair)
    if min(fused.shape[-3:-1]) >= metrics.MEF_SSIM_C_MIN_SIDE:
        out["mef_ssim_c"] = metrics.mef_ssim_c(fused, pair)
    return out


#: One compiled program for an evaluation loop over examples of one shape.
_fused_scores_jit = jax.jit(fused_scores)


def per_example_scores(
    examples: Iterable[Mapping[str, np.ndarray]],
    methods: Mapping[str, baselines.Method],
    scale: int,
) -> dict[str, dict[str, np.ndarray]]:
    """{method: {metric: per-example values}} over examples with the :data:`EXAMPLE_KEYS`."""
    acc = {name: stats.Collector() for name in methods}
    for ex in examples:
        for name, fn in methods.items():
            pred = fn(ex["under_lr"], ex["over_lr"], scale)
            scores = _fused_scores_jit(pred, ex["label_hr"], ex["under_hr"], ex["over_hr"])
            acc[name].update(jax.device_get(scores))
    return {name: c.arrays() for name, c in acc.items()}


def evaluate_methods(
    examples: Iterable[Mapping[str, np.ndarray]],
    methods: Mapping[str, baselines.Method],
    scale: int,
) -> dict[str, dict]:
    """Mean PSNR/SSIM/MEF-SSIM and example count per method."""
    per = per_example_scores(examples, methods, scale)
    n = len(next(iter(next(iter(per.values())).values()), []))
    if n == 0:
        raise ValueError("no evaluation examples")
    return {
        name: {k: stats.summarise(v)["mean"] for k, v in d.items()} | {"n": n}
        for name, d in per.items()
    }


def iterate_split(source: Any, *, scale: int, limit: int = 0) -> Iterable[dict[str, np.ndarray]]:
    """Full images of a tfds pair split as HWC float32 dicts (``limit``:
    :func:`protocol.spread_indices`)."""
    if limit and limit < len(source):
        source = [source[i] for i in protocol.spread_indices(len(source), limit)]
    ds = pair_pipeline.make_dataset(
        source, scale=scale, train=False, seed=0, batch_size=1, eval_mode="full"
    )
    for batch in ds:
        yield {k: np.asarray(batch[k][0], np.float32) for k in EXAMPLE_KEYS}


def model_method(weights: str | None, scale: int) -> baselines.Method:
    """The bundled (or ``weights``) CF-Net as a :data:`baselines.Method`."""
    net = pipeline.Pipeline(weights).cfnet(scale)
    return lambda u, o, s: pipeline.fuse_pair(net, u, o)


def evaluate_split(source: Any, *, weights: str | None, scale: int, limit: int = 0) -> dict:
    """The CF-Net row and the baseline rows on a tfds pair split (the table of
    :func:`markdown`)."""
    methods = {"CF-Net (ours)": model_method(weights, scale), **baselines.baseline_methods()}
    return evaluate_methods(iterate_split(source, scale=scale, limit=limit), methods, scale)


def publish(out: str, results: Mapping[str, Mapping[str, Any]], what: str, hr_size: int,
            seconds: float) -> None:
    """Writes ``results`` as out/results.json and the :func:`markdown` table (replacing them),
    titled ``what`` with the HR size and the evaluation time."""
    title = f"{what} (HR {hr_size}px, {seconds:.0f} s)"
    report.publish(out, results, markdown(results, title), overwrite=True)


def markdown(results: Mapping[str, Mapping[str, Any]], title: str) -> str:
    """The stage-2 table: one row per method."""
    rows = [(name, *format_row(r), r["n"]) for name, r in results.items()]
    return f"### {title}\n\n" + report.markdown_table(("method", *COLUMNS, "n"), rows)


#: Table headers of :data:`METRICS` (the label's saturation is a column of every row).
COLUMNS = ("PSNR (RGB)", "SSIM (RGB)", "CIEDE2000", "MEF-SSIM", "MEF-SSIMc", "bright sat.",
           "label bright sat.")


def format_row(scores: Mapping[str, Any]) -> list[str]:
    """The :data:`METRICS` of one row as table cells ('-' where a metric is missing)."""
    fmt = {"psnr": "{:.2f}", "ciede2000": "{:.2f}", "saturation": "{:.3f}",
           "label_saturation": "{:.3f}"}

    def cell(k):
        v = scores.get(k)
        return "-" if v is None or v != v else fmt.get(k, "{:.4f}").format(v)

    return [cell(k) for k in METRICS]
