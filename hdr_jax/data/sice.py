"""SICE as a tfds dataset for stage 2 (CF-Net): darkest + brightest exposure + label (Cai, Gu, Zhang, IEEE TIP 2018).

Source: Cai, Gu, Zhang, "Learning a Deep Single Image Contrast Enhancer from Multi-Exposure
Images", IEEE TIP 27(4) 2018. The archives cannot be fetched automatically; the builder reads the
distributed layout from ``manual_dir`` (see ``MANUAL_DOWNLOAD_INSTRUCTIONS``).

Decisions (all deterministic, none depends on file-system order):

* Exposure order: by mean 8-bit intensity (a 1/8-scale greyscale decode), never by file name.
  CF-Net trains on the darkest and the brightest image of each sequence; ties keep name order.
* Skipped sequences (logged, counted in ``Sice.skipped``): fewer than 2 exposures of one size;
  no label; or a label whose size differs from the exposures' by more than
  ``max(4, 1% of the side)`` pixels in either dimension. A label within that tolerance is resized
  to the exposures' size (cv2 INTER_AREA), which tolerates labels saved a few pixels off; a
  resize, unlike a crop, keeps whole-image alignment. Exposures whose size differs from the most
  common size in their sequence are dropped (logged). Sizes are read after EXIF orientation, the
  same convention as ``hdr_jax.io.read_ldr``.
* Downscaling of the originals (up to ~6000x4000): the long side is reduced to ``max_side``
  (default 1200) with cv2 INTER_AREA (box-filter area averaging) on float values, before
  quantising to uint8. ``max_side=None`` keeps the originals.
* HR: cropped at the bottom/right to a multiple of the scale ("modcrop", the SR convention).
* LR: bicubic downscaling of the HR by the scale. Default ``lr_kernel='matlab'``: MATLAB
  ``imresize`` semantics (Keys cubic, a = -0.5, kernel widened by the scale = antialiased,
  symmetric borders, rounded to uint8), the SR literature's convention for making LR images;
  ``'cv2'`` selects ``cv2.resize(..., INTER_CUBIC)`` (a = -0.75, no antialiasing).
* Held-out split: a sequence ``part<k>/<n>`` is in 'test' iff ``crc32(id) % 10 == 0``
  (:func:`is_test_sequence`); 60 of the 589 sequences of Parts 1+2 (41 + 19), about 10 %. It
  depends on the id only, so adding or removing other sequences never moves one between splits.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import inspect
import json
import logging
import os
import re
import zlib
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from hdr_jax import io as hio

__all__ = [
    "LR_KERNELS",
    "LocalCodePath",
    "bicubic_downscale",
    "mean_brightness",
    "to_uint8",
    "SiceConfig",
    "SiceSequence",
    "Sice",
    "imresize_bicubic",
    "is_test_sequence",
    "make_pair_example",
    "modcrop",
    "pair_features",
    "read_sice_pair",
    "recorded_source",
    "resize_max_side",
    "scan_sice",
    "source_record",
    "stable_hash",
    "SOURCE_FILE",
]

log = logging.getLogger(__name__)

LR_KERNELS = ("matlab", "cv2")
TEST_MODULUS = 10
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_PART_RE = re.compile(r"^dataset_part(\d+)$", re.IGNORECASE)


# ------------------------------------------------------------------------------------------------
# Shared pair utilities (also used by synthetic_pairs)
# ------------------------------------------------------------------------------------------------


def stable_hash(key: str) -> int:
    """CRC-32 of the UTF-8 key: stable across processes and Python versions (unlike hash())."""
    return zlib.crc32(key.encode("utf-8"))


def is_test_sequence(sequence_id: str) -> bool:
    """The fixed SICE held-out rule: crc32('part1/12') % 10 == 0."""
    return stable_hash(sequence_id) % TEST_MODULUS == 0


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB imresize 'bicubic')."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * (
        (ax > 1) & (ax <= 2)
    )


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) interpolation matrix of MATLAB imresize along one axis."""
    s = n_out / n_in
    # Antialiasing: for minification the kernel is stretched by 1/s (and scaled by s).
    width = 4.0 / s if s < 1 else 4.0
    u = (np.arange(n_out, dtype=np.float64) + 0.5) / s - 0.5
    left = np.floor(u - width / 2)
    taps = int(np.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    w = _cubic((u[:, None] - idx) * min(s, 1.0))
    w /= w.sum(axis=1, keepdims=True)
    # 'symmetric' padding: mirror including the edge sample.
    period = 2 * n_in
    idx = np.mod(idx.astype(np.int64), period)
    idx = np.where(idx >= n_in, period - 1 - idx, idx)
    m = np.zeros((n_out, n_in), np.float64)
    np.add.at(m, (np.repeat(np.arange(n_out), taps), idx.ravel()), w.ravel())
    return m


def imresize_bicubic(img: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """MATLAB ``imresize(img, [h w], 'bicubic')`` for an HxW or HxWxC array.

    uint8 in -> uint8 out (rounded and clipped, as MATLAB does); float in -> float32 out.
    """
    a = np.asarray(img)
    if a.ndim not in (2, 3) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"imresize_bicubic expects an HxW or HxWxC image, got shape {a.shape}")
    h, w = int(out_hw[0]), int(out_hw[1])
    if h < 1 or w < 1:
        raise ValueError(f"output size must be positive, got {(h, w)}")
    x = a.astype(np.float64)
    H, W = a.shape[:2]
    mh, mw = _resize_matrix(H, h), _resize_matrix(W, w)
    # Two dense matmuls (BLAS): rows, then columns with the channels moved out of the way.
    y = (mh @ x.reshape(H, -1)).reshape(h, W, -1)
    c = y.shape[2]
    y = (np.ascontiguousarray(y.transpose(0, 2, 1)).reshape(h * c, W) @ mw.T).reshape(h, c, w)
    y = y.transpose(0, 2, 1).reshape((h, w) + a.shape[2:])
    if a.dtype == np.uint8:
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return y.astype(np.float32)


def bicubic_downscale(img: np.ndarray, scale: int, lr_kernel: str = "matlab") -> np.ndarray:
    """HxWx3 uint8 (H, W multiples of scale) -> (H/scale)x(W/scale)x3 uint8, see module docstring."""
    h, w = img.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"image size {(h, w)} is not a multiple of the scale {scale}; modcrop first")
    if lr_kernel == "matlab":
        return imresize_bicubic(img, (h // scale, w // scale))
    if lr_kernel == "cv2":
        return cv2.resize(img, (w // scale, h // scale), interpolation=cv2.INTER_CUBIC)
    raise ValueError(f"lr_kernel must be one of {LR_KERNELS}, got {lr_kernel!r}")


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop bottom/right so that H and W are multiples of ``scale``."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def resize_max_side(img: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale (cv2 INTER_AREA) so that the long side is at most ``max_side``; never upscales."""
    if max_side is None or max(img.shape[:2]) <= max_side:
        return img
    h, w = img.shape[:2]
    f = max_side / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8 by rounding."""
    return np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def make_pair_example(
    under: np.ndarray, over: np.ndarray, label: np.ndarray, *, scale: int, lr_kernel: str = "matlab"
) -> dict[str, np.ndarray]:
    """HR uint8 images of one size -> the five image features (modcropped HR, bicubic LR)."""
    if not (under.shape == over.shape == label.shape) or under.ndim != 3 or under.shape[2] != 3:
        raise ValueError(f"under/over/label must share an HxWx3 shape, got {under.shape}, {over.shape}, {label.shape}")
    if min(under.shape[:2]) < scale:
        raise ValueError(f"image {under.shape[:2]} is smaller than the scale {scale}")
    out = {}
    for key, img in (("under", under), ("over", over), ("label", label)):
        hr = np.ascontiguousarray(modcrop(img, scale))
        out[f"{key}_hr"] = hr
        if key != "label":
            out[f"{key}_lr"] = bicubic_downscale(hr, scale, lr_kernel)
    return out


def pair_features(**extra: tfds.features.FeatureConnector) -> tfds.features.FeaturesDict:
    """The features shared by 'sice' and 'synthetic_pairs' (images uint8 HxWx3, any size)."""

    def image() -> tfds.features.Tensor:
        # Tensor, not Image: Image needs TensorFlow to encode; zlib keeps array_record small.
        return tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding="zlib")

    feats = {k: image() for k in ("under_lr", "over_lr", "under_hr", "over_hr", "label_hr")}
    feats["sequence"] = tfds.features.Text()
    feats["num_exposures"] = tfds.features.Scalar(dtype=np.int32)
    feats.update(extra)
    return tfds.features.FeaturesDict(feats)


# ------------------------------------------------------------------------------------------------
# Scanning the SICE layout
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SiceSequence:
    """One usable sequence: id 'part1/12', its exposures (unordered) and its label."""

    part: str
    number: int
    exposures: tuple[Path, ...]
    label: Path
    label_size: tuple[int, int]  # (H, W) of the label file
    size: tuple[int, int]  # (H, W) shared by the exposures

    @property
    def id(self) -> str:
        return f"{self.part}/{self.number}"


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_EXTS and not p.name.startswith(".")),
        key=lambda p: (_natural_key(p.stem), p.name),
    )


def _natural_key(s: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s))


def _find_parts(root: Path) -> list[tuple[str, Path]]:
    """[(part name, folder)]: Dataset_Part<k> children of root, or root itself if it is a part."""
    if not root.is_dir():
        raise FileNotFoundError(f"SICE folder {os.fspath(root)!r} does not exist or is not a directory")
    parts = []
    for child in sorted(root.iterdir()):
        m = _PART_RE.match(child.name)
        if m and child.is_dir():
            parts.append((f"part{int(m.group(1))}", child))
    if parts:
        return parts
    if any(c.is_dir() and c.name.lower() == "label" for c in root.iterdir()):
        m = _PART_RE.match(root.name)
        return [(f"part{int(m.group(1))}" if m else root.name.lower(), root)]
    raise FileNotFoundError(
        f"{os.fspath(root)!r} holds neither Dataset_Part1/Dataset_Part2 folders nor a Label/ folder (SICE layout)"
    )


def _size_tol(n: int) -> int:
    return max(4, round(0.01 * n))


def scan_sice(root: str | os.PathLike) -> tuple[list[SiceSequence], list[tuple[str, str]]]:
    """Walk a SICE folder; return (usable sequences sorted by id, [(id, reason)] of skipped ones).

    Reads image headers only (sizes after EXIF orientation).
    """
    sequences: list[SiceSequence] = []
    skipped: list[tuple[str, str]] = []
    for part, folder in _find_parts(Path(root)):
        label_dir = next((c for c in folder.iterdir() if c.is_dir() and c.name.lower() == "label"), None)
        labels: dict[str, Path] = {}
        if label_dir is not None:
            for p in _images_in(label_dir):
                labels.setdefault(p.stem.lower(), p)
        seq_dirs = sorted((c for c in folder.iterdir() if c.is_dir() and c.name.isdigit()), key=lambda c: int(c.name))
        for d in seq_dirs:
            sid = f"{part}/{int(d.name)}"
            label = labels.get(d.name.lower()) or labels.get(str(int(d.name)))
            if label is None:
                skipped.append((sid, "no label image"))
                continue
            try:
                sizes = {p: (i.height, i.width) for p in _images_in(d) for i in [hio.ldr_info(p)]}
                li = hio.ldr_info(label)
            except hio.ImageIOError as e:
                skipped.append((sid, f"unreadable image: {e}"))
                continue
            if not sizes:
                skipped.append((sid, "no exposures"))
                continue
            common, _ = collections.Counter(sizes.values()).most_common(1)[0]
            exposures = tuple(p for p, s in sizes.items() if s == common)
            for p, s in sizes.items():
                if s != common:
                    log.warning("SICE %s: dropping exposure %s of size %s (sequence size %s)", sid, p.name, s, common)
            if len(exposures) < 2:
                skipped.append((sid, f"{len(exposures)} exposure(s) of one size, need 2"))
                continue
            lsize = (li.height, li.width)
            if abs(lsize[0] - common[0]) > _size_tol(common[0]) or abs(lsize[1] - common[1]) > _size_tol(common[1]):
                skipped.append((sid, f"label size {lsize} does not match exposure size {common}"))
                continue
            sequences.append(SiceSequence(part, int(d.name), exposures, label, lsize, common))
    for sid, reason in skipped:
        log.warning("SICE %s skipped: %s", sid, reason)
    sequences.sort(key=lambda s: (_natural_key(s.part), s.number))
    return sequences, skipped


def mean_brightness(path: Path) -> float:
    """Mean 8-bit grey level from a reduced-resolution decode (JPEG DCT scaling makes it cheap)."""
    grey = cv2.imread(os.fspath(path), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if grey is None:  # formats OpenCV cannot reduce: full decode
        return float(hio.read_ldr(path).mean() * 255.0)
    return float(grey.mean())


def read_sice_pair(
    seq: SiceSequence, *, scale: int, max_side: int | None = 1200, lr_kernel: str = "matlab"
) -> dict[str, Any]:
    """Darkest + brightest exposure + label of one sequence -> a 'sice' example."""
    ranked = sorted(seq.exposures, key=mean_brightness)  # stable: ties keep name order
    darkest, brightest = ranked[0], ranked[-1]

    def load(path: Path) -> np.ndarray:
        img = hio.read_ldr(path)
        if img.shape[:2] != seq.size:  # a label within tolerance: see the module docstring
            img = cv2.resize(img, (seq.size[1], seq.size[0]), interpolation=cv2.INTER_AREA)
        return to_uint8(resize_max_side(img, max_side))

    ex = make_pair_example(load(darkest), load(brightest), load(seq.label), scale=scale, lr_kernel=lr_kernel)
    ex["sequence"] = seq.id
    ex["num_exposures"] = np.int32(len(seq.exposures))
    return ex


#: Written beside a prepared config (``DATA_DIR/sice/xN``) by the tools that prepare one: the
#: folder it was prepared from and a digest of that folder's files (:func:`source_record`).
SOURCE_FILE = "source.json"


def source_record(data_dir: str | os.PathLike) -> dict:
    """What a dataset prepared from ``data_dir`` is made of: the resolved folder and a SHA-256 of
    its files' relative paths, sizes and modification times, so that a changed or another folder
    is not read from a dataset prepared earlier."""
    data_dir = Path(data_dir)
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(data_dir):
        dirs.sort()
        for name in sorted(files):
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:  # a link to nowhere: the preparation says what it cannot read
                continue
            rel = os.path.relpath(os.path.join(root, name), data_dir)
            digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {"data_dir": str(data_dir.resolve()), "files": digest.hexdigest()}


def recorded_source(config_dir: str | os.PathLike) -> dict | None:
    """The :func:`source_record` written beside a prepared config, or None (none written, or
    unreadable)."""
    try:
        return json.loads((Path(config_dir) / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------
# tfds builder
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False, kw_only=True)
class SiceConfig(tfds.core.BuilderConfig):
    """scale: SR factor; max_side: long-side cap of the HR (None: originals); lr_kernel: LR filter."""

    scale: int = 2
    max_side: int | None = 1200
    lr_kernel: str = "matlab"

    def __post_init__(self):
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, got {self.scale}")
        if self.max_side is not None and self.max_side < self.scale:
            raise ValueError(f"max_side must be >= scale, got {self.max_side}")
        if self.lr_kernel not in LR_KERNELS:
            raise ValueError(f"lr_kernel must be one of {LR_KERNELS}, got {self.lr_kernel!r}")


class LocalCodePath:
    """Builder mixin: ``code_path`` from ``inspect.getfile``.

    tfds' own lookup goes through ``importlib_resources``, which tfds 4.9 imports lazily but
    does not depend on; without it any builder defined inside a package fails in
    ``download_and_prepare``. The file path is what tfds falls back to anyway.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path | None:
        try:
            return epath.Path(inspect.getfile(cls))
        except (TypeError, OSError):
            return None


class Sice(LocalCodePath, tfds.core.GeneratorBasedBuilder):
    """SICE darkest/brightest pairs with labels, at x2 or x4 (see the module docstring)."""

    name = "sice"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        SiceConfig(name="x2", scale=2, description="x2 SR pairs, HR long side <= 1200"),
        SiceConfig(name="x4", scale=4, description="x4 SR pairs, HR long side <= 1200"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download the SICE dataset (Cai, Gu, Zhang, IEEE TIP 2018; archives "Dataset_Part1" and
    "Dataset_Part2" from the authors' project page) and extract both into one folder, then pass
    that folder as the manual dir:

        <manual_dir>/Dataset_Part1/1/*.JPG ... <manual_dir>/Dataset_Part1/360/*.JPG
        <manual_dir>/Dataset_Part1/Label/1.JPG ... 360.JPG
        <manual_dir>/Dataset_Part2/1/*.JPG ... <manual_dir>/Dataset_Part2/229/*.JPG
        <manual_dir>/Dataset_Part2/Label/1.JPG ... 229.JPG

    The manual dir may also be a single Dataset_Part<k> folder. Extensions (jpg/jpeg/png/tif)
    are matched case-insensitively; exposures are ordered by brightness, not by name.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.skipped: list[tuple[str, str]] = []

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="SICE extreme exposure pairs (darkest, brightest) with fused labels, LR/HR.",
            features=pair_features(),
            homepage="https://github.com/csjcai/SICE",
            citation="Cai, Gu, Zhang. Learning a Deep Single Image Contrast Enhancer from "
            "Multi-Exposure Images. IEEE TIP 27(4), 2018.",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        sequences, self.skipped = scan_sice(dl_manager.manual_dir)
        log.info("SICE: %d usable sequences, %d skipped", len(sequences), len(self.skipped))
        splits = {
            "train": [s for s in sequences if not is_test_sequence(s.id)],
            "test": [s for s in sequences if is_test_sequence(s.id)],
        }
        for name, seqs in splits.items():
            if not seqs:  # tfds cannot write an empty split
                log.warning("SICE: split %r is empty and is not generated", name)
        if not any(splits.values()):
            raise ValueError(f"no usable SICE sequence under {os.fspath(dl_manager.manual_dir)!r}")
        return {name: self._generate_examples(seqs) for name, seqs in splits.items() if seqs}

    def _generate_examples(self, sequences: Sequence[SiceSequence]) -> Iterator[tuple[str, dict[str, Any]]]:
        cfg = self.builder_config
        for seq in sequences:
            try:
                ex = read_sice_pair(seq, scale=cfg.scale, max_side=cfg.max_side, lr_kernel=cfg.lr_kernel)
            except hio.ImageIOError as e:  # header was fine, pixel data is not
                log.warning("SICE %s skipped: %s", seq.id, e)
                self.skipped.append((seq.id, f"unreadable image: {e}"))
                continue
            yield seq.id, ex
