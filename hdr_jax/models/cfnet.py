"""CF-Net: coupled feedback network for joint exposure fusion and super-resolution (Deng et al., IEEE TIP 2021).

Deng, Zhang, Xu, Gu, Duan, "Deep Coupled Feedback Network for Joint Exposure Fusion and Image
Super-Resolution", IEEE TIP 30, 2021. The architecture follows the public PyTorch code:

* FEB  -- conv 3x3 (C -> 4F) [+ PReLU], conv 1x1 (4F -> F) + PReLU. In the public code the
  under-exposed branch's 3x3 conv has no PReLU (`under_feb_first_act=False` reproduces it).
* SRB  -- 1x1 compress (F -> F), `num_groups` up/down projection groups with dense 1x1
  transitions, 1x1 compress of the G new LR features (G*F -> F). This is the SRFBN feedback block
  without a feedback input.
* CFB t (eq. 8-10) -- like the SRB, but the input is a 1x1 conv over
  concat(F_in own, G_{t-1} own, G_{t-1} other) (3F -> F), and after the 3rd projection group the
  LR feature is re-guided by concat(., G_{t-1} other) and a 1x1 conv (2F -> F). Both branches of
  step t read the other branch's G from step t-1.
* REC  -- transposed conv (F -> F) + PReLU, conv 3x3 (F -> C); a separate one for the SRB output
  and for every CFB output. Each block's image is clamp(REC(G) + bilinear_up(I_lr), -1, 1).
* Fused output: 0.5 * (I_over_T + I_under_T).
* Optional, not in the paper (`chroma_blend` > 0, :func:`restore_chroma`): the fused image keeps
  its luminance, and its chromaticity is blended with the exposure-weighted chromaticity of the two
  SRB images, so bright regions take their colour from the exposure that still holds it.

Every conv has a bias and is followed by a PReLU (one slope, init 0.2) unless noted. Projection
kernel / stride / pad: x2 -> 6 / 2 / 2, x4 -> 8 / 4 / 2. Transposed and strided convs use the
stride-1 rearrangements of `hdr_jax.models.layers` with paper-layout weights.

Parameter count with the defaults equals the public code: 17,048,297 at x2, 28,975,849 at x4.

Value ranges: inputs and outputs are NHWC in [0, 1]. The network itself runs in the public code's
[-1, 1] range (x -> 2x - 1 on the way in, y -> (y + 1)/2 on the way out; the public code returns
(y + 1) * 127.5 instead). The T feedback steps are one `FeedbackStep` module under `nn.scan`
(optionally `nn.remat`), with per-step parameters stacked on a leading axis of length T.

Deviation: with `num_groups < reguide_after` the re-guide conv is never applied, as in the public
code, but its (dead) parameters are then not created here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from hdr_jax.camera import crf
from hdr_jax.models.layers import ConcatConv1x1, ConvTranspose, StridedConv

Array = jax.Array

# scale -> (kernel, stride, pad) of the up/down projections and of REC's transposed conv.
PROJECTION_GEOMETRY: dict[int, tuple[int, int, int]] = {2: (6, 2, 2), 4: (8, 4, 2)}

# Name under which projection outputs are tagged for the 'projections' remat policy.
PROJECTION_TAG = "cfnet_projection"

_JAX_POLICIES = (
    "everything_saveable",
    "nothing_saveable",
    "dots_saveable",
    "checkpoint_dots",
    "dots_with_no_batch_dims_saveable",
    "checkpoint_dots_with_no_batch_dims",
)
REMAT_POLICIES = ("none", "step", "projections") + tuple(
    p for p in _JAX_POLICIES if hasattr(jax.checkpoint_policies, p)
)


def _remat_policy(name: str) -> Callable | None:
    """Policy for `nn.remat`: 'step' saves nothing inside a step; 'projections' keeps the up/down
    projection outputs (the expensive convs) and recomputes 1x1 transitions and PReLUs; other
    names are `jax.checkpoint_policies` attributes (convs are not 'dots' for those)."""
    if name == "step":
        return None
    if name == "projections":
        return jax.checkpoint_policies.save_only_these_names(PROJECTION_TAG)
    return getattr(jax.checkpoint_policies, name)


def _torch_uniform(scale: float) -> Callable:
    """U(-scale, scale): PyTorch's default conv bias init with scale = 1/sqrt(fan_in)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


def upsample_bilinear(x: Array, scale: int) -> Array:
    """Bilinear x`scale` upsampling of NHWC, matching torch `interpolate(mode='bilinear',
    align_corners=False)`: half-pixel centres, edge samples clamped (antialias is inert when
    upsampling)."""
    n, h, w, c = x.shape
    return jax.image.resize(x, (n, h * scale, w * scale, c), "bilinear", antialias=False)


#: Module fields every CF-Net module hands on to the modules it builds: precision and the
#: convolution implementation are set once, on the network.
SHARED_SETTINGS = ("dtype", "param_dtype", "conv_impl", "split_concat")


def _shared_settings(module: nn.Module) -> dict[str, Any]:
    return {name: getattr(module, name) for name in SHARED_SETTINGS}


class PReLU(nn.Module):
    """PReLU with one learned slope (torch `nn.PReLU(num_parameters=1, init=0.2)`)."""

    init_slope: float = 0.2
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        slope = self.param("slope", nn.initializers.constant(self.init_slope), (), self.param_dtype)
        return jnp.where(x >= 0, x, slope.astype(x.dtype) * x)


class ConvBlock(nn.Module):
    """Conv (or transposed conv) with bias and torch-style padding, optionally + PReLU.

    A block also takes a list of arrays meaning their channel concatenation (the dense
    transitions of the public code). With `split_concat` a 1x1 block computes it as
    `ConcatConv1x1` (per-part matmuls, no concatenated copy kept for the backward pass): same
    parameters and values, measured 30% less training memory for CF-Net x4 with bf16 + remat +
    microbatches (6.79 vs 9.75 GiB) but a 20% slower float32 x2 step on XLA:CPU (8.4 vs 6.9 s),
    so it is a memory setting (hdr_jax/memory.py), off by default.
    """

    features: int
    kernel: int
    stride: int = 1
    pad: int | None = None  # None: 'same' padding (k - 1) // 2, as the public ConvBlock
    transpose: bool = False
    act: bool = True
    tag: str | None = None  # checkpoint name of the conv output (for remat policies)
    dtype: Any = None
    param_dtype: Any = jnp.float32
    conv_impl: str = "im2col"  # stride-1 conv implementation (layers.CONV_IMPLS)
    split_concat: bool = False  # dense 1x1 transitions without the concat copy

    @nn.compact
    def __call__(self, x: Array | Sequence[Array]) -> Array:
        pad = (self.kernel - 1) // 2 if self.pad is None else self.pad
        parts = list(x) if isinstance(x, (list, tuple)) else [x]
        # PyTorch default init: U(+-1/sqrt(fan_in)) weights and biases; torch takes a transposed
        # conv's fan_in from its *output* channels.
        in_channels = sum(p.shape[-1] for p in parts)
        fan_in = (self.features if self.transpose else in_channels) * self.kernel**2
        kw = dict(
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.initializers.variance_scaling(
                1.0 / 3.0,
                "fan_in",
                "uniform",
                in_axis=-1 if self.transpose else -2,
                out_axis=-2 if self.transpose else -1,
            ),
            bias_init=_torch_uniform(1.0 / math.sqrt(fan_in)),
            name="conv",
        )
        if len(parts) > 1 and self.split_concat:
            if self.kernel != 1 or self.stride != 1 or self.transpose or pad:
                raise ValueError("ConvBlock: split_concat needs a plain 1x1 conv")
            y = ConcatConv1x1(self.features, **kw)(parts)
        else:
            layer = ConvTranspose if self.transpose else StridedConv
            y = layer(
                self.features,
                (self.kernel, self.kernel),
                (self.stride, self.stride),
                (pad, pad),
                impl=self.conv_impl,
                **kw,
            )(parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1))
        if self.tag is not None:
            y = checkpoint_name(y, self.tag)
        return PReLU(param_dtype=self.param_dtype, name="act")(y) if self.act else y


class FeatureExtractionBlock(nn.Module):
    """FEB: conv 3x3 (C -> 4F) [+ PReLU], conv 1x1 (4F -> F) + PReLU."""

    features: int = 64
    first_act: bool = True  # False reproduces the public code's under-exposed branch
    dtype: Any = None
    param_dtype: Any = jnp.float32
    conv_impl: str = "im2col"  # stride-1 conv implementation (layers.CONV_IMPLS)
    split_concat: bool = False  # dense 1x1 transitions without the concat copy

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kw = _shared_settings(self)
        x = ConvBlock(4 * self.features, 3, act=self.first_act, name="conv_in", **kw)(x)
        return ConvBlock(self.features, 1, name="feat_in", **kw)(x)


class ProjectionGroups(nn.Module):
    """The SRFBN projection groups shared by SRB and CFB (SRFBN, Li et al. CVPR 2019).

    Group g (0-based): 1x1 over all LR features so far (g > 0) -> up projection -> HR feature;
    1x1 over all HR features so far (g > 0) -> down projection -> LR feature; the LR feature of
    group `reguide_after` (1-based) is re-guided with `guide` when given. Output: 1x1 over the G
    new LR features.
    """

    features: int = 64
    num_groups: int = 6
    scale: int = 2
    reguide_after: int = 3
    dtype: Any = None
    param_dtype: Any = jnp.float32
    conv_impl: str = "im2col"  # stride-1 conv implementation (layers.CONV_IMPLS)
    split_concat: bool = False  # dense 1x1 transitions without the concat copy

    @nn.compact
    def __call__(self, x: Array, guide: Array | None = None) -> Array:
        k, s, p = PROJECTION_GEOMETRY[self.scale]
        kw = _shared_settings(self)
        lr, hr = [x], []
        for g in range(self.num_groups):
            h = ConvBlock(self.features, 1, name=f"uptran_{g}", **kw)(lr) if g > 0 else x
            hr.append(
                ConvBlock(
                    self.features, k, s, p, transpose=True, tag=PROJECTION_TAG, name=f"up_{g}", **kw
                )(h)
            )
            l = ConvBlock(self.features, 1, name=f"downtran_{g}", **kw)(hr) if g > 0 else hr[0]
            l = ConvBlock(self.features, k, s, p, tag=PROJECTION_TAG, name=f"down_{g}", **kw)(l)
            if guide is not None and g + 1 == self.reguide_after:
                l = ConvBlock(self.features, 1, name="reguide", **kw)([l, guide])
            lr.append(l)
        return ConvBlock(self.features, 1, name="compress_out", **kw)(lr[1:])


class SuperResolutionBlock(nn.Module):
    """SRB: 1x1 compress (F -> F) + projection groups; G_0 of one branch."""

    features: int = 64
    num_groups: int = 6
    scale: int = 2
    dtype: Any = None
    param_dtype: Any = jnp.float32
    conv_impl: str = "im2col"  # stride-1 conv implementation (layers.CONV_IMPLS)
    split_concat: bool = False  # dense 1x1 transitions without the concat copy

    @nn.compact
    def __call__(self, f_in: Array) -> Array:
        kw = _shared_settings(self)
        x = ConvBlock(self.features, 1, name="compress_in", **kw)(f_in)
        return ProjectionGroups(self.features, self.num_groups, self.scale, name="groups", **kw)(x)


class CoupledFeedbackBlock(nn.Module):
    """CFB (eq. 8-10): G_t = CFB(F_in, G_{t-1} own, G_{t-1} other).

    coupled=False (ablation) drops the other branch: input 1x1 over concat(F_in, G_own), no
    re-guide.
    """

    features: int = 64
    num_groups: int = 6
    scale: int = 2
    coupled: bool = True
    reguide_after: int = 3
    dtype: Any = None
    param_dtype: Any = jnp.float32
    conv_impl: str = "im2col"  # stride-1 conv implementation (layers.CONV_IMPLS)
    split_concat: bool = False  # dense 1x1 transitions without the concat copy

    @nn.compact
    def __call__(self, f_in: Array, g_own: Array, g_other: Array) -> Array:
        kw = _shared_settings(self)
        inputs = [f_in, g_own, g_other] if self.coupled else [f_in, g_own]
        x = ConvBlock(self.features, 1, name="compress_in", **kw)(inputs)
        groups = ProjectionGroups(
            self.features, self.num_groups, self.scale, self.reguide_after, name="groups", **kw
        )
        return groups(x, g_other if self.coupled else None)


class Reconstruction(nn.Module):
    """REC: transposed conv (F -> F) + PReLU, conv 3x3 (F -> C), no activation."""

    features: int = 64
    out_channels: int = 3
    scale: int = 2
    dtype: Any = None
    param_dtype: Any = jnp.float32
    conv_impl: str = "im2col"  # stride-1 conv implementation (layers.CONV_IMPLS)
    split_concat: bool = False  # dense 1x1 transitions without the concat copy

    @nn.compact
    def __call__(self, g: Array) -> Array:
        k, s, p = PROJECTION_GEOMETRY[self.scale]
        kw = _shared_settings(self)
        x = ConvBlock(self.features, k, s, p, transpose=True, name="deconv", **kw)(g)
        return ConvBlock(self.out_channels, 3, act=False, name="conv_out", **kw)(x)


#: Width of the well-exposedness Gaussian of :func:`restore_chroma` (Mertens et al. use 0.2; the
#: wider one was chosen on pairs of the training scenes).
CHROMA_SIGMA = 0.35


def restore_chroma(
    fused: Array, under: Array, over: Array, blend: float, sigma: float = CHROMA_SIGMA
) -> Array:
    """``fused`` (..., H, W, 3) with its Rec. 709 luma Y kept and its chromaticity rgb / Y moved
    a fraction ``blend`` towards that of the exposures ``under`` and ``over``, averaged with
    Mertens-style weights (Mertens, Kautz, Van Reeth 2007, eq. 1-2): HSV saturation times the
    well-exposedness exp(-(Y - 0.5)^2 / (2 sigma^2)). Chroma fused as a weighted average of the
    inputs' follows DeepFuse (Prabhakar et al., ICCV 2017); here it is blended with the
    network's own, and ratios rgb / Y of sRGB values are nearly exposure-invariant (a power law
    scales every channel alike), so a dark exposure lends its colour to a bright fused pixel.
    All in [0, 1]; the result is clipped to [0, 1]."""
    eps = 1e-3
    weights, chroma = [], []
    for img in (under, over):
        img = jnp.clip(img, 0.0, 1.0)
        y = crf.luminance(img)
        hi, lo = jnp.max(img, axis=-1), jnp.min(img, axis=-1)
        sat = (hi - lo) / jnp.maximum(hi, eps)
        well = jnp.exp(-jnp.square(y - 0.5) / (2.0 * sigma**2))
        weights.append(jnp.maximum(sat, eps) * well + 1e-6)
        chroma.append(img / jnp.maximum(y, eps)[..., None])
    w = jnp.stack(weights)
    source = jnp.sum((w / jnp.sum(w, axis=0))[..., None] * jnp.stack(chroma), axis=0)
    y = crf.luminance(fused)
    own = fused / jnp.maximum(y, eps)[..., None]
    return jnp.clip(y[..., None] * (blend * source + (1.0 - blend) * own), 0.0, 1.0)


def _residual_image(res: Array, up: Array) -> Array:
    """clamp(REC(G) + bilinear_up(I_lr), -1, 1) in float32 (as the public code)."""
    return jnp.clip(res.astype(jnp.float32) + up, -1.0, 1.0)


class FeedbackStep(nn.Module):
    """One feedback step t for both branches: CFB_over, CFB_under, REC_over, REC_under.

    carry = (G_over, G_under) of step t-1; returns the new carry and the two step images in
    [-1, 1].
    """

    features: int = 64
    num_groups: int = 6
    scale: int = 2
    out_channels: int = 3
    coupled: bool = True
    reguide_after: int = 3
    dtype: Any = None
    param_dtype: Any = jnp.float32
    conv_impl: str = "im2col"  # stride-1 conv implementation (layers.CONV_IMPLS)
    split_concat: bool = False  # dense 1x1 transitions without the concat copy

    @nn.compact
    def __call__(
        self,
        carry: tuple[Array, Array],
        f_over: Array,
        f_under: Array,
        up_over: Array,
        up_under: Array,
    ) -> tuple[tuple[Array, Array], tuple[Array, Array]]:
        g_over, g_under = carry
        kw = _shared_settings(self)
        cfb = dict(
            features=self.features,
            num_groups=self.num_groups,
            scale=self.scale,
            coupled=self.coupled,
            reguide_after=self.reguide_after,
            **kw,
        )
        rec = dict(features=self.features, out_channels=self.out_channels, scale=self.scale, **kw)
        new_over = CoupledFeedbackBlock(**cfb, name="cfb_over")(f_over, g_over, g_under)
        new_under = CoupledFeedbackBlock(**cfb, name="cfb_under")(f_under, g_under, g_over)
        # keep the scan carry's dtype fixed across steps
        new_over, new_under = new_over.astype(g_over.dtype), new_under.astype(g_under.dtype)
        img_over = _residual_image(Reconstruction(**rec, name="rec_over")(new_over), up_over)
        img_under = _residual_image(Reconstruction(**rec, name="rec_under")(new_under), up_under)
        return (new_over, new_under), (img_over, img_under)


class CFNet(nn.Module):
    """CF-Net (Deng et al. 2021). `__call__(over_lr, under_lr)`, NHWC in [0, 1], returns a dict:

    'srb_over', 'srb_under': (N, sH, sW, C) SRB outputs; 'steps_over', 'steps_under':
    (T, N, sH, sW, C) CFB outputs per step; 'fused': (N, sH, sW, C) = 0.5 * (last over + last
    under), with ``chroma_blend`` > 0 then :func:`restore_chroma` against the SRB images. All
    float32 in [0, 1].
    """

    features: int = 64
    num_groups: int = 6
    num_steps: int = 3
    scale: int = 2
    in_channels: int = 3
    shared_step_weights: bool = False  # ablation: one CFB pair + REC pair for all steps
    coupled: bool = True  # ablation: False drops the cross-branch inputs
    remat_policy: str = "none"  # one of REMAT_POLICIES
    under_feb_first_act: bool = False  # public-code quirk (see FeatureExtractionBlock)
    reguide_after: int = 3
    dtype: Any = jnp.float32  # compute dtype
    param_dtype: Any = jnp.float32
    conv_impl: str = "im2col"  # stride-1 conv implementation (layers.CONV_IMPLS)
    split_concat: bool = False  # dense 1x1 transitions without the concat copy
    # Feedback steps as a rolled loop (None: rolled exactly when remat is on). XLA:CPU schedules
    # the recomputation of an unrolled loop early, which keeps every step's activations alive
    # and undoes remat (measured: same peak as no remat); a rolled loop recomputes step t inside
    # backward iteration t. Rolled loops run ~5x slower on XLA:CPU (docs/benchmarks.md), so
    # no-remat training stays unrolled.
    unroll_steps: bool | None = None
    # Fraction of the fused chromaticity taken from the exposures (restore_chroma); 0 = the
    # paper's output. No parameters: it applies to any trained weights.
    chroma_blend: float = 0.0

    def step_config(self) -> dict[str, Any]:
        """Constructor kwargs of the `FeedbackStep` that is scanned."""
        return {
            "features": self.features,
            "num_groups": self.num_groups,
            "scale": self.scale,
            "out_channels": self.in_channels,
            "coupled": self.coupled,
            "reguide_after": self.reguide_after,
            **_shared_settings(self),
        }

    def setup(self) -> None:
        if self.scale not in PROJECTION_GEOMETRY:
            raise ValueError(
                f"CFNet: scale must be one of {sorted(PROJECTION_GEOMETRY)}, got {self.scale}"
            )
        if self.num_steps < 1 or self.num_groups < 1 or self.features < 1:
            raise ValueError("CFNet: features, num_groups and num_steps must be >= 1")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(
                f"CFNet: remat_policy must be one of {REMAT_POLICIES}, got {self.remat_policy!r}"
            )
        kw = _shared_settings(self)
        rec = dict(features=self.features, out_channels=self.in_channels, scale=self.scale, **kw)

        srb_cls, step_cls = SuperResolutionBlock, FeedbackStep
        if self.remat_policy != "none":
            policy = _remat_policy(self.remat_policy)
            srb_cls = nn.remat(SuperResolutionBlock, policy=policy)
            step_cls = nn.remat(FeedbackStep, policy=policy)

        self.feb_over = FeatureExtractionBlock(self.features, first_act=True, **kw)
        self.feb_under = FeatureExtractionBlock(
            self.features, first_act=self.under_feb_first_act, **kw
        )
        self.srb_over = srb_cls(self.features, self.num_groups, self.scale, **kw)
        self.srb_under = srb_cls(self.features, self.num_groups, self.scale, **kw)
        self.rec_srb_over = Reconstruction(**rec)
        self.rec_srb_under = Reconstruction(**rec)
        shared = self.shared_step_weights
        self.steps = nn.scan(
            step_cls,
            variable_axes={} if shared else {"params": 0},
            variable_broadcast="params" if shared else False,
            split_rngs={"params": not shared},
            in_axes=(nn.broadcast,) * 4,
            length=self.num_steps,
            unroll=self.remat_policy == "none" if self.unroll_steps is None else self.unroll_steps,
        )(**self.step_config())

    def _check_inputs(self, over_lr: Array, under_lr: Array) -> None:
        if over_lr.ndim != 4 or over_lr.shape != under_lr.shape:
            raise ValueError(
                f"CFNet: need two NHWC images of equal shape, got {over_lr.shape} and {under_lr.shape}"
            )
        if over_lr.shape[-1] != self.in_channels:
            raise ValueError(
                f"CFNet: expected {self.in_channels} channels, got {over_lr.shape[-1]}"
            )

    def prologue(self, over_lr: Array, under_lr: Array) -> dict[str, Array]:
        """Everything before the feedback steps, in the network's [-1, 1] range: FEB features
        'f_*', SRB features 'g_*', upsampled inputs 'up_*', SRB images 'srb_*'."""
        self._check_inputs(over_lr, under_lr)
        over = 2.0 * jnp.asarray(over_lr, jnp.float32) - 1.0
        under = 2.0 * jnp.asarray(under_lr, jnp.float32) - 1.0
        out = {
            "up_over": upsample_bilinear(over, self.scale),
            "up_under": upsample_bilinear(under, self.scale),
        }
        out["f_over"], out["f_under"] = self.feb_over(over), self.feb_under(under)
        out["g_over"], out["g_under"] = self.srb_over(out["f_over"]), self.srb_under(out["f_under"])
        out["srb_over"] = _residual_image(self.rec_srb_over(out["g_over"]), out["up_over"])
        out["srb_under"] = _residual_image(self.rec_srb_under(out["g_under"]), out["up_under"])
        return out

    def __call__(self, over_lr: Array, under_lr: Array) -> dict[str, Array]:
        pre = self.prologue(over_lr, under_lr)
        _, (steps_over, steps_under) = self.steps(
            (pre["g_over"], pre["g_under"]),
            pre["f_over"],
            pre["f_under"],
            pre["up_over"],
            pre["up_under"],
        )

        def to_unit(y: Array) -> Array:
            return 0.5 * (y + 1.0)

        steps_over, steps_under = to_unit(steps_over), to_unit(steps_under)
        srb_over, srb_under = to_unit(pre["srb_over"]), to_unit(pre["srb_under"])
        fused = 0.5 * (steps_over[-1] + steps_under[-1])
        if self.chroma_blend:
            fused = restore_chroma(fused, srb_under, srb_over, self.chroma_blend)
        return {
            "srb_over": srb_over,
            "srb_under": srb_under,
            "steps_over": steps_over,
            "steps_under": steps_under,
            "fused": fused,
        }
