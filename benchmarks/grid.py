"""The benchmark grid: which training settings of which network are compiled and timed.

A setting is a set of config overrides (`hdr_jax.memory.cfnet_settings` / `drtmo_settings`, the
same vocabulary as the memory chooser's candidates); a row is a network at one input size and
batch with the settings to compile (``train``/``infer``) and to time (``timed``).
"""

from __future__ import annotations

from typing import Any

from experiments.configs import cfnet as cfnet_configs
from experiments.configs import drtmo as drtmo_configs
from hdr_jax import memory

_cf, _dr = memory.cfnet_settings, memory.drtmo_settings
CFNET_VARIANTS = {
    "im2col": _cf("im2col"),
    "auto": _cf("auto"),
    "xla": _cf("xla"),
    "xla+remat": _cf("xla", "step"),
    "xla+remat-save": _cf("xla", "projections"),  # keeps the projection outputs
    "xla+remat+bf16": _cf("xla", "step", "bfloat16"),
}
DRTMO_VARIANTS = {
    "im2col": _dr("im2col"),
    "xla": _dr("xla"),
    "xla+remat": _dr("xla", True),
    "xla+remat-save": _dr("xla", "dots_saveable"),  # keeps the matmul outputs
    "xla+bf16": _dr("xla", False, "bfloat16"),
}
# The variant the CF-Net training config uses by default (timed at x4 too).
CFNET_DEFAULT = cfnet_configs.get_config("").model.conv_impl


def inference_variant(net: str, name: str) -> tuple[str, dict]:
    """Inference settings of a training variant: remat and the optimiser do not matter there,
    the conv implementation and compute dtype do."""
    model = (CFNET_VARIANTS if net == "cfnet" else DRTMO_VARIANTS)[name]["model"]
    key = f"{model['conv_impl']}+{model['dtype']}"
    remat = {"remat_policy": "none"} if net == "cfnet" else {"remat": False}
    return key, {"model": {**model, **remat}}


def rolled(net: str, name: str) -> bool:
    """CF-Net with remat runs its feedback steps as a rolled loop, whose body XLA's cost analysis
    counts once: no FLOP count for those rows."""
    return net == "cfnet" and CFNET_VARIANTS[name]["model"]["remat_policy"] != "none"


def cfnet_config(scale: int, steps: int, quick: bool) -> Any:
    cfg = cfnet_configs.get_config(f"x{scale}" + (",tiny" if quick else ""))
    cfg.model.num_steps = steps
    if quick:  # the smallest graph: XLA:CPU compile time grows with the number of layers
        cfg.model.update(features=4, num_groups=1)
    return cfg


def drtmo_config(width: str, depth: int, quick: bool) -> Any:
    cfg = drtmo_configs.get_config("up,tiny" if quick else f"up,{width}")
    cfg.model.width, cfg.model.depth = width, depth
    return cfg


def plan(quick: bool, grid: str, timing: bool) -> list[dict]:
    """Rows to measure: each has the config, input, and which variants to compile / time."""
    rows = []
    all_v = list(CFNET_VARIANTS)
    if quick:
        rows.append(
            {
                "net": "cfnet",
                "label": "x2 tiny",
                "config": cfnet_config(2, 2, True),
                "scale": 2,
                "size": 8,
                "batch": 1,
                "depth": 2,
                "train": ["xla", "xla+remat"],
                "infer": ["xla"],
                "timed": ["xla"] if timing else [],
            }
        )
        rows.append(
            {
                "net": "drtmo",
                "label": "tiny d3",
                "config": drtmo_config("tiny", 3, True),
                "size": 8,
                "batch": 1,
                "depth": 3,
                "train": ["im2col"],
                "infer": ["im2col"],
                "timed": ["im2col"] if timing else [],
            }
        )
        return rows
    # Default coverage (< 15 min on 2 cores; XLA:CPU needs ~20-40 s per CF-Net training compile
    # and a paper-width x4 step takes tens of seconds): every variant at the memory targets'
    # shapes and at x2 LR 64, fewer elsewhere; both conv implementations timed at x2 LR 64 and
    # the training default at x4; forward GFLOP and parameters everywhere (lowering only).
    full = grid == "full"
    cf_train = {
        2: {(64, 1, 3): all_v, (128, 4, 3): ["xla", "xla+remat+bf16"], (64, 1, 4): ["auto"]},
        4: {
            (64, 1, 3): ["im2col", "auto", "xla", "xla+remat+bf16"],
            (128, 4, 3): ["im2col", "xla", "xla+remat", "xla+remat+bf16"],
        },
        # 'xla+remat-save' (in all_v) only at x2 LR 64: a rolled-loop compile per extra shape
    }
    assert CFNET_DEFAULT in CFNET_VARIANTS, CFNET_DEFAULT
    cf_timed = {2: ["im2col", "auto"], 4: [CFNET_DEFAULT]}
    for scale in (2, 4):
        for size in (64, 128):
            for batch in (1, 4):
                for steps in (3, 4):
                    key = (size, batch, steps)
                    timed = []
                    if timing and key == (64, 1, 3):
                        timed = ["im2col", "auto", "xla"] if full else cf_timed[scale]
                    train = all_v if full else cf_train[scale].get(key, [])
                    rows.append(
                        {
                            "net": "cfnet",
                            "label": f"x{scale}",
                            "config": cfnet_config(scale, steps, False),
                            "scale": scale,
                            "size": size,
                            "batch": batch,
                            "depth": steps,
                            "train": train,
                            "infer": train,
                            "timed": timed,
                        }
                    )
    dr_all = list(DRTMO_VARIANTS)
    dr_main = ["im2col", "xla", "xla+remat", "xla+bf16"]
    for width, size, depth, train in (
        ("cpu", 256, 7, dr_all),
        ("cpu", 512, 7, ["xla", "xla+bf16"]),
        ("paper", 256, 8, ["xla", "xla+bf16"]),
        ("paper", 512, 9, dr_main),
    ):
        timed = []
        if timing and (width, size) == ("cpu", 256):
            timed = ["im2col", "xla"]
        rows.append(
            {
                "net": "drtmo",
                "label": f"{width} d{depth}",
                "config": drtmo_config(width, depth, False),
                "size": size,
                "batch": 1,
                "depth": depth,
                "train": dr_all if full else train,
                "infer": dr_all if full else train,
                "timed": timed,
            }
        )
    return rows
