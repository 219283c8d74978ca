"""Tests for the stage-2 data: the 'sice' and 'synthetic_pairs' tfds builders and the grain pair
pipeline.

SICE is checked on a miniature tree in the real layout (hdr_jax.data.testing.write_fake_sice):
exposures are named out of brightness order, extensions vary in case, three sequences are broken.
The LR images are checked against PIL's antialiased bicubic resize (same Keys a = -0.5 kernel;
the borders differ, so interiors are compared). The pipeline is checked on in-memory pairs whose
under/over/label images are identical, so any augmentation that is not shared shows up, and
whose LR is the bicubic downscale of the HR, so any LR/HR misalignment shows up.
"""

from __future__ import annotations

import hashlib
import shutil
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from hdr_jax import io as hio
from hdr_jax import merge
from hdr_jax.camera import crf as crf_lib
from hdr_jax.data import pair_pipeline as pp
from hdr_jax.data import sice, testing
from hdr_jax.data import synthetic_pairs as sp

HDRI_DIR = Path("/work/shared/data/hdri")

tfds.disable_progress_bar()


def _pil_bicubic(img: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Independent reference: PIL BICUBIC (antialiased, a = -0.5) per channel, float."""
    def one(channel: np.ndarray) -> np.ndarray:
        pil = Image.fromarray(np.ascontiguousarray(channel, np.float32), mode="F")
        return np.asarray(pil.resize(out_hw[::-1], Image.BICUBIC))

    return np.stack([one(img[..., c]) for c in range(img.shape[2])], -1)


def _build(builder_cls, config, manual_dir: Path, data_dir: Path):
    b = builder_cls(config=config, data_dir=str(data_dir), file_format="array_record")
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return b


def _examples(builder, split: str) -> dict[str, dict]:
    return {ex["sequence"].decode(): ex for ex in builder.as_data_source(split)}


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_sice(tmp_path_factory):
    root = tmp_path_factory.mktemp("sice_raw")
    return root, testing.write_fake_sice(root)


@pytest.fixture(scope="module")
def sice_built(fake_sice, tmp_path_factory):
    root, _ = fake_sice
    data_dir = tmp_path_factory.mktemp("sice_data")
    return {s: _build(sice.Sice, f"x{s}", root, data_dir) for s in (2, 4)}


@pytest.fixture(scope="module")
def fake_hdr(fake_hdr_dir):
    return fake_hdr_dir


@pytest.fixture(scope="module")
def synth_built(fake_hdr, tmp_path_factory):
    return _build(sp.SyntheticPairs, "tiny_x2", fake_hdr, tmp_path_factory.mktemp("synth_data"))


# ------------------------------------------------------------------------------------------------
# Resampling helpers
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 4])
def test_imresize_matches_pil_in_the_interior(scale):
    rng = np.random.default_rng(0)
    x = rng.random((40, 48, 3)).astype(np.float32)
    got = sice.imresize_bicubic(x, (40 // scale, 48 // scale))
    ref = _pil_bicubic(x, (40 // scale, 48 // scale))
    np.testing.assert_allclose(got[3:-3, 3:-3], ref[3:-3, 3:-3], atol=1e-5)
    # Symmetric padding keeps constants constant right up to the border.
    np.testing.assert_allclose(sice.imresize_bicubic(np.full((9, 13), 0.3), (5, 4)), 0.3, atol=1e-6)
    u8 = sice.imresize_bicubic((x * 255).astype(np.uint8), (20, 24))
    assert u8.dtype == np.uint8 and u8.shape == (20, 24, 3)


def test_bicubic_downscale_variants_and_errors():
    img = (np.random.default_rng(1).random((16, 24, 3)) * 255).astype(np.uint8)
    assert sice.bicubic_downscale(img, 4, "matlab").shape == (4, 6, 3)
    np.testing.assert_array_equal(
        sice.bicubic_downscale(img, 2, "cv2"), cv2.resize(img, (12, 8), interpolation=cv2.INTER_CUBIC)
    )
    with pytest.raises(ValueError, match="multiple of the scale"):
        sice.bicubic_downscale(img[:15], 2)
    with pytest.raises(ValueError, match="lr_kernel"):
        sice.bicubic_downscale(img, 2, "lanczos")
    assert sice.modcrop(img[:15, :23], 4).shape == (12, 20, 3)


# ------------------------------------------------------------------------------------------------
# SICE
# ------------------------------------------------------------------------------------------------


def test_scan_sice_keeps_usable_and_reports_broken(fake_sice):
    root, meta = fake_sice
    seqs, skipped = sice.scan_sice(root)
    assert {s.id for s in seqs} == set(meta["usable"])
    assert {sid for sid, _ in skipped} == set(meta["skipped"]) == {"part1/4", "part1/5", "part1/6"}
    reasons = dict(skipped)
    assert "label" in reasons["part1/4"] and "exposure" in reasons["part1/5"] and "size" in reasons["part1/6"]
    for s in seqs:
        assert len(s.exposures) == meta["usable"][s.id]["num_exposures"]
    # A single Part folder is accepted as the manual dir.
    single, _ = sice.scan_sice(root / "Dataset_Part2")
    assert [s.id for s in single] == ["part2/1", "part2/2"]


def test_scan_sice_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sice.scan_sice(tmp_path / "missing")
    (tmp_path / "something").mkdir()
    with pytest.raises(FileNotFoundError, match="SICE layout"):
        sice.scan_sice(tmp_path)


@pytest.mark.parametrize("scale", [2, 4])
def test_sice_builder_pairs(sice_built, fake_sice, scale):
    _, meta = fake_sice
    b = sice_built[scale]
    assert {sid for sid, _ in b.skipped} == set(meta["skipped"])
    train, test = _examples(b, "train"), _examples(b, "test")
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(meta["usable"])
    # The documented rule, recomputed independently.
    assert set(test) == {sid for sid in meta["usable"] if zlib.crc32(sid.encode()) % 10 == 0} == {"part1/2"}
    for sid, ex in {**train, **test}.items():
        m = meta["usable"][sid]
        assert ex["num_exposures"] == m["num_exposures"]
        # Darkest/brightest by content, not by file name (fixtures name them out of order).
        np.testing.assert_array_equal(ex["under_hr"], sice.to_uint8(hio.read_ldr(m["darkest"])))
        np.testing.assert_array_equal(ex["over_hr"], sice.to_uint8(hio.read_ldr(m["brightest"])))
        assert ex["under_hr"].mean() < ex["over_hr"].mean()
        label = hio.read_ldr(m["label"])
        if label.shape[:2] == (48, 64):
            np.testing.assert_array_equal(ex["label_hr"], sice.to_uint8(label))
        else:  # within tolerance: resized to the exposures' size
            ref = np.asarray(Image.fromarray(sice.to_uint8(label)).resize((64, 48), Image.BILINEAR), np.float32)
            assert np.abs(ex["label_hr"].astype(np.float32) - ref).mean() < 4.0
        for key in ("under", "over"):
            hr, lr = ex[f"{key}_hr"], ex[f"{key}_lr"]
            assert hr.shape == (48, 64, 3) and lr.shape == (48 // scale, 64 // scale, 3) and lr.dtype == np.uint8
            ref = np.clip(_pil_bicubic(hr.astype(np.float32), lr.shape[:2]), 0, 255)  # uint8 LR saturates
            assert np.abs(lr - ref)[2:-2, 2:-2].max() <= 0.51  # rounding only


def test_sice_split_is_deterministic(fake_sice, tmp_path):
    root, meta = fake_sice
    # The same ids in another tree (a single Part folder as root): same split membership.
    other = tmp_path / "Dataset_Part1"
    shutil.copytree(root / "Dataset_Part1", other)
    seqs, _ = sice.scan_sice(other)
    for s in seqs:
        assert sice.is_test_sequence(s.id) == (s.id == "part1/2")
    b1 = _build(sice.Sice, "x2", root, tmp_path / "d1")
    b2 = _build(sice.Sice, "x2", root, tmp_path / "d2")
    for split in ("train", "test"):
        e1, e2 = _examples(b1, split), _examples(b2, split)
        assert set(e1) == set(e2)
        for sid in e1:
            np.testing.assert_array_equal(e1[sid]["under_lr"], e2[sid]["under_lr"])


def test_sice_single_part_without_test_sequences(fake_sice, tmp_path):
    root, _ = fake_sice
    b = _build(sice.Sice, "x2", root / "Dataset_Part2", tmp_path / "data")  # both ids hash to 'train'
    assert set(b.info.splits) == {"train"}
    assert set(_examples(b, "train")) == {"part2/1", "part2/2"}


def test_read_sice_pair_caps_the_long_side(fake_sice):
    root, meta = fake_sice
    seq = next(s for s in sice.scan_sice(root)[0] if s.id == "part2/2")
    ex = sice.read_sice_pair(seq, scale=4, max_side=30)  # 48x64 -> 22x30 -> modcrop 20x28
    assert ex["under_hr"].shape == (20, 28, 3) and ex["under_lr"].shape == (5, 7, 3)
    full = hio.read_ldr(meta["usable"]["part2/2"]["darkest"])
    ref = np.asarray(Image.fromarray(sice.to_uint8(full)).resize((30, 22), Image.BOX), np.float32)[:20, :28]
    assert np.abs(ex["under_hr"] - ref).mean() < 3.0


def test_sice_config_validation():
    with pytest.raises(ValueError, match="lr_kernel"):
        sice.SiceConfig(name="bad", scale=2, lr_kernel="nearest")
    with pytest.raises(ValueError, match="scale"):
        sice.SiceConfig(name="bad", scale=0)


# ------------------------------------------------------------------------------------------------
# Synthetic pairs
# ------------------------------------------------------------------------------------------------


def test_key_normalise_and_fusion():
    rng = np.random.default_rng(3)
    e = testing.fake_radiance(rng, 48, 48, stops=12.0)
    n = sp.key_normalise(e * 37.0)
    lum = n @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    assert np.exp(np.log(lum + 1e-4 * lum.mean()).mean()) == pytest.approx(0.18, rel=1e-3)
    fused = sp.fuse_bracket(n).astype(np.float32)
    srgb = crf_lib.srgb_crf()
    under = np.round(np.interp(np.clip(n * 2.0**-3, 0, 1), np.linspace(0, 1, 1024), srgb) * 255)
    over = np.round(np.interp(np.clip(n * 2.0**2, 0, 1), np.linspace(0, 1, 1024), srgb) * 255)
    # Exposure fusion of the dense bracket: fewer crushed and fewer clipped pixels than either.
    assert (fused.max(-1) >= 250).mean() < (over.max(-1) >= 250).mean()
    assert (fused.max(-1) <= 5).mean() <= (under.max(-1) <= 5).mean()
    assert 60 < fused.mean() < 200


def test_synthetic_builder(synth_built, fake_hdr):
    b = synth_built
    cfg = b.builder_config
    train, test = _examples(b, "train"), _examples(b, "test")
    stems = lambda exs: {sid.split("/")[0] for sid in exs}
    # Same held-out rule as the stage-1 builder, recomputed independently here.
    assert stems(train) == {"scene_a", "scene_d"} and stems(test) == {"scene_c"}
    unit = lambda st: int.from_bytes(hashlib.sha256(f"split\x1f{st}".encode()).digest()[:8], "big") / 2.0**64
    names = ("scene_a", "scene_c", "scene_d")
    held = {st for st in names if unit(st) < 0.2} or {min(names, key=unit)}  # never an empty split
    assert held == stems(test)
    assert len(train) + len(test) == 3 * cfg.views_per_scene
    crfs = crf_lib.default_training_crfs(None, k=5, seed=cfg.seed)
    for ex in {**train, **test}.values():
        s = cfg.crop_size
        assert ex["under_hr"].shape == ex["over_hr"].shape == ex["label_hr"].shape == (s, s, 3)
        assert ex["under_lr"].shape == ex["over_lr"].shape == (s // 2, s // 2, 3)
        assert ex["hdr"].dtype == np.float16 and ex["hdr"].shape == (s, s, 3)
        hdr = ex["hdr"].astype(np.float32)
        assert np.isfinite(hdr).all() and hdr.min() >= 0
        assert cfg.ev_under[0] <= ex["ev_under"] <= cfg.ev_under[1]
        assert cfg.ev_over[0] <= ex["ev_over"] <= cfg.ev_over[1]
        assert ex["under_hr"].mean() < ex["label_hr"].mean() < ex["over_hr"].mean()
        assert 0 < ex["label_hr"].mean() < 255 and np.ptp(ex["label_hr"]) > 50
        # under = f(hdr * 2^ev) through the named CRF (np.interp: independent of apply_crf).
        curve = crfs[ex["crf"].decode()]
        ref = np.interp(np.clip(hdr * 2.0 ** float(ex["ev_under"]), 0, 1), np.linspace(0, 1, 1024), curve) * 255
        assert np.abs(ex["under_hr"] - ref).max() <= 2.0  # 8-bit rounding + float16 storage
    # Deterministic by seed: one scene rebuilt alone gives the same pairs.
    alone = sp.SyntheticPairs.builder_configs["tiny_x2"]
    rng = np.random.default_rng([alone.seed, zlib.crc32(b"scene_a")])
    crops = sp.scene_crops(hio.read_hdr(fake_hdr / "scene_a.exr"), alone, rng)
    first = train["scene_a/0"]
    name = sorted(crfs)[int(rng.integers(len(crfs)))]
    ev_u, ev_o = float(rng.uniform(*alone.ev_under)), float(rng.uniform(*alone.ev_over))
    again = sp.synthesize_pair(crops[0], crfs[name], ev_u, ev_o, scale=2)
    assert name == first["crf"].decode()
    for key in ("under_lr", "over_hr", "label_hr"):
        np.testing.assert_array_equal(again[key], first[key])


def test_synthetic_config_validation():
    with pytest.raises(ValueError, match="multiple of scale"):
        sp.SyntheticPairsConfig(name="bad", scale=4, crop_size=30)
    with pytest.raises(ValueError, match="ev_under"):
        sp.SyntheticPairsConfig(name="bad", ev_under=(-1.0, 1.0), ev_over=(0.5, 2.0))


@pytest.mark.skipif(not HDRI_DIR.is_dir(), reason="real HDR panoramas not available")
def test_synthetic_from_real_panoramas(tmp_path):
    raw = tmp_path / "hdr"
    raw.mkdir()
    for stem in ("polyhaven_park", "polyhaven_bridge"):  # held out, train (as in stage 1)
        (raw / f"{stem}.exr").symlink_to(HDRI_DIR / f"{stem}.exr")
    b = _build(sp.SyntheticPairs, "tiny_x4", raw, tmp_path / "data")
    train, test = _examples(b, "train"), _examples(b, "test")
    assert {k.split("/")[0] for k in train} == {"polyhaven_bridge"}
    assert {k.split("/")[0] for k in test} == {"polyhaven_park"}
    for ex in {**train, **test}.values():
        assert ex["under_lr"].shape == (8, 8, 3) and ex["label_hr"].shape == (32, 32, 3)
        assert ex["under_hr"].mean() < ex["label_hr"].mean() < ex["over_hr"].mean()


# ------------------------------------------------------------------------------------------------
# Pipeline
# ------------------------------------------------------------------------------------------------


def _identical_pair(rng: np.random.Generator, lr_hw: tuple[int, int], scale: int, tag: int = 0) -> dict:
    """under == over == label (HR), LR = MATLAB-bicubic downscale of the HR."""
    h, w = lr_hw[0] * scale, lr_hw[1] * scale
    hr = sice.to_uint8(testing.render_exposure(testing.fake_radiance(rng, h, w), 0.0))
    lr = sice.bicubic_downscale(hr, scale)
    return {
        "under_hr": hr, "over_hr": hr.copy(), "label_hr": hr.copy(),
        "under_lr": lr, "over_lr": lr.copy(), "sequence": f"fake/{tag}".encode(), "num_exposures": 2,
    }


@pytest.mark.parametrize("scale", [2, 4])
def test_train_batches_are_consistent_and_aligned(scale):
    rng = np.random.default_rng(scale)
    src = [_identical_pair(rng, (20, 24), scale, i) for i in range(3)]
    p = 12
    ds = pp.make_dataset(src, scale=scale, patch_size=p, train=True, seed=7, batch_size=4)
    for i in range(4):
        batch = ds[i]
        assert set(batch) == set(pp.IMAGE_KEYS)
        for k in pp.LR_KEYS:
            assert batch[k].shape == (4, p, p, 3) and batch[k].dtype == np.float32
        for k in pp.HR_KEYS:
            assert batch[k].shape == (4, p * scale, p * scale, 3) and batch[k].dtype == np.float32
        assert all(0.0 <= batch[k].min() and batch[k].max() <= 1.0 for k in batch)
        np.testing.assert_array_equal(batch["under_hr"], batch["over_hr"])
        np.testing.assert_array_equal(batch["under_hr"], batch["label_hr"])
        np.testing.assert_array_equal(batch["under_lr"], batch["over_lr"])
        for j in range(4):  # the LR patch is the downscaled HR patch (away from the patch border)
            ref = np.clip(_pil_bicubic(batch["under_hr"][j], (p, p)), 0, 1)
            err = np.abs(batch["under_lr"][j] - ref)[2:-2, 2:-2]
            assert err.max() <= 0.51 / 255


def test_augmentation_covers_all_dihedral_transforms():
    rng = np.random.default_rng(0)
    src = [_identical_pair(rng, (8, 8), 2)]  # patch = whole square image: only the transform varies
    ds = pp.make_dataset(src, scale=2, patch_size=8, train=True, seed=1, batch_size=1)
    base = src[0]["under_hr"]
    variants = [np.rot90(b, k) for b in (base, base[:, ::-1]) for k in range(4)]
    seen = set()
    for i in range(64):
        hr = np.rint(ds[i]["label_hr"][0] * 255).astype(np.uint8)
        match = [j for j, v in enumerate(variants) if np.array_equal(v, hr)]
        assert len(match) == 1
        seen.add(match[0])
    assert seen == set(range(8))


def test_shuffle_differs_per_epoch_and_is_seeded():
    n = 6
    shapes = {k: (8, 8, 3) if k in pp.LR_KEYS else (16, 16, 3) for k in pp.IMAGE_KEYS}
    src = [{k: np.full(shape, i, np.uint8) for k, shape in shapes.items()} for i in range(n)]

    def order(seed, epoch):
        ds = pp.make_dataset(src, scale=2, patch_size=4, train=True, seed=seed, batch_size=1)
        return [int(round(ds[i]["under_lr"][0, 0, 0, 0] * 255)) for i in range(epoch * n, (epoch + 1) * n)]

    e0, e1 = order(0, 0), order(0, 1)
    assert sorted(e0) == sorted(e1) == list(range(n))
    assert e0 != e1
    assert order(0, 0) == e0 and order(1, 0) != e0


def test_iterator_state_resumes_exactly(sice_built):
    src = sice_built[2].as_data_source("train")
    kw = dict(scale=2, patch_size=8, seed=3, batch_size=2)
    it = pp.make_train_iterator(src, **kw)
    for _ in range(5):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(6)]
    resumed = pp.make_train_iterator(src, **kw)
    resumed.set_state(state)
    got = [next(resumed) for _ in range(6)]
    for a, b in zip(expected, got):
        for k in pp.IMAGE_KEYS:
            np.testing.assert_array_equal(a[k], b[k])
    # The iterator is the random-access dataset read in order.
    ds = pp.make_dataset(src, train=True, **kw)
    np.testing.assert_array_equal(ds[5]["label_hr"], expected[0]["label_hr"])


def test_eval_modes(sice_built):
    src = sice_built[4].as_data_source("train")
    full = list(pp.make_dataset(src, scale=4, train=False, seed=0, batch_size=8))
    assert len(full) == len(src)
    for batch, ex in zip(full, src):
        assert batch["sequence"][0] == ex["sequence"].decode()
        np.testing.assert_array_equal(batch["label_hr"][0], ex["label_hr"].astype(np.float32) / 255)
        assert batch["under_lr"].shape == (1, 12, 16, 3)
    center = list(pp.make_dataset(src, scale=4, patch_size=8, train=False, seed=0, batch_size=3, eval_mode="center"))
    assert [b["under_lr"].shape[0] for b in center] == [3, 1]
    ex = src[0]  # LR 12x16, p = 8 -> rows 2:10, cols 4:12; HR x4
    np.testing.assert_array_equal(center[0]["over_lr"][0], ex["over_lr"][2:10, 4:12] / np.float32(255))
    np.testing.assert_array_equal(center[0]["over_hr"][0], ex["over_hr"][8:40, 16:48] / np.float32(255))


def test_pipeline_errors():
    rng = np.random.default_rng(0)
    src = [_identical_pair(rng, (6, 6), 2)]
    with pytest.raises(ValueError, match="smaller than the patch size"):
        pp.make_dataset(src, scale=2, patch_size=8, train=True, seed=0, batch_size=1)[0]
    with pytest.raises(ValueError, match="expected HR size"):
        pp.make_dataset(src, scale=4, patch_size=2, train=True, seed=0, batch_size=1)[0]
    with pytest.raises(ValueError, match="eval_mode"):
        pp.make_dataset(src, scale=2, train=False, seed=0, batch_size=1, eval_mode="tiles")
    with pytest.raises(ValueError, match="empty"):
        pp.make_dataset([], scale=2, train=True, seed=0, batch_size=1)


def test_fuse_bracket_is_deterministic():
    """The synthetic label is a pure function of the HDR (OpenCV's threaded fusion was not:
    repeated calls on one 512x700 view gave different labels)."""
    rng = np.random.default_rng(0)
    hdr = cv2.GaussianBlur(np.exp(rng.normal(0, 2, (512, 700, 3))).astype(np.float32), (0, 0), 3)
    first = sp.fuse_bracket(hdr)
    assert all(np.array_equal(first, sp.fuse_bracket(hdr)) for _ in range(3))


def test_mertens_fusion_is_opencvs_default_fusion():
    """merge.mertens_fusion (one thread) gives OpenCV's default MergeMertens result."""
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(3)]
    want = cv2.createMergeMertens().process([np.ascontiguousarray(i[..., ::-1]) for i in imgs])
    np.testing.assert_allclose(merge.mertens_fusion(imgs), want[..., ::-1], atol=1e-5)
