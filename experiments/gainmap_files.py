"""What the HDR gain maps of real photos hold: the readers checked on files from outside the
project (analysis).

    python -m experiments.gainmap_files PHOTO... [--out docs/results/gainmaps] [--overwrite]

Per photo: its size, the kind of gain map it carries (:func:`hdr_jax.io.read_gain_map`), the
map's size and range of stored values, whether it fits the photo (:func:`gainmap.check_shape`),
the most it raises a pixel (``max_boost_stops``), and its HDR rendition
(:func:`gainmap.hdr_rendition` of the photo decoded with the sRGB curve, SDR white at 1): the
share of pixels with a channel above SDR white, the 99.9th percentile and the maximum of the
brightest channel. Where the file also describes its map by ISO 21496-1 metadata (an iPhone's
does since iOS 18, beside Apple's own), that description's most boost and the log2 ratio of the
brightest channel of the two renditions (5th, 50th and 95th percentile over the pixels). For a
HEIF or AVIF, the same file with each of its rotation properties set to a quarter turn (as a
camera stores a portrait photo) is read too: the photo's and the map's sizes then, and whether
they still fit.

The committed results come from phone photos and gain-map files in three source packages
(nothing of them is committed):

    pip download --no-binary :all: --no-deps -d /tmp/gm pillow-heif==1.9.0 \
        gainmap-audit==0.1.2 luvix==0.1.5
    for f in /tmp/gm/*.tar.gz; do tar xzf "$f" -C /tmp/gm; done
    python -m experiments.gainmap_files /tmp/gm/pillow_heif-1.9.0/tests/images/heif_other/pug.heic \
        /tmp/gm/pillow_heif-1.9.0/tests/images/heif_special/aux_YCbCr.heic \
        /tmp/gm/gainmap_audit-0.1.2/tests/corpus/*.{jpg,heic,avif} \
        /tmp/gm/luvix-0.1.5/tests/fixtures/apple/*.{heic,jpg} \
        /tmp/gm/luvix-0.1.5/tests/fixtures/apple/batch/*
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from hdr_jax import io as hdr_io
from hdr_jax import isobmff
from hdr_jax.camera import crf, gainmap
from hdr_jax.eval import report

_OUT = flags.DEFINE_string("out", "docs/results/gainmaps", "Output folder.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing result files.")


def quarter_turned(data: bytes) -> bytes | None:
    """The file with every rotation property ('irot') of its 'meta' box set to a quarter turn
    anticlockwise, or None without one."""
    out, found = bytearray(data), False

    def visit(start: int, end: int, depth: int) -> None:
        nonlocal found
        for kind, b, e in isobmff.boxes(data, start, end):
            if kind == b"irot" and e > b:
                out[b] = (data[b] & ~3) | 1
                found = True
            elif kind in (b"meta", b"iprp", b"ipco") and depth < 4:
                visit(b + 4 if kind == b"meta" else b, e, depth + 1)

    visit(0, len(data), 0)
    return bytes(out) if found else None


def fits(gm: gainmap.GainMap, shape: tuple[int, int]) -> bool:
    try:
        gainmap.check_shape(gm, shape)
    except gainmap.GainMapError:
        return False
    return True


def describe(path: Path) -> dict:
    photo = hdr_io.read_ldr(path)
    row = {"file": path.name, "photo": f"{photo.shape[1]}x{photo.shape[0]}"}
    found = hdr_io.read_gain_map(path)
    if found is None:
        return row | {"kind": None}
    gm = gainmap.parse(*found)
    hdr = gainmap.hdr_rendition(crf.srgb_decode(photo), gm)
    top = hdr.max(-1)
    row |= {"kind": found[2], "map": f"{found[0].shape[1]}x{found[0].shape[0]}",
            "map channels": found[0].shape[2], "map min": float(found[0].min()),
            "map max": float(found[0].max()), "fits": fits(gm, photo.shape[:2]),
            "max boost (stops)": float(gm.max_boost_stops),
            "share above SDR white": float(np.mean(top > 1.0)),
            "p99.9 of the brightest channel": float(np.quantile(top, 0.999)),
            "max of the brightest channel": float(top.max())}
    iso = hdr_io.read_gain_map(path, kinds=("iso",)) if found[2] != "iso" else None
    if iso is not None:  # the same map described twice (an iPhone's since iOS 18)
        gi = gainmap.parse(*iso)
        other = gainmap.hdr_rendition(crf.srgb_decode(photo), gi).max(-1)
        diff = np.log2(np.maximum(top, 1e-4) / np.maximum(other, 1e-4))
        row |= {"ISO 21496-1 too: max boost": float(gi.max_boost_stops),
                "log2 of the two renditions' ratio: p5": float(np.quantile(diff, 0.05)),
                "median": float(np.median(diff)), "p95": float(np.quantile(diff, 0.95))}
    turned = quarter_turned(path.read_bytes()) if path.suffix.lower() in (
        ".heic", ".heif", ".avif") else None
    if turned is not None:
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / path.name
            copy.write_bytes(turned)
            photo_t = hdr_io.read_ldr(copy)
            map_t = hdr_io.read_gain_map(copy)
            gm_t = gainmap.parse(*map_t)
        row |= {"turned photo": f"{photo_t.shape[1]}x{photo_t.shape[0]}",
                "turned map": f"{map_t[0].shape[1]}x{map_t[0].shape[0]}",
                "turned fits": fits(gm_t, photo_t.shape[:2])}
    return row


def markdown(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return "\n".join(["## Gain maps of real photos", "",
                      report.markdown_table(keys, [[r.get(k) for k in keys] for r in rows],
                                            digits=3), ""])


def main(argv):
    paths = [Path(a) for a in argv[1:]]
    if not paths:
        raise app.UsageError("Name at least one photo.")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        sys.exit(f"not found: {', '.join(missing)}")
    report.refuse_existing(_OUT.value, overwrite=_OVERWRITE.value)
    t0 = time.perf_counter()
    rows = []
    for p in paths:
        try:
            rows.append(describe(p))
        except (hdr_io.ImageIOError, gainmap.GainMapError) as e:  # reported, not fatal
            rows.append({"file": p.name, "error": str(e)})
    res = {"photos": rows, "total_s": time.perf_counter() - t0}
    report.publish(_OUT.value, res, markdown(rows), overwrite=_OVERWRITE.value)


if __name__ == "__main__":
    app.run(main)
