"""Builds the Flax modules from the `model` section of a config (training configs and weight
manifests share it, so exported weights always rebuild the module they were trained with)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from hdr_jax.models import cfnet, cliplevel, curvechoice, drtmo, highlight, level, response


def _get(m: Mapping[str, Any], key: str, default: Any) -> Any:
    value = m.get(key, default)
    return default if value is None else value


def make_drtmo(m: Mapping[str, Any]) -> drtmo.ExposureBracketNet:
    preset = drtmo.width_preset(m["width"], depth=m.get("depth"))
    return drtmo.ExposureBracketNet(
        **preset,
        num_exposures=_get(m, "num_exposures", 8),
        use_skips=_get(m, "use_skips", True),
        use_residual=_get(m, "use_residual", True),
        residual_base=_get(m, "residual_base", "input"),
        exposure_sign=-1 if m.get("direction") == "down" else 1,
        decoder_3d=_get(m, "decoder_3d", True),
        bn_use_running_average_at_inference=_get(m, "bn_use_running_average_at_inference", False),
        dropout_rate=_get(m, "dropout_rate", 0.5),
        dtype=jnp.dtype(_get(m, "dtype", "float32")),
        remat=_get(m, "remat", False),
        conv_impl=_get(m, "conv_impl", "im2col"),
    )


def make_response(
    m: Mapping[str, Any], num_responses: int | None = None
) -> response.ResponseClassifier:
    """``m``: the model config (``hidden``; ``num_responses`` is stored in exported manifests)."""
    k = num_responses if num_responses is not None else m["num_responses"]
    return response.ResponseClassifier(num_responses=int(k), hidden=tuple(m.get("hidden", (64,))))


def make_cfnet(m: Mapping[str, Any]) -> cfnet.CFNet:
    return cfnet.CFNet(
        features=m["features"],
        num_groups=m["num_groups"],
        num_steps=m["num_steps"],
        scale=m["scale"],
        shared_step_weights=_get(m, "shared_step_weights", False),
        coupled=_get(m, "coupled", True),
        remat_policy=_get(m, "remat_policy", "none"),
        dtype=jnp.dtype(_get(m, "dtype", "float32")),
        conv_impl=_get(m, "conv_impl", "auto"),  # older manifests: same maths, see layers.py
        unroll_steps=m.get("unroll_steps"),
        split_concat=_get(m, "split_concat", False),
        chroma_blend=float(_get(m, "chroma_blend", 0.0)),  # older manifests: the paper's output
    )


def make_highlight(m: Mapping[str, Any]) -> highlight.HighlightNet:
    return highlight.HighlightNet(features=tuple(int(f) for f in m["features"]),
                                  estimate_curve=bool(_get(m, "estimate_curve", True)))


def make_cliplevel(m: Mapping[str, Any]) -> cliplevel.ClipLevelNet:
    return cliplevel.ClipLevelNet(features=tuple(int(f) for f in m["features"]),
                                  members=int(_get(m, "members", 2)),
                                  ceiling=None if m.get("ceiling") is None else float(m["ceiling"]),
                                  offset=float(_get(m, "offset", 0.0)))


def _standardisation(m: Mapping[str, Any], n: int, kind: str) -> tuple[tuple, tuple]:
    """(mean, scale) of a linear model's ``n`` standardised features."""
    mean, scale = tuple(float(v) for v in m["mean"]), tuple(float(v) for v in m["scale"])
    if len(mean) != n or len(scale) != n or min(scale) <= 0:
        raise ValueError(f"{kind}: need {n} feature means and positive scales")
    return mean, scale


def make_level(m: Mapping[str, Any]) -> level.LevelNet:
    mean, scale = _standardisation(m, len(level.FEATURES), "level")
    return level.LevelNet(mean=mean, scale=scale, bias_init=float(_get(m, "bias_init", 0.0)))


def make_curvechoice(m: Mapping[str, Any]) -> curvechoice.CurveChoiceNet:
    mean, scale = _standardisation(m, len(curvechoice.FEATURES), "curvechoice")
    return curvechoice.CurveChoiceNet(mean=mean, scale=scale, num_options=int(m["num_options"]))
