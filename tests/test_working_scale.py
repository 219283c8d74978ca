"""Stage 1 at a working scale: a photo larger than the networks' training views gets its HDR
from a shrunk copy (`pipeline.working_scale_hdr`, `pipeline.reconstruct(hdr_side=)`)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hdr_jax import pipeline
from hdr_jax.camera import crf
from hdr_jax.eval import protocol


def _photo(h: int, w: int) -> np.ndarray:
    """A smooth sRGB photo with a clipped blob and a clipped specular point."""
    rng = np.random.default_rng(0)
    rad = np.exp(cv2.GaussianBlur(rng.normal(size=(h, w, 3)), (0, 0), 4) * 8.0)
    rad = rad / np.median(rad) * 0.2
    rad[h // 4: h // 2, w // 4: w // 2] *= 40.0
    rad[3 * h // 4, 3 * w // 4] *= 200.0
    return np.asarray(crf.srgb_encode(np.clip(rad, 0, 1)), np.float32)


@pytest.fixture(scope="module")
def pipe(tiny_weights):
    return pipeline.Pipeline.load(tiny_weights)


def test_a_photo_at_or_below_the_side_is_made_at_full_resolution(pipe):
    image = _photo(48, 64)
    full = pipeline.reconstruct(pipe, image, scale=None, hdr_side=None)
    at_side = pipeline.reconstruct(pipe, image, scale=None, hdr_side=48, full_stack=False)
    np.testing.assert_array_equal(at_side.hdr, full.hdr)
    assert at_side.stack is not None and at_side.kept == full.kept


def test_a_larger_photo_is_filled_at_the_working_scale(pipe):
    image = _photo(96, 128)
    clipped = protocol.clipped_mask(image)
    assert 0.02 < clipped.mean() < 0.2
    res = pipeline.reconstruct(pipe, image, scale=None, hdr_side=48, full_stack=False)
    assert res.stack is None and res.pair is None and res.hdr.shape == image.shape
    linear = np.asarray(crf.apply_inverse_crf(crf.srgb_crf(), image))
    # Every pixel the photo measured keeps its full-resolution linear value.
    np.testing.assert_array_equal(res.hdr[~clipped], linear[~clipped].astype(np.float32))
    # The clipped ones: the shrunk photo's HDR over its linearisation, upsampled in log.
    small = cv2.resize(image, (64, 48), interpolation=cv2.INTER_AREA)
    small_hdr, _ = pipeline.photo_hdr(pipe, pipeline.generate_stack(pipe, small), small)
    log_ratio = np.log(small_hdr / np.asarray(crf.apply_inverse_crf(crf.srgb_crf(), small)))
    up = cv2.resize(log_ratio.astype(np.float32), (128, 96), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(res.hdr[clipped], (linear * np.exp(up))[clipped], rtol=1e-5)
    # The anchored merge never puts a clipped pixel below the photo's value.
    assert np.all(res.hdr >= linear * (1 - 1e-5))
    # With stage 2 the full-resolution stack is made (for the pair); the HDR is the same.
    res2 = pipeline.reconstruct(pipe, image, scale=2, hdr_side=48)
    assert res2.stack.shape == (17, 96, 128, 3) and res2.fused.shape == (192, 256, 3)
    assert res2.pair is not None and res2.kept == res.kept
    np.testing.assert_array_equal(res2.hdr, res.hdr)


def test_stage1_hdr_needs_a_stack_only_at_full_resolution(pipe):
    big, small = _photo(96, 128), _photo(40, 48)
    hdr, _ = pipeline.stage1_hdr(pipe, big, None, hdr_side=48)
    np.testing.assert_array_equal(
        hdr, pipeline.reconstruct(pipe, big, scale=None, hdr_side=48).hdr)
    with pytest.raises(ValueError, match="needs its stack"):
        pipeline.stage1_hdr(pipe, small, None, hdr_side=48)
    assert pipeline.shrinks(big, 48) and not pipeline.shrinks(small, 48)
    assert not pipeline.shrinks(big, None)


@pytest.mark.slow
def test_working_scale_experiment_runs_and_reports(fake_hdr_dir, tiny_weights, cli_env,
                                                   tmp_path):
    import json
    import subprocess
    import sys

    from conftest import run_python_checked

    out = tmp_path / "ws"
    run_python_checked(["-m", "experiments.working_scale", "--hdr_dir", fake_hdr_dir,
                        "--weights", tiny_weights, "--size", "64", "--sides", "full,32",
                        "--limit", "1", "--out", out], cli_env, timeout=600)
    res = json.loads((out / "results.json").read_text())
    assert list(res["summary"]) == ["full", "32"] and res["inputs"]
    assert all(np.isfinite(x["gains"][s]["pu21"]) for x in res["inputs"] for s in ("full", "32"))
    assert "| 32 px |" in (out / "results.md").read_text()
    r = subprocess.run([sys.executable, "-m", "experiments.working_scale", "--hdr_dir",
                        str(fake_hdr_dir), "--sides", "full,half", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "--sides" in r.stderr
