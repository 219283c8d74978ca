"""TFDS builder for stage-1 (DrTMO) training data: simulated exposure brackets (Endo et al. 2017).

Every example is one view of one scene rendered through one camera response: the normalised
linear radiance (mean 0.5 at dt = 1) and its T + 1 = 9 exposures Z_k = f(E tau^k),
k = -T/2 .. T/2, darkest first, quantised to 8 bits.

Usage::

    builder = HdrBrackets(config='small', data_dir=...)            # parametric CRFs
    builder = HdrBrackets(config='small_emor', emor_dir=..., ...)   # EMoR CRFs
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir='/path/to/hdr_folder'))
    source = builder.as_data_source(split='train')  # random access, feeds grain

Configs are static, so the CRF *family* is part of the config (``*_emor`` configs) while the
EMoR file location, which only matters while preparing, is the builder argument ``emor_dir``.
A custom split or geometry is a custom config:
``HdrBrackets(config=HdrBracketsConfig(name='mine', validation_scenes=('a', 'b')))``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from hdr_jax import io as hdr_io
from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera import exposure, panorama
from hdr_jax.camera.exposure import TAU
from hdr_jax.camera.panorama import is_panorama

_HALF_MAX = float(np.finfo(np.float16).max)
# A panorama's width is twice its height; real files are exact, the tolerance allows odd sizes.
# Bound on the supersampling factor used to anti-alias panorama views.
_MAX_SUPERSAMPLE = 4

_DESCRIPTION = """\
Simulated 8-bit exposure brackets (DrTMO, Endo et al. 2017) rendered from linear HDR images:
perspective views of equirectangular panoramas and random crops of ordinary HDR photos, each
normalised to mean 0.5 and exposed at dt = tau^k, k = -T/2..T/2, through K camera responses.
"""

_MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put linear HDR images (OpenEXR `.exr` or Radiance `.hdr`/`.pic`) in one folder (not searched
recursively) and pass it as `manual_dir`. Each file is a scene, named by its file stem, which
must be unique. A file whose width is twice its height (within 1%) is treated as an
equirectangular panorama and yields perspective views (random field of view, elevation and
azimuth); any other file is an ordinary HDR photo and yields random crops after resizing its
short side to the crop size. Train/validation splits are made by scene, never by crop.
"""


@dataclasses.dataclass
class HdrBracketsConfig(tfds.core.BuilderConfig):
    """Geometry, camera and split settings of an :class:`HdrBrackets` dataset.

    Attributes:
      crop_size: side S of the square examples.
      views_per_panorama: perspective views per panorama.
      crops_per_photo: random crops per ordinary (non-panorama) photo.
      fov_range: horizontal field of view of panorama views, degrees, uniform.
      elevation_range: view elevation, degrees, uniform (azimuth is uniform over 360).
      num_crfs: K representative responses from :func:`crf.default_training_crfs`; every view
        is rendered through all K.
      crf_source: 'parametric' (no file needed) or 'emor' (needs the builder's ``emor_dir``).
      num_stops: T; brackets have T + 1 exposures.
      tau: exposure ratio between neighbouring images.
      jpeg_quality: None, or a JPEG quality (int or (low, high) range) for a round trip per image.
      validation_fraction: used when ``validation_scenes`` is None: a scene is held out when a
        stable hash of its file stem, mapped to [0, 1), is below this fraction.
      validation_scenes: explicit held-out scene stems (all must exist in the folder).
      seed: base seed of views, crops and CRF selection; every scene's randomness is derived
        from (seed, scene stem), so it does not depend on the other files in the folder.
    """

    crop_size: int = 256
    views_per_panorama: int = 8
    crops_per_photo: int = 4
    fov_range: tuple[float, float] = (60.0, 90.0)
    elevation_range: tuple[float, float] = (-20.0, 30.0)
    num_crfs: int = 5
    crf_source: str = "parametric"
    num_stops: int = 8
    tau: float = TAU
    jpeg_quality: int | tuple[int, int] | None = None
    validation_fraction: float = 0.2
    validation_scenes: tuple[str, ...] | None = None
    seed: int = 0


def _configs() -> list[HdrBracketsConfig]:
    sizes = {
        "default": dict(crop_size=256),
        "small": dict(crop_size=128),
        # 4x the views of 'small' from the same scenes: the bundled up network beats the naive
        # bracket on the training scenes but not on held-out ones (README), i.e. it overfits.
        "small_views32": dict(crop_size=128, views_per_panorama=32),
        "tiny": dict(crop_size=32, views_per_panorama=2, crops_per_photo=2, num_crfs=2),
    }
    out = []
    for name, kw in sizes.items():
        out.append(HdrBracketsConfig(name=name, description=f"{kw['crop_size']}px, parametric CRFs", **kw))
        emor_name = "emor" if name == "default" else f"{name}_emor"
        out.append(HdrBracketsConfig(name=emor_name, description=f"{kw['crop_size']}px, EMoR CRFs",
                                     crf_source="emor", **kw))
    return out


def training_crfs(
    config: str | HdrBracketsConfig, emor_dir: str | os.PathLike | None = None
) -> dict[str, np.ndarray]:
    """The K named responses every view of ``config`` (a config or a registered config's name)
    is rendered with (the bank a response classifier recognises); ``emor_dir`` is needed for
    the ``*_emor`` configs."""
    cfg = config
    if isinstance(config, str):
        cfg = next((c for c in HdrBrackets.BUILDER_CONFIGS if c.name == config), None)
        if cfg is None:
            raise ValueError(f"unknown hdr_brackets config {config!r}")
    if cfg.crf_source == "parametric":
        return crf_lib.default_training_crfs(None, k=cfg.num_crfs, seed=cfg.seed)
    if cfg.crf_source == "emor":
        if not emor_dir:
            raise ValueError(f"config {cfg.name!r} needs EMoR data: pass emor_dir= to HdrBrackets")
        return crf_lib.default_training_crfs(Path(emor_dir), k=cfg.num_crfs, seed=cfg.seed)
    raise ValueError(f"crf_source must be 'parametric' or 'emor', got {cfg.crf_source!r}")


def _stable_unit(*parts: str) -> float:
    """A platform-independent hash of strings mapped to [0, 1)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _scene_seed(seed: int, scene: str) -> int:
    return int(_stable_unit(str(seed), scene) * 2**63)


class SourceFileError(ValueError):
    """A source HDR file of a dataset build cannot be read (strict builds)."""


def read_source_hdr(
    path: Path, *, strict: bool, builder: str, allow_nonfinite: bool = False
) -> np.ndarray | None:
    """A dataset's source HDR image, or None (logged with the file's name) when it is corrupt,
    truncated or holds NaN/Inf and not `strict`; with `strict`, SourceFileError. Training data
    are never made from a partly read file or from NaN radiance."""
    try:
        return hdr_io.read_hdr(path, allow_nonfinite=allow_nonfinite)
    except hdr_io.ImageIOError as e:
        if strict:
            raise SourceFileError(f"{builder}: {e}") from e
        logging.warning("%s: skipping unreadable source file: %s", builder, e)
        return None


def split_scenes(
    scenes: Sequence[str],
    validation_fraction: float = 0.2,
    validation_scenes: Sequence[str] | None = None,
) -> tuple[list[str], list[str]]:
    """Deterministic scene-level (train, validation) split.

    With ``validation_scenes`` those scenes are held out. Otherwise a scene is held out when
    ``sha256(stem)`` mapped to [0, 1) is below ``validation_fraction``, so a scene's split never
    changes when files are added. With at least two scenes, neither split is left empty: if the
    hash puts all scenes on one side, the scene with the smallest (largest) hash moves over.
    """
    scenes = sorted(scenes)
    if len(set(scenes)) != len(scenes):
        raise ValueError("duplicate scene names")
    if validation_scenes is not None:
        unknown = sorted(set(validation_scenes) - set(scenes))
        if unknown:
            raise ValueError(f"validation scenes not found among the HDR files: {unknown}")
        held = set(validation_scenes)
    else:
        if not 0.0 <= validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must lie in [0, 1), got {validation_fraction}")
        u = {s: _stable_unit("split", s) for s in scenes}
        held = {s for s in scenes if u[s] < validation_fraction}
        if len(scenes) >= 2 and validation_fraction > 0:
            if not held:
                held = {min(scenes, key=u.get)}
            elif len(held) == len(scenes):
                held.remove(max(scenes, key=u.get))
    return [s for s in scenes if s not in held], [s for s in scenes if s in held]


def split_development(stems: Sequence[str]) -> tuple[list[str], list[str]]:
    """(fitting, development) scenes of the training scenes of :func:`split_scenes`: every fourth
    of the sorted training stems is a development scene, where the blind per-photo estimates
    (clip level, highlight lift) are chosen without touching the held-out scenes."""
    train = split_scenes(stems)[0]
    dev = train[1::4]
    return [s for s in train if s not in dev], dev


def _resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    down = height * width < img.shape[0] * img.shape[1]
    interp = cv2.INTER_AREA if down else cv2.INTER_LINEAR
    return cv2.resize(img, (width, height), interpolation=interp)


def panorama_view(pano: np.ndarray, fov: float, elevation: float, azimuth: float, size: int) -> np.ndarray:
    """Anti-aliased perspective view: rendered at an integer supersampling factor chosen so the
    view's pixel pitch is no finer than the panorama's, then area-averaged down to ``size``."""
    pano_px_per_deg = pano.shape[1] / 360.0
    view_px_per_deg = size / fov
    factor = int(min(_MAX_SUPERSAMPLE, max(1, math.ceil(pano_px_per_deg / view_px_per_deg))))
    view = panorama.perspective_crop(pano, fov, elevation, azimuth, size * factor)
    if factor > 1:
        view = cv2.resize(view, (size, size), interpolation=cv2.INTER_AREA)
    return view.astype(np.float32)


def photo_crops(photo: np.ndarray, n: int, size: int, rng: np.random.Generator) -> list[tuple[np.ndarray, int, int]]:
    """Resizes the short side to ``size`` and takes ``n`` random square crops: (crop, top, left)."""
    h, w = photo.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    resized = _resize(photo, nh, nw)
    out = []
    for _ in range(n):
        top = int(rng.integers(0, nh - size + 1))
        left = int(rng.integers(0, nw - size + 1))
        out.append((resized[top:top + size, left:left + size], top, left))
    return out


class HdrBrackets(tfds.core.GeneratorBasedBuilder):
    """Stage-1 (DrTMO) bracket data from a folder of HDR images."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = _configs()
    DEFAULT_CONFIG_NAME = "default"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS 4.9.x resolves this through `importlib_resources`, which it only installs on
        # Python < 3.9; the source file is all it needs (to look for a checksums file).
        return epath.Path(inspect.getfile(cls))

    def __init__(
        self,
        *,
        emor_dir: str | os.PathLike | None = None,
        strict: bool = False,
        **kwargs: Any,
    ):
        """``emor_dir``: folder (or ``emor.txt`` path) of the EMoR model; needed only to prepare
        a ``crf_source='emor'`` config. ``strict``: an unreadable source file fails the build
        (default: it is logged by name and skipped). Other arguments go to the TFDS builder."""
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)
        self._strict = strict
        self._emor_dir = None if emor_dir is None else Path(emor_dir)
        if self._emor_dir is not None and self.builder_config.crf_source != "emor":
            raise ValueError(f"emor_dir given but config {self.builder_config.name!r} uses "
                             f"{self.builder_config.crf_source} CRFs; pick an '*_emor' config")

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        s, d = cfg.crop_size, cfg.num_stops + 1
        features = tfds.features.FeaturesDict({
            "bracket": tfds.features.Tensor(
                shape=(d, s, s, 3), dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB,
                doc="8-bit exposures, darkest first, dt = tau^k, k = -T/2..T/2"),
            "hdr": tfds.features.Tensor(
                shape=(s, s, 3), dtype=np.float16, encoding=tfds.features.Encoding.ZLIB,
                doc="normalised linear radiance (mean 0.5 at dt = 1), clipped to the float16 range"),
            "scene": tfds.features.Text(doc="file stem of the source HDR image"),
            "view_index": tfds.features.Scalar(dtype=np.int32, doc="view/crop number within the scene"),
            "crf": tfds.features.Text(doc="name of the camera response"),
            "view": tfds.features.Tensor(
                shape=(3,), dtype=np.float32,
                doc="(fov, elevation, azimuth) in degrees for panorama views; zeros for photo crops"),
            "crf_curve": tfds.features.Tensor(shape=(crf_lib.N_SAMPLES,), dtype=np.float32,
                                              doc="the response f sampled on k/1023"),
        })
        return tfds.core.DatasetInfo(builder=self, description=_DESCRIPTION, features=features,
                                     homepage=None, citation=None)

    def _training_crfs(self) -> dict[str, np.ndarray]:
        return training_crfs(self.builder_config, self._emor_dir)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        cfg = self.builder_config
        files = hdr_io.list_images(dl_manager.manual_dir, kinds=("hdr",))
        by_scene: dict[str, Path] = {}
        for f in files:
            stem = Path(f).stem
            if stem in by_scene:
                raise ValueError(f"two HDR files share the scene name {stem!r}: {by_scene[stem]} and {f}")
            by_scene[stem] = Path(f)
        train, val = split_scenes(list(by_scene), cfg.validation_fraction, cfg.validation_scenes)
        crfs = self._training_crfs()
        splits = {"train": self._generate_examples([by_scene[s] for s in train], crfs)}
        if val:
            splits["validation"] = self._generate_examples([by_scene[s] for s in val], crfs)
        else:
            logging.warning("hdr_brackets: no validation scenes (%d scene(s) in total)", len(by_scene))
        return splits

    def _scene_views(self, path: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(radiance crop, view vector) pairs of one scene, deterministic in (seed, stem)."""
        cfg = self.builder_config
        rng = np.random.default_rng(_scene_seed(cfg.seed, path.stem))
        img = read_source_hdr(path, strict=self._strict, builder="hdr_brackets")
        if img is None:
            return
        if is_panorama(*img.shape[:2]):
            for fov, el, az in panorama.random_views(rng, cfg.views_per_panorama, cfg.fov_range, cfg.elevation_range):
                yield (panorama_view(img, fov, el, az, cfg.crop_size),
                       np.array([fov, el, az], np.float32))
        else:
            for crop, _, _ in photo_crops(img, cfg.crops_per_photo, cfg.crop_size, rng):
                yield crop, np.zeros(3, np.float32)

    def _generate_examples(self, paths: Sequence[Path], crfs: dict[str, np.ndarray]):
        """Keys ``{scene}/{view:03d}/{crf}``; one example per (scene, view, CRF)."""
        cfg = self.builder_config
        for path in paths:
            scene = path.stem
            for v, (radiance, view) in enumerate(self._scene_views(path)):
                if not np.mean(radiance) > 0:
                    logging.warning("hdr_brackets: skipping black view %d of %s", v, scene)
                    continue
                hdr = exposure.normalise_radiance(radiance)
                for c, (name, curve) in enumerate(crfs.items()):
                    rng = np.random.default_rng([_scene_seed(cfg.seed, scene), v, c])
                    bracket = exposure.simulate_bracket(
                        hdr, curve, cfg.num_stops, cfg.tau, normalise=False, quantize=True,
                        jpeg_quality=cfg.jpeg_quality, rng=rng)
                    yield f"{scene}/{v:03d}/{name}", {
                        "bracket": np.round(bracket * 255.0).astype(np.uint8),
                        "hdr": np.minimum(hdr, _HALF_MAX).astype(np.float16),
                        "scene": scene,
                        "view_index": np.int32(v),
                        "crf": name,
                        "view": view,
                        "crf_curve": np.asarray(curve, np.float32),
                    }
