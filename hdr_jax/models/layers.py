"""Strided and transposed convolutions computed as stride-1 convolutions (faster on XLA:CPU,
see docs/benchmarks.md).

XLA's CPU backend lowers a transposed convolution to a convolution over a zero-dilated input, and
its parameter gradient very slowly. Both networks only need transposed convs whose kernel is a
multiple of the stride, and strided convs, so both are computed here as a *stride-1* convolution
plus a fixed rearrangement:

* transposed conv, stride s, kernel k = m*s: a stride-1 conv with an m-tap kernel producing
  prod(s) output phases as channels, then `depth_to_space` and a crop of the torch padding;
* strided conv, stride s: `space_to_depth` of the padded input, then a stride-1 conv with a
  ceil(k/s)-tap kernel over prod(s) * C_in channels. With the lax implementations this form is
  only the backward pass: XLA:CPU runs lax's own strided conv forward faster, and differentiates
  it slower.

Parameters keep the *paper layout* and the paper semantics (PyTorch / Chainer), so published
weights load with a transpose:

* `StridedConv.kernel[t_1..t_n, i, o]` = torch `Conv{2,3}d.weight[o, i, t_1..t_n]`
  (cross-correlation: ``y[o, Y] = sum_{i,t} x_pad[i, Y*s + t] * w[o, i, t]``, x_pad = x padded
  by p on both sides);
* `ConvTranspose.kernel[t_1..t_n, i, o]` = torch `ConvTranspose{2,3}d.weight[i, o, t_1..t_n]`
  (= Chainer `Deconvolution{2,3}D.W`; scatter form: ``y_full[o, X*s + t] += x[i, X] * w[i, o, t]``,
  then p cropped from both ends: out = (in - 1)*s - 2p + k).

In `lax` terms (tested): ``conv_transpose(x, kernel, s, p)`` equals
``lax.conv_transpose(x, flip(kernel, spatial axes), s, [(k - 1 - p, k - 1 - p)] per dim)``
(transpose_kernel=False: lax correlates the s-dilated input with rhs, hence the flip), and equals
``lax.conv_transpose(x, swapaxes(kernel, -1, -2), s, same padding, transpose_kernel=True)``.
``strided_conv(x, kernel, s, p)`` equals ``lax.conv_general_dilated(x, kernel, s, [(p, p)] per dim)``.

Kernels whose size is not a multiple of the stride are supported as well (zero taps are added
for the computation only; the parameter keeps its paper shape).

Channel order of `space_to_depth` / `depth_to_space`: the new channel axis is the row-major
flattening of (b_1, ..., b_n, C), i.e. C varies fastest.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array

__all__ = [
    "ConcatConv1x1",
    "ConvTranspose",
    "StridedConv",
    "conv_transpose",
    "depth_to_space",
    "space_to_depth",
    "strided_conv",
    "torch_conv_transpose_weight_to_flax",
    "torch_conv_weight_to_flax",
]


# ---------------------------------------------------------------------------------------------
# Layout helpers.


def depth_to_space(x: Array, block: Sequence[int]) -> Array:
    """(N, *S, prod(b)*C) -> (N, *(S*b), C); channel order (b_1, ..., b_n, C), C fastest."""
    block = tuple(int(b) for b in block)
    nd = len(block)
    if x.ndim != nd + 2:
        raise ValueError(
            f"depth_to_space: expected a {nd + 2}-d channels-last array, got shape {x.shape}"
        )
    n, *spatial, c = x.shape
    bprod = math.prod(block)
    if c % bprod:
        raise ValueError(f"depth_to_space: channels {c} not divisible by prod(block)={bprod}")
    cout = c // bprod
    x = x.reshape(n, *spatial, *block, cout)
    # (N, S_1, b_1, S_2, b_2, ..., C)
    perm = [0] + [a for d in range(nd) for a in (1 + d, 1 + nd + d)] + [1 + 2 * nd]
    x = x.transpose(perm)
    return x.reshape(n, *(s * b for s, b in zip(spatial, block)), cout)


def space_to_depth(x: Array, block: Sequence[int]) -> Array:
    """(N, *(S*b), C) -> (N, *S, prod(b)*C); inverse of `depth_to_space`."""
    block = tuple(int(b) for b in block)
    nd = len(block)
    if x.ndim != nd + 2:
        raise ValueError(
            f"space_to_depth: expected a {nd + 2}-d channels-last array, got shape {x.shape}"
        )
    n, *spatial, c = x.shape
    if any(s % b for s, b in zip(spatial, block)):
        raise ValueError(
            f"space_to_depth: spatial shape {tuple(spatial)} not divisible by block {block}"
        )
    outer = [s // b for s, b in zip(spatial, block)]
    x = x.reshape(n, *(v for o, b in zip(outer, block) for v in (o, b)), c)
    perm = [0] + [1 + 2 * d for d in range(nd)] + [2 + 2 * d for d in range(nd)] + [1 + 2 * nd]
    x = x.transpose(perm)
    return x.reshape(n, *outer, math.prod(block) * c)


def torch_conv_weight_to_flax(w: Any) -> Any:
    """torch Conv weight (out, in, *k) -> `StridedConv` kernel (*k, in, out)."""
    nd = w.ndim - 2
    return w.transpose(*range(2, 2 + nd), 1, 0)


def torch_conv_transpose_weight_to_flax(w: Any) -> Any:
    """torch ConvTranspose / Chainer Deconvolution weight (in, out, *k) -> `ConvTranspose` kernel (*k, in, out).

    No spatial flip: the paper-layout kernel is the scatter-form kernel.
    """
    nd = w.ndim - 2
    return w.transpose(*range(2, 2 + nd), 0, 1)


# ---------------------------------------------------------------------------------------------
# Pure functions.


def _dimension_numbers(nd: int) -> lax.ConvDimensionNumbers:
    spatial = tuple(range(1, nd + 1))
    return lax.ConvDimensionNumbers(
        lhs_spec=(0, nd + 1) + spatial,
        rhs_spec=(nd + 1, nd) + tuple(range(nd)),
        out_spec=(0, nd + 1) + spatial,
    )


#: Stride-1 conv implementations. 'im2col' gathers the few kernel taps into channels and does one
#: matmul: XLA:CPU differentiates a lax convolution with 2-tap kernels and many output channels
#: (every phase conv of a k = 2s transposed conv) 10-100x slower than the matmul it is
#: (measured: k8 s4 transposed conv 64x64x64, param+input gradient 4.6 s vs 0.09 s; 3D (4,4,4)
#: s2 1.6 s vs 0.04 s), but its patches hold prod(k) copies of the input, which the backward
#: pass keeps. 'xla' keeps lax.conv_general_dilated (least memory). 'auto': xla for 2-d kernels
#: with more than 2 taps per dim (3x3 convs and the 3-tap phase convs of x2 CF-Net: as fast on
#: XLA:CPU, measured x2 training step 11.8 s vs 12.7 s, half the memory), im2col otherwise
#: (2-tap phase convs; every 3-d conv: DrTMO's training step is 1.9 s with im2col, 12.5 s with
#: xla on its (3, 2, 2)-tap phase convs, 15.0 s all xla).
CONV_IMPLS = ("im2col", "xla", "auto")


def _lax_path(impl: str, kernel_shape: Sequence[int]) -> bool:
    """Whether ``impl`` runs the stride-1 conv of this (rearranged) kernel as a lax conv."""
    nd = len(kernel_shape) - 2
    return impl == "xla" or (impl == "auto" and nd == 2 and max(kernel_shape[:nd]) > 2)


def _conv_stride1(
    x: Array, kernel: Array, pads: Sequence[tuple[int, int]], precision: Any, impl: str = "im2col"
) -> Array:
    """Stride-1 correlation; negative pads crop the input (kept out of the conv op itself)."""
    nd = kernel.ndim - 2
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        idx = (slice(None),) + tuple(
            slice(max(-lo, 0), x.shape[1 + d] - max(-hi, 0)) for d, (lo, hi) in enumerate(pads)
        )
        x = x[idx]
        pads = [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
    if impl == "auto":
        impl = "xla" if _lax_path(impl, kernel.shape) else "im2col"
    if impl == "xla":
        return lax.conv_general_dilated(
            x,
            kernel,
            window_strides=(1,) * nd,
            padding=[(int(lo), int(hi)) for lo, hi in pads],
            dimension_numbers=_dimension_numbers(nd),
            precision=precision,
        )
    if impl != "im2col":
        raise ValueError(f"conv impl must be one of {CONV_IMPLS}, got {impl!r}")
    ks = kernel.shape[:nd]
    if any(lo or hi for lo, hi in pads):
        x = jnp.pad(x, [(0, 0)] + [(int(lo), int(hi)) for lo, hi in pads] + [(0, 0)])
    out = [x.shape[1 + d] - ks[d] + 1 for d in range(nd)]
    taps = [
        x[(slice(None),) + tuple(slice(o[d], o[d] + out[d]) for d in range(nd))]
        for o in itertools.product(*(range(k) for k in ks))
    ]
    # Tap-major channel order matches kernel.reshape(prod(k) * in, out) (row-major over k, in).
    patches = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
    return jnp.einsum(
        "...c,co->...o", patches, kernel.reshape(-1, kernel.shape[-1]), precision=precision
    )


def _check_args(
    name: str, x: Array, kernel: Array, strides: Sequence[int], padding: Sequence[int]
) -> int:
    nd = kernel.ndim - 2
    if nd < 1:
        raise ValueError(f"{name}: kernel must have shape (*k, in, out), got {kernel.shape}")
    if x.ndim != nd + 2:
        raise ValueError(
            f"{name}: input must be {nd + 2}-d (N, *spatial, C) for a {nd}-d kernel, got shape {x.shape}"
        )
    if len(strides) != nd or len(padding) != nd:
        raise ValueError(
            f"{name}: need {nd} strides and paddings, got strides={tuple(strides)} padding={tuple(padding)}"
        )
    if any(s < 1 for s in strides) or any(p < 0 for p in padding):
        raise ValueError(
            f"{name}: strides must be >= 1 and padding >= 0, got {tuple(strides)}, {tuple(padding)}"
        )
    if x.shape[-1] != kernel.shape[-2]:
        raise ValueError(
            f"{name}: input has {x.shape[-1]} channels but kernel expects {kernel.shape[-2]}"
        )
    return nd


def _split_taps(kernel: Array, strides: Sequence[int]) -> tuple[Array, list[int]]:
    """Zero-extend each spatial dim to m*s taps and reshape to (m_1, s_1, ..., m_n, s_n, in, out)."""
    nd = kernel.ndim - 2
    ks = kernel.shape[:nd]
    m = [-(-k // s) for k, s in zip(ks, strides)]
    extra = [mi * s - k for mi, s, k in zip(m, strides, ks)]
    if any(extra):
        kernel = jnp.pad(kernel, [(0, e) for e in extra] + [(0, 0), (0, 0)])
    cin, cout = kernel.shape[-2:]
    return kernel.reshape(*(v for mi, s in zip(m, strides) for v in (mi, s)), cin, cout), m


def _conv_transpose_phase(
    x: Array, kernel: Array, strides: Sequence[int], padding: Sequence[int], precision: Any,
    impl: str,
) -> Array:
    """The phase-conv form of :func:`conv_transpose` (arguments checked by the caller)."""
    nd = kernel.ndim - 2
    split, m = _split_taps(kernel, strides)
    cin, cout = kernel.shape[-2:]
    split = jnp.flip(split, axis=tuple(2 * d for d in range(nd)))
    perm = [2 * d for d in range(nd)] + [2 * nd] + [2 * d + 1 for d in range(nd)] + [2 * nd + 1]
    phase_kernel = split.transpose(perm).reshape(*m, cin, math.prod(strides) * cout)

    pads, crops = [], []
    for d in range(nd):
        n, k, s, p, md = x.shape[1 + d], kernel.shape[d], strides[d], padding[d], m[d]
        out_len = (n - 1) * s + k - 2 * p
        q_lo, q_hi = p // s, (p + out_len - 1) // s + 1
        lo = md - 1 - q_lo
        pads.append((lo, (q_hi - q_lo) + md - 1 - n - lo))
        crops.append(slice(p - q_lo * s, p - q_lo * s + out_len))
    y = _conv_stride1(x, phase_kernel, pads, precision, impl)
    y = depth_to_space(y, strides)
    return y[(slice(None), *crops, slice(None))]


# The input gradient of a transposed conv is the strided conv with the same kernel (in/out
# swapped), which XLA:CPU runs several times faster than the phase conv's own input gradient
# (a stride-1 conv from prod(s) * C_out channels down to C_in); the kernel gradient stays the
# phase form's.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv_transpose_lax(x, kernel, strides, padding, precision, impl):
    return _conv_transpose_phase(x, kernel, strides, padding, precision, impl)


def _conv_transpose_lax_fwd(x, kernel, strides, padding, precision, impl):
    return _conv_transpose_phase(x, kernel, strides, padding, precision, impl), (x, kernel)


def _conv_transpose_lax_bwd(strides, padding, precision, impl, residuals, g):
    x, kernel = residuals
    dx = _lax_strided_conv(g, jnp.swapaxes(kernel, -1, -2), strides, padding, precision)
    _, vjp = jax.vjp(
        lambda k: _conv_transpose_phase(x, k, strides, padding, precision, impl), kernel
    )
    return dx.astype(x.dtype), vjp(g)[0]


_conv_transpose_lax.defvjp(_conv_transpose_lax_fwd, _conv_transpose_lax_bwd)


def conv_transpose(
    x: Array,
    kernel: Array,
    strides: Sequence[int],
    padding: Sequence[int],
    precision: Any = None,
    impl: str = "im2col",
) -> Array:
    """Torch-semantics transposed conv (no bias) as phase conv + depth-to-space.

    Per spatial dim with stride s, kernel k, m = ceil(k/s) and full output index z = q*s + r:
    ``y_full[q*s + r] = sum_{j<m} x[q - j] * w[j*s + r]``, a stride-1 correlation of x (padded)
    with the flipped sub-kernel of phase r. Only the phases q that survive the crop of p are
    computed. Where the phase conv is a lax conv (``impl`` 'xla', or 'auto' on such kernels),
    the input gradient is lax's strided conv, the adjoint of this map.
    """
    nd = _check_args("conv_transpose", x, kernel, strides, padding)
    for d in range(nd):
        n, k, s, p = x.shape[1 + d], kernel.shape[d], strides[d], padding[d]
        if (n - 1) * s + k - 2 * p < 1:
            raise ValueError(
                f"conv_transpose: empty output along spatial dim {d} (in={n}, k={k}, s={s}, p={p})"
            )
    strides, padding = tuple(int(s) for s in strides), tuple(int(p) for p in padding)
    m = [-(-k // s) for k, s in zip(kernel.shape[:nd], strides)]
    phase_shape = (*m, kernel.shape[-2], math.prod(strides) * kernel.shape[-1])
    if any(s > 1 for s in strides) and _lax_path(impl, phase_shape):
        return _conv_transpose_lax(x, kernel, strides, padding, precision, impl)
    return _conv_transpose_phase(x, kernel, strides, padding, precision, impl)


def _strided_conv_s2d(
    x: Array, kernel: Array, strides: Sequence[int], padding: Sequence[int], precision: Any,
    impl: str,
) -> Array:
    """The space-to-depth form of :func:`strided_conv` (argument checks done by the caller)."""
    nd = kernel.ndim - 2
    split, m = _split_taps(kernel, strides)
    cin, cout = kernel.shape[-2:]
    perm = [2 * d for d in range(nd)] + [2 * d + 1 for d in range(nd)] + [2 * nd, 2 * nd + 1]
    s2d_kernel = split.transpose(perm).reshape(*m, math.prod(strides) * cin, cout)

    explicit, conv_pads = [], []
    for d in range(nd):
        n, k, s, p, md = x.shape[1 + d], kernel.shape[d], strides[d], padding[d], m[d]
        out_len = (n + 2 * p - k) // s + 1
        if s == 1:  # no space-to-depth along this dim: let the conv pad
            explicit.append((0, 0))
            conv_pads.append((p, p))
        else:
            explicit.append((p, (out_len + md - 1) * s - n - p))
            conv_pads.append((0, 0))
    if any(lo or hi for lo, hi in explicit):
        if any(hi < 0 for _, hi in explicit):
            x = x[
                (
                    slice(None),
                    *(slice(0, x.shape[1 + d] + min(hi, 0)) for d, (_, hi) in enumerate(explicit)),
                )
            ]
        x = jnp.pad(x, [(0, 0)] + [(lo, max(hi, 0)) for lo, hi in explicit] + [(0, 0)])
    x = space_to_depth(x, strides)
    return _conv_stride1(x, s2d_kernel, conv_pads, precision, impl)


# XLA:CPU runs a strided lax convolution forward several times faster than the space-to-depth
# form (which it lowers to a stride-1 conv over prod(s) * C_in channels), but differentiates it
# several times slower (its input gradient is a conv over an s-dilated array). So the forward
# pass is the strided conv and the backward pass is the VJP of the space-to-depth form: the same
# linear map, hence the same gradients (docs/benchmarks.md has the per-layer times).
def _lax_strided_conv(x, kernel, strides, padding, precision):
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=strides,
        padding=[(p, p) for p in padding],
        dimension_numbers=_dimension_numbers(kernel.ndim - 2),
        precision=precision,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _strided_conv_direct(x, kernel, strides, padding, precision, impl):
    del impl  # the backward pass's
    return _lax_strided_conv(x, kernel, strides, padding, precision)


def _strided_conv_direct_fwd(x, kernel, strides, padding, precision, impl):
    return _strided_conv_direct(x, kernel, strides, padding, precision, impl), (x, kernel)


def _strided_conv_direct_bwd(strides, padding, precision, impl, residuals, g):
    x, kernel = residuals
    # The s2d form is linear in each argument, so its VJP never needs its own forward output
    # (XLA drops that computation).
    _, vjp = jax.vjp(
        lambda x, k: _strided_conv_s2d(x, k, strides, padding, precision, impl), x, kernel
    )
    return vjp(g)


_strided_conv_direct.defvjp(_strided_conv_direct_fwd, _strided_conv_direct_bwd)


def strided_conv(
    x: Array,
    kernel: Array,
    strides: Sequence[int],
    padding: Sequence[int],
    precision: Any = None,
    impl: str = "im2col",
) -> Array:
    """Torch-semantics conv (no bias) with stride s, pad p.

    Per dim: ``y[Y] = sum_{j<m, r<s} x_pad[(Y + j)*s + r] * w[j*s + r]`` with m = ceil(k/s):
    a stride-1 correlation over space_to_depth(x_pad) with an m-tap kernel. With ``impl`` 'xla'
    or 'auto' and a stride above 1, the forward pass is lax's strided convolution and only the
    backward pass uses that rearrangement; with 'im2col' both do.
    """
    nd = _check_args("strided_conv", x, kernel, strides, padding)
    for d in range(nd):
        n, k, p = x.shape[1 + d], kernel.shape[d], padding[d]
        if n + 2 * p < k:
            raise ValueError(
                f"strided_conv: input too small along spatial dim {d} (in={n}, k={k}, p={p})"
            )
    strides, padding = tuple(int(s) for s in strides), tuple(int(p) for p in padding)
    if impl in ("xla", "auto") and any(s > 1 for s in strides):
        return _strided_conv_direct(x, kernel, strides, padding, precision, impl)
    return _strided_conv_s2d(x, kernel, strides, padding, precision, impl)


# ---------------------------------------------------------------------------------------------
# Modules.


def _as_tuple(name: str, v: Sequence[int] | int, nd: int) -> tuple[int, ...]:
    if isinstance(v, (int, np.integer)):
        return (int(v),) * nd
    v = tuple(int(a) for a in v)
    if len(v) != nd:
        raise ValueError(f"{name} must have {nd} entries to match kernel_size, got {v}")
    return v


class _PaperConv(nn.Module):
    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int] | int = 1
    padding: Sequence[int] | int = 0
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    impl: str = "im2col"  # see CONV_IMPLS
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros

    def _apply_conv(self, x: Array, fn: Callable) -> Array:
        ks = tuple(int(k) for k in self.kernel_size)
        nd = len(ks)
        strides, padding = (
            _as_tuple("strides", self.strides, nd),
            _as_tuple("padding", self.padding, nd),
        )
        if x.ndim != nd + 2:
            raise ValueError(
                f"{type(self).__name__}: input must be {nd + 2}-d (N, *spatial, C), got shape {x.shape}"
            )
        kernel = self.param(
            "kernel", self.kernel_init, (*ks, x.shape[-1], self.features), self.param_dtype
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = fn(x, kernel, strides, padding, self.precision, self.impl)
        return y + bias if bias is not None else y


class ConvTranspose(_PaperConv):
    """Transposed conv with PyTorch/Chainer semantics: out = (in - 1)*s - 2p + k per spatial dim.

    Computed as a stride-1 conv producing prod(s) phases + depth-to-space.
    Params: 'kernel' (*kernel_size, in, features) = `torch_conv_transpose_weight_to_flax(w)`,
    'bias' (features,). Works on NHWC (2-d kernel) and NDHWC (3-d kernel).
    """

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return self._apply_conv(x, conv_transpose)


class StridedConv(_PaperConv):
    """Conv with torch-style stride s and zero pad p, as space-to-depth + stride-1 conv.

    out = floor((in + 2p - k)/s) + 1. Params: 'kernel' (*kernel_size, in, features) =
    `torch_conv_weight_to_flax(w)`, 'bias' (features,). With stride 1 it is an ordinary conv.
    """

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return self._apply_conv(x, strided_conv)


class ConcatConv1x1(nn.Module):
    """1x1 conv (with bias) over the channel concatenation of `xs`, without concatenating.

    ``sum_i xs[i] @ kernel[0, 0, c_i:c_{i+1}] + bias`` equals ``StridedConv(features, (1, 1))`` on
    ``concatenate(xs, -1)`` with the same 'kernel' (1, 1, sum c_i, features) and 'bias'. The
    concatenation is a fresh copy of every part, which the backward pass keeps as the matmul's
    residual; the per-part matmuls read (and keep) the parts themselves.
    """

    features: int
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, xs: Sequence[Array]) -> Array:
        xs = list(xs)
        if not xs or any(x.shape[:-1] != xs[0].shape[:-1] for x in xs):
            raise ValueError(
                "ConcatConv1x1: need arrays of one shape but the channels, got "
                f"{[x.shape for x in xs]}"
            )
        channels = [x.shape[-1] for x in xs]
        kernel = self.param(
            "kernel", self.kernel_init, (1, 1, sum(channels), self.features), self.param_dtype
        )
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        *xs, kernel, bias = nn.dtypes.promote_dtype(*xs, kernel, bias, dtype=self.dtype)
        offsets = np.cumsum([0] + channels)
        y = sum(
            jnp.einsum("...c,co->...o", x, kernel[0, 0, lo:hi], precision=self.precision)
            for x, lo, hi in zip(xs, offsets[:-1], offsets[1:])
        )
        return y + bias
