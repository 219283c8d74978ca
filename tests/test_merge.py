"""The HDR merge (hdr_jax.merge) and the pipeline's tiling and preview helpers.

Merges are checked on brackets simulated from a known radiance map, so the answer is known: a
linear-response bracket for OpenCV's Debevec merge (up to its global gain), and a bracket through a
known camera response (hdr_jax.camera.exposure) for the robust merge. Tiling is checked against
applying the function to the whole image.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hdr_jax import merge, pipeline
from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera import exposure
from hdr_jax.data import testing

THR = merge.MONOTONICITY_THRESHOLD


# -- monotone selection --------------------------------------------------------------------------


def _monotone_stack(n_side: int = 3, hw: tuple[int, int] = (4, 5)) -> np.ndarray:
    """A (2N+1, H, W, 3) stack that brightens by 0.05 per step everywhere: all monotone."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.4, hw + (3,)).astype(np.float32)
    steps = np.arange(-n_side, n_side + 1, dtype=np.float32)[:, None, None, None]
    return np.clip(base + 0.05 * steps, 0, 1)


def test_select_monotone_keeps_a_monotone_stack():
    stack = _monotone_stack()
    assert merge.select_monotone(stack, 3) == (0, 6)


@pytest.mark.parametrize("drop, expected_hi", [(THR + 0.02, 4), (THR - 0.02, 6)])
def test_select_monotone_up_walk(drop, expected_hi):
    stack = _monotone_stack()
    # Exposure 5 is darker than exposure 4 at one pixel of one channel.
    stack[5, 2, 3, 1] = stack[4, 2, 3, 1] - drop
    assert merge.select_monotone(stack, 3) == (0, expected_hi)


@pytest.mark.parametrize("rise, expected_lo", [(THR + 0.02, 2), (THR - 0.02, 0)])
def test_select_monotone_down_walk(rise, expected_lo):
    stack = _monotone_stack()
    stack[1, 0, 0, 2] = stack[2, 0, 0, 2] + rise
    assert merge.select_monotone(stack, 3) == (expected_lo, 6)


def test_select_monotone_compares_neighbours_and_stops_at_the_first_violation():
    stack = _monotone_stack()
    # Exposure 6 dips below exposure 5 (while still brighter than the input): stop at 5.
    stack[6, 1, 1, 0] = stack[5, 1, 1, 0] - THR - 0.02
    assert stack[6, 1, 1, 0] > stack[3, 1, 1, 0] - THR
    # On the dark side, a violation between 1 and 0 stops the walk at 1; one between 2 and 1
    # would stop it at 2 and hide the outer one.
    stack[0, 3, 4, 0] = stack[1, 3, 4, 0] + THR + 0.02
    assert merge.select_monotone(stack, 3) == (1, 5)
    stack[1, 2, 2, 2] = stack[2, 2, 2, 2] + THR + 0.02
    assert merge.select_monotone(stack, 3) == (2, 5)


def test_merge_stack_uses_only_the_selected_exposures():
    e = testing.fake_radiance(np.random.default_rng(3), 8, 10, stops=4.0)
    stack = exposure.simulate_bracket(e, crf_lib.srgb_crf(), T=6, normalise=True)
    stack[6, 0, 0] = 0.0  # the brightest exposure breaks monotonicity: dropped
    hdr, kept = merge.merge_stack(stack)
    assert kept == (0, 5)
    times = exposure.exposure_times(6)
    np.testing.assert_allclose(hdr, merge.merge_robust(stack[:6], times[:6]), rtol=1e-6)
    np.testing.assert_allclose(times, math.sqrt(2.0) ** np.arange(-3, 4), rtol=1e-6)
    with pytest.raises(ValueError, match="robust"):
        merge.merge_stack(stack, method="average")


@pytest.mark.parametrize("method", ["robust", "debevec"])
def test_merge_stack_row_blocks_equal_one_block(monkeypatch, method):
    e = testing.fake_radiance(np.random.default_rng(4), 23, 10, stops=6.0)
    stack = exposure.simulate_bracket(e, crf_lib.srgb_crf(), T=6, normalise=True)
    whole, kept = merge.merge_stack(stack, method=method)
    monkeypatch.setattr(merge, "MERGE_BLOCK_PIXELS", 35)  # 3 rows of 10 per block, ragged end
    blocks, kept_blocks = merge.merge_stack(stack, method=method)
    assert kept_blocks == kept and blocks.dtype == np.float32
    np.testing.assert_array_equal(blocks, whole)


def test_anchored_merge_stack_row_blocks_equal_one_block(monkeypatch):
    e = testing.fake_radiance(np.random.default_rng(4), 23, 10, stops=8.0)
    stack = exposure.simulate_bracket(e, crf_lib.srgb_crf(), T=6, normalise=True)
    # A "network" that over-estimates the darker exposures by a factor varying over the image:
    # levels differ from pixel to pixel and are carried into fully clipped pixels across blocks.
    gain = np.linspace(1.0, 1.4, 23, dtype=np.float32)[:, None, None]
    stack[:3] = np.clip(stack[:3] * gain, 0.0, 1.0)
    n = 3
    assert (stack[n] >= 254 / 255).all(-1).any()
    whole, kept = merge.merge_stack(stack, method="anchored")
    assert kept == (0, 6)
    np.testing.assert_allclose(whole, merge.merge_anchored(stack, exposure.exposure_times(6), n))
    monkeypatch.setattr(merge, "MERGE_BLOCK_PIXELS", 35)  # 3 rows of 10 per block, ragged end
    blocks, kept_blocks = merge.merge_stack(stack, method="anchored")
    assert kept_blocks == kept and blocks.dtype == np.float32
    np.testing.assert_array_equal(blocks, whole)


def test_fill_levels_takes_the_nearest_informative_pixel():
    rng = np.random.default_rng(7)
    level = rng.uniform(0.2, 1.0, (9, 11, 1)).astype(np.float32)
    informative = rng.random((9, 11)) < 0.15
    full = ~informative & (rng.random((9, 11)) < 0.5)
    got = merge.fill_levels(level, informative, full)
    src = np.argwhere(informative)
    for y, x in np.ndindex(9, 11):
        if not full[y, x]:
            assert got[y, x, 0] == level[y, x, 0]
            continue
        d2 = ((src - (y, x)) ** 2).sum(1)
        nearest = src[d2 == d2.min()]  # ties: any of them
        assert got[y, x, 0] in {level[a, b, 0] for a, b in nearest}
    # Nothing informative: levels unchanged (1 for fully clipped pixels by construction).
    np.testing.assert_array_equal(merge.fill_levels(level, np.zeros((9, 11), bool), full), level)


def test_anchored_merge_keeps_the_input_and_fills_clipped_pixels():
    e = testing.fake_radiance(np.random.default_rng(5), 12, 14, stops=8.0)
    stack = exposure.simulate_bracket(e, crf_lib.srgb_crf(), T=8, normalise=True)  # exact
    n = (len(stack) - 1) // 2
    times = exposure.exposure_times(2 * n)
    hdr = merge.merge_anchored(stack, times, n)
    lin = crf_lib.apply_inverse_crf(crf_lib.srgb_crf(), stack[n])
    measured = stack[n] < 254 / 255
    clipped = ~measured
    assert measured.all(-1).any() and (clipped.any(-1) & measured.any(-1)).any()
    assert clipped.all(-1).any()
    np.testing.assert_array_equal(hdr[measured], lin[measured])  # measured channels untouched
    # Clipped channels take the least-darkened exposure that sees the pixel: the true radiance
    # of a simulated (exact) stack (the rescaling to the measured channels is then 1), never
    # less than the clipped input value.
    ok = stack[:n][::-1].max(-1) < 250 / 255  # d1, d2, ...
    first = np.argmax(ok, axis=0)
    seen = (clipped & ok.any(0)[..., None]).any(-1)
    assert seen.any()
    idx = n - 1 - first
    z = np.take_along_axis(stack, idx[None, ..., None], axis=0)[0]
    want = crf_lib.apply_inverse_crf(crf_lib.srgb_crf(), z) / times[idx][..., None]
    want = np.where(clipped, np.maximum(want, lin), lin)
    np.testing.assert_allclose(hdr[seen], want[seen], rtol=5e-3)  # CRF table round trips
    assert np.all(hdr[clipped] >= lin[clipped] - 1e-6)
    # The stack's input index is the kept range's centre in merge_stack.
    whole, kept = merge.merge_stack(stack, method="anchored")
    assert kept == (0, 2 * n)
    np.testing.assert_allclose(whole, hdr, rtol=1e-6)


def test_anchored_merge_takes_colour_from_the_network_and_level_from_the_photo():
    srgb = crf_lib.srgb_crf()
    times = np.array([0.5, 2**-0.5, 1.0], np.float32)  # d2, d1, input
    truth = np.array([[[1.2, 0.5, 0.25], [1.2, 1.05, 1.1]]], np.float32)  # (1, 2, 3) linear
    # The "network" over-estimates every exposure by 1.5x; d1 still clips in pixel 0.
    gen = [np.clip(1.5 * truth * t, 0.0, 1.0) for t in times[:2]]
    images = np.stack([crf_lib.apply_crf(srgb, x) for x in gen + [np.clip(truth, 0.0, 1.0)]])
    hdr = merge.merge_anchored(images, times, 2)
    lin = crf_lib.apply_inverse_crf(srgb, images[2])
    estimate = crf_lib.apply_inverse_crf(srgb, images[0]) / times[0]  # d2: first one seen
    # Pixel 0 (red clipped): green and blue are measured and kept; red is the network's estimate
    # rescaled by the measured channels' ratio (2/3 here), which undoes the 1.5x error.
    np.testing.assert_array_equal(hdr[0, 0, 1:], lin[0, 0, 1:])
    level = np.mean(lin[0, 0, 1:] / estimate[0, 0, 1:])
    assert level == pytest.approx(1 / 1.5, rel=2e-3)
    assert hdr[0, 0, 0] == pytest.approx(estimate[0, 0, 0] * level, rel=1e-5)
    assert hdr[0, 0, 0] == pytest.approx(1.2, rel=2e-3)
    # Pixel 1 (all clipped): nothing measured in it, so it takes the level of its nearest
    # informative neighbour, pixel 0, and the network's over-estimate is undone there too.
    np.testing.assert_allclose(hdr[0, 1], estimate[0, 1] * level, rtol=1e-5)
    np.testing.assert_allclose(hdr[0, 1], truth[0, 1], rtol=2e-3)
    # Alone (no informative pixel in the image), it keeps the estimate as generated.
    alone = merge.merge_anchored(images[:, :, 1:], times, 2)
    np.testing.assert_allclose(alone[0, 0], 1.5 * truth[0, 1], rtol=2e-3)


# -- Debevec merge (OpenCV, linear response) -----------------------------------------------------


def test_debevec_linear_recovers_relative_radiance():
    rng = np.random.default_rng(1)
    # Radiance spanning 3 stops, no exposure clips (E * t <= 0.9) or falls below 8 levels.
    e = np.exp(rng.uniform(np.log(0.06), np.log(0.45), (24, 32, 3))).astype(np.float32)
    times = exposure.exposure_times(4)  # 0.5 .. 2
    images = np.round(np.clip(e[None] * times[:, None, None, None], 0, 1) * 255) / 255
    hdr = merge.merge_debevec_linear(images.astype(np.float32), times)
    assert hdr.shape == e.shape and hdr.dtype == np.float32
    log_ratio = np.log(hdr) - np.log(e)
    gain = np.median(log_ratio)
    # One global gain (the same for every channel), then quantisation-level residuals.
    per_channel = np.median(log_ratio.reshape(-1, 3), axis=0)
    np.testing.assert_allclose(per_channel, gain, atol=0.01)
    assert np.max(np.abs(log_ratio - gain)) < 0.04
    assert np.mean(np.abs(log_ratio - gain)) < 0.01
    # Ignoring the exposure times would leave a 2x spread: the check above is sensitive to it.
    wrong = merge.merge_debevec_linear(images.astype(np.float32), np.ones_like(times))
    assert np.max(np.abs(np.log(wrong) - np.log(e) - np.median(np.log(wrong) - np.log(e)))) > 0.1


# -- robust merge with the true response ---------------------------------------------------------


@pytest.fixture(scope="module")
def bracket():
    """A 10-stop scene through an S-shaped film curve, 9 exposures tau^-4..tau^4 (input: 4)."""
    rng = np.random.default_rng(2)
    e = testing.fake_radiance(rng, 48, 64, stops=10.0)
    e = exposure.normalise_radiance(e)
    curve = crf_lib.s_curve_crf(1.5)
    times = exposure.exposure_times(8)
    stack = np.stack([exposure.expose(e, t, curve, quantize=True) for t in times])
    return e, curve, times, stack


def test_robust_merge_recovers_radiance(bracket):
    e, curve, times, stack = bracket
    hdr = merge.merge_robust(stack, times, curve)
    assert hdr.shape == e.shape and np.all(np.isfinite(hdr)) and np.all(hdr >= 0)
    rel = np.abs(hdr / e - 1)
    well = np.all((stack[4] > 0.1) & (stack[4] < 0.9), axis=-1)
    assert well.mean() > 0.2
    assert np.median(rel[well]) < 0.01 and np.max(rel[well]) < 0.05
    # Clipped in the input, seen by the darker exposures: merged values above 1, close to E.
    # (An S-curve reaches 255 slightly below E = 1, so also require E > 1.1 in some channel.)
    clipped = np.any(stack[4] >= 1.0, axis=-1) & (e.max(-1) > 1.1) & np.all(stack[0] < 0.9, -1)
    assert clipped.sum() > 20
    assert np.all(hdr[clipped].max(axis=-1) > 1.0)
    assert np.median(rel[clipped]) < 0.02
    # Over the whole image (very dark pixels included) the estimate stays within a few %.
    assert np.median(rel) < 0.02


def test_robust_merge_preserves_the_input_scale(bracket):
    """Input mid-grey is preserved: where the input (dt = 1) is well exposed, the merged value
    is the linearised input pixel. Without quantisation all exposures agree exactly."""
    e, curve, times, _ = bracket
    stack = np.stack([exposure.expose(e, t, curve, quantize=False) for t in times])
    hdr = merge.merge_robust(stack, times, curve)
    linear_input = crf_lib.apply_inverse_crf(curve, stack[4])
    well = np.all((stack[4] > 0.1) & (stack[4] < 0.9), axis=-1)
    np.testing.assert_allclose(hdr[well], linear_input[well], rtol=2e-3)
    # Scaling the times (a different reference exposure) scales the result inversely.
    hdr2 = merge.merge_robust(stack, times * 2.0, curve)
    np.testing.assert_allclose(hdr2, hdr / 2.0, rtol=1e-5)


def test_robust_merge_default_curve_is_srgb():
    e = testing.fake_radiance(np.random.default_rng(4), 16, 16, stops=6.0)
    times = exposure.exposure_times(4)
    stack = exposure.simulate_bracket(e, crf_lib.srgb_crf(), T=4, quantize=False)
    np.testing.assert_array_equal(
        merge.merge_robust(stack, times), merge.merge_robust(stack, times, crf_lib.srgb_crf())
    )


# -- tiling --------------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(5, 7), (37, 50), (64, 64), (100, 33)])
@pytest.mark.parametrize("tile, overlap", [(16, 4), (17, 5), (32, 8), (24, 0)])
def test_tiled_apply_pointwise_equals_direct(hw, tile, overlap):
    image = np.random.default_rng(hw[0] * tile).uniform(0, 1, hw + (3,)).astype(np.float32)
    calls = []

    def fn(patch):
        calls.append(patch.shape[:2])
        return np.sin(3 * patch) + patch**2

    out = pipeline.tiled_apply(fn, image, tile=tile, overlap=overlap)
    np.testing.assert_allclose(out, np.sin(3 * image) + image**2, rtol=1e-5, atol=1e-6)
    assert all(h <= tile and w <= tile for h, w in calls)
    if max(hw) <= tile:
        assert calls == [hw]


@pytest.mark.parametrize("multiple, margin", [(1, 0), (32, 16), (8, 3)])
def test_tile_length_covers_with_fewest_tiles(multiple, margin):
    """For every size: tiles of the chosen length never exceed the maximum, cover the axis with
    the overlap, are as few as any length allows, and are no longer than needed except to fill
    the network's padding."""
    max_tile, overlap = 4 * multiple + 40, 12
    for size in range(1, 700, 7):
        length = pipeline.tile_length(size, max_tile, overlap, multiple=multiple, margin=margin)
        starts = pipeline._starts(size, length, overlap)
        assert length <= min(size, max_tile)
        assert starts[0] == 0 and starts[-1] + length == size
        assert all(b - a <= length - overlap for a, b in zip(starts, starts[1:]))
        assert len(starts) == len(pipeline._starts(size, min(size, max_tile), overlap))
        if len(starts) > 1:  # one shorter tile with as many tiles would leave a gap
            need = -(-(size + (len(starts) - 1) * overlap) // len(starts))
            padded = -(-(need + 2 * margin) // multiple) * multiple
            assert length <= max(need, padded - 2 * margin)
    with pytest.raises(ValueError, match="longer than the overlap"):
        pipeline.tile_length(100, 8, 8)


def test_tiled_apply_rectangular_tiles():
    image = np.random.default_rng(3).uniform(0, 1, (41, 67, 3)).astype(np.float32)
    calls = []

    def fn(patch):
        calls.append(patch.shape[:2])
        return np.cos(patch)

    out = pipeline.tiled_apply(fn, image, tile=(24, 30), overlap=6)
    np.testing.assert_allclose(out, np.cos(image), rtol=1e-5, atol=1e-6)
    assert set(calls) == {(24, 30)} and len(calls) == 2 * 3


@pytest.mark.parametrize(
    "hw, tile, overlap", [((20, 23), 16, 4), ((37, 50), 16, 6), ((9, 9), 16, 4)]
)
def test_tiled_apply_upsampling_with_lead_axis(hw, tile, overlap):
    image = np.random.default_rng(0).uniform(0, 1, hw + (3,)).astype(np.float32)

    def nearest2(patch):  # (h, w, 3) -> (2, 2h, 2w, 3): two "exposures", upsampled x2
        up = patch.repeat(2, axis=0).repeat(2, axis=1)
        return np.stack([up, 0.5 * up])

    out = pipeline.tiled_apply(
        nearest2, image, tile=tile, overlap=overlap, out_scale=2, lead_shape=(2,)
    )
    expected = nearest2(image)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


# -- preview -------------------------------------------------------------------------------------


def test_tonemap_preview_range_and_monotonicity():
    ramp = np.geomspace(1e-3, 1e3, 256, dtype=np.float32)
    grey = np.repeat(ramp[None, :, None], 3, axis=-1)  # (1, 256, 3) grey ramp over 20 stops
    out = pipeline.tonemap_preview(grey)
    assert out.shape == grey.shape and np.all(np.isfinite(out))
    assert out.min() >= 0 and out.max() <= 1
    assert np.all(np.diff(out[0, :, 1]) >= 0)
    assert out[0, -1, 1] > 0.95 and out[0, 0, 1] < 0.05  # the range is used

    hdr = testing.fake_radiance(np.random.default_rng(5), 32, 32, stops=14.0) * 100.0
    hdr[0, 0] = [-1.0, 0.5, 2.0]  # negative values (lossy EXR) are clamped, not propagated
    out = pipeline.tonemap_preview(hdr)
    assert np.all(np.isfinite(out)) and out.min() >= 0 and out.max() <= 1
    lum_in = hdr @ np.float32([0.2126, 0.7152, 0.0722])
    lum_out = crf_lib.apply_inverse_crf(crf_lib.srgb_crf(), out) @ np.float32(
        [0.2126, 0.7152, 0.0722]
    )
    # Monotone in luminance where no channel clips (clipping a channel lowers luminance).
    unclipped = (out.max(-1) < 0.999).ravel()
    unclipped[0] = False  # the clamped pixel
    assert unclipped.mean() > 0.8
    order = np.argsort(lum_in.ravel()[unclipped])
    assert np.all(np.diff(lum_out.ravel()[unclipped][order]) > -1e-3)
    # Exposure-invariant: the log-average key normalises the scale away.
    np.testing.assert_allclose(pipeline.tonemap_preview(hdr * 8.0), out, atol=2e-3)
    np.testing.assert_array_equal(pipeline.tonemap_preview(np.zeros((4, 4, 3))), 0.0)
