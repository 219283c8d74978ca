"""The ablation grids: variants of each stage, the tables that group them, and their configs.

Every variant is the suite's base config ('full', the CPU recipe of experiments/configs at a
CPU-feasible size, :data:`SIZES`) with the dotted-path ``overrides`` of :class:`Variant` applied
by ``ConfigDict.update_from_flattened_dict`` on the locked config (an unknown path is an error).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from experiments.configs import cfnet as cfnet_configs
from experiments.configs import drtmo as drtmo_configs

SUITES = ("drtmo", "cfnet")
DIRECTIONS = ("up", "down")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One trained configuration: ``overrides`` maps dotted config paths to the values that
    replace those of the suite's base config ('full')."""

    name: str
    description: str
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Group:
    """One table: the variants that isolate one factor, as {variant name: row label}."""

    id: str
    title: str
    rows: Mapping[str, str]


DRTMO_VARIANTS = (
    Variant(
        "full",
        "CPU recipe: skips, residual unit on the naive bracket, 3D decoder, no dropout, 5 CRFs, "
        "L1 over all slots, cpu width",
    ),
    Variant("no_skips", "no U-Net skip connections", {"model.use_skips": False}),
    Variant("no_residual", "no residual unit", {"model.use_residual": False}),
    Variant(
        "no_skips_no_residual",
        "neither skips nor residual unit",
        {"model.use_skips": False, "model.use_residual": False},
    ),
    Variant("decoder_2d", "2D decoder (exposures as channels)", {"model.decoder_3d": False}),
    Variant("crfs_1", "trained on 1 CRF", {"data.num_crfs": 1}),
    Variant("crfs_10", "trained on 10 CRFs", {"data.num_crfs": 10}),
    Variant("l1_valid", "L1 averaged over valid slots only", {"loss.denominator": "valid"}),
    Variant("width_half", "every width halved", {"model.width_factor": 0.5}),
)

DRTMO_GROUPS = (
    Group(
        "architecture",
        "Skip connections and residual unit",
        {
            "full": "skips + residual on naive bracket (full)",
            "no_skips": "no skips",
            "no_residual": "no residual",
            "no_skips_no_residual": "neither",
        },
    ),
    Group(
        "decoder",
        "Decoder: 3D vs 2D transposed convolutions",
        {"full": "3D decoder (full)", "decoder_2d": "2D decoder"},
    ),
    Group(
        "crfs",
        "Number of training CRFs (evaluated on all 11 parametric CRFs)",
        {"crfs_1": "1 CRF", "full": "5 CRFs (full)", "crfs_10": "10 CRFs"},
    ),
    Group(
        "l1",
        "L1 denominator (eq. 3/4)",
        {"full": "all slots, public code (full)", "l1_valid": "valid slots only"},
    ),
    Group("width", "Width", {"full": "cpu preset (full)", "width_half": "cpu preset halved"}),
)

CFNET_VARIANTS = (
    Variant("full", "T = 3, coupled, separate step weights, SRB loss, x2"),
    Variant("T1", "T = 1 feedback step", {"model.num_steps": 1}),
    Variant("T2", "T = 2 feedback steps", {"model.num_steps": 2}),
    Variant("T4", "T = 4 feedback steps", {"model.num_steps": 4}),
    Variant("uncoupled", "no cross-branch inputs", {"model.coupled": False}),
    Variant(
        "shared_weights", "one CFB + REC pair for all steps", {"model.shared_step_weights": True}
    ),
    Variant("no_srb_loss", "no SRB terms in the loss (eq. 19)", {"loss.srb_weight": 0.0}),
    Variant("x4", "scale x4", {"model.scale": 4}),
)

CFNET_GROUPS = (
    Group(
        "steps",
        "Number of feedback steps T",
        {"T1": "T = 1", "T2": "T = 2", "full": "T = 3 (full)", "T4": "T = 4"},
    ),
    Group(
        "coupling",
        "Coupled vs uncoupled branches",
        {"full": "coupled (full)", "uncoupled": "uncoupled"},
    ),
    Group(
        "weights",
        "Separate vs shared step weights",
        {"full": "separate (full)", "shared_weights": "shared"},
    ),
    Group("srb", "SRB loss terms", {"full": "with SRB terms (full)", "no_srb_loss": "without"}),
    Group("scale", "Scale (different test data: not paired)", {"full": "x2 (full)", "x4": "x4"}),
)

VARIANTS = {"drtmo": DRTMO_VARIANTS, "cfnet": CFNET_VARIANTS}
GROUPS = {"drtmo": DRTMO_GROUPS, "cfnet": CFNET_GROUPS}

# The schedule of every --quick run: 2 steps, evaluated (on 2 examples) at the end only.
_QUICK_SCHEDULE = {
    "batch": 2,
    "steps": 2,
    "eval_every": 2,
    "checkpoint_every": 1,
    "log_every": 1,
    "num_eval": 2,
    "fast_init": True,  # init from XLA's RNG (other numbers; these runs only smoke-test)
}
# Sizes of the default grid (False) and of --quick (True: test-sized models and data).
SIZES = {
    "drtmo": {
        False: {
            "width": "cpu",
            "depth": 5,
            "crop": 32,
            "view": 128,
            "views": 8,
            "crops": 4,
            "eval_views": 3,
            "batch": 4,
            "steps": 300,
            "eval_every": 100,
            "log_every": 25,
            "num_eval": 48,
            "num_hdr": 24,
        },
        True: {
            "width": "tiny",
            "depth": 3,  # the fewest layers the 3D decoder allows: compile time is the cost
            "crop": 32,
            "view": 32,
            "views": 2,
            "crops": 2,
            "eval_views": 2,
            "num_hdr": 2,
            **_QUICK_SCHEDULE,
        },
    },
    "cfnet": {
        False: {
            "features": 16,
            "groups": 3,
            # Training crops of the same HR size at both scales (LR 16 at x2, 8 at x4).
            "patch_hr": 32,
            "eval_hr": 96,
            "data": "",
            "batch": 4,
            "steps": 150,
            "eval_every": 50,
            "log_every": 25,
            "num_eval": 40,
            "lr": 2e-4,
        },
        True: {
            "features": 8,
            "groups": 1,
            "patch_hr": 16,
            "eval_hr": 32,
            "data": "tiny",
            "lr": 2e-4,
            **_QUICK_SCHEDULE,
        },
    },
}
BASE_CRFS = 5
EVAL_CRFS = 11  # every parametric CRF (hdr_jax.camera.crf.parametric_crfs)


def select_variants(suite: str, names: Sequence[str] | None = None) -> list[Variant]:
    """The suite's variants, in grid order, restricted to ``names`` when given.

    Names that belong to no suite raise; names of the other suite are ignored (one ``--variants``
    list serves ``--suite all``).
    """
    if suite not in VARIANTS:
        raise ValueError(f"unknown suite {suite!r}; expected one of {SUITES}")
    if not names:
        return list(VARIANTS[suite])
    known = {v.name for s in SUITES for v in VARIANTS[s]}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {sorted(known)}")
    return [v for v in VARIANTS[suite] if v.name in set(names)]


def run_names(suite: str, variant: str) -> list[str]:
    """Run names (paths relative to DIR/<suite>) of one variant."""
    if suite == "drtmo":
        return [f"{variant}/{d}" for d in DIRECTIONS]
    return [variant]


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
    """Sets the dotted paths of ``overrides`` in place; a path the config lacks raises KeyError,
    a value of another type TypeError (ml_collections' own checks, on the locked config)."""
    config.lock()
    try:
        config.update_from_flattened_dict(dict(overrides))
    finally:
        config.unlock()


def _schedule(c: ml_collections.ConfigDict, s: Mapping[str, Any], steps: int) -> None:
    c.batch_size = s["batch"]
    c.num_train_steps = steps or s["steps"]
    c.log_every = min(s["log_every"], c.num_train_steps)
    c.eval_every = min(s["eval_every"], c.num_train_steps)
    c.checkpoint_every = s.get("checkpoint_every", c.eval_every)
    c.max_checkpoints = 2
    if s.get("fast_init"):  # smoke runs: a cheaper-to-compile init (hdr_jax.training.loop)
        c.init_rng_impl = "unsafe_rbg"


def drtmo_config(
    variant: Variant, direction: str, *, quick: bool, seed: int, steps: int = 0
) -> ml_collections.ConfigDict:
    s = SIZES["drtmo"][quick]
    c = drtmo_configs.get_config(f"{direction},{'tiny' if quick else 'cpu'}")
    c.seed = seed
    c.model.update(width=s["width"], depth=s["depth"])
    c.model.width_factor = 1.0
    c.data.update(crop_size=s["crop"], num_eval=s["num_eval"])
    c.data.num_crfs = BASE_CRFS
    _schedule(c, s, steps)
    apply_overrides(c, variant.overrides)
    c.data.builder_config = bracket_config_name(s["view"], c.data.num_crfs, s["views"])
    return c


def cfnet_config(
    variant: Variant, *, quick: bool, seed: int, steps: int = 0
) -> ml_collections.ConfigDict:
    s = SIZES["cfnet"][quick]
    c = cfnet_configs.get_config("x2,tiny" if quick else "x2,cpu")
    c.seed = seed
    c.model.update(features=s["features"], num_groups=s["groups"], num_steps=3)
    c.model.chroma_blend = 0.0  # the paper's fused output: the ablations are the paper's
    c.data.update(num_eval=s["num_eval"], builder_config=s["data"] or None)
    c.optimizer.learning_rate = s["lr"]
    _schedule(c, s, steps)
    apply_overrides(c, variant.overrides)
    # Same HR training and evaluation crops at every scale: x2 and x4 see the same regions.
    c.data.patch_size = s["patch_hr"] // c.model.scale
    c.data.eval_patch_size = s["eval_hr"] // c.model.scale
    return c


def bracket_config_name(view: int, num_crfs: int, views: int) -> str:
    """The ``hdr_brackets`` builder config of the ablations' data at one size."""
    return f"ablation{view}_v{views}_k{num_crfs}"


def pairs_config_name(quick: bool, scale: int) -> str:
    """The ``synthetic_pairs`` builder config of the CF-Net runs at ``scale``."""
    data = SIZES["cfnet"][quick]["data"]
    return f"{data}_x{scale}" if data else f"x{scale}"
