"""`hdr-jax`: the command-line interface.

  hdr-jax reconstruct PHOTO... -o OUTDIR [--scale 2|4] [--stack] [--weights DIR] [--overwrite]
                      [--memory-budget 4GiB]   (also for brackets and fuse: picks the tile sizes)
  hdr-jax brackets IMAGE -o OUTDIR
  hdr-jax fuse UNDER OVER -o OUT.png [--scale 2|4]
  hdr-jax evaluate sice --data-dir DIR [--weights DIR] [--scale 2|4] [--out DIR]

Every expected failure (bad image, bad weights, existing output) ends with one line on stderr
and exit status 1 (2 for usage errors); tracebacks are reserved for bugs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from hdr_jax import io as hdr_io
from hdr_jax import merge

# Limits on input size: below, the networks see almost nothing; above, a photo is more likely a
# mistake (or a panorama stitch) than a camera frame, and the user should downscale first.
MIN_SIDE = 32
MAX_PIXELS = 40_000_000


class CLIError(Exception):
    """An expected failure reported as one line."""


def _warn(message: str) -> None:
    # tqdm.write keeps the message on its own line while a progress bar is drawn on stderr.
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _read_photo(path: Path) -> np.ndarray:
    # Check the size from the header first: decoding a huge image just to reject it can take
    # gigabytes (a 100 MP photo is 1.2 GB as float32).
    info = hdr_io.ldr_info(path)
    h, w = info.height, info.width
    if min(h, w) < MIN_SIDE:
        raise CLIError(
            f"{path}: image is {w}x{h}; the smallest side must be at least {MIN_SIDE} px"
        )
    if h * w > MAX_PIXELS:
        raise CLIError(
            f"{path}: image is {w}x{h} ({h * w / 1e6:.0f} MP); the limit is {MAX_PIXELS / 1e6:.0f} MP"
        )
    image = hdr_io.read_ldr(path)
    if info.bit_depth > 8:
        _warn(
            f"note: {path.name} is {info.bit_depth}-bit; it is treated as display-referred (sRGB)"
        )
    return image


def _outputs_for(outdir: Path, stem: str, args: argparse.Namespace) -> dict[str, Path]:
    outs = {"hdr": outdir / f"{stem}.exr", "preview": outdir / f"{stem}_preview.png"}
    if args.scale:
        outs["fused"] = outdir / f"{stem}_fused.png"
    return outs


def _make_outdir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # e.g. the path is an existing file, or not writable
        raise CLIError(f"{path}: cannot create the output folder ({e.strerror or e})") from e
    return path


def _check_free(paths: list[Path], overwrite: bool) -> None:
    if overwrite:
        return
    existing = [p for p in paths if p.exists()]
    if existing:
        raise CLIError(f"{existing[0]} exists (use --overwrite to replace it)")


def _stack_names(n_side: int) -> list[str]:
    # Exposure steps in half stops relative to the input: ev-4.0 .. ev+4.0.
    return [f"ev{(i - n_side) / 2:+.1f}" for i in range(2 * n_side + 1)]


def _budget(text: str) -> str:
    from hdr_jax import memory

    try:
        memory.parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _tiles(pipe, args: argparse.Namespace, hw: tuple[int, int], *, stage1: bool, scale) -> dict:
    """{'stage1_tile': .., 'stage2_tile': ..} for the stages run, fitting --memory-budget
    ({} without one: the pipeline's default tiles)."""
    if not args.memory_budget:
        return {}
    from hdr_jax import memory

    try:
        tiles = memory.choose_pipeline_tiles(
            pipe, args.memory_budget, hw, stage1=stage1, scale=scale
        )
    except memory.MemoryBudgetError as e:
        raise CLIError(f"--memory-budget: {e}") from None
    if not getattr(args, "quiet", False):
        chosen = ", ".join(
            f"stage {i} tile {tiles[f'stage{i}']['tile']} (peak "
            f"{memory.format_bytes(tiles[f'stage{i}']['peak_bytes'])})"
            for i in (1, 2)
            if tiles[f"stage{i}_tile"]
        )
        _warn(f"memory budget {args.memory_budget}: {chosen}")
    return {k: tiles[k] for k in ("stage1_tile", "stage2_tile") if tiles[k]}


def cmd_reconstruct(args: argparse.Namespace) -> None:
    from hdr_jax import pipeline

    photos = hdr_io.list_images(args.photos, kinds=("ldr",))
    pipe = pipeline.Pipeline.load(args.weights)
    outdir = _make_outdir(Path(args.output))
    failures = 0
    try:
        from tqdm import tqdm

        bar = tqdm(photos, desc="reconstruct", unit="photo", disable=args.quiet or len(photos) < 2)
    except ImportError:  # pragma: no cover
        bar = photos
    for path in bar:
        try:
            _reconstruct_one(pipe, path, outdir, args)
        except (hdr_io.ImageIOError, CLIError) as e:
            if len(photos) == 1:
                raise  # one photo: its own error is the one line, not a summary
            failures += 1
            _warn(f"error: {e}")
    if failures:
        raise CLIError(f"{failures} of {len(photos)} photos failed")


def _reconstruct_one(pipe, path: Path, outdir: Path, args: argparse.Namespace) -> None:
    from hdr_jax import pipeline

    stem = path.stem
    outs = _outputs_for(outdir, stem, args)
    n_side = pipe.up.module.num_exposures
    stack_paths = (
        [outdir / f"{stem}_{name}.png" for name in _stack_names(n_side)] if args.stack else []
    )
    _check_free(list(outs.values()) + stack_paths, args.overwrite)
    image = _read_photo(path)
    tiles = _tiles(pipe, args, image.shape[:2], stage1=True, scale=args.scale)
    t0 = time.perf_counter()
    res = pipeline.reconstruct(
        pipe,
        image,
        scale=args.scale,
        merge_method=args.merge,
        up_method=args.up,
        **tiles,
    )
    hdr_io.write_hdr(outs["hdr"], res.hdr, overwrite=args.overwrite)
    hdr_io.write_ldr(outs["preview"], res.preview, overwrite=args.overwrite)
    if res.fused is not None:
        hdr_io.write_ldr(outs["fused"], res.fused, overwrite=args.overwrite)
    for p, img in zip(stack_paths, res.stack):
        hdr_io.write_ldr(p, img, overwrite=args.overwrite)
    lum = res.hdr.mean(-1)
    pos = lum[lum > 0]
    dr = np.log2(np.percentile(pos, 99.9) / np.percentile(pos, 0.1)) if pos.size else 0.0
    if not args.quiet:
        h, w = image.shape[:2]
        from tqdm import tqdm

        tqdm.write(  # not print: keeps the line apart from a progress bar on the terminal
            f"{path.name}: {w}x{h} -> {outs['hdr'].name} ({dr:.1f} stops, exposures "
            f"{res.kept[1] - res.kept[0] + 1}/{len(res.stack)} kept)"
            + (f", {outs['fused'].name} x{args.scale}" if res.fused is not None else "")
            + f", {time.perf_counter() - t0:.1f} s",
            file=sys.stdout,
        )


def cmd_brackets(args: argparse.Namespace) -> None:
    from hdr_jax import pipeline

    path = Path(args.image)
    pipe = pipeline.Pipeline.load(args.weights)
    outdir = _make_outdir(Path(args.output))
    n_side = pipe.up.module.num_exposures
    names = _stack_names(n_side)
    generated = [outdir / f"{path.stem}_{nm}.png" for i, nm in enumerate(names) if i != n_side]
    hdr_path = outdir / f"{path.stem}.exr"
    _check_free(generated + [hdr_path], args.overwrite)
    image = _read_photo(path)
    tiles = _tiles(pipe, args, image.shape[:2], stage1=True, scale=None)
    stack = pipeline.generate_stack(
        pipe, image, up_method=args.up, **({"tile": tiles["stage1_tile"]} if tiles else {})
    )
    hdr, kept = merge.merge_stack(stack, method=args.merge, tau=pipeline.TAU)
    for i, nm in enumerate(names):
        if i != n_side:
            hdr_io.write_ldr(outdir / f"{path.stem}_{nm}.png", stack[i], overwrite=args.overwrite)
    hdr_io.write_hdr(hdr_path, hdr, overwrite=args.overwrite)
    print(
        f"{path.name}: {len(generated)} exposures + {hdr_path.name} (merged {kept[1] - kept[0] + 1} of {len(stack)})"
    )


def cmd_fuse(args: argparse.Namespace) -> None:
    from hdr_jax import pipeline

    out = Path(args.output)
    _check_free([out], args.overwrite)
    under, over = _read_photo(Path(args.under)), _read_photo(Path(args.over))
    if under.shape != over.shape:
        raise CLIError(
            f"{args.under} and {args.over} differ in size ({under.shape[1]}x{under.shape[0]} vs {over.shape[1]}x{over.shape[0]})"
        )
    pipe = pipeline.Pipeline.load(args.weights)
    tiles = _tiles(pipe, args, under.shape[:2], stage1=False, scale=args.scale)
    fused = pipeline.fuse_pair(
        pipe.cfnet(args.scale), under, over, **({"tile": tiles["stage2_tile"]} if tiles else {})
    )
    hdr_io.write_ldr(out, fused, overwrite=args.overwrite)
    print(f"{out}: {fused.shape[1]}x{fused.shape[0]} (x{args.scale})")


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Stage 2 on the held-out test split of SICE: CF-Net and the baselines of
    :mod:`hdr_jax.eval.stage2`, written to OUT/results.{json,md}."""
    import tensorflow_datasets as tfds

    from hdr_jax.data import sice
    from hdr_jax.eval import report, stage2

    if args.dataset != "sice":
        raise CLIError(f"unknown dataset {args.dataset!r} (supported: sice)")
    if not Path(args.data_dir).is_dir():
        raise hdr_io.ImageIOError(f"{args.data_dir}: SICE folder not found")
    out_dir = Path(args.out)
    report.refuse_existing(out_dir, overwrite=args.overwrite)
    builder = sice.Sice(
        config=f"x{args.scale}",
        data_dir=str(args.tfds_dir or out_dir / "tfds"),
        file_format="array_record",
    )
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(args.data_dir))
        )
    except (AssertionError, ValueError, OSError) as e:  # tfds: empty dir; sice: no SICE layout
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise hdr_io.ImageIOError(f"{args.data_dir}: no usable SICE data ({first})") from e
    if "test" not in builder.info.splits:
        raise hdr_io.ImageIOError(f"{args.data_dir}: no sequence falls in the held-out test split")
    results = stage2.evaluate_split(
        builder.as_data_source("test"), weights=args.weights, scale=args.scale, limit=args.limit
    )
    markdown = stage2.markdown(results, f"SICE held-out test split, x{args.scale}")
    report.publish(out_dir, results, markdown, overwrite=args.overwrite)


MERGE_CHOICES = merge.MERGE_METHODS
MERGE_HELP = (
    "how the stack becomes the HDR: 'anchored' (default) keeps every input channel that is not "
    "clipped and fills clipped channels from the generated darker exposures; 'robust' merges the "
    "whole generated stack; 'debevec' is the public code's merge (linear response)"
)


UP_CHOICES = ("response", "network")  # == pipeline.UP_METHODS (tested; the CLI imports jax lazily)
UP_HELP = (
    "how the brighter exposures are made: 'response' (default when the weights have a response "
    "classifier) re-exposes the photo with the camera response it recognises; 'network' runs "
    "the DrTMO up-exposure network"
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hdr-jax", description="Single-image HDR reconstruction (DrTMO + CF-Net) in JAX."
    )
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, outputs=True):
        sp.add_argument(
            "--weights", default=None, help="weights directory (default: the bundled weights)"
        )
        if outputs:
            sp.add_argument(
                "--overwrite", action="store_true", help="replace existing output files"
            )

    def budget_option(sp):
        sp.add_argument(
            "--memory-budget",
            type=_budget,
            default=None,  # argparse would run a string default through `type`
            metavar="SIZE",
            help="e.g. 4GiB: tile sizes chosen so that each compiled network call fits",
        )

    r = sub.add_parser("reconstruct", help="photo(s) -> HDR (.exr), fused x2/x4 image, preview")
    r.add_argument("photos", nargs="+", help="image files, folders or glob patterns")
    r.add_argument("-o", "--output", required=True, help="output folder")
    r.add_argument(
        "--scale", type=int, choices=(0, 2, 4), default=2, help="stage-2 scale (0: skip stage 2)"
    )
    r.add_argument("--stack", action="store_true", help="also write the 17 exposures")
    r.add_argument("--merge", choices=MERGE_CHOICES, default="anchored", help=MERGE_HELP)
    r.add_argument("--up", choices=UP_CHOICES, default=None, help=UP_HELP)
    r.add_argument("--quiet", action="store_true")
    common(r)
    budget_option(r)
    r.set_defaults(func=cmd_reconstruct)

    b = sub.add_parser("brackets", help="photo -> 16 generated exposures + merged HDR")
    b.add_argument("image")
    b.add_argument("-o", "--output", required=True)
    b.add_argument("--merge", choices=MERGE_CHOICES, default="anchored", help=MERGE_HELP)
    b.add_argument("--up", choices=UP_CHOICES, default=None, help=UP_HELP)
    common(b)
    budget_option(b)
    b.set_defaults(func=cmd_brackets)

    f = sub.add_parser("fuse", help="under + over exposure -> fused, super-resolved image")
    f.add_argument("under")
    f.add_argument("over")
    f.add_argument("-o", "--output", required=True)
    f.add_argument("--scale", type=int, choices=(2, 4), default=2)
    common(f)
    budget_option(f)
    f.set_defaults(func=cmd_fuse)

    e = sub.add_parser("evaluate", help="evaluate stage 2 on the held-out split of a dataset")
    e.add_argument("dataset", help="sice")
    e.add_argument(
        "--data-dir", required=True, help="SICE folder (Dataset_Part1/Dataset_Part2 layout)"
    )
    e.add_argument("--scale", type=int, choices=(2, 4), default=2)
    e.add_argument("--out", default="eval_sice", help="folder for results.json / results.md")
    e.add_argument(
        "--tfds-dir", default=None, help="where to build the tfds dataset (default: OUT/tfds)"
    )
    e.add_argument("--limit", type=int, default=0, help="evaluate at most N sequences (0: all)")
    common(e)
    e.set_defaults(func=cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from hdr_jax import bundle

    try:
        args.func(args)
    except (hdr_io.ImageIOError, CLIError, bundle.WeightsError) as e:
        print(f"hdr-jax: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hdr-jax: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
