"""Held-out evaluation of stage 2 (CF-Net) with baseline rows computed by the same code.

Rows: the model; Mertens exposure fusion (OpenCV, contrast/saturation/exposedness weights all 1)
of the LR pair followed by bicubic upscaling; bicubic upscaling of each input alone.
Columns: PSNR and SSIM on RGB (SSIM: Gaussian window 11, sigma 1.5, mean over channels) against
the label, and MEF-SSIM (Ma et al. 2015) against the HR under/over pair, all on [0, 1] images.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import jax
import numpy as np

from hdr_jax import io as hdr_io
from hdr_jax import metrics

Method = Callable[[np.ndarray, np.ndarray, int], np.ndarray]  # (under_lr, over_lr, scale) -> HR


def bicubic_up(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    return np.clip(cv2.resize(img, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC), 0, 1)


def mertens(under: np.ndarray, over: np.ndarray) -> np.ndarray:
    """OpenCV's Mertens fusion with its default weights (all three measures on, exponent 1).

    Fed 8-bit images, as the inputs are: OpenCV scales float input by 1/255 internally, so
    float images in [0, 1] would come out 255x too dark.
    """
    to8 = lambda x: np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)  # noqa: E731
    fused = cv2.createMergeMertens().process([to8(under), to8(over)])
    return np.clip(fused, 0, 1).astype(np.float32)


def baseline_methods() -> dict[str, Method]:
    return {
        "Mertens + bicubic": lambda u, o, s: bicubic_up(mertens(u, o), s),
        "bicubic (under)": lambda u, o, s: bicubic_up(u, s),
        "bicubic (over)": lambda u, o, s: bicubic_up(o, s),
    }


@jax.jit
def _scores(pred, label, under_hr, over_hr):
    return {
        "psnr": metrics.psnr(pred, label),
        "ssim": metrics.ssim(pred, label),
        "mef_ssim": metrics.mef_ssim(pred, jax.numpy.stack([under_hr, over_hr], axis=0)),
    }


def evaluate_methods(
    examples: Iterable[dict], methods: dict[str, Method], scale: int
) -> dict[str, dict]:
    """Mean PSNR/SSIM/MEF-SSIM per method over examples with HWC float keys
    under_lr, over_lr, under_hr, over_hr, label_hr."""
    sums = {name: {"psnr": 0.0, "ssim": 0.0, "mef_ssim": 0.0} for name in methods}
    n = 0
    for ex in examples:
        n += 1
        for name, fn in methods.items():
            pred = fn(ex["under_lr"], ex["over_lr"], scale)
            s = jax.device_get(_scores(pred, ex["label_hr"], ex["under_hr"], ex["over_hr"]))
            for k, v in s.items():
                sums[name][k] += float(v)
    if n == 0:
        raise ValueError("no evaluation examples")
    return {name: {k: v / n for k, v in d.items()} | {"n": n} for name, d in sums.items()}


def to_markdown(results: dict[str, dict], title: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| method | PSNR (RGB) | SSIM (RGB) | MEF-SSIM | n |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['mef_ssim']:.4f} | {r['n']} |"
        )
    return "\n".join(lines) + "\n"


def write_results(
    out_dir: str | os.PathLike, results: dict, title: str, *, overwrite: bool
) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "results.json", out_dir / "results.md"
    for p, text in zip(paths, (json.dumps(results, indent=2) + "\n", to_markdown(results, title))):
        with hdr_io.atomic_output(p, overwrite=overwrite) as tmp:
            Path(tmp).write_text(text)
    return paths


def spread_indices(n: int, limit: int = 0) -> list[int]:
    """`limit` indices spread evenly over range(n) (all of them when limit is 0 or >= n): a
    limited evaluation still covers every held-out scene instead of the first few."""
    if not limit or limit >= n:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, limit)})


def iterate_split(source, *, scale: int, limit: int = 0) -> Iterable[dict]:
    """Full images of a tfds pair split as HWC float32 dicts (`limit`: spread_indices)."""
    from hdr_jax.data import pair_pipeline

    if limit and limit < len(source):
        keep = spread_indices(len(source), limit)
        source = [source[i] for i in keep]
    ds = pair_pipeline.make_dataset(
        source, scale=scale, train=False, seed=0, batch_size=1, eval_mode="full"
    )
    for batch in ds:
        yield {
            k: np.asarray(batch[k][0], np.float32)
            for k in ("under_lr", "over_lr", "under_hr", "over_hr", "label_hr")
        }


def model_method(weights: str | None, scale: int) -> Method:
    from hdr_jax import pipeline

    net = pipeline.Pipeline(weights).cfnet(scale)
    return lambda u, o, s: pipeline.fuse_pair(net, u, o)


def evaluate_sice_cli(*, data_dir, weights, scale, out_dir, tfds_dir, limit, overwrite) -> None:
    import tensorflow_datasets as tfds

    from hdr_jax.data import sice

    if not Path(data_dir).is_dir():
        raise hdr_io.ImageIOError(f"{data_dir}: SICE folder not found")
    out_dir = Path(out_dir)
    if not overwrite:
        for p in (out_dir / "results.json", out_dir / "results.md"):
            if p.exists():
                raise hdr_io.ImageIOError(f"{p}: exists (use --overwrite to replace it)")
    builder = sice.Sice(
        config=f"x{scale}", data_dir=str(tfds_dir or out_dir / "tfds"), file_format="array_record"
    )
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(data_dir))
        )
    except (AssertionError, ValueError, OSError) as e:  # tfds: empty dir; sice: no SICE layout
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise hdr_io.ImageIOError(f"{data_dir}: no usable SICE data ({first})") from e
    if "test" not in builder.info.splits:
        raise hdr_io.ImageIOError(f"{data_dir}: no sequence falls in the held-out test split")
    methods = {"CF-Net (ours)": model_method(weights, scale), **baseline_methods()}
    results = evaluate_methods(
        iterate_split(builder.as_data_source("test"), scale=scale, limit=limit), methods, scale
    )
    title = f"SICE held-out test split, x{scale}"
    json_path, md_path = write_results(out_dir, results, title, overwrite=overwrite)
    print(to_markdown(results, title))
    print(f"wrote {json_path} and {md_path}")
