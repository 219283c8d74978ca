"""CF-Net structure, parameter counts, scan/remat equivalences and value ranges.

XLA:CPU compiles are the cost here (a tiny CF-Net gradient takes seconds to compile), so most
tests share one jitted forward of a tiny model whose parameters are drawn with NumPy; real
`init` is exercised once, on the smallest model, with a cheap-to-compile PRNG.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hdr_jax.models.cfnet import CFNet, FeedbackStep, upsample_bilinear

TINY = {"features": 8, "num_groups": 2, "num_steps": 2, "reguide_after": 2}
SMALLEST = {"features": 4, "num_groups": 1, "num_steps": 2, "reguide_after": 1}


def _count(tree) -> int:
    return sum(math.prod(a.shape) for a in jax.tree.leaves(tree))


def _inputs(size: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    over = rng.uniform(0.5, 1.0, (1, size, size, 3)).astype(np.float32)
    under = rng.uniform(0.0, 0.5, (1, size, size, 3)).astype(np.float32)
    return over, under


def _numpy_params(model: CFNet, over, under, seed: int = 0):
    """Parameters with the model's structure, drawn with NumPy (no init compile)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), over, under)
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name = jax.tree_util.keystr(path)
        if "slope" in name:
            return np.full(s.shape, 0.2, np.float32)
        fan_in = math.prod(s.shape[-4:-1]) if "kernel" in name else 64
        # He-uniform gain so activations keep their scale through the deep PReLU stack
        return (rng.uniform(-1, 1, s.shape) * np.sqrt(6.0 / fan_in)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def tiny():
    """x2 tiny model, NumPy-drawn variables, one jitted apply and its outputs."""
    model = CFNet(**TINY, scale=2)
    over, under = _inputs()
    variables = _numpy_params(model, over, under)
    apply = jax.jit(model.apply)
    return model, variables, apply, apply(variables, over, under), (over, under)


@pytest.mark.parametrize("scale,expected", [(2, 17_048_297), (4, 28_975_849)])
def test_parameter_count_matches_public_code(scale, expected):
    model = CFNet(scale=scale)
    x = jnp.zeros((1, 8, 8, 3))
    shapes = jax.eval_shape(model.init, jax.random.key(0), x, x)["params"]
    assert _count(shapes) == expected
    steps = shapes["steps"]
    assert steps["cfb_over"]["compress_in"]["conv"]["kernel"].shape == (3, 1, 1, 192, 64)
    assert steps["cfb_under"]["groups"]["reguide"]["conv"]["kernel"].shape == (3, 1, 1, 128, 64)
    assert steps["cfb_under"]["groups"]["uptran_5"]["conv"]["kernel"].shape == (3, 1, 1, 384, 64)
    k = 6 if scale == 2 else 8
    assert shapes["srb_over"]["groups"]["up_5"]["conv"]["kernel"].shape == (k, k, 64, 64)
    assert shapes["rec_srb_under"]["deconv"]["conv"]["kernel"].shape == (k, k, 64, 64)
    # public-code quirk: no PReLU after the under-exposed branch's 3x3 conv
    assert "act" in shapes["feb_over"]["conv_in"]
    assert "act" not in shapes["feb_under"]["conv_in"]


def test_shapes_fused_and_range(tiny):
    _, _, _, out, _ = tiny
    assert out["srb_over"].shape == out["srb_under"].shape == out["fused"].shape == (1, 16, 16, 3)
    assert out["steps_over"].shape == out["steps_under"].shape == (2, 1, 16, 16, 3)
    np.testing.assert_allclose(
        out["fused"], 0.5 * (out["steps_over"][-1] + out["steps_under"][-1]), atol=1e-7
    )
    for v in out.values():
        assert v.dtype == jnp.float32
        assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0
    assert not np.allclose(out["steps_over"][0], out["steps_over"][1])  # steps differ


def test_x4_shapes():
    model = CFNet(**TINY, scale=4)
    over, under = _inputs(4)
    out = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), over, under)[0])
    assert out["fused"].shape == (1, 16, 16, 3)
    assert out["steps_under"].shape == (2, 1, 16, 16, 3)


def _set_rec_bias(variables, value_over: float, value_under: float):
    p = jax.tree.map(lambda a: a, variables["params"])  # shallow copies of the dicts
    for key, val in (("rec_srb_over", value_over), ("rec_srb_under", value_under)):
        p[key]["conv_out"]["conv"]["bias"] = np.full(3, val, np.float32)
    for key, val in (("rec_over", value_over), ("rec_under", value_under)):
        b = p["steps"][key]["conv_out"]["conv"]["bias"]
        p["steps"][key]["conv_out"]["conv"]["bias"] = np.full(b.shape, val, np.float32)
    return {"params": p}


def test_clamp_engages(tiny):
    """clamp(REC + up, -1, 1): a large positive / negative residual saturates at 1 / 0."""
    _, variables, apply, _, (over, under) = tiny
    out = apply(_set_rec_bias(variables, 50.0, -50.0), over, under)
    for k in ("srb_over", "steps_over"):
        np.testing.assert_array_equal(out[k], 1.0)
    for k in ("srb_under", "steps_under"):
        np.testing.assert_array_equal(out[k], 0.0)
    np.testing.assert_array_equal(out["fused"], 0.5)


def test_zero_network_returns_upsampled_input(tiny):
    """With every parameter zero, REC(G) = 0, so each output is the bilinear-upsampled LR input."""
    _, variables, apply, _, (over, under) = tiny
    out = apply(jax.tree.map(np.zeros_like, variables), over, under)
    up_over = _torch_bilinear_up(over, 2)
    up_under = _torch_bilinear_up(under, 2)
    np.testing.assert_allclose(out["srb_over"], up_over, atol=1e-6)
    np.testing.assert_allclose(out["steps_over"][1], up_over, atol=1e-6)
    np.testing.assert_allclose(out["steps_under"][0], up_under, atol=1e-6)
    np.testing.assert_allclose(out["fused"], 0.5 * (up_over + up_under), atol=1e-6)


def _torch_bilinear_up(x: np.ndarray, scale: int) -> np.ndarray:
    """NumPy port of torch's bilinear, align_corners=False: src = (dst + 0.5)/s - 0.5, clamped at 0."""

    def axis_weights(n: int):
        dst = np.arange(n * scale)
        src = np.maximum((dst + 0.5) / scale - 0.5, 0.0)
        i0 = np.floor(src).astype(int)
        return i0, np.minimum(i0 + 1, n - 1), src - i0

    _, h, w, _ = x.shape
    r0, r1, ly = axis_weights(h)
    c0, c1, lx = axis_weights(w)
    rows = x[:, r0] * (1 - ly)[None, :, None, None] + x[:, r1] * ly[None, :, None, None]
    return rows[:, :, c0] * (1 - lx)[None, None, :, None] + rows[:, :, c1] * lx[None, None, :, None]


@pytest.mark.parametrize("scale", [2, 4])
def test_bilinear_matches_torch_convention(scale):
    x = np.random.default_rng(0).standard_normal((2, 5, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(
        upsample_bilinear(jnp.asarray(x), scale), _torch_bilinear_up(x, scale), atol=1e-5
    )


def test_scan_equals_explicit_loop(tiny):
    model, variables, _, out, (over, under) = tiny
    pre = jax.jit(lambda v: model.apply(v, over, under, method=CFNet.prologue))(variables)
    np.testing.assert_allclose(0.5 * (pre["srb_over"] + 1), out["srb_over"], atol=1e-6)
    apply_step = jax.jit(FeedbackStep(**model.step_config()).apply)
    carry = (pre["g_over"], pre["g_under"])
    for t in range(TINY["num_steps"]):
        p_t = jax.tree.map(lambda a, t=t: a[t], variables["params"]["steps"])
        carry, (img_over, img_under) = apply_step(
            {"params": p_t}, carry, pre["f_over"], pre["f_under"], pre["up_over"], pre["up_under"]
        )
        np.testing.assert_allclose(0.5 * (img_over + 1), out["steps_over"][t], atol=1e-5)
        np.testing.assert_allclose(0.5 * (img_under + 1), out["steps_under"][t], atol=1e-5)


def test_shared_weights_equal_separate_with_tiled_params(tiny):
    """Shared-step mode = separate mode whose per-step params are all equal; no step axis."""
    _, variables, apply, _, (over, under) = tiny
    shared = CFNet(**TINY, shared_step_weights=True)
    p = variables["params"]
    sh = jax.eval_shape(shared.init, jax.random.key(0), over, under)["params"]["steps"]
    assert jax.tree.map(lambda a: a.shape, sh) == jax.tree.map(lambda a: a.shape[1:], p["steps"])
    one = jax.tree.map(lambda a: a[1], p["steps"])
    out_shared = jax.jit(shared.apply)({"params": {**p, "steps": one}}, over, under)
    tiled = jax.tree.map(lambda a: np.broadcast_to(a, (TINY["num_steps"],) + a.shape), one)
    out_sep = apply({"params": {**p, "steps": tiled}}, over, under)
    np.testing.assert_allclose(out_shared["steps_over"], out_sep["steps_over"], atol=1e-6)
    np.testing.assert_allclose(out_shared["fused"], out_sep["fused"], atol=1e-6)


def test_branches_are_coupled(tiny):
    """Changing the under-exposed input changes the over branch's CFB outputs but not its SRB."""
    _, variables, apply, out, (over, under) = tiny
    out2 = apply(variables, over, np.flip(under, axis=1).copy())
    np.testing.assert_array_equal(out2["srb_over"], out["srb_over"])
    assert np.abs(out2["steps_over"][0] - out["steps_over"][0]).max() > 1e-3


def test_uncoupled_ablation():
    model = CFNet(**TINY, coupled=False)
    over, under = _inputs()
    variables = _numpy_params(model, over, under)
    steps = variables["params"]["steps"]
    assert steps["cfb_over"]["compress_in"]["conv"]["kernel"].shape == (2, 1, 1, 16, 8)
    assert "reguide" not in steps["cfb_over"]["groups"]
    apply = jax.jit(model.apply)
    out = apply(variables, over, under)
    out2 = apply(variables, over, np.flip(under, axis=1).copy())
    assert out["fused"].shape == (1, 16, 16, 3)
    np.testing.assert_array_equal(out2["steps_over"], out["steps_over"])  # no cross-talk


def test_init_separate_step_params_and_remat_policies():
    """Real init: per-step params stacked on a leading T axis and drawn independently; every
    remat policy, rolled or unrolled loop and conv implementation gives the same loss and
    gradients."""
    base = CFNet(**SMALLEST)
    over, under = _inputs(4)
    # 'unsafe_rbg' only to keep the test's init compile short; flax splits it like any key
    variables = jax.jit(base.init)(jax.random.key(0, impl="unsafe_rbg"), over, under)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(variables))
    steps = variables["params"]["steps"]
    assert all(a.shape[0] == SMALLEST["num_steps"] for a in jax.tree.leaves(steps))
    kernel = np.asarray(steps["cfb_over"]["groups"]["up_0"]["conv"]["kernel"])
    assert not np.allclose(kernel[0], kernel[1])
    np.testing.assert_array_equal(
        steps["cfb_over"]["groups"]["up_0"]["act"]["slope"], np.float32(0.2)
    )

    def loss_and_grads(model):
        def loss(v):
            o = model.apply(v, over, under)
            return jnp.mean(o["steps_over"] ** 2) + jnp.mean(o["srb_under"]) + jnp.mean(o["fused"])

        return jax.jit(jax.value_and_grad(loss))(variables)

    ref_loss, ref_grads = loss_and_grads(base)
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(ref_grads["params"]["steps"]))
    variants = [
        {"remat_policy": "step"},  # rolled loop (the default under remat)
        {"remat_policy": "projections", "unroll_steps": True},
        {"conv_impl": "xla"},
        {"split_concat": True},  # dense 1x1 transitions as per-part matmuls
        {"remat_policy": "step", "conv_impl": "xla", "unroll_steps": True},
    ]
    for kw in variants:
        loss, grads = loss_and_grads(CFNet(**SMALLEST, **kw))
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), grads, ref_grads
        )


def test_bf16_compute_float32_params(tiny):
    _, variables, _, out, (over, under) = tiny
    model = CFNet(**TINY, dtype=jnp.bfloat16)
    shapes = jax.eval_shape(model.init, jax.random.key(0), over, under)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(shapes))
    out16 = jax.jit(model.apply)(variables, over, under)
    assert out16["fused"].dtype == jnp.float32
    np.testing.assert_allclose(out16["fused"], out["fused"], atol=0.05)


def test_bad_inputs_raise():
    over, under = _inputs()
    with pytest.raises(ValueError, match="equal shape"):
        jax.eval_shape(CFNet(**TINY).init, jax.random.key(0), over, under[:, :4])
    with pytest.raises(ValueError, match="channels"):
        jax.eval_shape(CFNet(**TINY).init, jax.random.key(0), over[..., :2], under[..., :2])
    with pytest.raises(ValueError, match="scale"):
        jax.eval_shape(CFNet(**TINY, scale=3).init, jax.random.key(0), over, under)
    with pytest.raises(ValueError, match="remat_policy"):
        jax.eval_shape(CFNet(**TINY, remat_policy="bogus").init, jax.random.key(0), over, under)


def _restore_chroma_numpy(fused, under, over, blend, sigma):
    """Independent per-pixel transcription of restore_chroma (loops over the two exposures)."""
    luma = np.array([0.2126, 0.7152, 0.0722])
    out = np.empty_like(fused, dtype=np.float64)
    for idx in np.ndindex(fused.shape[:-1]):
        num, den = np.zeros(3), 0.0
        for img in (under, over):
            p = np.clip(img[idx].astype(np.float64), 0, 1)
            y = p @ luma
            sat = (p.max() - p.min()) / max(p.max(), 1e-3)
            w = max(sat, 1e-3) * np.exp(-((y - 0.5) ** 2) / (2 * sigma**2)) + 1e-6
            num += w * p / max(y, 1e-3)
            den += w
        f = fused[idx].astype(np.float64)
        y = f @ luma
        out[idx] = np.clip(y * (blend * num / den + (1 - blend) * f / max(y, 1e-3)), 0, 1)
    return out


def test_restore_chroma_matches_numpy_and_keeps_luma():
    from hdr_jax.models.cfnet import CHROMA_SIGMA, restore_chroma

    rng = np.random.default_rng(3)
    fused, under, over = (rng.uniform(0.05, 0.95, (2, 5, 7, 3)).astype(np.float32) for _ in "fuo")
    for blend in (0.0, 0.5, 1.0):
        got = np.asarray(restore_chroma(fused, under, over, blend))
        np.testing.assert_allclose(
            got, _restore_chroma_numpy(fused, under, over, blend, CHROMA_SIGMA), atol=2e-6
        )
    np.testing.assert_allclose(restore_chroma(fused, under, over, 0.0), fused, atol=1e-6)
    # Unclipped pixels keep the fused luma exactly; only the chromaticity moves.
    got = np.asarray(restore_chroma(fused, under, over, 0.5))
    inside = np.all((got > 0) & (got < 1), axis=-1)
    luma = np.array([0.2126, 0.7152, 0.0722], np.float32)
    np.testing.assert_allclose((got @ luma)[inside], (fused @ luma)[inside], atol=1e-5)


def test_restore_chroma_takes_colour_from_the_exposure_that_holds_it():
    """A bright orange sky: clipped to near-white in the over exposure, orange but dark in the
    under one. The fused grey-white pixel regains the orange hue, the luma stays."""
    from hdr_jax.metrics import bright_saturation
    from hdr_jax.models.cfnet import restore_chroma

    under = np.broadcast_to(np.float32([0.55, 0.35, 0.15]), (1, 4, 4, 3))
    over = np.broadcast_to(np.float32([1.0, 0.98, 0.95]), (1, 4, 4, 3))
    fused = np.broadcast_to(np.float32([0.92, 0.88, 0.84]), (1, 4, 4, 3))
    got = np.asarray(restore_chroma(fused, under, over, 1.0))
    assert float(bright_saturation(got)[0]) > 0.5 > float(bright_saturation(fused)[0])
    assert got[0, 0, 0, 0] > got[0, 0, 0, 1] > got[0, 0, 0, 2]  # orange: R > G > B
    grey = np.full((1, 4, 4, 3), 0.7, np.float32)  # grey sources: a grey of the fused luma
    luma = float(fused[0, 0, 0] @ np.float32([0.2126, 0.7152, 0.0722]))
    np.testing.assert_allclose(restore_chroma(fused, grey, grey, 1.0), luma, atol=1e-5)


def test_chroma_blend_changes_only_the_fused_output(tiny):
    from hdr_jax.models.cfnet import restore_chroma

    _, variables, _, out, (over, under) = tiny
    blended = jax.jit(CFNet(**TINY, scale=2, chroma_blend=0.5).apply)(variables, over, under)
    for k in ("srb_over", "srb_under", "steps_over", "steps_under"):
        np.testing.assert_array_equal(blended[k], out[k])
    np.testing.assert_allclose(
        blended["fused"],
        restore_chroma(out["fused"], out["srb_under"], out["srb_over"], 0.5),
        atol=1e-6,
    )
    assert not np.allclose(blended["fused"], out["fused"], atol=1e-3)
