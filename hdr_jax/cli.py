"""`hdr-jax`: the command-line interface.

  hdr-jax reconstruct PHOTO... -o OUTDIR [--scale 2|4] [--stack] [--weights DIR] [--overwrite]
                      [--ignore-gain-map] [--memory-budget 4GiB]   (the budget also for brackets
                      and fuse: picks the tile sizes)
  hdr-jax brackets IMAGE -o OUTDIR
  hdr-jax fuse UNDER OVER -o OUT.png [--scale 2|4]
  hdr-jax calibrate PHOTO PHOTO... -o CURVE.txt [--ev EV EV...] [--lossy]   (the --response file)
  hdr-jax calibrate PHOTO PHOTO... -o FOLDER   (filed under the camera the EXIF names; then
                      --response FOLDER reads each photo with its own camera's curve)
  hdr-jax evaluate sice --data-dir DIR [--weights DIR] [--scale 2|4] [--out DIR]

Exit status: 0 all done; 1 an input or output failed (one line on stderr each, and with several
photos a summary line; the other photos are still processed); 2 a usage error (argparse's usage
block); 130 / 143 interrupted by SIGINT / SIGTERM (one line; no temporary or partial file is
left; a run killed outright leaves hidden temporary files, which the next write of the same
output removes). Every output path is checked before any network runs, and each photo's outputs
are written as a set: all of them, or none. Tracebacks are reserved for bugs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fractions
import io
import logging
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np

from hdr_jax import interrupts, merge
from hdr_jax import io as hdr_io

# Limits on input size: below, the networks see almost nothing; above, a photo is more likely a
# mistake (or a panorama stitch) than a camera frame, and the user should downscale first.
MIN_SIDE = 32
MAX_PIXELS = 40_000_000


class CLIError(Exception):
    """An expected failure reported as one line."""


def _warn(message: str) -> None:
    # tqdm.write keeps the message on its own line while a progress bar is drawn on stderr.
    from tqdm import tqdm

    tqdm.write(hdr_io.printable(message), file=sys.stderr)


def _read_photo(path: Path, declared=None, *, raw_note: bool = True) -> np.ndarray:
    """The photo as float RGB; a note for a 16-bit one unless the file's ``declared`` curve
    (:func:`_declarations`) is used, which gets its own note (:func:`_apply_declared`), and for
    a camera raw file unless ``raw_note`` is False."""
    # Check the size from the header first: decoding a huge image just to reject it can take
    # gigabytes (a 100 MP photo is 1.2 GB as float32).
    info = hdr_io.ldr_info(path)
    h, w = info.height, info.width
    if min(h, w) < MIN_SIDE:
        raise CLIError(
            f"{path}: image is {w}x{h}; the smallest side must be at least {MIN_SIDE} px"
        )
    # A raw file above the limit (a 45-61 MP camera) is decoded at half size instead, 11-15 MP:
    # LibRaw makes each 2x2 block of the sensor's colour filter one pixel (a linear DNG's blocks
    # are averaged after its decode).
    half = info.format == "RAW" and h * w > MAX_PIXELS
    hh, hw = (-(-h // 2), -(-w // 2)) if half else (h, w)
    if hh * hw > MAX_PIXELS:
        limit = f"the limit is {MAX_PIXELS / 1e6:.0f} MP"
        raise CLIError(
            f"{path}: image is {w}x{h} ({h * w / 1e6:.0f} MP); {limit}"
            + (f" (at half size {hw}x{hh}, as a raw file is read above it)" if half else "")
        )
    if half:
        _warn(f"note: {path.name} is {w}x{h} ({h * w / 1e6:.0f} MP), above the "
              f"{MAX_PIXELS / 1e6:.0f} MP limit: its raw data is decoded at half size, {hw}x{hh}")
    image = hdr_io.read_ldr(path, raw_half_size=half)
    if info.frames > 1 and info.format != "MPO":  # an MPO's others are previews or depth maps
        _warn(f"note: {path.name} holds {info.frames} images (pages or frames); the first is used")
    if info.format == "RAW":
        if raw_note:
            how = "decoded at half size" if half else "demosaiced"
            _warn(f"note: {path.name} is camera raw data: {how} by LibRaw with the white "
                  "balance the camera recorded, linear, encoded as sRGB, so its response is known")
    elif info.bit_depth > 8 and declared is None:
        _warn(
            f"note: {path.name} is {info.bit_depth}-bit; it is treated as display-referred (sRGB)"
        )
    return image


def camera_file_name(camera: str) -> str:
    """The file a folder of curves keeps ``camera``'s response in (``calibrate -o FOLDER``
    writes it, ``--response FOLDER`` reads it): the camera's name with the characters a file
    name cannot safely hold replaced by '_', and '.txt'."""
    name = re.sub(r"[^A-Za-z0-9 ._+-]", "_", camera).strip(" .") or "_"
    return f"{name}.txt"


def _camera_curve(path: Path, response: np.ndarray | Path | None) -> np.ndarray | None:
    """``--response``'s curve for the photo at ``path``: a given curve as it is; from a folder
    of curves, the one of the camera the photo's EXIF names (with a 'note:' either way: read
    with it, or no curve for its camera there and its response estimated, as without
    --response). Camera raw files need none (:func:`_photo_response`)."""
    if not isinstance(response, Path):
        return response
    if hdr_io.is_raw(path):
        return None
    try:
        camera = hdr_io.exif_camera(path)
    except hdr_io.ImageIOError:  # reading the photo says what is wrong with it
        return None
    if camera is None:
        _warn(f"note: {path.name} names no camera in its EXIF (Make, Model), so none of the "
              f"curves in {response} is its own; its response is estimated")
        return None
    file = response / camera_file_name(camera)
    if not file.is_file():
        _warn(f"note: {path.name}: {response} holds no curve for its camera, {camera} "
              f"({file.name}); its response is estimated")
        return None
    from hdr_jax.camera import crf

    try:
        curve = crf.parse_response(str(file))
    except ValueError as e:
        raise CLIError(f"{path}: --response: {e}") from None
    _warn(f"note: {path.name} is read with the response of its camera, {camera} ({file})")
    return curve


def _photo_response(path: Path, curve: np.ndarray | None) -> np.ndarray | None:
    """The response the pipeline is told for the photo at ``path``: ``--response``'s
    ``curve``, or for a camera raw file the sRGB curve, which ``read_ldr`` encodes its linear
    data with: its codes are exactly sRGB, so nothing about its camera needs estimating."""
    if not hdr_io.is_raw(path):
        return curve
    if curve is not None:
        _warn(f"note: --response does not apply to {path.name}: camera raw data is decoded "
              "linearly")
    from hdr_jax.camera import crf

    return crf.srgb_crf()


def _declarations(path: Path, args: argparse.Namespace, *, curve_given: bool = False):
    """(tone curve, primaries) the photo's file declares, read from its header once:
    ``profile.Declared`` when the curve is not sRGB-like (None with ``curve_given``: --response
    wins) and ``profile.ColourSpace`` when the primaries are not sRGB's; (None, None) with
    ``--ignore-profile``."""
    from hdr_jax.camera import profile

    if not args.profile:
        return None, None
    info = hdr_io.colour_metadata(path)
    unread = profile.unread_profile(info)
    if unread:
        _warn(f"note: {path.name}: its ICC profile {unread}; read as sRGB")
    declared = None if curve_given else profile.declared_response(info)
    return declared, profile.declared_colour_space(info)


def _tags(path: Path, space) -> tuple[dict, dict]:
    """(write_ldr, write_hdr) keyword arguments that record ``space`` (``_declarations``) in a
    photo's outputs, with one 'note:' line; ({}, {}) for None. The networks work on the photo's
    own RGB, so its outputs are in its primaries and must say so, or they show as sRGB."""
    if space is None:
        return {}, {}
    _warn(f"note: {path.name} is in {space.name} primaries ({space.source}); its outputs are "
          "tagged with them (--ignore-profile: read and written as sRGB)")
    return {"icc_profile": space.icc_profile()}, {"chromaticities": space.chromaticities}


def _gain_map(path: Path, args: argparse.Namespace, shape: tuple[int, int]):
    """The HDR gain map (``gainmap.GainMap``) of the photo (read as ``shape``, (h, w)) when it
    carries a usable one and ``--ignore-gain-map`` is not given, else None; one that cannot be
    used gets a warning (the networks then make the HDR, as for a photo without one)."""
    from hdr_jax.camera import gainmap

    if not args.gain_map:
        return None
    try:
        found = hdr_io.read_gain_map(path)
        if found is None:
            return None
        gm = gainmap.parse(*found)
        if gm.base_is_hdr:
            raise gainmap.GainMapError("its base image is the HDR rendition (BaseRenditionIsHDR)")
        gainmap.check_shape(gm, shape)
    except (hdr_io.ImageIOError, gainmap.GainMapError) as e:
        where = "" if isinstance(e, hdr_io.ImageIOError) else f"{path}: gain map: "
        _warn(f"warning: {where}{e}; the networks make its HDR instead")
        return None
    return gm


def _apply_declared(path: Path, image: np.ndarray, declared) -> np.ndarray:
    """``image`` re-encoded to sRGB when ``declared`` is a scene-referred curve (linear data),
    else unchanged; a declared curve gets one 'note:' line either way."""
    from hdr_jax.camera import profile

    if declared is None:
        return image
    if declared.scene_linear:
        _warn(f"note: {path.name} is decoded with the scene-referred curve of {declared.source} "
              f"(gamma {declared.gamma:.2f}), not as sRGB (--ignore-profile: as sRGB)")
        return profile.to_srgb(image, declared.curve)
    _warn(f"note: {path.name} declares gamma {declared.gamma:.2f} in {declared.source}, not sRGB; "
          "it is read as an sRGB photo, since a camera's or raw converter's tone curve usually "
          f"comes first: give --response gamma:{declared.gamma:.2f} if none does")
    return image


def _output_path(text: str) -> Path:
    # The shell leaves a quoted '~/x' alone; the user still means their home.
    return Path(os.path.expanduser(text))


#: Folders this run created for its outputs, outermost first: removed again if they are still
#: empty when the command fails (a failed run leaves nothing behind).
_CREATED_DIRS: list[Path] = []


def _make_outdir(path: Path) -> Path:
    _refuse_a_file(path)  # -o photo.jpg: say so, rather than mkdir's "File exists"
    missing = [p for p in (path, *path.parents) if not p.exists()][::-1]
    for p in missing:  # mkdir would say "File exists" of a link to nowhere
        if p.is_symlink():
            raise CLIError(f"{p}: is a link to {os.readlink(p)}, which does not exist")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # e.g. the path is an existing file, or not writable
        raise CLIError(f"{path}: cannot create the output folder ({e.strerror or e})") from e
    _CREATED_DIRS.extend(missing)
    _check_writable(path)
    return path


def _remove_created_dirs() -> None:
    for p in reversed(_CREATED_DIRS):
        try:
            p.rmdir()  # only when empty: a folder with any output in it stays
        except OSError:
            pass
    _CREATED_DIRS.clear()


def _refuse_a_file(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise CLIError(f"{folder}: is not a folder")


def _check_writable(folder: Path) -> None:
    _refuse_a_file(folder)
    if not folder.is_dir():
        raise CLIError(f"{folder}: output folder does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CLIError(f"{folder}: output folder is not writable")


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


@dataclasses.dataclass
class _Plan:
    """Every output path of a run, checked before any network runs."""

    inputs: set[Path]  # resolved input files: never an output, whatever the flags
    overwrite: bool
    claimed: dict[Path, Path] = dataclasses.field(default_factory=dict)  # output -> its photo

    def claim(self, photo: Path, paths: list[Path], *, name_photo: bool = False) -> None:
        """Checks `photo`'s outputs (CLIError naming the first problem) and reserves them;
        ``name_photo``: an output that is an input also names the photo that would write it
        (where one run has several photos, each with its own outputs)."""
        for p in paths:
            if len(os.fsencode(p.name)) > _name_max(p.parent):
                raise CLIError(
                    f"{p}: output file name too long ({len(os.fsencode(p.name))} bytes; the "
                    f"limit is {_name_max(p.parent)})"
                )
            key = p.parent.resolve() / p.name
            if key in self.inputs or (p.exists() and p.resolve() in self.inputs):
                by = f" ({photo.name} would write over it)" if name_photo else ""
                raise CLIError(f"{p}: is an input{by}; choose another output folder or name")
            if key in self.claimed:
                of = (f"an output of both {self.claimed[key]} and {photo}" if name_photo
                      else f"also an output of {self.claimed[key]}")
                raise CLIError(
                    f"{p}: {of} (two photos with the same name; rename one or run them "
                    "separately)"
                )
            if p.is_dir():
                raise CLIError(f"{p}: is a directory")
            if os.path.lexists(p) and not self.overwrite:
                raise CLIError(f"{p} exists (use --overwrite to replace it)")
        for p in paths:
            self.claimed[p.parent.resolve() / p.name] = photo


def _new_plan(inputs: list[Path], overwrite: bool) -> _Plan:
    return _Plan({p.resolve() for p in inputs}, overwrite)


def _stack_names(n_side: int) -> list[str]:
    # Exposure steps in half stops relative to the input: ev-4.0 .. ev+4.0.
    return [f"ev{(i - n_side) / 2:+.1f}" for i in range(2 * n_side + 1)]


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 0 or more")
    return n


def _side(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < MIN_SIDE:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least {MIN_SIDE} (pixels)")
    return n


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
            f"stage {i} tile {tiles[f'stage{i}_tile']} (peak "
            f"{memory.format_bytes(tiles[f'stage{i}']['peak_bytes'])})"
            for i in (1, 2)
            if tiles[f"stage{i}_tile"]
        )
        _warn(f"memory budget {args.memory_budget}: {chosen}")
    return {k: tiles[k] for k in ("stage1_tile", "stage2_tile") if tiles[k]}


def _response_curve(args: argparse.Namespace) -> np.ndarray | Path | None:
    """The (1024,) curve ``--response`` names, the folder of curves by camera it names
    (:func:`_camera_curve`), or None (not given)."""
    if args.response is None:
        return None
    folder = Path(os.path.expanduser(args.response))
    if folder.is_dir():
        return folder
    from hdr_jax.camera import crf

    try:
        return crf.parse_response(args.response)
    except ValueError as e:
        raise CLIError(f"--response: {e}") from None


def cmd_reconstruct(args: argparse.Namespace) -> None:
    from hdr_jax import pipeline

    curve = _response_curve(args)
    photos = _prefer_raw(hdr_io.list_images(args.photos, kinds=("ldr",)))
    pipe = pipeline.Pipeline.load(args.weights)
    outdir = _make_outdir(_output_path(args.output))
    n_side = pipe.up.module.num_exposures
    plan = _new_plan(photos, args.overwrite)
    outputs = {}
    for path in photos:
        outputs[path] = _reconstruct_outputs(path, outdir, n_side, fused=bool(args.scale),
                                             stack=args.stack)
    # An input named like another input's output is most likely that output from an earlier
    # run into the same folder: never process it as a photo.
    made_by = {p.parent.resolve() / p.name: src for src, o in outputs.items() for p in o.values()}
    jobs: list[tuple[Path, dict[str, Path]]] = []
    failures = []
    for path, outs in outputs.items():  # every output checked before the first network runs
        try:
            source = made_by.get(path.parent.resolve() / path.name)
            if source is not None and source != path:
                raise CLIError(
                    f"{path}: is named like an output of {source}; use another output folder"
                )
            plan.claim(path, list(outs.values()), name_photo=True)
            jobs.append((path, outs))
        except CLIError as e:
            failures.append(e)
            continue
        if args.overwrite:
            _warn_left_over(path, outs, n_side)
    if len(photos) == 1 and failures:
        raise failures[0]  # one photo: its own error is the one line, not a summary
    for e in failures:
        _warn(f"error: {e}")
    from tqdm import tqdm

    # A progress bar only for a person watching: in a log it would be a line per update.
    quiet_bar = args.quiet or len(jobs) < 2 or not sys.stderr.isatty()
    for path, outs in tqdm(jobs, desc="reconstruct", unit="photo", disable=quiet_bar):
        try:
            _reconstruct_one(pipe, path, outs, args, curve)
        except (hdr_io.ImageIOError, CLIError) as e:
            if len(photos) == 1:
                raise
            failures.append(e)
            _warn(f"error: {e}")
    if failures:
        raise CLIError(f"{len(failures)} of {len(photos)} photos failed")


def _prefer_raw(photos: list[Path]) -> list[Path]:
    """``photos`` without the JPEG / HEIF / ... a camera saved next to its raw file of the same
    shot (same folder, same name), each dropped with a 'note:': a camera set to raw + JPEG
    writes both, and the raw file holds the better data (and both would write one output)."""
    raws = {(p.parent, p.stem): p for p in photos if hdr_io.is_raw(p)}
    kept, pairs = [], []
    for p in photos:
        raw = None if hdr_io.is_raw(p) else raws.get((p.parent, p.stem))
        if raw is not None:
            _warn(f"note: {p.name} is skipped: the camera raw file of the same shot, {raw.name}, "
                  "is used")
            pairs.append((raw, p))
        else:
            kept.append(p)
    if pairs:  # once: one such pair calibrates the camera's JPEGs
        _warn(f"note: `hdr-jax calibrate {pairs[0][0].name} {pairs[0][1].name} -o CURVE.txt` "
              "reads this camera's JPEG response off that shot, for its photos without a raw "
              "file (--response CURVE.txt)")
    return kept


def _reconstruct_outputs(path: Path, outdir: Path, n_side: int, *, fused: bool,
                         stack: bool) -> dict[str, Path]:
    """The outputs `reconstruct` writes for one photo, by kind: 'hdr', 'preview', with `fused`
    'fused', with `stack` one per exposure step (:func:`_stack_names`)."""
    outs = {"hdr": outdir / f"{path.stem}.exr", "preview": outdir / f"{path.stem}_preview.png"}
    if fused:
        outs["fused"] = outdir / f"{path.stem}_fused.png"
    if stack:
        outs.update({nm: outdir / f"{path.stem}_{nm}.png" for nm in _stack_names(n_side)})
    return outs


def _warn_left_over(path: Path, outs: dict[str, Path], n_side: int) -> None:
    """With --overwrite: outputs `reconstruct` gives `path` under other options (a fused image,
    a stack), found in the folder and not among this run's `outs`. They stay (the flag replaces
    what this run writes, nothing else), but they no longer belong with the new HDR, so say so."""
    every = _reconstruct_outputs(path, outs["hdr"].parent, n_side, fused=True, stack=True)
    left = {kind: p for kind, p in every.items() if kind not in outs and os.path.lexists(p)}
    fused = [p for kind, p in left.items() if kind == "fused"]
    stack = [p for kind, p in left.items() if kind != "fused"]
    for found, why in ((fused, "no fused image: --scale 0"), (stack, "no stack: no --stack")):
        if found:
            which = (f"{found[0]} and {len(found) - 1} more are from an earlier run and do"
                     if len(found) > 1 else f"{found[0]} is from an earlier run and does")
            _warn(f"warning: {which} not match the new HDR (this run writes {why})")


def _warn_degenerate(path: Path, image: np.ndarray,
                     consequence: str = "its HDR is the photo itself, linearised") -> None:
    from hdr_jax import pipeline

    kind = pipeline.degenerate(image)
    if kind:
        _warn(f"warning: {path.name} is {kind}; it records no scene detail, so {consequence}")


def _reconstruct_one(
    pipe, path: Path, outs: dict[str, Path], args: argparse.Namespace,
    curve: np.ndarray | Path | None,
) -> None:
    from hdr_jax import pipeline

    curve = _camera_curve(path, curve)
    declared, space = _declarations(path, args, curve_given=curve is not None)
    image = _read_photo(path, declared)
    _warn_degenerate(path, image)
    image = _apply_declared(path, image, declared)
    curve = _photo_response(path, curve)
    ldr_tags, hdr_tags = _tags(path, space)
    gain_map = _gain_map(path, args, image.shape[:2])
    tiles = _tiles(pipe, args, image.shape[:2], stage1=True, scale=args.scale)
    t0 = time.perf_counter()
    from_map = {}
    if gain_map is not None:
        # The camera made its HDR rendition from its exposures: it replaces the networks'
        # estimate (the fused image and the stack are still theirs).
        from hdr_jax.camera import crf, gainmap

        hdr = gainmap.hdr_rendition(crf.srgb_decode(image), gain_map)
        from_map = {"hdr": hdr, "preview": pipeline.tonemap_preview(hdr)}
    if gain_map is None or args.scale or args.stack:
        res = pipeline.reconstruct(
            pipe,
            image,
            scale=args.scale,
            merge_method=args.merge,
            up_method=args.up,
            response_curve=curve,
            highlights=args.highlights,
            hdr_side=args.hdr_side,
            full_stack=args.stack,  # stage 2 makes it anyway; without either, a big photo is faster
            **tiles,
        )
        res = dataclasses.replace(res, **from_map)
    else:  # the gain map makes the HDR; nothing else needs the networks
        res = pipeline.Result(stack=None, kept=(0, 0), pair=None, fused=None, timings={},
                              **from_map)
    stack_names = _stack_names(pipe.up.module.num_exposures) if args.stack else []
    with hdr_io.OutputSet(overwrite=args.overwrite) as out:
        out.write_hdr(outs["hdr"], res.hdr, **hdr_tags)
        out.write_ldr(outs["preview"], res.preview, **ldr_tags)
        if res.fused is not None:
            out.write_ldr(outs["fused"], res.fused, **ldr_tags)
        for name, img in zip(stack_names, res.stack if args.stack else ()):
            out.write_ldr(outs[name], img, **ldr_tags)
    lum = res.hdr.mean(-1)
    pos = lum[lum > 0]
    dr = np.log2(np.percentile(pos, 99.9) / np.percentile(pos, 0.1)) if pos.size else 0.0
    if not args.quiet:
        h, w = image.shape[:2]
        from tqdm import tqdm

        tqdm.write(  # not print: keeps the line apart from a progress bar on the terminal
            hdr_io.printable(
                f"{path.name}: {w}x{h} -> {outs['hdr'].name} ({dr:.1f} stops, "
                + (f"from its HDR gain map, up to +{gain_map.max_boost_stops:.1f} stops)"
                   if gain_map is not None else
                   f"exposures {res.kept[1] - res.kept[0] + 1}/"
                   f"{2 * pipe.up.module.num_exposures + 1} kept)")
                + (f", {outs['fused'].name} x{args.scale}" if res.fused is not None else "")
                + f", {time.perf_counter() - t0:.1f} s"
            ),
            file=sys.stdout,
        )


def cmd_brackets(args: argparse.Namespace) -> None:
    from hdr_jax import pipeline

    path = Path(args.image)
    curve = _response_curve(args)
    pipe = pipeline.Pipeline.load(args.weights)
    outdir = _make_outdir(_output_path(args.output))
    n_side = pipe.up.module.num_exposures
    names = _stack_names(n_side)
    generated = {i: outdir / f"{path.stem}_{nm}.png" for i, nm in enumerate(names) if i != n_side}
    hdr_path = outdir / f"{path.stem}.exr"
    _new_plan([path], args.overwrite).claim(path, [*generated.values(), hdr_path])
    curve = _camera_curve(path, curve)
    declared, space = _declarations(path, args, curve_given=curve is not None)
    image = _read_photo(path, declared)
    _warn_degenerate(path, image)
    image = _apply_declared(path, image, declared)
    curve = _photo_response(path, curve)
    ldr_tags, hdr_tags = _tags(path, space)
    tiles = _tiles(pipe, args, image.shape[:2], stage1=True, scale=None)
    stack = pipeline.generate_stack(
        pipe, image, up_method=args.up, response_curve=curve,
        **({"tile": tiles["stage1_tile"]} if tiles else {}),
    )
    hdr, kept = pipeline.photo_hdr(pipe, stack, image, args.merge, curve)
    with hdr_io.OutputSet(overwrite=args.overwrite) as out:
        for i, p in generated.items():
            out.write_ldr(p, stack[i], **ldr_tags)
        out.write_hdr(hdr_path, hdr, **hdr_tags)
    print(
        hdr_io.printable(
            f"{path.name}: {len(generated)} exposures + {hdr_path.name} "
            f"(merged {kept[1] - kept[0] + 1} of {len(stack)})"
        )
    )


def cmd_fuse(args: argparse.Namespace) -> None:
    from hdr_jax import pipeline
    from hdr_jax.camera import crf

    out = _output_path(args.output)
    under_path, over_path = Path(args.under), Path(args.over)
    if out.suffix.lower() not in hdr_io.LDR_EXTENSIONS:
        raise CLIError(
            f"{out}: the fused image needs an LDR extension ({', '.join(hdr_io.LDR_EXTENSIONS)})"
        )
    if under_path.resolve() == over_path.resolve():
        raise CLIError(f"{args.under}: given as both exposures; fuse needs a darker and a "
                       "brighter photo of the scene")
    _new_plan([under_path, over_path], args.overwrite).claim(under_path, [out])
    declared_under, space_under = _declarations(under_path, args)
    under = _read_photo(under_path, declared_under)
    declared_over, space_over = _declarations(over_path, args)
    over = _read_photo(over_path, declared_over)
    for path, photo in ((under_path, under), (over_path, over)):
        _warn_degenerate(path, photo, "the fused image shows only what the other photo recorded")
    under = _apply_declared(under_path, under, declared_under)
    over = _apply_declared(over_path, over, declared_over)
    spaces = [space_under, space_over]
    if [s and s.chromaticities for s in spaces] != [spaces[0] and spaces[0].chromaticities] * 2:
        names = [s.name if s else "sRGB" for s in spaces]
        raise CLIError(f"{args.under} and {args.over} declare different primaries ({names[0]}, "
                       f"{names[1]}); give two photos from one camera, or --ignore-profile to "
                       "read both as sRGB")
    ldr_tags, _ = _tags(under_path, spaces[0])
    if under.shape != over.shape:
        raise CLIError(
            f"{args.under} and {args.over} differ in size ({under.shape[1]}x{under.shape[0]} "
            f"vs {over.shape[1]}x{over.shape[0]})"
        )
    if crf.almost_identical(under, over):  # a copy of one photo, under another name
        raise CLIError(f"{args.under} and {args.over} are almost the same picture; fuse needs a "
                       "darker and a brighter exposure of one scene")
    if float(under.mean()) > float(over.mean()):
        # The network was trained on (under, over) in that order; swapped, it fuses wrongly
        # without any sign of it.
        raise CLIError(f"{args.under} is brighter than {args.over}: give the darker (under-"
                       "exposed) photo first")
    agree = crf.rank_agreement(under, over)
    if agree < crf.MIN_RANK_AGREEMENT:
        raise CLIError(f"{args.under} and {args.over} do not show one still scene: where both "
                       f"are well exposed they order the pixels alike at only {agree:.2f} (rank "
                       "correlation; two exposures of one scene are near 1)")
    pipe = pipeline.Pipeline.load(args.weights)
    net = pipe.cfnet(args.scale)
    _check_writable(out.parent)  # still before the network runs
    tiles = _tiles(pipe, args, under.shape[:2], stage1=False, scale=args.scale)
    tile = {"tile": tiles["stage2_tile"]} if tiles else {}
    fused = pipeline.fuse_pair(net, under, over, **tile)
    hdr_io.write_ldr(out, fused, overwrite=args.overwrite, **ldr_tags)
    print(hdr_io.printable(f"{out}: {fused.shape[1]}x{fused.shape[0]} (x{args.scale})"))


def _stops(text: str) -> float:
    """One exposure in stops: a number (-2, +0.7, -1e0), a fraction as a camera's bracketing
    shows it (-2/3, +1/3) or a mixed fraction as some cameras print it ("-1 1/3": -(1 + 1/3));
    ValueError or ZeroDivisionError otherwise."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    whole, _, part = text.rpartition(" ")
    if not whole:
        return float(fractions.Fraction(text))
    whole = whole.strip()
    frac = fractions.Fraction(part)
    if "/" not in part or not 0 <= frac < 1 or not re.fullmatch(r"[+-]?\d+", whole):
        raise ValueError(text)
    return (-1.0 if whole.startswith("-") else 1.0) * float(abs(int(whole)) + frac)


def _exposures(args: argparse.Namespace, photos: list[Path]) -> list[float]:
    """log2 exposure of each photo: --ev, or else each photo's EXIF."""
    if args.ev is not None:
        text = " ".join(args.ev)
        # With commas between the photos' exposures, a space may sit inside one (a mixed
        # fraction); without them, spaces separate the photos.
        items = [v for v in (text.split(",") if "," in text else text.split()) if v.strip()]
        try:
            ev = [_stops(v) for v in items]
        except (ValueError, ZeroDivisionError):
            raise CLIError(f"--ev {text!r}: give one number per photo, e.g. --ev -2 0 2, "
                           "--ev -2/3 0 +2/3 or --ev '-1 1/3, 0, +1 1/3'") from None
        if len(ev) != len(photos):
            hint = ""
            if "," not in text and any("/" in v and re.fullmatch(r"[+-]?\d+", w)
                                       for w, v in zip(items, items[1:])):
                hint = ("; a mixed fraction such as -1 1/3 needs commas between the photos: "
                        "--ev '-1 1/3, 0, +1 1/3'")
            raise CLIError(f"--ev gives {len(ev)} exposures for {len(photos)} photos{hint}")
        return ev
    ev = []
    for p in photos:
        e = hdr_io.exif_exposure(p)
        if e is None:
            raise CLIError(f"{p}: no exposure time in its EXIF; give every photo's exposure with "
                           "--ev (stops, e.g. --ev -2 0 2)")
        ev.append(e)
    return ev


def cmd_calibrate(args: argparse.Namespace) -> None:
    """The camera's response from photos of one static scene at different exposures, written as
    the file ``--response`` reads (one sample of f per line at evenly spaced irradiance)."""
    from hdr_jax.camera import crf

    out = _output_path(args.output)
    given = [Path(p) for p in args.photos if Path(p).is_file()]
    if len({p.resolve() for p in given}) != len(given):
        raise CLIError("calibrate: a photo is given twice")
    # Folders and glob patterns as for reconstruct: a bracket folder in name order (list_images
    # drops a photo that two arguments name, so the check above sees the arguments themselves).
    photos = hdr_io.list_images(args.photos, kinds=("ldr",))
    if len(photos) < 2:
        raise CLIError("calibrate needs at least 2 photos of one scene at different exposures")
    raws = sum(hdr_io.is_raw(p) for p in photos)
    # One shot saved by the camera both as a raw file and as its own photo: the photo's
    # response, read against the raw data (no bracket, no exposures).
    pair = len(photos) == 2 and raws == 1
    if 0 < raws < len(photos) and not pair:  # e.g. a raw + JPEG camera's folder of many shots
        raise CLIError(f"calibrate: {raws} camera raw files and {len(photos) - raws} other photos "
                       "given; calibrate one kind (raw files need none: their response is known), "
                       "or give one raw file and the camera's photo of the same shot")
    if pair and args.ev is not None:
        raise CLIError("calibrate: --ev does not apply to a raw file and its photo (one shot: "
                       "the raw data measures each pixel's exposure)")
    if out.is_dir():
        out = out / camera_file_name(_calibrated_camera(photos))
    if out.suffix.lower() == ".npy":
        raise CLIError(f"{out}: the curve is written as text; --response reads a .npy file as a "
                       "NumPy array (use e.g. .txt)")
    _new_plan(photos, args.overwrite).claim(photos[0], [out])
    if out.suffix.lower() in hdr_io.LDR_INPUT_EXTENSIONS + hdr_io.HDR_EXTENSIONS:
        raise CLIError(f"{out}: the curve is written as text, not as an image (use e.g. .txt)")
    if pair:
        _calibrate_pair(args, photos, out)
        return
    ev = _exposures(args, photos)
    images = [_read_photo(p) for p in photos]
    for p, im in zip(photos[1:], images[1:]):
        if im.shape != images[0].shape:
            raise CLIError(f"{photos[0]} and {p} differ in size ({images[0].shape[1]}x"
                           f"{images[0].shape[0]} vs {im.shape[1]}x{im.shape[0]})")
    _refuse_grey_with_colour(photos, images)
    # A JPEG's ringing around clipped regions is left out; a lossless photo's codes just below
    # the clip are kept (they measure a shoulder).
    lossy = args.lossy or any(hdr_io.is_lossy(p) for p in photos)
    try:
        curve = crf.calibrate_response(images, ev, lossy=lossy)
    except ValueError as e:
        # Its messages number the photos; say which is which when a folder or pattern chose them.
        order = (f" (photos in the order read: {', '.join(str(p) for p in photos)})"
                 if len(given) != len(args.photos) else "")
        raise CLIError(f"calibrate: {e}{order}") from None
    overlap = crf.bracket_overlap(images, lossy=lossy)
    if overlap < crf.CALIBRATION_MIN_OVERLAP:
        _warn(f"warning: only {overlap:.1%} of the pixels are well exposed in two or more of the "
              "photos; a curve from so few can be a stop or more off (add a photo between the "
              "exposures, or a darker one with less clipped)")
    _write_curve(args, out, curve, f"response of {len(photos)} photos (EV {min(ev):+.2f} .. "
                                   f"{max(ev):+.2f})")


def _refuse_grey_with_colour(photos: list[Path], images: list[np.ndarray]) -> None:
    """A black-and-white conversion has its own curve (and one channel): solved together with
    the camera's colour photos it biases the camera's curve, so a mix is refused."""
    from hdr_jax import pipeline

    grey = [pipeline.achromatic(im) for im in images]
    if any(grey) and not all(grey):
        raise CLIError(f"calibrate: {photos[grey.index(True)]} is black-and-white and "
                       f"{photos[grey.index(False)]} is in colour; calibrate photos of one kind")


def _calibrated_camera(photos: list[Path]) -> str:
    """The one camera that the EXIF of the photos (a raw file's: not read) names, for a curve
    written into a folder (:func:`camera_file_name`)."""
    cameras = {p: hdr_io.exif_camera(p) for p in photos if not hdr_io.is_raw(p)}
    if None in cameras.values():
        missing = next(p for p, c in cameras.items() if c is None)
        raise CLIError(f"calibrate: {missing.name} names no camera in its EXIF (Make, Model), so "
                       "the curve cannot be filed under its camera: give -o a file name")
    if len(set(cameras.values())) > 1:
        raise CLIError("calibrate: the photos name different cameras ("
                       f"{', '.join(sorted(set(cameras.values())))}); calibrate one camera")
    return next(iter(cameras.values()))


def _calibrate_pair(args: argparse.Namespace, photos: list[Path], out: Path) -> None:
    """``calibrate`` of a raw file and the camera's photo of the same shot
    (:func:`crf.response_from_raw_pair`)."""
    from hdr_jax.camera import crf

    raw, photo = sorted(photos, key=lambda p: not hdr_io.is_raw(p))
    # The raw file is read for its linear data here: the note on its known response is not
    # about this command.
    linear = np.asarray(crf.srgb_decode(_read_photo(raw, raw_note=False)), np.float32)
    image = _read_photo(photo)
    _refuse_grey_with_colour([raw, photo], [linear, image])
    try:
        curve = crf.response_from_raw_pair(linear, image)
    except ValueError as e:
        raise CLIError(f"calibrate: {raw.name} and {photo.name}: {e}") from None
    _write_curve(args, out, curve, f"response of {photo.name}, read against its raw file "
                                   f"{raw.name}")


def _write_curve(args: argparse.Namespace, out: Path, curve: np.ndarray, what: str) -> None:
    from hdr_jax.camera import crf

    _check_writable(out.parent)
    try:
        with hdr_io.atomic_output(out, overwrite=args.overwrite) as tmp:
            tmp.write_text("".join(f"{v:.6f}\n" for v in curve))
    except OSError as e:  # a full disk, a quota; atomic_output has removed its temporary
        raise CLIError(f"{out}: cannot write the curve ({e.strerror or e})") from None
    mid = float(crf.apply_inverse_crf(curve, np.float32(0.5)))
    print(hdr_io.printable(
        f"{out}: {what}; code 0.5 linearises to {mid:.3f} (sRGB 0.214); use it with --response "
        f"{out}"))


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Stage 2 on the held-out test split of SICE: CF-Net and the baselines of
    :mod:`hdr_jax.eval.stage2`, written to OUT/results.{json,md}."""
    from hdr_jax.eval import report

    if args.dataset != "sice":
        raise CLIError(f"unknown dataset {args.dataset!r} (supported: sice)")
    if not Path(args.data_dir).is_dir():
        raise hdr_io.ImageIOError(f"{args.data_dir}: SICE folder not found")
    out_dir = Path(args.out)
    _refuse_a_file(out_dir)
    report.refuse_existing(out_dir, overwrite=args.overwrite)
    tfds_dir = Path(args.tfds_dir) if args.tfds_dir is not None else out_dir / "tfds"
    # The output folder first, so that one that cannot be made or written is named as such
    # before the dataset is prepared into it.
    _make_outdir(out_dir)
    from hdr_jax.data import sice

    config = tfds_dir / "sice" / f"x{args.scale}"
    source = sice.source_record(args.data_dir)
    _check_prepared(args, config, source, default=args.tfds_dir is None)
    # What the preparation makes (a dataset removed above to be prepared again included):
    # removed again when the run fails, prepared or half-prepared.
    made = [p for p in (tfds_dir, tfds_dir / "downloads", tfds_dir / "sice", config)
            if not p.exists()]
    try:
        _evaluate_sice(args, out_dir, config, source)
    except BaseException:
        for p in made:
            shutil.rmtree(p, ignore_errors=True)
        raise


def _check_prepared(args: argparse.Namespace, config: Path, source: dict, default: bool) -> None:
    """A dataset prepared in ``config`` from another folder (or changed files) is not reused:
    the default one inside OUT is prepared again under ``--overwrite``; one in a ``--tfds-dir``
    the user named is refused rather than deleted. One with no record of its folder (prepared
    by the training scripts, or by an earlier version) is read as it is, with a note."""
    from hdr_jax.data import sice

    recorded = sice.recorded_source(config)
    if not config.exists() or recorded == source:
        return
    if recorded is None:
        _warn(f"note: {config}: no record of the folder this dataset was prepared from; it is "
              f"read as it is (remove it to prepare it from {args.data_dir})")
        return
    if default and args.overwrite:
        try:
            shutil.rmtree(config)
        except OSError as e:  # e.g. a link, or a folder that cannot be written
            raise CLIError(f"{config}: cannot remove the dataset prepared earlier "
                           f"({e.strerror or e})") from None
        return
    old = recorded.get("data_dir") or "another folder"
    remedy = "pass --overwrite to prepare it again" if default else (
        "remove it or name another --tfds-dir")
    raise CLIError(f"{config}: holds a SICE dataset prepared from {old}, not from "
                   f"{args.data_dir} as it is now; {remedy}")


class _NoteHandler(logging.Handler):
    """Library warnings as 'note: ...' lines on stderr (not 'WARNING:module:...')."""

    def emit(self, record: logging.LogRecord) -> None:
        _warn(f"note: {record.getMessage()}")


def _evaluate_sice(args: argparse.Namespace, out_dir: Path, config: Path, source: dict) -> None:
    import tensorflow_datasets as tfds

    from hdr_jax.data import sice
    from hdr_jax.eval import report, stage2

    if not sys.stderr.isatty():
        tfds.disable_progress_bar()
    fresh = not config.exists()  # prepared by this run: recorded with its folder below
    builder = sice.Sice(
        config=f"x{args.scale}",
        data_dir=str(config.parent.parent),
        file_format="array_record",
    )
    # The builder's notes (sequences it skips) as one 'note:' line each; tfds' own "Downloading
    # and preparing dataset Unknown size ..." lines (printed to stdout; nothing is downloaded)
    # are dropped, so stdout holds only the table.
    notes = logging.getLogger(sice.__name__)
    handler = _NoteHandler(logging.WARNING)
    notes.addHandler(handler)
    notes.propagate = False
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=str(args.data_dir))
            )
    except (AssertionError, ValueError, OSError) as e:  # tfds: empty dir; sice: no SICE layout
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if "does not exist or is empty" in first:  # tfds's line ends on "using instructions:"
            first = "the folder is empty; extract Dataset_Part1 and Dataset_Part2 into it"
        raise hdr_io.ImageIOError(f"{args.data_dir}: no usable SICE data ({first})") from e
    finally:
        notes.removeHandler(handler)
        notes.propagate = True
    if fresh:
        report.write_json(config / sice.SOURCE_FILE, source)
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
    "clipped and fills clipped channels from the generated darker exposures (and the highlight "
    "head, when the weights have one); 'robust' merges the whole generated stack; 'debevec' is "
    "the public code's merge (linear response)"
)
HIGHLIGHTS_HELP = (
    "leave the clipped pixels at the anchored merge's levels instead of lifting them above the "
    "clip level (the weights' highlight lift, or their highlight head)"
)


IGNORE_PROFILE_HELP = (
    "read the photo as sRGB even when its ICC profile or PNG gAMA declares a linear curve, or "
    "its ICC profile or PNG cHRM other primaries (for a file whose declaration is wrong; the "
    "outputs are then not tagged with them)"
)


UP_CHOICES = ("response", "network")  # == pipeline.UP_METHODS (tested; the CLI imports jax lazily)
UP_HELP = (
    "how the brighter exposures are made: 'response' (default when the weights have a response "
    "classifier) re-exposes the photo with the camera response it recognises; 'network' runs "
    "the DrTMO up-exposure network"
)

RESPONSE_HELP = (
    "the camera's response, when you know it: 'srgb', 'gamma:G' (x^(1/G), e.g. gamma:2.2), or a "
    "file of N >= 2 samples of the response at evenly spaced normalised irradiance 0..1 (.npy, "
    "or text), from 0 to 1 and non-decreasing ('hdr-jax calibrate' writes one from a few "
    "exposures of a scene); or a folder of such files named by camera ('hdr-jax calibrate -o "
    "FOLDER' files them so): each photo is read with the curve of the camera its EXIF names, "
    "and one without is estimated as by default. The up-exposures and the merge use it (default: "
    "the recognised response for the up-exposures, the sRGB curve for the merge; a photo whose "
    "ICC profile or PNG gAMA declares a linear curve is first re-encoded from it to sRGB)"
)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that reads every token of a minus and a digit as a value: before
    Python 3.13 argparse takes '-1e0' or '-2/3' (an exposure for --ev) for an unknown option.
    No option of hdr-jax starts with a digit, so nothing is lost."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # argparse has no public setting for this; the attribute is what 3.13 changed.
        self._negative_number_matcher = re.compile(r"^-\.?\d")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
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
    r.add_argument("--response", default=None, metavar="CURVE", help=RESPONSE_HELP)
    r.add_argument("--no-highlights", dest="highlights", action="store_false",
                   help=HIGHLIGHTS_HELP)
    r.add_argument("--hdr-side", type=_side, default=None, metavar="PX",
                   help="make the HDR of a photo whose short side is above PX from a copy shrunk "
                   "to PX (e.g. 512): much faster on a large photo; its measured pixels keep "
                   "their full-resolution values (default: at full resolution)")
    r.add_argument("--quiet", action="store_true")
    r.add_argument("--ignore-profile", dest="profile", action="store_false",
                   help=IGNORE_PROFILE_HELP)
    r.add_argument("--ignore-gain-map", dest="gain_map", action="store_false",
                   help="make the HDR with the networks even when the photo carries an HDR gain "
                   "map (Ultra HDR JPEG), whose HDR rendition is used by default")
    common(r)
    budget_option(r)
    r.set_defaults(func=cmd_reconstruct)

    b = sub.add_parser("brackets", help="photo -> 16 generated exposures + merged HDR")
    b.add_argument("image")
    b.add_argument("-o", "--output", required=True)
    b.add_argument("--merge", choices=MERGE_CHOICES, default="anchored", help=MERGE_HELP)
    b.add_argument("--up", choices=UP_CHOICES, default=None, help=UP_HELP)
    b.add_argument("--response", default=None, metavar="CURVE", help=RESPONSE_HELP)
    b.add_argument("--ignore-profile", dest="profile", action="store_false",
                   help=IGNORE_PROFILE_HELP)
    common(b)
    budget_option(b)
    b.set_defaults(func=cmd_brackets)

    f = sub.add_parser("fuse", help="under + over exposure -> fused, super-resolved image")
    f.add_argument("under")
    f.add_argument("over")
    f.add_argument("-o", "--output", required=True)
    f.add_argument("--scale", type=int, choices=(2, 4), default=2)
    f.add_argument("--ignore-profile", dest="profile", action="store_false",
                   help=IGNORE_PROFILE_HELP)
    common(f)
    budget_option(f)
    f.set_defaults(func=cmd_fuse)

    c = sub.add_parser("calibrate", help="photos of one scene at several exposures, or a raw "
                       "file and the camera's photo of the same shot -> the camera's response "
                       "(the file --response reads)")
    c.add_argument("photos", nargs="+", help="2 or more photos of one static scene (tripod), "
                   "same size, only the exposure changed: files, or a folder or glob pattern "
                   "(in name order); or one camera raw file and the photo (JPEG, ...) the "
                   "camera saved of the same shot")
    c.add_argument("-o", "--output", required=True, help="the curve file to write (text); an "
                   "existing folder: the file there named after the camera the photos' EXIF "
                   "names, which --response FOLDER reads for that camera's photos")
    c.add_argument("--ev", nargs="+", default=None, metavar="EV",
                   help="each photo's exposure in stops, in order, e.g. --ev -2 0 2, --ev "
                   "-2/3 0 +2/3, or with commas --ev '-1 1/3, 0, +1 1/3' (default: from the "
                   "EXIF exposure time, ISO and f-number)")
    c.add_argument("--lossy", action="store_true", help="treat the photos as JPEG-compressed "
                   "even when the files are lossless (a PNG or TIFF saved from a JPEG): pixels "
                   "next to clipped ones are left out (default: only for JPEG files)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing curve file")
    c.set_defaults(func=cmd_calibrate)

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
    e.add_argument("--limit", type=_count, default=0,
                   help="evaluate at most N sequences (0: all)")
    common(e)
    e.set_defaults(func=cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("output", "out"):
        if getattr(args, name, None) is not None and not str(getattr(args, name)).strip():
            parser.error(f"the output path (--{name}) must not be empty")
    # An unset shell variable in --weights "$W" must not quietly mean the bundled weights.
    if getattr(args, "weights", None) is not None and not args.weights.strip():
        parser.error("--weights must not be empty (leave it out for the bundled weights)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from hdr_jax import bundle

    _CREATED_DIRS.clear()
    with interrupts.handled(restore_after_signal=False):
        try:
            args.func(args)
            interrupts.raise_swallowed()  # a signal a finaliser swallowed still stops the run
        except (hdr_io.ImageIOError, CLIError, bundle.WeightsError) as e:
            _remove_created_dirs()
            print(f"hdr-jax: error: {hdr_io.printable(e)}", file=sys.stderr)
            return 1
        except (interrupts.Interrupted, KeyboardInterrupt) as e:
            hdr_io.remove_temporaries()
            _remove_created_dirs()
            status = e.exit_status if isinstance(e, interrupts.Interrupted) else 130
            name = "SIGTERM" if status == 143 else "SIGINT"
            print(f"hdr-jax: interrupted ({name}); unfinished outputs removed", file=sys.stderr)
            return status
    return 0


def run() -> None:
    """The `hdr-jax` command: :func:`main`, then exit with its status. Interrupted, it leaves
    at once (after flushing its streams) instead of through the interpreter's shutdown, which
    can crash in a compilation that XLA's threads still have in flight."""
    status = main()
    if status in (130, 143):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    # The run is over: a Ctrl-C in the interpreter's shutdown would only print a traceback from
    # a library's exit handler (and its outputs are complete or already removed).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(status)


if __name__ == "__main__":
    run()
