"""Small on-disk fixtures in the layouts the stage-2 builders read (for tests and smoke runs).

:func:`write_fake_sice` writes a miniature SICE tree (exposures named out of brightness order,
mixed-case extensions, a label a few pixels off, and broken sequences the builder must skip);
:func:`write_fake_hdr_folder` writes a few tiny OpenEXR scenes, panoramas and ordinary images;
:func:`write_dng` a camera raw file of a known linear scene (needs tifffile).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hdr_jax import io as hio

__all__ = ["fake_radiance", "render_exposure", "write_dng", "write_fake_hdr_folder",
           "write_fake_sice"]


def fake_radiance(rng: np.random.Generator, h: int, w: int, stops: float = 10.0) -> np.ndarray:
    """Linear RGB > 0 spanning about ``stops`` stops: a tilted log-ramp, blobs and fine texture.

    The texture is asymmetric (no flip/rotation symmetry), so misaligned augmentations show.
    """
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    y, x = y / max(h - 1, 1), x / max(w - 1, 1)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(theta) * x + np.sin(theta) * y
    ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-9)
    log2e = stops * (ramp - 0.5)
    for _ in range(3):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3)
        log2e += rng.uniform(-3, 3) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))
    fx, fy = rng.uniform(4, 9, size=2)
    log2e += 0.7 * np.sin(2 * np.pi * (fx * x + 0.3 * y * y)) * np.cos(2 * np.pi * fy * y * (1 + x))
    tint = rng.uniform(0.6, 1.4, size=3)
    rgb = (2.0 ** log2e)[..., None] * tint * (1 + 0.15 * rng.standard_normal((h, w, 3)))
    return np.maximum(rgb, 1e-4).astype(np.float32)


def render_exposure(e: np.ndarray, ev: float) -> np.ndarray:
    """Gamma-2.2 camera exposed ``ev`` stops about the log-average key 0.18, float [0, 1]."""
    lin = e * (0.18 / np.exp(np.mean(np.log(e)))) * 2.0**ev
    return np.clip(lin, 0, 1) ** (1 / 2.2)


def _tonemap(e: np.ndarray) -> np.ndarray:
    lin = e * (0.18 / np.exp(np.mean(np.log(e))))
    return (lin / (1 + lin)) ** (1 / 2.2)


# (number, EVs in file-name order, label name or None, label size delta (dy, dx))
_PART1 = (
    (1, (0.0, -3.0, 2.5), "1.JPG", (0, 0)),
    (2, (-1.0, 2.0, -3.5, 0.5), "2.PNG", (0, 0)),  # crc32('part1/2') % 10 == 0 -> test split
    (3, (1.5, 0.0, -2.0, 3.0, -1.0), "3.jpg", (2, -2)),  # label 2 px off: resized
    (4, (-2.0, 0.0, 2.0), None, (0, 0)),  # no label: skipped
    (5, (0.0,), "5.JPG", (0, 0)),  # one exposure: skipped
    (6, (-2.0, 2.0), "6.JPG", (20, 0)),  # label far off in size: skipped
)
_PART2 = (
    (1, (2.0, -2.5, 0.0), "1.jpg", (0, 0)),
    (2, (-3.0, 0.0, 1.0, 3.0), "2.JPG", (0, 0)),
)


def write_fake_sice(root: str | os.PathLike, *, size: tuple[int, int] = (48, 64), seed: int = 0) -> dict[str, Any]:
    """Write Dataset_Part1 (6 sequences, 3 broken) and Dataset_Part2 (2 sequences) under ``root``.

    Returns ``{'usable': {id: {'darkest', 'brightest', 'label': Path, 'num_exposures': int}},
    'skipped': [id, ...]}`` with what a correct reader must pick.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    h, w = size
    usable: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for part, seqs in (("Dataset_Part1", _PART1), ("Dataset_Part2", _PART2)):
        label_dir = root / part / "Label"
        label_dir.mkdir(parents=True, exist_ok=True)
        for number, evs, label_name, (dy, dx) in seqs:
            seq_dir = root / part / str(number)
            seq_dir.mkdir(parents=True, exist_ok=True)
            e = fake_radiance(rng, h, w)
            files = []
            for j, ev in enumerate(evs, start=1):
                path = seq_dir / f"{j}.JPG"
                hio.write_ldr(path, render_exposure(e, ev), quality=95, overwrite=True)
                files.append(path)
            sid = f"part{part[-1]}/{number}"
            label = None
            if label_name is not None:
                label = label_dir / label_name
                tm = _tonemap(e)
                if (dy, dx) != (0, 0):
                    tm = cv2.resize(tm, (w + dx, h + dy), interpolation=cv2.INTER_LINEAR)
                hio.write_ldr(label, tm, quality=95, overwrite=True)
            if label is None or len(evs) < 2 or max(abs(dy), abs(dx)) > 4:
                skipped.append(sid)
            else:
                usable[sid] = {
                    "darkest": files[int(np.argmin(evs))],
                    "brightest": files[int(np.argmax(evs))],
                    "label": label,
                    "num_exposures": len(evs),
                }
    return {"usable": usable, "skipped": skipped}


def write_fake_hdr_folder(
    root: str | os.PathLike,
    scenes: dict[str, tuple[int, int]] | None = None,
    *,
    seed: int = 0,
) -> list[Path]:
    """Write tiny OpenEXR scenes ``{stem: (H, W)}`` into ``root``; 2:1 ones act as panoramas.

    The default stems are chosen so that the synthetic builder's 20 % scene hash puts 'scene_a'
    in 'test' and the other two in 'train'.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    scenes = scenes or {"scene_a": (32, 64), "scene_c": (40, 56), "scene_d": (48, 96)}
    rng = np.random.default_rng(seed)
    paths = []
    for stem, (h, w) in scenes.items():
        path = root / f"{stem}.exr"
        hio.write_hdr(path, fake_radiance(rng, h, w, stops=12.0), overwrite=True)
        paths.append(path)
    return paths


#: XYZ (D65) -> linear sRGB (IEC 61966-2-1).
XYZ_TO_SRGB = np.array([[3.2404542, -1.5371385, -0.4985314],
                        [-0.9692660, 1.8760108, 0.0415560],
                        [0.0556434, -0.2040259, 1.0572252]])


def write_dng(path: Path, linear: np.ndarray, *, black: int = 0, white: int = 65535,
              neutral: Sequence[float] = (1.0, 1.0, 1.0), orientation: int = 1,
              exposure: tuple[float, float] | None = None, saturation: int | None = None,
              noise: float = 0.0, demosaiced: bool = False) -> Path:
    """A camera raw file of ``linear`` (H, W, 3) sRGB >= 0 as a DNG (Adobe DNG 1.4: a 16-bit
    RGGB colour filter array between ``black`` and ``white``, ``AsShotNeutral`` = ``neutral``,
    the camera's response to white, and ``ColorMatrix1`` = diag(neutral) XYZ->sRGB, so that the
    camera's RGB is the sRGB scene times ``neutral``, clipped at 1 as a sensor saturates: a
    channel that sees white as 0.5 clips at scene value 2), with ``exposure`` (seconds, f-number) in its tags when given. With
    ``saturation`` the sensor clips there instead of at ``white`` (a camera that saturates below
    its nominal white level); ``noise``: sd of Gaussian noise added to the linear values (a
    seeded generator), as a sensor's noise spreads what it did not clip. ``demosaiced``: a
    linear DNG instead (LinearRaw: three samples per pixel, as phones' raw formats and raw
    converters' DNG output store them).
    Written with tifffile; LibRaw reads it as a camera's."""
    import tifffile  # a test dependency: raw files are written by tests and experiments only

    n = np.asarray(neutral, np.float64)
    linear = np.asarray(linear, np.float64)
    linear = linear + np.random.default_rng(0).normal(0.0, noise, linear.shape) if noise else linear
    cam = np.clip(linear * n, 0.0, 1.0)
    if demosaiced:
        cfa = cam
    else:
        cfa = np.empty(cam.shape[:2])
        cfa[0::2, 0::2], cfa[0::2, 1::2] = cam[0::2, 0::2, 0], cam[0::2, 1::2, 1]
        cfa[1::2, 0::2], cfa[1::2, 1::2] = cam[1::2, 0::2, 1], cam[1::2, 1::2, 2]
    data = np.minimum(np.round(black + cfa * (white - black)), saturation or white).astype(
        np.uint16)

    def rational(values):  # (numerator, denominator) pairs
        return [int(v) for x in np.ravel(values) for v in (round(x * 10000), 10000)]

    tags = [
        (271, "s", 0, "hdr_jax", True), (272, "s", 0, "test camera", True),
        (274, "H", 1, orientation, True),
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50708, "s", 0, "hdr_jax test camera", True),  # UniqueCameraModel
        (50714, "H", 1, black, True), (50717, "H", 1, white, True),  # BlackLevel, WhiteLevel
        (50721, "2i", 9, rational(np.diag(n) @ XYZ_TO_SRGB), True),  # ColorMatrix1
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
        (50728, "2I", 3, rational(n), True),  # AsShotNeutral
    ]
    if not demosaiced:  # CFARepeatPatternDim, CFAPattern: RGGB
        tags += [(33421, "H", 2, (2, 2), True), (33422, "B", 4, (0, 1, 1, 2), True)]
    if exposure is not None:  # ExposureTime, FNumber
        t, f = exposure
        tags += [(33434, "2I", 1, rational([t]), True), (33437, "2I", 1, rational([f]), True)]
    tifffile.imwrite(path, data, photometric=34892 if demosaiced else 32803, subfiletype=0,
                     extratags=tags)
    return path
