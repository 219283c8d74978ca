"""Per-network knowledge in one place: how to build each network from its config, what its
inputs look like, how to initialise it and how inference calls it.

Training tasks, the pipeline, the memory analysis and the benchmarks all go through these
functions, so a network's call signature is written once. Kinds: ``'drtmo'`` (the up/down
exposure networks), ``'cfnet'`` (fusion + super-resolution), ``'response'`` (the camera
response classifier), ``'highlight'`` (the clipped-highlight head), ``'cliplevel'`` (the
per-photo clip-level estimate that bends the merge's linearisation), ``'level'`` (the
per-photo lift of the clipped highlights) and ``'curvechoice'`` (the blind choice of the curve
that linearises a photo of an unknown camera). A bundled network's
name maps to its kind with :func:`kind_of`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from hdr_jax.models import curvechoice, factory, highlight, level

KINDS = ("drtmo", "cfnet", "response", "highlight", "cliplevel", "level", "curvechoice")

Array = Any


def kind_of(name: str) -> str:
    """'drtmo_up' / 'drtmo_down' -> 'drtmo', 'cfnet_x2' / 'cfnet_x4' -> 'cfnet', 'response',
    'highlight', 'cliplevel', 'level' (and 'level_known'), 'curvechoice'."""
    kind = name.split("_", 1)[0]
    if kind not in KINDS:
        raise ValueError(f"unknown network {name!r}; kinds are {KINDS}")
    return kind


def _check(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown network kind {kind!r}; choose from {KINDS}")


def build(kind: str, model: Mapping[str, Any], *, inference: bool = False) -> Any:
    """The Flax module of a `model` config section. ``inference``: the settings the pipeline
    runs with whatever the weights were trained with (no remat, which would also make CF-Net
    run a slower rolled loop; the stride-1 convs that run fastest forward on CPU tiles, 'xla'
    for DrTMO and 'auto' for CF-Net: the same maths as the training settings)."""
    _check(kind)
    m = dict(model)
    if kind == "drtmo":
        if inference:
            m.update(remat=False, conv_impl="xla")
        return factory.make_drtmo(m)
    if kind == "cfnet":
        if inference:
            m.update(remat_policy="none", conv_impl="auto")
        return factory.make_cfnet(m)
    if kind == "highlight":
        return factory.make_highlight(m)
    if kind == "cliplevel":
        return factory.make_cliplevel(m)
    if kind == "level":
        return factory.make_level(m)
    if kind == "curvechoice":
        return factory.make_curvechoice(m)
    return factory.make_response(m)


def example_inputs(kind: str, module: Any, batch: int = 1,
                   size: int | None = None) -> tuple[jax.ShapeDtypeStruct, ...]:
    """Abstract inputs of one call: DrTMO a photo crop (default 2^depth, its smallest input),
    CF-Net the (over, under) LR pair (default 16), the classifier a batch of views (32), the
    highlight head its per-pixel features (:func:`highlight.input_features`, default its
    smallest input), the clip-level estimate a photo (default 32), the lift a batch of photo
    features, the curve choice a batch of photo cues (``size`` unused)."""
    _check(kind)
    if kind == "level":
        return (jax.ShapeDtypeStruct((int(batch), len(level.FEATURES)), jnp.float32),)
    if kind == "curvechoice":
        return (jax.ShapeDtypeStruct((int(batch), len(curvechoice.FEATURES)), jnp.float32),)
    default = {"drtmo": lambda: 2**module.depth, "cfnet": lambda: 16, "response": lambda: 32,
               "highlight": lambda: module.multiple, "cliplevel": lambda: 32}
    s = int(size if size is not None else default[kind]())
    c = highlight.NUM_INPUTS if kind == "highlight" else 3
    x = jax.ShapeDtypeStruct((int(batch), s, s, c), jnp.float32)
    return (x, x) if kind == "cfnet" else (x,)


def init(kind: str, module: Any, rng: jax.Array, *inputs: Array) -> dict:
    """Variables of a freshly initialised network (DrTMO: its dropout stream from ``rng`` too).
    ``inputs``: arrays or `jax.ShapeDtypeStruct`s of one call; only their shapes are used."""
    _check(kind)
    zeros = [jnp.zeros(x.shape, x.dtype) for x in inputs]
    if kind == "drtmo":
        return dict(module.init({"params": rng, "dropout": rng}, *zeros, train=False))
    if kind in ("cfnet", "highlight", "cliplevel", "level", "curvechoice"):
        return dict(module.init(rng, *zeros))
    return dict(module.init(rng, *zeros, train=False))


def abstract_variables(kind: str, module: Any, batch: int = 1, size: int | None = None) -> dict:
    """Shapes and dtypes of the variables (no computation): a template to restore weights into."""
    inputs = example_inputs(kind, module, batch, size)
    return jax.eval_shape(lambda: init(kind, module, jax.random.key(0), *inputs))


def inference(kind: str, module: Any) -> Callable[..., Array]:
    """``f(variables, *inputs)`` as the pipeline calls it: DrTMO the (N, 8, H, W, 3) bracket,
    CF-Net the fused image, the classifier response probabilities, the highlight head its
    outputs (log ratios, curve estimate), the clip-level estimate k per photo, the lift per
    photo, the curve choice its logits per photo."""
    _check(kind)
    if kind == "drtmo":
        return lambda v, x: module.apply(v, x, train=False)
    if kind in ("highlight", "cliplevel", "level"):
        return lambda v, x: module.apply(v, x)
    if kind == "curvechoice":  # the option curves ride beside the parameters
        return lambda v, x: module.apply({"params": v["params"]}, x)
    if kind == "cfnet":
        return lambda v, over, under: module.apply(v, over, under)["fused"]
    return lambda v, x: jax.nn.softmax(
        module.apply({k: v[k] for k in ("params", "batch_stats")}, x, train=False)
    )


def train_batch(kind: str, model: Mapping[str, Any], batch: int,
                size: int) -> dict[str, jax.ShapeDtypeStruct]:
    """The abstract training batch of a task (the grain pipelines' keys the train step reads):
    CF-Net at LR patch ``size``, DrTMO at crop ``size``."""
    f32 = jnp.float32
    s = jax.ShapeDtypeStruct
    b, p = int(batch), int(size)
    if kind == "cfnet":
        hr = p * int(model["scale"])
        lr_img, hr_img = s((b, p, p, 3), f32), s((b, hr, hr, 3), f32)
        return {"over_lr": lr_img, "under_lr": lr_img, "over_hr": hr_img, "under_hr": hr_img,
                "label_hr": hr_img}
    if kind == "drtmo":
        n = int(model.get("num_exposures", 8))
        return {"input": s((b, p, p, 3), f32), "target": s((b, n, p, p, 3), f32),
                "mask": s((b, n), f32)}
    if kind == "highlight":
        img = s((b, p, p, 3), f32)
        return {"photo": img, "linear": img, "reference": img, "clipped": s((b, p, p), f32),
                "known": s((b, 1), f32)}
    _check(kind)
    raise ValueError(f"no training batch is defined for {kind!r} here")
