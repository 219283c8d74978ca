"""Tests for the DrTMO stage-1 networks (hdr_jax/models/drtmo.py).

The forward pass is checked against an independent float64 NumPy implementation of the Chainer
layer semantics (scatter-form transposed conv, zero-padded cross-correlation). Parameters are made
with NumPy on the shapes from ``jax.eval_shape`` -- no threefry init, whose compilation is slow on
this CPU -- and model inits use ``impl='rbg'`` keys.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hdr_jax.models import drtmo
from hdr_jax.models.drtmo import (
    BatchNorm,
    DownExposureNet,
    ExposureBracketNet,
    UpExposureNet,
    pad_to_multiple,
    width_preset,
)

PAPER_PARAMS = 174_497_795  # kernels + biases + BN scale/bias, batch_stats excluded
HALF_PARAMS = 43_634_691
PAPER_KERNEL_WEIGHTS = 174_478_336  # kernels only: the paper's "about 174.5 M"

# depth 4 reaches 1x1 from 16x16 and still has both decoder geometries (layers 1-3 and 4).
SMALL = {"widths_encoder": (4, 6, 8, 8), "widths_decoder": (8, 6, 4)}
SMALL_SHAPE = (2, 16, 16, 3)


def key(seed: int) -> jax.Array:
    return jax.random.key(seed, impl="rbg")


def n_params(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def abstract_variables(model: nn.Module, shape) -> dict:
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(functools.partial(model.init, train=False), key(0), x)


def random_variables(model: nn.Module, shape, seed: int = 0) -> dict:
    """Variables with random kernels, biases, BN affine and BN running statistics (NumPy RNG)."""
    rng = np.random.default_rng(seed)
    abstract = abstract_variables(model, shape)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = math.prod(leaf.shape[:-1])
            v = rng.normal(0.0, 1.5 / math.sqrt(fan_in), leaf.shape)
        elif name in ("bias", "mean"):
            v = rng.normal(0.0, 0.1, leaf.shape)
        else:  # scale, var
            v = rng.uniform(0.5, 1.5, leaf.shape)
        return jnp.asarray(v, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def images(shape, seed: int = 1) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).uniform(0, 1, shape), jnp.float32)


@functools.cache
def jitted_apply(train: bool, **kwargs):
    model = ExposureBracketNet(**kwargs)
    if train:
        return jax.jit(
            lambda v, x, k: model.apply(
                v, x, train=True, rngs={"dropout": k}, mutable=["batch_stats"]
            )
        )
    return jax.jit(lambda v, x: model.apply(v, x, train=False))


def config(**overrides) -> dict:
    return dict(SMALL, **overrides)


# ---------------------------------------------------------------------------------------------
# NumPy reference (Chainer/torch semantics, float64).


def np_conv(x, w, b, stride, pad):
    """Cross-correlation of zero-padded x: y[Y] = sum_t x_pad[Y*s + t] w[t]."""
    nd = len(stride)
    k = w.shape[:nd]
    xp = np.pad(x, [(0, 0)] + [(p, p) for p in pad] + [(0, 0)])
    out = [(xp.shape[1 + d] - k[d]) // stride[d] + 1 for d in range(nd)]
    y = np.zeros((x.shape[0], *out, w.shape[-1]))
    for t in np.ndindex(*k):
        sl = tuple(slice(t[d], t[d] + (out[d] - 1) * stride[d] + 1, stride[d]) for d in range(nd))
        y += xp[(slice(None), *sl)] @ w[t]
    return y + b


def np_deconv(x, w, b, stride, pad):
    """Scatter form: y_full[X*s + t] += x[X] w[t], then pad cropped from both ends."""
    nd = len(stride)
    k, size = w.shape[:nd], x.shape[1:-1]
    full = [(size[d] - 1) * stride[d] + k[d] for d in range(nd)]
    y = np.zeros((x.shape[0], *full, w.shape[-1]))
    for t in np.ndindex(*k):
        sl = tuple(slice(t[d], t[d] + (size[d] - 1) * stride[d] + 1, stride[d]) for d in range(nd))
        y[(slice(None), *sl)] += x @ w[t]
    crop = tuple(slice(pad[d], full[d] - pad[d]) for d in range(nd))
    return y[(slice(None), *crop)] + b


def np_bn(x, params, stats, running: bool, eps: float = 2e-5):
    axes = tuple(range(x.ndim - 1))
    mean, var = (stats["mean"], stats["var"]) if running else (x.mean(axes), x.var(axes))
    return (x - mean) / np.sqrt(var + eps) * params["scale"] + params["bias"]


def np_forward(
    variables,
    x,
    *,
    use_skips=True,
    use_residual=True,
    decoder_3d=True,
    num_exposures=8,
    running=False,
):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
    s = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["batch_stats"])
    x = np.asarray(x, np.float64)
    depth = sum(name.startswith("enc") for name in p)
    feats, h = [], x
    for i in range(1, depth + 1):
        e = p[f"enc{i}"]
        h = np_conv(h, e["conv"]["kernel"], e["conv"]["bias"], (2, 2), (1, 1))
        if i > 1:
            h = np_bn(h, e["bn"], s[f"enc{i}"]["bn"], running)
        h = np.where(h > 0, h, 0.2 * h)
        feats.append(h)
    if decoder_3d:
        h = h[:, None]
    for k in range(1, depth + 1):
        d = p[f"dec{k}"]
        if decoder_3d:
            stride, pad = ((2, 2, 2) if k <= 3 else (1, 2, 2)), (1, 1, 1)
        else:
            stride, pad = (2, 2), (1, 1)
        h = np_deconv(h, d["deconv"]["kernel"], d["deconv"]["bias"], stride, pad)
        if k < depth:
            h = np.maximum(np_bn(h, d["bn"], s[f"dec{k}"]["bn"], running), 0.0)
            if use_skips:
                skip = feats[depth - 1 - k]
                if decoder_3d:
                    skip = np.repeat(skip[:, None], h.shape[1], axis=1)
                h = np.concatenate([h, skip], axis=-1)
    if not decoder_3d:
        n, hh, ww, _ = x.shape
        h = h.reshape(n, hh, ww, num_exposures, 3).transpose(0, 3, 1, 2, 4)
    if use_residual:
        h = h + x[:, None]
    return 1.0 / (1.0 + np.exp(-h))


def analytic_count(enc, dec, *, use_skips=True, decoder_3d=True, num_exposures=8) -> int:
    """Module-docstring formula: kernels + biases + BN scale/bias."""
    depth = len(enc)
    c = (3, *enc)
    total = sum((16 * c[i - 1] + 1) * c[i] for i in range(1, depth + 1))
    total += sum(2 * c[i] for i in range(2, depth + 1))
    d = (*dec, 3 if decoder_3d else 3 * num_exposures)
    for k in range(1, depth + 1):
        fan = c[depth] if k == 1 else d[k - 2] + (c[depth - k + 1] if use_skips else 0)
        vol = (64 if k <= 3 else 48) if decoder_3d else 16
        total += (vol * fan + 1) * d[k - 1] + (2 * d[k - 1] if k < depth else 0)
    return total


# ---------------------------------------------------------------------------------------------
# Size and structure.


def test_paper_and_half_parameter_counts():
    for name, pinned in (("paper", PAPER_PARAMS), ("half", HALF_PARAMS)):
        widths = width_preset(name)
        v = abstract_variables(ExposureBracketNet(**widths), (1, 512, 512, 3))
        assert n_params(v["params"]) == pinned == analytic_count(**_enc_dec(widths))
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(v["params"]))
    v = abstract_variables(ExposureBracketNet(**width_preset("paper")), (1, 512, 512, 3))
    kernels = sum(
        math.prod(a.shape)
        for path, a in jax.tree_util.tree_leaves_with_path(v["params"])
        if path[-1].key == "kernel"
    )
    assert kernels == PAPER_KERNEL_WEIGHTS
    assert round(kernels / 1e6, 1) == round(PAPER_PARAMS / 1e6, 1) == 174.5
    assert n_params(v["batch_stats"]) == 12_928  # mean + var per BN channel, not counted above


def _enc_dec(widths: dict) -> dict:
    return {"enc": widths["widths_encoder"], "dec": widths["widths_decoder"]}


def test_paper_layer_geometry():
    """Kernel shapes (*k, in, out) of every layer at paper width, skips included."""
    p = abstract_variables(ExposureBracketNet(), (1, 512, 512, 3))["params"]
    enc = [p[f"enc{i}"]["conv"]["kernel"].shape for i in range(1, 10)]
    assert enc[0] == (4, 4, 3, 64) and enc[3] == (4, 4, 256, 512) and enc[8] == (4, 4, 512, 512)
    assert "bn" not in p["enc1"] and all("bn" in p[f"enc{i}"] for i in range(2, 10))
    dec = [p[f"dec{k}"]["deconv"]["kernel"].shape for k in range(1, 10)]
    assert dec[0] == (4, 4, 4, 512, 512)
    assert dec[1] == dec[2] == (4, 4, 4, 1024, 512)
    assert dec[3] == dec[4] == (3, 4, 4, 1024, 512)
    assert dec[5:] == [
        (3, 4, 4, 1024, 256),
        (3, 4, 4, 512, 128),
        (3, 4, 4, 256, 64),
        (3, 4, 4, 128, 3),
    ]
    assert "bn" not in p["dec9"] and all("bn" in p[f"dec{k}"] for k in range(1, 9))


@pytest.mark.parametrize(
    "ablation",
    [
        {},
        {"use_skips": False},
        {"use_residual": False},
        {"decoder_3d": False},
        {"use_skips": False, "use_residual": False},
        {"decoder_3d": False, "num_exposures": 5},
    ],
)
def test_ablation_parameter_counts(ablation):
    widths = width_preset("paper")
    v = abstract_variables(ExposureBracketNet(**widths, **ablation), (1, 512, 512, 3))
    kw = {k: ablation[k] for k in ("use_skips", "decoder_3d", "num_exposures") if k in ablation}
    expected = analytic_count(**_enc_dec(widths), **kw)
    assert n_params(v["params"]) == expected
    if ablation.get("use_skips") is False:
        assert expected < PAPER_PARAMS
    if ablation == {"use_residual": False}:
        assert expected == PAPER_PARAMS  # the residual has no parameters


def test_up_down_aliases_share_the_architecture():
    up = abstract_variables(UpExposureNet(**SMALL), SMALL_SHAPE)
    down = abstract_variables(DownExposureNet(**SMALL), SMALL_SHAPE)
    assert jax.tree.structure(up) == jax.tree.structure(down)
    assert isinstance(UpExposureNet(), ExposureBracketNet) and isinstance(
        DownExposureNet(), ExposureBracketNet
    )


def test_width_presets():
    paper, half, cpu = width_preset("paper"), width_preset("half"), width_preset("cpu")
    assert paper["widths_encoder"] == (64, 128, 256, 512, 512, 512, 512, 512, 512)
    assert paper["widths_decoder"] == (512, 512, 512, 512, 512, 256, 128, 64)
    for k in paper:
        assert half[k] == tuple(c // 2 for c in paper[k])
    assert cpu["widths_encoder"] == (16, 32, 64, 128, 128, 128, 128, 128, 128)
    shallow = width_preset("paper", depth=6)
    assert shallow == {
        "widths_encoder": (64, 128, 256, 512, 512, 512),
        "widths_decoder": (512, 512, 256, 128, 64),
    }
    assert len(width_preset("tiny")["widths_encoder"]) == 5
    with pytest.raises(ValueError, match="unknown width preset"):
        width_preset("huge")
    with pytest.raises(ValueError, match="depth"):
        width_preset("paper", depth=2)


def test_remat_keeps_parameter_tree():
    plain = abstract_variables(ExposureBracketNet(**SMALL), SMALL_SHAPE)
    for remat in (True, "dots_saveable"):
        v = abstract_variables(ExposureBracketNet(**SMALL, remat=remat), SMALL_SHAPE)
        assert jax.tree.structure(v) == jax.tree.structure(plain)


def test_invalid_configurations_and_inputs():
    model = ExposureBracketNet(**SMALL)
    with pytest.raises(ValueError, match="divisible by 2\\^depth = 16"):
        abstract_variables(model, (1, 24, 16, 3))
    with pytest.raises(ValueError, match="NHWC RGB"):
        abstract_variables(model, (1, 16, 16, 4))
    with pytest.raises(ValueError, match="NHWC RGB"):
        abstract_variables(model, (16, 16, 3))
    with pytest.raises(ValueError, match="widths_decoder"):
        abstract_variables(
            ExposureBracketNet(widths_encoder=(4, 8, 8, 8), widths_decoder=(8, 4)), SMALL_SHAPE
        )
    with pytest.raises(ValueError, match="encoder layers"):
        abstract_variables(
            ExposureBracketNet(widths_encoder=(4, 8), widths_decoder=(4,)), (1, 4, 4, 3)
        )
    with pytest.raises(ValueError, match="num_exposures must be 8"):
        abstract_variables(ExposureBracketNet(**SMALL, num_exposures=4), SMALL_SHAPE)
    with pytest.raises(ValueError, match="remat policy"):
        abstract_variables(ExposureBracketNet(**SMALL, remat="everything"), SMALL_SHAPE)
    # The 2D-decoder ablation takes any number of exposures.
    out = jax.eval_shape(
        lambda v, x: ExposureBracketNet(**SMALL, decoder_3d=False, num_exposures=4).apply(
            v, x, train=False
        ),
        abstract_variables(
            ExposureBracketNet(**SMALL, decoder_3d=False, num_exposures=4), SMALL_SHAPE
        ),
        jax.ShapeDtypeStruct(SMALL_SHAPE, jnp.float32),
    )
    assert out.shape == (2, 4, 16, 16, 3)


# ---------------------------------------------------------------------------------------------
# Values.


@pytest.mark.parametrize(
    "ablation",
    [{}, {"use_skips": False}, {"use_residual": False}, {"decoder_3d": False, "num_exposures": 8}],
)
def test_forward_matches_numpy_reference(ablation):
    model = ExposureBracketNet(**SMALL, **ablation)
    v = random_variables(model, SMALL_SHAPE, seed=3)
    x = images(SMALL_SHAPE)
    y = jitted_apply(False, **config(**ablation))(v, x)
    assert y.shape == (2, 8, 16, 16, 3) and y.dtype == jnp.float32
    np.testing.assert_allclose(y, np_forward(v, x, **ablation), atol=2e-5)


def test_running_average_inference_matches_numpy_reference():
    v = random_variables(ExposureBracketNet(**SMALL), SMALL_SHAPE, seed=4)
    x = images(SMALL_SHAPE, seed=5)
    y = jitted_apply(False, **config(bn_use_running_average_at_inference=True))(v, x)
    np.testing.assert_allclose(y, np_forward(v, x, running=True), atol=2e-5)


def test_tiny_preset_output_shape_and_range():
    model = ExposureBracketNet(**width_preset("tiny"))
    x = images((1, 32, 32, 3))
    v = jax.jit(functools.partial(model.init, train=False))(key(0), x)
    y = jax.jit(functools.partial(model.apply, train=False))(v, x)
    assert y.shape == (1, 8, 32, 32, 3) and y.dtype == jnp.float32
    assert bool(jnp.all((y > 0) & (y < 1)))
    # Paper init: N(0, 0.02) kernels, zero biases, Chainer BN gamma = 1, beta = 0.
    k = np.asarray(v["params"]["dec2"]["deconv"]["kernel"])
    assert abs(k.mean()) < 2e-3 and abs(k.std() - 0.02) < 2e-3
    assert not np.any(v["params"]["dec2"]["deconv"]["bias"]) and not np.any(
        v["params"]["enc2"]["bn"]["bias"]
    )
    assert np.all(np.asarray(v["params"]["enc2"]["bn"]["scale"]) == 1)


def test_zero_last_layer_gives_sigmoid_of_input():
    x = images(SMALL_SHAPE, seed=6)
    for residual, expected in (
        (True, 1 / (1 + np.exp(-np.asarray(x)))),
        (False, np.full(x.shape, 0.5)),
    ):
        v = random_variables(ExposureBracketNet(**SMALL), SMALL_SHAPE)
        last = v["params"]["dec4"]["deconv"]
        v["params"]["dec4"]["deconv"] = {
            "kernel": jnp.zeros_like(last["kernel"]),
            "bias": jnp.zeros_like(last["bias"]),
        }
        y = jitted_apply(False, **config(use_residual=residual))(v, x)
        np.testing.assert_allclose(y, np.broadcast_to(expected[:, None], y.shape), atol=1e-6)


def test_dropout_only_in_training_and_only_on_decoder_layers_1_to_3():
    v = random_variables(ExposureBracketNet(**SMALL), SMALL_SHAPE)
    x = images(SMALL_SHAPE)
    train = jitted_apply(True, **config())
    y1, _ = train(v, x, key(1))
    y2, _ = train(v, x, key(2))
    y1b, _ = train(v, x, key(1))
    assert float(jnp.abs(y1 - y2).max()) > 1e-3
    np.testing.assert_array_equal(y1, y1b)
    infer = jitted_apply(False, **config())
    np.testing.assert_array_equal(infer(v, x), infer(v, x))

    calls = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Dropout) and context.method_name == "__call__":
            calls.append((context.module.scope.path[0], context.module.deterministic))
        return next_fun(*args, **kwargs)

    model = ExposureBracketNet(**width_preset("paper"))
    with nn.intercept_methods(record):
        jax.eval_shape(
            lambda: model.init(
                {"params": key(0), "dropout": key(1)}, jnp.zeros((1, 512, 512, 3)), train=True
            )
        )
    assert calls == [("dec1", False), ("dec2", False), ("dec3", False)]


def test_batchnorm_module_matches_chainer_semantics():
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(1.0, 2.0, (3, 2, 5, 4)), jnp.float32)
    bn = BatchNorm()
    v = bn.init(key(0), x, mode="train")
    v = {
        "params": {
            "scale": jnp.asarray(rng.uniform(0.5, 1.5, 4), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=4), jnp.float32),
        },
        "batch_stats": {
            "mean": jnp.asarray(rng.normal(size=4), jnp.float32),
            "var": jnp.asarray(rng.uniform(0.5, 2, 4), jnp.float32),
        },
    }
    xn = np.asarray(x, np.float64)
    p = jax.tree.map(np.asarray, v["params"])
    s = jax.tree.map(np.asarray, v["batch_stats"])
    mean, var = xn.mean((0, 1, 2)), xn.var((0, 1, 2))
    expected = (xn - mean) / np.sqrt(var + 2e-5) * p["scale"] + p["bias"]

    y, upd = bn.apply(v, x, mode="train", mutable=["batch_stats"])
    np.testing.assert_allclose(y, expected, atol=1e-5)
    m = xn.size // 4
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.9 * s["mean"] + 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(
        upd["batch_stats"]["var"], 0.9 * s["var"] + 0.1 * var * m / (m - 1), rtol=1e-5
    )
    np.testing.assert_allclose(
        bn.apply(v, x, mode="batch"), expected, atol=1e-5
    )  # no mutable needed
    running = (xn - s["mean"]) / np.sqrt(s["var"] + 2e-5) * p["scale"] + p["bias"]
    np.testing.assert_allclose(bn.apply(v, x, mode="running"), running, atol=1e-5)
    with pytest.raises(ValueError, match="mutable=\\['batch_stats'\\]"):
        bn.apply(v, x, mode="train")
    with pytest.raises(ValueError, match="mode"):
        bn.apply(v, x, mode="eval")


def test_inference_modes_and_training_update():
    v = random_variables(ExposureBracketNet(**SMALL), SMALL_SHAPE, seed=8)
    x = images(SMALL_SHAPE, seed=9)
    batch_mode = jitted_apply(False, **config())
    running_mode = jitted_apply(False, **config(bn_use_running_average_at_inference=True))
    # Public-code mode: an image's output depends on the rest of its batch; running mode: not.
    both, alone = batch_mode(v, x), batch_mode(v, jnp.concatenate([x[:1], x[:1]]))
    assert float(jnp.abs(both[0] - alone[0]).max()) > 1e-3
    both, alone = running_mode(v, x), running_mode(v, jnp.concatenate([x[:1], x[:1]]))
    np.testing.assert_allclose(both[0], alone[0], atol=1e-6)
    assert float(jnp.abs(batch_mode(v, x) - running_mode(v, x)).max()) > 1e-3
    # Training without dropout normalises like the batch mode and updates the running stats.
    y, upd = jitted_apply(True, **config(dropout_rate=0.0))(v, x, key(0))
    np.testing.assert_allclose(y, batch_mode(v, x), atol=1e-6)
    assert jax.tree.structure(upd["batch_stats"]) == jax.tree.structure(v["batch_stats"])
    assert all(
        not np.allclose(a, b)
        for a, b in zip(jax.tree.leaves(upd["batch_stats"]), jax.tree.leaves(v["batch_stats"]))
    )
    with pytest.raises(ValueError, match="mutable"):
        ExposureBracketNet(**SMALL).apply(v, x, train=True, rngs={"dropout": key(0)})


def test_bfloat16_compute_with_float32_params():
    v = random_variables(ExposureBracketNet(**SMALL), SMALL_SHAPE)
    x = images(SMALL_SHAPE)
    y16 = jitted_apply(False, **config(dtype=jnp.bfloat16))(v, x)
    assert y16.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(y16)))
    np.testing.assert_allclose(y16, jitted_apply(False, **config())(v, x), atol=0.05)
    v16 = abstract_variables(ExposureBracketNet(**SMALL, dtype=jnp.bfloat16), SMALL_SHAPE)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(v16))


def test_gradients_finite_and_remat_invariant():
    widths = {"widths_encoder": (4, 6, 8), "widths_decoder": (6, 4)}  # depth 3: cheaper compiles
    v = random_variables(ExposureBracketNet(**widths), (2, 8, 8, 3))
    x = images((2, 8, 8, 3))
    target = images((2, 8, 8, 8, 3), seed=10)

    def grads(remat):
        model = ExposureBracketNet(**widths, remat=remat)

        def loss(params):
            y, _ = model.apply(
                {"params": params, "batch_stats": v["batch_stats"]},
                x,
                train=True,
                rngs={"dropout": key(3)},
                mutable=["batch_stats"],
            )
            return jnp.mean(jnp.abs(y - target))

        return jax.jit(jax.grad(loss))(v["params"])

    g = grads(False)
    leaves = jax.tree.leaves(g)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in leaves)
    assert sum(bool(jnp.any(a != 0)) for a in leaves) == len(leaves)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), g, grads(True)
    )


# ---------------------------------------------------------------------------------------------
# Padding helper.


def test_pad_to_multiple_reflects_and_crops_back():
    x = images((2, 5, 7, 3))
    padded, crop = pad_to_multiple(x, 4)
    ref = np.pad(np.asarray(x), [(0, 0), (1, 2), (0, 1), (0, 0)], mode="reflect")
    np.testing.assert_array_equal(padded, ref)
    np.testing.assert_array_equal(crop(padded), x)
    bracket = jnp.broadcast_to(padded[:, None], (2, 8, 8, 8, 3))
    np.testing.assert_array_equal(crop(bracket), jnp.broadcast_to(x[:, None], (2, 8, 5, 7, 3)))
    # Pads wider than the image reflect repeatedly, as NumPy does.
    small = images((1, 3, 2, 3))
    padded, crop = pad_to_multiple(small, 16)
    np.testing.assert_array_equal(
        padded, np.pad(np.asarray(small), [(0, 0), (6, 7), (7, 7), (0, 0)], mode="reflect")
    )
    np.testing.assert_array_equal(crop(padded), small)
    same, crop = pad_to_multiple(x[:, :4, :4], 4)
    assert same.shape == (2, 4, 4, 3)
    with pytest.raises(ValueError, match="multiple"):
        pad_to_multiple(x, 0)
    with pytest.raises(ValueError, match="spatial size of 1"):
        pad_to_multiple(images((1, 1, 4, 3)), 4)


def test_padded_input_runs_through_model():
    model_kwargs = config()
    x = images((1, 13, 10, 3))
    padded, crop = pad_to_multiple(x, 2 ** drtmo.ExposureBracketNet(**SMALL).depth)
    v = random_variables(ExposureBracketNet(**SMALL), padded.shape)
    y = crop(jitted_apply(False, **model_kwargs)(v, padded))
    assert y.shape == (1, 8, 13, 10, 3)


@pytest.mark.parametrize("sign", [1, -1])
def test_naive_residual_base_starts_at_the_naive_bracket(sign):
    """With residual_base='naive' and a zero last layer the network predicts the naive exposure
    change (sRGB inverse, x tau^(+-k), sRGB, clip): the data module's baseline, itself checked
    against scikit-image in tests/test_bracket_data.py."""
    from hdr_jax.camera.exposure import naive_bracket_baseline

    x = images(SMALL_SHAPE, seed=7)
    v = random_variables(ExposureBracketNet(**SMALL), SMALL_SHAPE)
    last = v["params"]["dec4"]["deconv"]
    v["params"]["dec4"]["deconv"] = {k: jnp.zeros_like(a) for k, a in last.items()}
    y = np.asarray(jitted_apply(False, **config(residual_base="naive", exposure_sign=sign))(v, x))
    steps = sign * np.arange(1, y.shape[1] + 1)[None]
    ref = np.clip(naive_bracket_baseline(np.asarray(x), steps), 1e-3, 1 - 1e-3)
    np.testing.assert_allclose(y, ref, atol=2e-4)
    with pytest.raises(ValueError, match="residual_base"):
        jitted_apply(False, **config(residual_base="bogus"))(v, x)
