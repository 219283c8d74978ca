"""Phase/space-to-depth convolutions vs lax references and NumPy torch-semantics references."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from hdr_jax.models import layers
from hdr_jax.models.layers import (
    ConvTranspose,
    StridedConv,
    conv_transpose,
    depth_to_space,
    space_to_depth,
    strided_conv,
    torch_conv_transpose_weight_to_flax,
    torch_conv_weight_to_flax,
)

CIN, COUT = 3, 4

# (kernel, stride, pad, input spatial shapes): odd and even sizes.
TRANSPOSED_CASES = [
    ((6, 6), (2, 2), (2, 2), [(5, 6), (4, 3)]),
    ((8, 8), (4, 4), (2, 2), [(3, 4), (2, 5)]),
    ((4, 4), (2, 2), (1, 1), [(3, 4), (1, 2)]),
    ((4, 4, 4), (2, 2, 2), (1, 1, 1), [(1, 3, 4), (2, 2, 3)]),
    ((3, 4, 4), (1, 2, 2), (1, 1, 1), [(2, 3, 4), (8, 2, 1)]),
    ((3, 3), (2, 2), (1, 1), [(3, 4)]),  # k not a multiple of s: zero-filled taps
]
STRIDED_CASES = [
    ((6, 6), (2, 2), (2, 2), [(8, 9), (6, 7)]),
    ((8, 8), (4, 4), (2, 2), [(8, 9), (12, 6)]),
    ((4, 4), (2, 2), (1, 1), [(4, 5), (2, 3)]),
    ((4, 4, 4), (2, 2, 2), (1, 1, 1), [(4, 5, 6), (2, 3, 2)]),
    ((3, 3), (1, 1), (1, 1), [(3, 4)]),
    ((3, 3), (2, 2), (1, 1), [(5, 6)]),
]


def _flat_cases(cases):
    return [(k, s, p, shp) for k, s, p, shapes in cases for shp in shapes]


def _dn(nd: int) -> tuple[str, str, str]:
    return {2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}[nd]


# --- references ------------------------------------------------------------------------------


def np_conv_transpose_torch(x: np.ndarray, w: np.ndarray, s, p) -> np.ndarray:
    """Scatter-add with a torch ConvTranspose weight w (in, out, *k): y[X*s + t] += x[X] w[:, :, t]."""
    n, *spatial, _ = x.shape
    ks = w.shape[2:]
    full = [(d - 1) * st + k for d, st, k in zip(spatial, s, ks)]
    y = np.zeros((n, *full, w.shape[1]), np.float64)
    for t in itertools.product(*(range(k) for k in ks)):
        contrib = np.einsum(
            "n...i,io->n...o", x.astype(np.float64), w[(slice(None), slice(None), *t)]
        )
        idx = tuple(slice(ti, ti + (d - 1) * st + 1, st) for ti, d, st in zip(t, spatial, s))
        y[(slice(None), *idx, slice(None))] += contrib
    crop = tuple(slice(pi, f - pi) for pi, f in zip(p, full))
    return y[(slice(None), *crop, slice(None))]


def np_conv_torch(x: np.ndarray, w: np.ndarray, s, p) -> np.ndarray:
    """Gather form with a torch Conv weight w (out, in, *k): y[Y] = sum_t x_pad[Y*s + t] w[:, :, t]."""
    xp = np.pad(x.astype(np.float64), [(0, 0)] + [(pi, pi) for pi in p] + [(0, 0)])
    ks = w.shape[2:]
    out = [(d - k) // st + 1 for d, k, st in zip(xp.shape[1:-1], ks, s)]
    y = np.zeros((x.shape[0], *out, w.shape[0]), np.float64)
    for t in itertools.product(*(range(k) for k in ks)):
        idx = tuple(slice(ti, ti + (o - 1) * st + 1, st) for ti, o, st in zip(t, out, s))
        y += np.einsum(
            "n...i,oi->n...o",
            xp[(slice(None), *idx, slice(None))],
            w[(slice(None), slice(None), *t)],
        )
    return y


def lax_conv_transpose_ref(x, kernel, s, p):
    """`lax.conv_transpose` form of a torch transposed conv with our paper-layout kernel.

    lax.conv_transpose dilates x by s and *correlates* it with rhs (no flip when
    transpose_kernel=False), padding k - 1 - p per side, so rhs must be the spatially flipped
    scatter kernel. With transpose_kernel=True lax flips the spatial axes and swaps I/O itself,
    so rhs is the unflipped kernel with in/out swapped, i.e. torch's (in, out, *k) weight read as
    the forward conv (O=in, I=out) whose gradient this is.
    """
    nd = kernel.ndim - 2
    pads = [(k - 1 - pi, k - 1 - pi) for k, pi in zip(kernel.shape[:nd], p)]
    a = lax.conv_transpose(
        x, jnp.flip(kernel, tuple(range(nd))), s, pads, dimension_numbers=_dn(nd)
    )
    b = lax.conv_transpose(
        x, jnp.swapaxes(kernel, -1, -2), s, pads, dimension_numbers=_dn(nd), transpose_kernel=True
    )
    return a, b


def lax_conv_ref(x, kernel, s, p):
    nd = kernel.ndim - 2
    return lax.conv_general_dilated(x, kernel, s, [(pi, pi) for pi in p], dimension_numbers=_dn(nd))


def _data(shape_x, shape_k, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape_x).astype(np.float32), rng.standard_normal(shape_k).astype(
        np.float32
    )


def _check_grads(fn, ref, x, kernel, s, p, atol):
    y = ref(x, kernel, s, p)
    ct = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)

    def loss(f):
        return lambda xx, kk: jnp.sum(f(xx, kk, s, p) * ct)

    gx, gk = jax.jit(jax.grad(loss(fn), argnums=(0, 1)))(x, kernel)
    rx, rk = jax.jit(jax.grad(loss(ref), argnums=(0, 1)))(x, kernel)
    np.testing.assert_allclose(gx, rx, atol=atol, rtol=1e-4)
    np.testing.assert_allclose(gk, rk, atol=atol, rtol=1e-4)


# --- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("block", [(2, 2), (4, 4), (1, 2, 2), (2, 2, 2), (3, 1)])
def test_depth_to_space_roundtrip_and_order(block):
    nd = len(block)
    x = np.random.default_rng(0).standard_normal(
        (2, *(3 + d for d in range(nd)), int(np.prod(block)) * 2)
    )
    y = depth_to_space(x, block)
    assert y.shape == (2, *((3 + d) * b for d, b in enumerate(block)), 2)
    np.testing.assert_array_equal(space_to_depth(y, block), x)
    # channel (b_1..b_n, C) with C fastest: y[..., S*b + r, ...] = x[..., S, ..., flat(r, c)]
    r = tuple(b - 1 for b in block)
    flat = np.ravel_multi_index((*r, 1), (*block, 2))
    src = x[(0, *(1,) * nd, flat)]
    assert y[(0, *(b + ri for b, ri in zip(block, r)), 1)] == src


@pytest.mark.parametrize("ks,s,p,spatial", _flat_cases(TRANSPOSED_CASES))
def test_conv_transpose_matches_references(ks, s, p, spatial):
    x, kernel = _data((2, *spatial, CIN), (*ks, CIN, COUT))
    y = jax.jit(conv_transpose, static_argnums=(2, 3))(x, kernel, s, p)
    expect_shape = tuple((d - 1) * st - 2 * pi + k for d, st, pi, k in zip(spatial, s, p, ks))
    assert y.shape == (2, *expect_shape, COUT)
    a, b = jax.jit(lax_conv_transpose_ref, static_argnums=(2, 3))(x, kernel, s, p)
    np.testing.assert_allclose(y, a, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(y, b, atol=1e-4, rtol=1e-4)
    # independent NumPy scatter-add in torch layout (also checks the weight conversion)
    w_torch = np.moveaxis(kernel, (-2, -1), (0, 1))  # (in, out, *k)
    np.testing.assert_array_equal(torch_conv_transpose_weight_to_flax(w_torch), kernel)
    np.testing.assert_allclose(y, np_conv_transpose_torch(x, w_torch, s, p), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("ks,s,p,spatial", [c for c in _flat_cases(TRANSPOSED_CASES)[::2]])
def test_conv_transpose_gradients(ks, s, p, spatial):
    x, kernel = _data((1, *spatial, CIN), (*ks, CIN, COUT))
    _check_grads(
        conv_transpose, lambda *a: lax_conv_transpose_ref(*a)[0], x, kernel, s, p, atol=1e-4
    )


@pytest.mark.parametrize("ks,s,p,spatial", _flat_cases(STRIDED_CASES))
def test_strided_conv_matches_references(ks, s, p, spatial):
    x, kernel = _data((2, *spatial, CIN), (*ks, CIN, COUT))
    y = jax.jit(strided_conv, static_argnums=(2, 3))(x, kernel, s, p)
    np.testing.assert_allclose(
        y, jax.jit(lax_conv_ref, static_argnums=(2, 3))(x, kernel, s, p), atol=1e-4, rtol=1e-4
    )
    w_torch = np.moveaxis(kernel, (-1, -2), (0, 1))  # (out, in, *k)
    np.testing.assert_array_equal(torch_conv_weight_to_flax(w_torch), kernel)
    np.testing.assert_allclose(y, np_conv_torch(x, w_torch, s, p), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("ks,s,p,spatial", [c for c in _flat_cases(STRIDED_CASES)[::2]])
def test_strided_conv_gradients(ks, s, p, spatial):
    x, kernel = _data((1, *spatial, CIN), (*ks, CIN, COUT))
    _check_grads(strided_conv, lax_conv_ref, x, kernel, s, p, atol=1e-4)


@pytest.mark.parametrize(
    "cls,ks,s,p",
    [
        (ConvTranspose, (6, 6), (2, 2), (2, 2)),
        (ConvTranspose, (3, 4, 4), (1, 2, 2), (1, 1, 1)),
        (StridedConv, (8, 8), (4, 4), (2, 2)),
        (StridedConv, (4, 4, 4), (2, 2, 2), (1, 1, 1)),
    ],
)
def test_modules_params_and_values(cls, ks, s, p):
    nd = len(ks)
    x = np.random.default_rng(0).standard_normal((1, *(4,) * nd, CIN)).astype(np.float32)
    layer = cls(COUT, ks, s, p)
    shapes = jax.eval_shape(layer.init, jax.random.key(0), x)["params"]
    # paper layout: same number of parameters as torch, a transpose of its weight shape
    assert shapes["kernel"].shape == (*ks, CIN, COUT)
    assert shapes["bias"].shape == (COUT,)
    kernel, bias = _data((*ks, CIN, COUT), (COUT,), seed=3)
    params = {"kernel": kernel, "bias": bias}
    y = jax.jit(layer.apply)({"params": params}, x)
    ref = lax_conv_transpose_ref if cls is ConvTranspose else lambda *a: (lax_conv_ref(*a),)
    expect = jax.jit(ref, static_argnums=(2, 3))(x, params["kernel"], s, p)[0] + params["bias"]
    np.testing.assert_allclose(y, expect, atol=1e-4)
    no_bias = jax.eval_shape(cls(COUT, ks, s, p, use_bias=False).init, jax.random.key(0), x)
    assert set(no_bias["params"]) == {"kernel"}


@pytest.mark.parametrize("cls", [ConvTranspose, StridedConv])
def test_bf16_compute_keeps_float32_params(cls):
    x = np.random.default_rng(0).standard_normal((1, 8, 8, CIN)).astype(np.float32)
    kw = {"features": COUT, "kernel_size": (4, 4), "strides": (2, 2), "padding": (1, 1)}
    f32 = cls(**kw)
    bf = cls(**kw, dtype=jnp.bfloat16)
    kernel, bias = _data((4, 4, CIN, COUT), (COUT,), seed=3)
    variables = {"params": {"kernel": kernel, "bias": bias}}
    bf_shapes = jax.eval_shape(bf.init, jax.random.key(0), x)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(bf_shapes))

    @jax.jit
    def run(v):
        y, vjp = jax.vjp(lambda v: bf.apply(v, x), v)
        return y, vjp(jnp.ones_like(y))[0], f32.apply(v, x)

    y, g, y32 = run(variables)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y, np.float32), y32, atol=0.1, rtol=0.05)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(g))


def test_bad_inputs_raise():
    x = jnp.zeros((1, 4, 4, 3))
    with pytest.raises(ValueError, match="input must be"):
        ConvTranspose(4, (4, 4, 4), (2, 2, 2), (1, 1, 1)).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="entries"):
        StridedConv(4, (4, 4), (2, 2, 2), (1, 1)).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="channels"):
        conv_transpose(x, jnp.zeros((4, 4, 2, 4)), (2, 2), (1, 1))
    with pytest.raises(ValueError, match="empty output"):
        conv_transpose(jnp.zeros((1, 1, 1, 3)), jnp.zeros((2, 2, 3, 4)), (2, 2), (2, 2))
    with pytest.raises(ValueError, match="too small"):
        strided_conv(jnp.zeros((1, 2, 2, 3)), jnp.zeros((8, 8, 3, 4)), (4, 4), (1, 1))
    with pytest.raises(ValueError, match="divisible"):
        space_to_depth(jnp.zeros((1, 5, 4, 3)), (2, 2))


@pytest.mark.parametrize(
    "ks,strides,pads",
    [
        ((8, 8), (4, 4), (2, 2)),
        ((6, 6), (2, 2), (2, 2)),
        ((4, 4, 4), (2, 2, 2), (1, 1, 1)),
        ((3, 4, 4), (1, 2, 2), (1, 1, 1)),
    ],
)
def test_conv_impls_agree(ks, strides, pads):
    """The im2col (matmul) and lax.conv paths of the stride-1 conv give the same layer."""
    rng = np.random.default_rng(0)
    nd = len(ks)
    x = jnp.asarray(rng.standard_normal((2, *([5] * nd), 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((*ks, 3, 4)), jnp.float32)
    for fn in (layers.conv_transpose, layers.strided_conv):
        a = fn(x, w, strides, pads, impl="im2col")
        for impl in ("xla", "auto"):
            b = fn(x, w, strides, pads, impl=impl)
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="impl"):
        layers.conv_transpose(x, w, strides, pads, impl="bogus")


def _assert_same_map(ours, ref, x, w, rng):
    """`ours` and `ref` agree in value and in both gradients (for a random cotangent)."""
    y_ref, y = ref(x, w), jax.jit(ours)(x, w)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
    cot = jnp.asarray(rng.standard_normal(y_ref.shape), jnp.float32)
    g_ref = jax.vjp(ref, x, w)[1](cot)
    g = jax.jit(lambda x, w, c: jax.vjp(ours, x, w)[1](c))(x, w, cot)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(
    "size,ks,strides,pads",
    [
        ((9, 8), (6, 6), (2, 2), (2, 2)),  # odd size: the last input row is never read
        ((11, 12), (8, 8), (4, 4), (2, 2)),
        ((5, 6, 7), (3, 4, 4), (1, 2, 2), (1, 1, 1)),
    ],
)
@pytest.mark.parametrize("impl", ["xla", "auto", "im2col"])
def test_strided_conv_values_and_gradients_match_lax(size, ks, strides, pads, impl):
    """Every strided-conv path (the strided lax conv with the space-to-depth VJP for 'xla' and
    'auto', space-to-depth both ways for 'im2col') against lax's own strided conv and its
    autodiff gradients."""
    rng = np.random.default_rng(2)
    nd = len(ks)
    x = jnp.asarray(rng.standard_normal((2, *size, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((*ks, 3, 4)), jnp.float32)

    def ref(x, w):
        return jax.lax.conv_general_dilated(
            x, w, strides, [(p, p) for p in pads], dimension_numbers=layers._dimension_numbers(nd)
        )

    def ours(x, w):
        return layers.strided_conv(x, w, strides, pads, impl=impl)

    _assert_same_map(ours, ref, x, w, rng)


@pytest.mark.parametrize(
    "size,ks,strides,pads",
    [
        ((5, 6), (6, 6), (2, 2), (2, 2)),
        ((4, 3), (8, 8), (4, 4), (2, 2)),
        ((3, 4, 5), (3, 4, 4), (1, 2, 2), (1, 1, 1)),
        ((3, 3, 3), (4, 4, 4), (2, 2, 2), (1, 1, 1)),
    ],
)
@pytest.mark.parametrize("impl", ["xla", "auto", "im2col"])
def test_conv_transpose_values_and_gradients_match_lax(size, ks, strides, pads, impl):
    """Every transposed-conv path (with the lax convs, the input gradient is lax's strided conv)
    against lax.conv_transpose and its autodiff gradients."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, *size, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((*ks, 3, 4)), jnp.float32)
    nd = len(ks)

    def ref(x, w):
        axes = tuple(range(nd))
        pad = [(k - 1 - p, k - 1 - p) for k, p in zip(ks, pads)]
        spec = ("NHWC", "HWIO", "NHWC") if nd == 2 else ("NDHWC", "DHWIO", "NDHWC")
        return jax.lax.conv_transpose(x, jnp.flip(w, axes), strides, pad, dimension_numbers=spec)

    def ours(x, w):
        return layers.conv_transpose(x, w, strides, pads, impl=impl)

    _assert_same_map(ours, ref, x, w, rng)


def test_concat_conv1x1_equals_conv_of_concatenation():
    """ConcatConv1x1 over parts == StridedConv 1x1 over their concatenation (same parameters,
    same init), values and gradients."""
    rng = np.random.default_rng(1)
    parts = [jnp.asarray(rng.standard_normal((2, 5, 6, c)), jnp.float32) for c in (3, 4, 2)]
    cat = jnp.concatenate(parts, axis=-1)
    split_mod, ref_mod = layers.ConcatConv1x1(5), layers.StridedConv(5, (1, 1))
    v = ref_mod.init(jax.random.key(0), cat)
    jax.tree.map(np.testing.assert_array_equal, split_mod.init(jax.random.key(0), parts), v)
    v = jax.tree.map(lambda a: a + 0.1 * jnp.arange(a.size).reshape(a.shape) / a.size, v)
    np.testing.assert_allclose(split_mod.apply(v, parts), ref_mod.apply(v, cat), atol=1e-5)
    g1 = jax.grad(lambda v, p: jnp.sum(split_mod.apply(v, p) ** 2), argnums=(0, 1))(v, parts)
    g2 = jax.grad(lambda v, c: jnp.sum(ref_mod.apply(v, c) ** 2), argnums=(0, 1))(v, cat)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), g1[0], g2[0])
    np.testing.assert_allclose(jnp.concatenate(g1[1], axis=-1), g2[1], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="one shape"):
        split_mod.apply(v, [parts[0], parts[1][:, :4]])
