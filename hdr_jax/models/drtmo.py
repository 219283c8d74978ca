"""DrTMO stage-1 exposure-bracket networks (Endo et al., ACM TOG 2017, public Chainer code).

One architecture, two trained instances: the up-exposure and the down-exposure network differ only
in their training targets. An LDR image x of shape (N, H, W, 3) in [0, 1] goes in; N_exp = 8 LDR
images at successive exposure steps come out as an NDHWC bracket (N, 8, H, W, 3) in (0, 1).

Architecture (per the public Chainer code; L = depth = ``len(widths_encoder)``, 9 in the paper):

- Encoder: L 2D convs, kernel 4, stride 2, pad 1 (torch/Chainer semantics). Layer 1 is
  conv -> leaky ReLU(0.2); layers 2..L are conv -> BN -> leaky ReLU(0.2). A 512^2 input reaches 1^2.
- Decoder: L transposed 3D convs on (exposure, H, W). Layers 1-3: kernel (4,4,4), stride (2,2,2),
  pad 1, so the exposure axis grows 1 -> 2 -> 4 -> 8 while H, W double; layers 4..L: kernel
  (3,4,4), stride (1,2,2), pad 1. Layers 1..L-1: deconv -> BN -> dropout(0.5, layers 1-3, train
  only) -> ReLU, then the U-Net skip: the encoder feature with the same H, W (encoder layer L-k
  after decoder layer k, post-activation) gets an exposure axis, is replicated along it and
  concatenated after the decoder channels. Layer L: deconv to 3 channels, no BN, no activation.
- Residual unit: ``out = sigmoid(last(h) + x[:, None])`` (x broadcast over the exposures, added
  before the sigmoid). The sum and the sigmoid are computed in float32 whatever the compute dtype;
  the output is float32.
- Init: conv/deconv weights N(0, 0.02), biases 0; BN gamma = 1, beta = 0 (Chainer defaults).

Because the decoder's first three layers each double the exposure axis, the 3D decoder produces
exactly 2^3 = 8 exposures (``num_exposures`` must be 8). The 2D-decoder ablation
(``decoder_3d=False``) uses 2D transposed convs (kernel 4, stride 2, pad 1) throughout and a last
layer with ``num_exposures * 3`` channels, read as (exposure, RGB) -- channel ``3 * d + c`` is
exposure d, colour c -- so any ``num_exposures`` works there.

Batch norm (:class:`BatchNorm`, Chainer semantics: decay 0.9 == flax momentum 0.9, epsilon 2e-5,
running variance updated with the unbiased batch variance, statistics in float32). Three modes:

- ``train=True``: batch statistics; running averages updated, so call
  ``model.apply(v, x, train=True, rngs={'dropout': key}, mutable=['batch_stats'])``.
- ``train=False`` and ``bn_use_running_average_at_inference=False`` (default, as the public code
  which runs Chainer at inference with batch statistics, batch 1): normalise by the statistics of
  the current batch, *without* touching ``batch_stats``.
- ``train=False`` and ``bn_use_running_average_at_inference=True``: running averages.

Either inference mode is a plain ``model.apply(v, x, train=False)``: no ``mutable``, no rngs.
Caveat of the public-code mode: at batch 1 a 1x1 bottleneck has one value per channel, so encoder
layer L's BN maps it to beta whatever the input; the image then reaches the decoder only through
the skips.

Input size: H and W must be divisible by 2^L (512 at the paper's depth 9). Use
:func:`pad_to_multiple` to reflect-pad and crop back, or a shallower preset
(``width_preset(name, depth=6)`` takes 64x64 inputs; a training crop of
size 2^k needs ``depth <= k``).

Parameter count. Counted: every conv/deconv kernel and bias plus BN scale and bias (the ``params``
collection); the BN running mean/var (``batch_stats``) are not counted. With encoder widths c_1..c_L
(c_0 = 3), decoder widths d_1..d_{L-1} and d_L = 3, decoder input widths a_1 = c_L and
a_k = d_{k-1} + c_{L-k+1} for k >= 2, kernel volumes V_k = 64 (k <= 3) or 48 (k > 3)::

    sum_i (16 c_{i-1} + 1) c_i            encoder kernels + biases
  + sum_{i>=2} 2 c_i                      encoder BN
  + sum_k (V_k a_k + 1) d_k               decoder kernels + biases
  + sum_{k<L} 2 d_k                       decoder BN

Paper widths: encoder kernels 23,727,104 + decoder kernels 150,751,232 = 174,478,336 weights
(the paper's "about 174.5 M"), plus 6,531 biases and 12,928 BN scale/bias = 174,497,795.
Halved widths ('half'): 43,634,691. Both are pinned in ``tests/test_drtmo.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from hdr_jax.camera import crf as crf_lib
from hdr_jax.camera.exposure import TAU
from hdr_jax.models.layers import ConvTranspose, StridedConv

Array = jax.Array
Dtype = Any

#: Number of leading decoder layers that double the exposure axis (1 -> 2 -> 4 -> 8).
NUM_EXPOSURE_DOUBLINGS = 3
#: Decoder layers (1-based, <=) that apply dropout in training.
NUM_DROPOUT_LAYERS = 3

_REMAT_POLICIES = (
    "checkpoint_dots",
    "checkpoint_dots_with_no_batch_dims",
    "dots_saveable",
    "dots_with_no_batch_dims_saveable",
    "everything_saveable",
    "nothing_saveable",
)

# Encoder widths of the first layers; deeper layers repeat the last one (as 512 in the paper).
_PRESETS: dict[str, tuple[tuple[int, ...], int]] = {
    "paper": ((64, 128, 256, 512), 9),
    "half": ((32, 64, 128, 256), 9),  # every paper width halved
    "cpu": ((16, 32, 64, 128), 9),
    "tiny": ((4, 8, 16, 16), 5),  # tests: 32x32 inputs
}

_conv_init = nn.initializers.normal(stddev=0.02)


def width_preset(name: str, depth: int | None = None) -> dict[str, tuple[int, ...]]:
    """Widths for :class:`ExposureBracketNet` as keyword arguments.

    'paper' (the public code's widths), 'half' (every width halved), 'cpu' and 'tiny' (small CPU variants).
    ``depth`` (>= 3) sets the number of encoder/decoder layers; default 9 ('tiny': 5). The decoder
    widths mirror the encoder: ``widths_decoder = reversed(widths_encoder[:-1])``.
    """
    if name not in _PRESETS:
        raise ValueError(f"unknown width preset {name!r}; expected one of {sorted(_PRESETS)}")
    head, default_depth = _PRESETS[name]
    depth = default_depth if depth is None else depth
    if depth < NUM_EXPOSURE_DOUBLINGS:
        raise ValueError(f"depth must be >= {NUM_EXPOSURE_DOUBLINGS}, got {depth}")
    enc = tuple(head[min(i, len(head) - 1)] for i in range(depth))
    return {"widths_encoder": enc, "widths_decoder": tuple(reversed(enc[:-1]))}


def pad_to_multiple(x: Array, multiple: int) -> tuple[Array, Callable[[Array], Array]]:
    """Reflect-pad H, W (axes -3, -2) up to a multiple; return the padded array and a crop function.

    The padding is split evenly (extra pixel at the bottom/right). ``crop_fn`` takes any array whose
    axes -3, -2 are the padded H, W -- the NHWC input or the NDHWC bracket -- and cuts them back.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    if x.ndim < 3:
        raise ValueError(f"expected (..., H, W, C), got shape {x.shape}")
    h, w = x.shape[-3], x.shape[-2]
    ph, pw = -h % multiple, -w % multiple
    if (ph and h < 2) or (pw and w < 2):
        raise ValueError(f"cannot reflect-pad a spatial size of 1 (shape {x.shape})")
    top, left = ph // 2, pw // 2
    pad_width = [(0, 0)] * (x.ndim - 3) + [(top, ph - top), (left, pw - left), (0, 0)]
    padded = jnp.pad(x, pad_width, mode="reflect") if (ph or pw) else x

    def crop_fn(y: Array) -> Array:
        return y[..., top : top + h, left : left + w, :]

    return padded, crop_fn


class BatchNorm(nn.Module):
    """Chainer-semantics batch norm over all axes but the last (``chainer.links.BatchNormalization``).

    Variables match ``flax.linen.BatchNorm``: params ``scale``, ``bias``; batch_stats ``mean``,
    ``var``. ``mode``: 'train' (batch statistics, update the running averages), 'batch' (batch
    statistics, no update: needs no mutable collection), 'running' (running averages).
    """

    momentum: float = 0.9  # Chainer decay
    epsilon: float = 2e-5  # Chainer default
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, mode: str) -> Array:
        if mode not in ("train", "batch", "running"):
            raise ValueError(f"mode must be 'train', 'batch' or 'running', got {mode!r}")
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))

        xf = x.astype(jnp.float32)
        if mode == "running":
            mean, var = ra_mean.value, ra_var.value
        else:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(xf, axes)
            var = jnp.var(xf, axes)
            if mode == "train" and not self.is_initializing():
                if not self.is_mutable_collection("batch_stats"):
                    raise ValueError("train=True updates batch norm: pass mutable=['batch_stats']")
                m = x.size // c
                unbiased = var * (m / max(m - 1, 1))  # Chainer keeps the unbiased running variance
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * unbiased
        y = (xf - mean) * jax.lax.rsqrt(var + self.epsilon)
        y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
        return y.astype(self.dtype or x.dtype)


class _EncoderBlock(nn.Module):
    """conv(k4, s2, p1) [-> BN] -> leaky ReLU(0.2)."""

    features: int
    use_bn: bool
    bn_mode: str
    dtype: Dtype
    param_dtype: Dtype
    conv_impl: str = "im2col"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        h = StridedConv(
            self.features,
            kernel_size=(4, 4),
            strides=(2, 2),
            padding=(1, 1),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=_conv_init,
            impl=self.conv_impl,
            name="conv",
        )(x)
        if self.use_bn:
            h = BatchNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="bn")(
                h, mode=self.bn_mode
            )
        return nn.leaky_relu(h, negative_slope=0.2)


class _DecoderBlock(nn.Module):
    """deconv [-> BN -> dropout -> ReLU] (the bracketed part absent on the last layer)."""

    features: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: tuple[int, ...]
    last: bool
    dropout_rate: float
    train: bool
    bn_mode: str
    dtype: Dtype
    param_dtype: Dtype
    zero_init: bool = False
    conv_impl: str = "im2col"

    @nn.compact
    def __call__(self, h: Array) -> Array:
        h = ConvTranspose(
            self.features,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.initializers.zeros if self.zero_init else _conv_init,
            impl=self.conv_impl,
            name="deconv",
        )(h)
        if self.last:
            return h
        h = BatchNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="bn")(
            h, mode=self.bn_mode
        )
        if self.dropout_rate > 0:
            h = nn.Dropout(self.dropout_rate, deterministic=not self.train)(h)
        return nn.relu(h)


class ExposureBracketNet(nn.Module):
    """DrTMO bracket generator (Endo et al. 2017): (N, H, W, 3) in [0, 1] -> (N, D, H, W, 3) in (0, 1).

    See the module docstring for the architecture, batch-norm modes and parameter count.
    ``use_skips``, ``use_residual`` and ``decoder_3d`` are ablation switches (paper: all True).
    ``remat``: False, True (save nothing) or a ``jax.checkpoint_policies`` name; it wraps every
    encoder/decoder layer in ``nn.remat`` and leaves the parameter tree unchanged.
    """

    widths_encoder: Sequence[int] = (64, 128, 256, 512, 512, 512, 512, 512, 512)
    widths_decoder: Sequence[int] = (512, 512, 512, 512, 512, 256, 128, 64)
    num_exposures: int = 8
    use_skips: bool = True
    use_residual: bool = True
    residual_base: str = "input"  # 'input' (paper) or 'naive' (see _residual_base)
    exposure_sign: int = 1  # +1 up-exposure, -1 down-exposure (used by residual_base='naive')
    tau: float = TAU
    decoder_3d: bool = True
    bn_use_running_average_at_inference: bool = False
    dropout_rate: float = 0.5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool | str = False
    # Stride-1 conv implementation (layers.CONV_IMPLS): 'im2col' trains fastest on XLA:CPU;
    # 'xla' does not copy the input per kernel tap (the full-resolution 3D layers' im2col
    # patches dominate the training memory).
    conv_impl: str = "im2col"

    @property
    def depth(self) -> int:
        return len(self.widths_encoder)

    def _check_config(self) -> None:
        depth = self.depth
        if depth < NUM_EXPOSURE_DOUBLINGS:
            raise ValueError(f"need >= {NUM_EXPOSURE_DOUBLINGS} encoder layers, got {depth}")
        if len(self.widths_decoder) != depth - 1:
            raise ValueError(
                f"len(widths_decoder) must be len(widths_encoder) - 1 = {depth - 1}, "
                f"got {len(self.widths_decoder)}"
            )
        if self.decoder_3d and self.num_exposures != 2**NUM_EXPOSURE_DOUBLINGS:
            raise ValueError(
                f"the 3D decoder doubles the exposure axis {NUM_EXPOSURE_DOUBLINGS} times, so "
                f"num_exposures must be {2**NUM_EXPOSURE_DOUBLINGS}, got {self.num_exposures}"
            )
        if self.num_exposures < 1:
            raise ValueError(f"num_exposures must be >= 1, got {self.num_exposures}")
        if isinstance(self.remat, str) and self.remat not in _REMAT_POLICIES:
            raise ValueError(
                f"unknown remat policy {self.remat!r}; expected one of {_REMAT_POLICIES}"
            )

    def _wrap(self, cls: type[nn.Module]) -> type[nn.Module]:
        if self.remat is False or self.remat is None:
            return cls
        policy = None if self.remat is True else getattr(jax.checkpoint_policies, self.remat)
        return nn.remat(cls, policy=policy)

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        self._check_config()
        depth = self.depth
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected an NHWC RGB image (N, H, W, 3), got shape {x.shape}")
        n, height, width, _ = x.shape
        mult = 2**depth
        if height % mult or width % mult:
            raise ValueError(
                f"H, W = {height}, {width} must be divisible by 2^depth = {mult}; "
                "use pad_to_multiple or a shallower width_preset depth"
            )
        if train:
            bn_mode = "train"
        else:
            bn_mode = "running" if self.bn_use_running_average_at_inference else "batch"
        common = {"dtype": self.dtype, "param_dtype": self.param_dtype, "conv_impl": self.conv_impl}

        enc_cls = self._wrap(_EncoderBlock)
        feats = []
        h = x.astype(self.dtype)
        for i, c in enumerate(self.widths_encoder):
            h = enc_cls(c, use_bn=i > 0, bn_mode=bn_mode, name=f"enc{i + 1}", **common)(h)
            feats.append(h)

        dec_cls = self._wrap(_DecoderBlock)
        out_channels = 3 if self.decoder_3d else 3 * self.num_exposures
        widths = tuple(self.widths_decoder) + (out_channels,)
        if self.decoder_3d:
            h = h[:, None]  # bottleneck gets an exposure axis of length 1
        for k, c in enumerate(widths, start=1):
            last = k == depth
            if self.decoder_3d:
                doubling = k <= NUM_EXPOSURE_DOUBLINGS
                geom = {
                    "kernel_size": (4, 4, 4) if doubling else (3, 4, 4),
                    "strides": (2, 2, 2) if doubling else (1, 2, 2),
                    "padding": (1, 1, 1),
                }
            else:
                geom = {"kernel_size": (4, 4), "strides": (2, 2), "padding": (1, 1)}
            h = dec_cls(
                c,
                last=last,
                # With the naive residual base a zero last layer starts exactly at the naive
                # bracket; N(0, 0.02) weights would add logit noise of std ~0.8 there.
                zero_init=last and self.use_residual and self.residual_base == "naive",
                dropout_rate=self.dropout_rate if k <= NUM_DROPOUT_LAYERS else 0.0,
                train=train,
                bn_mode=bn_mode,
                name=f"dec{k}",
                **geom,
                **common,
            )(h)
            if self.use_skips and not last:
                skip = feats[depth - 1 - k]
                if self.decoder_3d:
                    skip = jnp.broadcast_to(skip[:, None], h.shape[:-1] + skip.shape[-1:])
                h = jnp.concatenate([h, skip], axis=-1)

        h = h.astype(jnp.float32)
        if not self.decoder_3d:
            h = h.reshape(n, height, width, self.num_exposures, 3).transpose(0, 3, 1, 2, 4)
        if self.use_residual:
            h = h + self._residual_base(x.astype(jnp.float32))
        return jax.nn.sigmoid(h)

    def _residual_base(self, x: Array) -> Array:
        """What the last layer's output is added to before the sigmoid, (N, D, H, W, 3).

        'input' (paper): the input image itself. 'naive': the logit of the naive exposure change
        of the input (sRGB linearisation, times tau^(+-k), sRGB again, clipped), so that a zero
        last layer predicts exactly the naive bracket and the network learns only the correction
        (hallucinated highlights/shadows, the true response). Not in the paper: it lets small
        CPU-trained networks start from, and improve on, the naive baseline.
        """
        if self.residual_base == "input":
            return x[:, None]
        if self.residual_base != "naive":
            raise ValueError(
                f"residual_base must be 'input' or 'naive', got {self.residual_base!r}"
            )
        steps = jnp.arange(1, self.num_exposures + 1, dtype=jnp.float32) * self.exposure_sign
        gain = (self.tau**steps)[None, :, None, None, None]
        enc = crf_lib.srgb_encode(crf_lib.srgb_decode(x)[:, None] * gain)
        # Clipped values would have infinite logits; 1e-3 keeps them within reach of the net.
        enc = jnp.clip(enc, 1e-3, 1.0 - 1e-3)
        return jnp.log(enc) - jnp.log1p(-enc)


class UpExposureNet(ExposureBracketNet):
    """Up-exposure instance: targets are the next 8 brighter images (DrTMO eq. 3)."""


class DownExposureNet(ExposureBracketNet):
    """Down-exposure instance: targets are the next 8 darker images (DrTMO eq. 4)."""
