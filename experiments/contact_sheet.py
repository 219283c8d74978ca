"""Contact sheet of simulated exposure brackets (cf. DrTMO, Endo et al. 2017, Figure 3).

Rows are the training CRFs (:func:`hdr_jax.camera.default_training_crfs`), columns the T+1
exposures dt = tau^k, darkest left; a left panel gives each row's name and tone curve.

  python -m experiments.contact_sheet --hdr scene.exr --crop 80,10,120 --out sheet.png
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw, ImageFont

from hdr_jax import io
from hdr_jax.camera import default_training_crfs, exposure_times, perspective_crop, simulate_bracket

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
_DEFAULT_HDR = _SHARED / "hdri" / "polyhaven_dawn.exr"
_DEFAULT_EMOR = _SHARED / "crf"

_HDR = flags.DEFINE_string(
    "hdr",
    str(_DEFAULT_HDR) if _DEFAULT_HDR.is_file() else None,
    "Equirectangular HDR panorama (EXR/HDR).",
)
_EMOR = flags.DEFINE_string(
    "emor",
    str(_DEFAULT_EMOR) if (_DEFAULT_EMOR / "emor.txt").is_file() else None,
    "EMoR directory or emor.txt; empty: the parametric CRF set.",
)
_OUT = flags.DEFINE_string("out", "docs/bracket_contact_sheet.png", "Output PNG.")
_CROP = flags.DEFINE_string("crop", "80,10,120", "View as fov,elevation,azimuth in degrees.")
_SIZE = flags.DEFINE_integer("size", 128, "Thumbnail side in pixels.")
_T = flags.DEFINE_integer("T", 8, "Number of exposure steps (even); T+1 columns.")
_TAU = flags.DEFINE_float("tau", math.sqrt(2.0), "Exposure ratio between neighbouring columns.")
_K = flags.DEFINE_integer("k", 5, "Number of CRFs (rows).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the CRF selection.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing output file.")

_GAP, _LABEL_W, _HEADER_H = 2, 170, 18


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font.
        return ImageFont.load_default()


def _label_panel(
    name: str, curve: np.ndarray, height: int, font: ImageFont.ImageFont
) -> Image.Image:
    """The row name above a plot of the tone curve f (x: exposure, y: pixel value)."""
    panel = Image.new("RGB", (_LABEL_W, height), "white")
    draw = ImageDraw.Draw(panel)
    draw.text((4, 2), name, fill="black", font=font)
    side = height - 22
    x0, y0 = (_LABEL_W - side) // 2, 18
    draw.rectangle([x0, y0, x0 + side, y0 + side], outline=(160, 160, 160))
    draw.line([(x0, y0 + side), (x0 + side, y0)], fill=(200, 200, 200))
    xs = np.linspace(0, 1, 128)
    ys = np.interp(xs, np.linspace(0, 1, curve.size), curve)
    draw.line(
        [(x0 + x * side, y0 + (1 - y) * side) for x, y in zip(xs, ys)], fill=(200, 30, 30), width=2
    )
    return panel


def contact_sheet(crop: np.ndarray, crfs: dict[str, np.ndarray], T: int, tau: float) -> np.ndarray:
    """Renders the sheet as float32 (H, W, 3) in [0, 1]."""
    size = crop.shape[0]
    font = _font(12)
    cols, rows = T + 1, len(crfs)
    width = _LABEL_W + cols * (size + _GAP)
    height = _HEADER_H + rows * (size + _GAP)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for j, dt in enumerate(exposure_times(T, tau)):
        draw.text(
            (_LABEL_W + j * (size + _GAP) + 4, 3),
            f"{math.log2(dt):+.1f} EV",
            fill="black",
            font=font,
        )
    for i, (name, curve) in enumerate(crfs.items()):
        top = _HEADER_H + i * (size + _GAP)
        sheet.paste(_label_panel(name, curve, size, font), (0, top))
        for j, img in enumerate(simulate_bracket(crop, curve, T, tau)):
            thumb = Image.fromarray(np.round(img * 255).astype(np.uint8))
            sheet.paste(thumb, (_LABEL_W + j * (size + _GAP), top))
    return np.asarray(sheet, np.float32) / 255.0


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _HDR.value:
        raise app.UsageError("--hdr is required (no default panorama found)")
    try:
        fov, elev, azim = (float(v) for v in _CROP.value.split(","))
    except ValueError:
        raise app.UsageError(f"--crop must be fov,elevation,azimuth, got {_CROP.value!r}") from None
    if Path(_OUT.value).exists() and not _OVERWRITE.value:
        raise app.UsageError(f"{_OUT.value} exists; pass --overwrite to replace it")
    try:
        hdr = io.read_hdr(_HDR.value)
        crop = perspective_crop(hdr, fov, elev, azim, _SIZE.value)
        crfs = default_training_crfs(_EMOR.value or None, k=_K.value, seed=_SEED.value)
        sheet = contact_sheet(crop, crfs, _T.value, _TAU.value)
        Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
        io.write_ldr(_OUT.value, sheet, overwrite=_OVERWRITE.value)
    except (io.ImageIOError, OSError, ValueError) as e:
        raise SystemExit(f"contact_sheet: {e}") from None
    print(f"wrote {_OUT.value} ({sheet.shape[1]}x{sheet.shape[0]}, rows: {', '.join(crfs)})")


if __name__ == "__main__":
    app.run(main)
