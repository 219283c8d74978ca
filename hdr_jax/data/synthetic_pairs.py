"""SICE-style extreme exposure pairs synthesised from HDR images (tfds builder 'synthetic_pairs').

Per scene (an HDR file in ``manual_dir``) ``views_per_scene`` square HR crops are taken:
equirectangular panoramas (W = 2H, within 1 %) give rectilinear views
(:func:`hdr_jax.camera.panorama.perspective_crop`, fov/elevation ranges in the config); other
images give random square crops (side 50-100 % of the short side) resized to ``crop_size``
(cv2 INTER_AREA down, INTER_CUBIC up). Low-resolution panoramas give soft HR views: the
bundled CC0 ones are 512-1024 px wide, so a 256 px view of 60-90 degrees is upsampled 1-3x.

Exposure (per crop). The crop's radiance is scaled so that its log-average luminance (Reinhard's
key; Rec. 709 weights) is 0.18 at dt = 1, i.e. what a metering camera calls 0 EV. Mean
normalisation is not used here: a sun or lamp in the view dominates the mean
and leaves the rest black. Then

* under = f(E * 2^ev_under), ev_under ~ U(-4, -2.5): an extreme under-exposure,
* over = f(E * 2^ev_over), ev_over ~ U(+1.5, +2.5): an extreme over-exposure,

through a CRF ``f`` drawn per crop from :func:`hdr_jax.camera.crf.default_training_crfs`
(the parametric set, or EMoR-based with ``emor_path``), 8-bit quantised. All draws come from
``np.random.default_rng([seed, crc32(stem)])``, so a scene's pairs depend on nothing else.
Measured on 20 views (256 px) of 5 of the bundled panoramas: under mean 0.13 (0.04-0.34), a
median 4 % of its pixels above mid-grey; over mean 0.75 (0.51-0.93), a median 55 % (28-79 %) of
its pixels clipped; label mean 0.54 (0.43-0.57).

Fused ground truth ('label_hr'). Exposure fusion (Mertens, Kautz, Van Reeth 2007; OpenCV
``MergeMertens`` with its default weights) of a dense bracket rendered from the true HDR:
EV -6 .. +3 in 1-stop steps about the key, through the sRGB curve, 8-bit. Why: SICE labels are
the best of 13 multi-exposure fusion / HDR + tone-mapping results, and exposure fusion keeps the
local contrast in both shadows and highlights that a global operator (e.g. Reinhard's
photographic curve) compresses away. A dense bracket from the exact radiance has none of the
defects of captured brackets: no ghosting, no misalignment and no missing detail, and the sRGB
rendering makes the label camera-independent (the inputs are not).

Features: those of 'sice' (:func:`hdr_jax.data.sice.pair_features`; 'sequence' is
'<stem>/<view>', 'num_exposures' is 2) plus 'hdr' float16 (H, W, 3): the key-normalised crop
radiance at HR size, so that under = f(hdr * 2^ev_under); and 'ev_under', 'ev_over' (float32),
'crf' (CRF name).

Splits: by scene, with the same rule as the stage-1 builder (`hdr_brackets.split_scenes` with
``validation_fraction = test_percent / 100``), so both stages hold out the same scenes and the
two-stage system can be evaluated on scenes neither network saw. For the bundled panoramas this
puts 8 of 26 scenes in 'test'.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tensorflow_datasets as tfds

from hdr_jax import io as hio
from hdr_jax import merge
from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera import exposure, panorama
from hdr_jax.data import hdr_brackets
from hdr_jax.data.sice import (
    LR_KERNELS,
    LocalCodePath,
    make_pair_example,
    pair_features,
    stable_hash,
    to_uint8,
)

__all__ = [
    "SyntheticPairs",
    "SyntheticPairsConfig",
    "fuse_bracket",
    "key_normalise",
    "scene_crops",
    "split_test_scenes",
    "synthesize_pair",
]

log = logging.getLogger(__name__)

KEY = 0.18
GT_BRACKET_EV = tuple(float(e) for e in range(-6, 4))
_HALF_MAX = float(np.finfo(np.float16).max)


def key_normalise(hdr: np.ndarray, key: float = KEY) -> np.ndarray:
    """Scale linear RGB so its log-average luminance is ``key`` (Reinhard et al. 2002, eq. 1)."""
    lum = crf_lib.luminance(hdr)
    mean = float(lum.mean())
    if not (np.isfinite(mean) and mean > 0):
        raise ValueError(f"cannot normalise an HDR crop with mean luminance {mean}")
    # delta keeps black pixels from sending the log-average to 0; relative, so scale-invariant.
    delta = 1e-4 * mean
    log_avg = float(np.exp(np.mean(np.log(lum + delta))))
    return (np.asarray(hdr, np.float32) * np.float32(key / log_avg)).astype(np.float32)


def fuse_bracket(hdr: np.ndarray, evs: Sequence[float] = GT_BRACKET_EV) -> np.ndarray:
    """Mertens exposure fusion of sRGB 8-bit renderings of ``hdr * 2^ev`` -> uint8 HxWx3."""
    srgb = crf_lib.srgb_crf()
    # MergeMertens on 8-bit input: it rescales to [0, 1] itself (float input is taken as-is).
    bracket = [to_uint8(exposure.expose(hdr, 2.0**ev, srgb, quantize=False)) for ev in evs]
    return to_uint8(merge.mertens_fusion(bracket))


def split_test_scenes(stems: Sequence[str], test_percent: int = 20) -> list[str]:
    """Held-out scenes: the stage-1 validation rule (see the module docstring)."""
    return hdr_brackets.split_scenes(stems, validation_fraction=test_percent / 100)[1]


@dataclasses.dataclass(eq=False, kw_only=True)
class SyntheticPairsConfig(tfds.core.BuilderConfig):
    """Crop/exposure/split parameters; see the module docstring for their meaning."""

    scale: int = 2
    crop_size: int = 256  # HR side
    views_per_scene: int = 16
    fov_range: tuple[float, float] = (60.0, 90.0)
    elevation_range: tuple[float, float] = (-15.0, 30.0)
    ev_under: tuple[float, float] = (-4.0, -2.5)
    ev_over: tuple[float, float] = (1.5, 2.5)
    test_percent: int = 20
    seed: int = 0
    emor_path: str | None = None
    lr_kernel: str = "matlab"

    def __post_init__(self):
        if self.scale < 1 or self.crop_size % self.scale or self.crop_size < self.scale:
            raise ValueError(f"crop_size {self.crop_size} must be a positive multiple of scale {self.scale}")
        if self.views_per_scene < 1:
            raise ValueError(f"views_per_scene must be >= 1, got {self.views_per_scene}")
        if not (self.ev_under[0] <= self.ev_under[1] < self.ev_over[0] <= self.ev_over[1]):
            raise ValueError(f"need ev_under range below ev_over range, got {self.ev_under}, {self.ev_over}")
        if not 0 <= self.test_percent <= 100:
            raise ValueError(f"test_percent must lie in [0, 100], got {self.test_percent}")
        if self.lr_kernel not in LR_KERNELS:
            raise ValueError(f"lr_kernel must be one of {LR_KERNELS}, got {self.lr_kernel!r}")


def scene_crops(hdr: np.ndarray, cfg: SyntheticPairsConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """``cfg.views_per_scene`` square (crop_size, crop_size, 3) linear crops of one scene."""
    size = cfg.crop_size
    if panorama.is_panorama(*hdr.shape[:2]):
        views = panorama.random_views(rng, cfg.views_per_scene, cfg.fov_range, cfg.elevation_range)
        return [np.maximum(panorama.perspective_crop(hdr, f, e, a, size), 0.0) for f, e, a in views]
    h, w = hdr.shape[:2]
    crops = []
    for _ in range(cfg.views_per_scene):
        side = max(1, int(round(min(h, w) * rng.uniform(0.5, 1.0))))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = hdr[y : y + side, x : x + side]
        interp = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
        crops.append(np.maximum(cv2.resize(crop, (size, size), interpolation=interp), 0.0))
    return crops


def synthesize_pair(
    crop: np.ndarray,
    curve: np.ndarray,
    ev_under: float,
    ev_over: float,
    *,
    scale: int,
    lr_kernel: str = "matlab",
) -> dict[str, Any]:
    """One linear HR crop -> the image features plus 'hdr', 'ev_under', 'ev_over'."""
    hdr = key_normalise(crop)
    under = to_uint8(exposure.expose(hdr, 2.0**ev_under, curve, quantize=False))
    over = to_uint8(exposure.expose(hdr, 2.0**ev_over, curve, quantize=False))
    ex = make_pair_example(under, over, fuse_bracket(hdr), scale=scale, lr_kernel=lr_kernel)
    h, w = ex["label_hr"].shape[:2]
    ex["hdr"] = np.minimum(hdr[:h, :w], _HALF_MAX).astype(np.float16)
    ex["ev_under"] = np.float32(ev_under)
    ex["ev_over"] = np.float32(ev_over)
    return ex


class SyntheticPairs(LocalCodePath, tfds.core.GeneratorBasedBuilder):
    """Under/over pairs + fused labels rendered from HDR images (see the module docstring)."""

    name = "synthetic_pairs"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        SyntheticPairsConfig(name="x2", scale=2, description="x2, HR 256, 16 views per scene"),
        SyntheticPairsConfig(name="x4", scale=4, description="x4, HR 256, 16 views per scene"),
        SyntheticPairsConfig(name="tiny_x2", scale=2, crop_size=32, views_per_scene=2, description="tests"),
        SyntheticPairsConfig(name="tiny_x4", scale=4, crop_size=32, views_per_scene=2, description="tests"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put HDR images (OpenEXR .exr or Radiance .hdr/.pic; equirectangular 2:1 panoramas or
    ordinary photographs) directly in one folder and pass it as the manual dir. Each file is one
    scene; train/test are split by file stem.
    """

    def __init__(self, *, strict: bool = False, **kwargs: Any):
        """``strict``: an unreadable source file fails the build (default: it is logged by name
        and skipped). Other arguments go to the TFDS builder."""
        super().__init__(**kwargs)
        self._strict = strict

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Synthetic extreme under/over exposure pairs with exposure-fusion labels.",
            features=pair_features(
                hdr=tfds.features.Tensor(shape=(None, None, 3), dtype=np.float16, encoding="zlib"),
                ev_under=tfds.features.Scalar(dtype=np.float32),
                ev_over=tfds.features.Scalar(dtype=np.float32),
                crf=tfds.features.Text(),
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        cfg = self.builder_config
        files = hio.list_images(Path(dl_manager.manual_dir), kinds=("hdr",))
        stems = [f.stem for f in files]
        if len(set(stems)) != len(stems):
            raise ValueError(f"HDR file stems must be unique (they name scenes): {sorted(stems)}")
        held_out = set(split_test_scenes(stems, cfg.test_percent))
        splits = {
            "train": [f for f in files if f.stem not in held_out],
            "test": [f for f in files if f.stem in held_out],
        }
        for name, fs in splits.items():
            if not fs:  # tfds cannot write an empty split
                log.warning("synthetic_pairs: split %r has no scene and is not generated", name)
        return {name: self._generate_examples(fs) for name, fs in splits.items() if fs}

    def _generate_examples(self, files: Sequence[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
        cfg = self.builder_config
        crfs = crf_lib.default_training_crfs(cfg.emor_path, k=5, seed=cfg.seed)
        names = sorted(crfs)
        for path in files:
            rng = np.random.default_rng([cfg.seed, stable_hash(path.stem)])
            hdr = hdr_brackets.read_source_hdr(
                path, strict=self._strict, builder="synthetic_pairs", allow_nonfinite=True
            )
            if hdr is None:
                continue
            for v, crop in enumerate(scene_crops(hdr, cfg, rng)):
                name = names[int(rng.integers(len(names)))]
                ev_u = float(rng.uniform(*cfg.ev_under))
                ev_o = float(rng.uniform(*cfg.ev_over))
                if not crf_lib.luminance(crop).mean() > 0:
                    log.warning("synthetic_pairs: %s view %d is black; skipped", path.stem, v)
                    continue
                ex = synthesize_pair(crop, crfs[name], ev_u, ev_o, scale=cfg.scale, lr_kernel=cfg.lr_kernel)
                ex.update(sequence=f"{path.stem}/{v}", num_exposures=np.int32(2), crf=name)
                yield f"{path.stem}/{v}", ex


def prepared(scale: int, data_dir: str, manual_dir: str) -> SyntheticPairs:
    """The builder of the x``scale`` pairs in ``data_dir``, built from the HDR folder
    ``manual_dir`` first if it is not there yet (what the stage-2 evaluation scripts read)."""
    builder = SyntheticPairs(config=f"x{scale}", data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )
    return builder
