"""Stage-1 losses (hdr_jax/losses.py) against NumPy."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from hdr_jax import losses


def _batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    pred = rng.uniform(0, 1, (3, 4, 6, 5, 3)).astype(np.float32)  # (B, N, H, W, C)
    target = rng.uniform(0, 1, pred.shape).astype(np.float32)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], np.float32)
    target *= mask[:, :, None, None, None]  # padded slots are zero in the data
    return pred, target, mask


@pytest.mark.parametrize("denominator", ["all", "valid"])
def test_masked_l1_matches_numpy(denominator):
    pred, target, mask = _batch()
    m = mask[:, :, None, None, None]
    err = np.abs(pred * m - target * m)
    want = err.mean() if denominator == "all" else err.sum() / (mask.sum() * pred[0, 0].size)
    got = jax.jit(losses.masked_l1, static_argnums=3)(pred, target, mask, denominator)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_masked_log_mse_is_minus_the_mean_psnr_of_the_valid_slots():
    pred, target, mask = _batch(1)
    psnrs = [
        -10 * np.log10(np.mean((pred[b, k].astype(np.float64) - target[b, k]) ** 2))
        for b in range(3)
        for k in range(4)
        if mask[b, k]
    ]
    got = jax.jit(losses.masked_log_mse)(pred, target, mask)
    np.testing.assert_allclose(float(got), -np.mean(psnrs), rtol=1e-5)
    # Padded slots do not count, whatever the prediction there.
    pred2 = pred.copy()
    pred2[2, 1:] = 7.0
    np.testing.assert_allclose(float(losses.masked_log_mse(pred2, target, mask)), float(got))
    # An exact prediction is bounded by eps instead of -inf.
    assert np.isfinite(float(losses.masked_log_mse(target, target, mask)))


def test_drtmo_loss_selects_and_rejects_unknown_kinds():
    pred, target, mask = _batch(2)
    assert float(losses.drtmo_loss(pred, target, mask, kind="l1")) == pytest.approx(
        float(losses.masked_l1(pred, target, mask))
    )
    assert float(losses.drtmo_loss(pred, target, mask, kind="log_mse")) == pytest.approx(
        float(losses.masked_log_mse(pred, target, mask))
    )
    with pytest.raises(ValueError, match="loss kind"):
        losses.drtmo_loss(pred, target, mask, kind="l2")


def test_chroma_loss_matches_lab_and_has_finite_gradients():
    from skimage.color import rgb2lab

    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (2, 9, 10, 3)).astype(np.float32)
    b = rng.uniform(0, 1, (2, 9, 10, 3)).astype(np.float32)
    want = np.mean(np.abs(rgb2lab(a)[..., 1:] - rgb2lab(b)[..., 1:])) / 100
    np.testing.assert_allclose(float(losses.chroma_loss(a, b)), want, rtol=1e-3)
    assert float(losses.chroma_loss(a, a)) == 0.0
    grey = np.repeat(a.mean(-1, keepdims=True), 3, -1)
    assert float(losses.chroma_loss(grey, a)) > 0.05  # desaturation costs
    # Black, white, grey and out-of-range pixels: the gradient stays finite.
    edge = np.stack([np.zeros(3), np.ones(3), np.full(3, 0.5), np.array([1.2, -0.1, 0.5])])
    edge = edge.reshape(1, 2, 2, 3).astype(np.float32)
    g = jax.grad(losses.chroma_loss)(edge, np.full_like(edge, 0.3))
    assert np.all(np.isfinite(np.asarray(g)))


def test_cfnet_loss_colour_term():
    rng = np.random.default_rng(1)
    img = lambda: rng.uniform(0, 1, (1, 16, 16, 3)).astype(np.float32)  # noqa: E731
    batch = {k: img() for k in ("over_hr", "under_hr", "label_hr")}
    steps = np.stack([img(), img()])
    outputs = {"srb_over": img(), "srb_under": img(), "steps_over": steps, "steps_under": steps[::-1]}
    base, terms = losses.cfnet_loss(outputs, batch)
    assert "colour" not in terms
    total, terms = losses.cfnet_loss(outputs, batch, colour_weight=2.0)
    want = sum(float(losses.chroma_loss(s, batch["label_hr"])) for s in steps) * 2
    np.testing.assert_allclose(float(terms["colour"]), want, rtol=1e-5)
    np.testing.assert_allclose(float(total), float(base) + 2.0 * want, rtol=1e-5)
