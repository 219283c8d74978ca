"""Qualitative figure of the two-stage system on held-out scenes: docs/figures/heldout.png.

    python -m experiments.make_figure [--weights DIR] [--hdr_dir DIR] [--scenes a,b,c] \
        [--view 0] [--out docs/figures/heldout.png] [--overwrite]

One row per scene (one view of it, rendered as in ``experiments.eval_reconstruct``); columns:
the 8-bit input (5% of its pixels clipped), our HDR tone-mapped for display
(``pipeline.tonemap_preview``), our fused x2 output, the true HDR through the same tone mapping,
and the fused ground truth (the stage-2 label definition). Every cell is shown at the same size,
so the x2 images are area-downscaled for display. The PNG is kept under --max_bytes by shrinking
the cells.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import cv2
import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw, ImageFont

from hdr_jax import io as hdr_io
from hdr_jax.eval import system

_WEIGHTS = flags.DEFINE_string("weights", None, "Weights directory (default: bundled weights).")
_HDR_DIR = flags.DEFINE_string("hdr_dir", "../shared/data/hdri", "Folder of HDR panoramas.")
_SCENES = flags.DEFINE_string(
    "scenes", "", "Comma list of held-out scenes (default: the first --num_scenes held-out ones)."
)
_NUM_SCENES = flags.DEFINE_integer("num_scenes", 4, "Rows when --scenes is empty.")
_VIEW = flags.DEFINE_integer("view", 0, "Which of the evaluation views of each scene.")
_SIZE = flags.DEFINE_integer("size", 256, "Side of the LR input view, pixels.")
_CELL = flags.DEFINE_integer("cell", 256, "Largest displayed cell side, pixels.")
_MAX_BYTES = flags.DEFINE_integer("max_bytes", 1_450_000, "Size limit of the PNG.")
_OUT = flags.DEFINE_string("out", "docs/figures/heldout.png", "Output PNG.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing figure.")

COLUMNS = (
    ("input", "input (8-bit, 5% clipped)"),
    ("preview", "ours: HDR, tone-mapped"),
    ("fused", "ours: fused x2"),
    ("true_preview", "true HDR, tone-mapped"),
    ("label", "fused ground truth x2"),
)


def _cell(img: np.ndarray, side: int) -> np.ndarray:
    u8 = np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    interp = cv2.INTER_AREA if img.shape[0] >= side else cv2.INTER_CUBIC
    return cv2.resize(u8, (side, side), interpolation=interp)


def compose(rows: list[tuple[str, dict[str, np.ndarray]]], side: int) -> Image.Image:
    """Grid of uint8 cells with column titles on top and scene names on the left."""
    pad, top, left = 4, 24, 18
    font = ImageFont.load_default(size=14)
    w = left + len(COLUMNS) * (side + pad) + pad
    h = top + len(rows) * (side + pad) + pad
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    for c, (_, title) in enumerate(COLUMNS):
        x = left + pad + c * (side + pad)
        draw.text((x + side // 2, top // 2), title, fill="black", font=font, anchor="mm")
    for r, (name, images) in enumerate(rows):
        y = top + pad + r * (side + pad)
        for c, (key, _) in enumerate(COLUMNS):
            x = left + pad + c * (side + pad)
            canvas.paste(Image.fromarray(_cell(images[key], side)), (x, y))
        label = Image.new("RGB", (side, left), "white")
        ImageDraw.Draw(label).text(
            (side // 2, left // 2), name, fill="black", font=font, anchor="mm"
        )
        canvas.paste(label.rotate(90, expand=True), (0, y))
    return canvas


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    from hdr_jax import pipeline

    out = Path(_OUT.value)
    if out.exists() and not _OVERWRITE.value:
        sys.exit(f"{out}: exists (use --overwrite to replace it)")
    if not 0 <= _VIEW.value < len(system.HELDOUT_VIEWS):
        sys.exit(f"--view must lie in [0, {len(system.HELDOUT_VIEWS) - 1}]")
    pipe = pipeline.Pipeline.load(_WEIGHTS.value)
    pipe.cfnet(2)
    if _SCENES.value:
        scenes = [s.strip() for s in _SCENES.value.split(",") if s.strip()]
    else:
        scenes = [f.stem for f in system.heldout_scenes(_HDR_DIR.value)][: _NUM_SCENES.value]
    view = system.HELDOUT_VIEWS[_VIEW.value]
    rows = []
    for scene, _, lr, hr in system.heldout_views(
        _HDR_DIR.value, size=_SIZE.value, scale=2, views=(view,), scenes=scenes
    ):
        r = system.evaluate_view(pipe, lr, hr, scale=2)
        rows.append((scene, r.images))
        print(f"{scene}: PU21 ours {r.hdr_scores[system.HDR_ROWS[0]]['pu21']:.2f} dB")
    side = _CELL.value
    while True:
        buf = io.BytesIO()
        compose(rows, side).save(buf, format="PNG", optimize=True)
        if buf.tell() <= _MAX_BYTES.value or side <= 64:
            break
        side = int(side * 0.9)
    out.parent.mkdir(parents=True, exist_ok=True)
    with hdr_io.atomic_output(out, overwrite=_OVERWRITE.value) as tmp:
        Path(tmp).write_bytes(buf.getvalue())
    print(f"wrote {out} ({buf.tell() / 1e6:.2f} MB, cells {side} px)")


if __name__ == "__main__":
    app.run(main)
