"""Ablation grids of both stages: variant definitions, per-run bookkeeping and evaluation, and the
report (Markdown tables, JSON, plots, and findings computed from the numbers).

Driven by ``experiments/ablations.py``; everything a report needs is cached per run on disk, so
the report can be rebuilt without training.

Layout under the ablation directory ``DIR``::

    DIR/drtmo/<variant>/{up,down}/   one loop workdir per direction (checkpoints, metrics.jsonl,
                                     config.json, ablation_result.json, ablation_timing.json)
    DIR/drtmo/<variant>/hdr_eval.json   PU21 of the merged stack of that variant's up + down pair
    DIR/cfnet/<variant>/             one loop workdir
    DIR/<suite>/baselines.json       non-learned baselines on the same evaluation examples
    DIR/ablations.{md,json}, DIR/plots/*.png

Design. Every stage-1 variant is trained in both directions: PU21 needs the merged 17-image
stack, and pairing a variant's network with the full model's other one would halve the effect
being measured. All stage-1 variants are validated on one set, the held-out scenes rendered
through all 11 parametric CRFs, so that the CRF-count variants are compared on cameras some of
them never saw (and all variants on the same examples).

Statistics. Every variant is evaluated on the same held-out examples, so two variants are compared
by the *paired* per-example difference: mean difference and twice its standard error. A claim is
'confirmed' when the difference has the claimed sign and exceeds 2 SE, 'contradicted' when it has
the other sign and exceeds 2 SE, and 'not resolved' otherwise. The SE covers evaluation-set
sampling only: every run uses one training seed, so run-to-run training noise is not in it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hdr_jax import io as hdr_io
from hdr_jax.training import loop, tasks

SUITES = ("drtmo", "cfnet")
DIRECTIONS = ("up", "down")
#: PSNR cap of the training loop's evaluation (an exact match would give +inf).
PSNR_CAP = 100.0
RESULT_FILE = "ablation_result.json"
TIMING_FILE = "ablation_timing.json"
HDR_FILE = "hdr_eval.json"
BASELINE_FILE = "baselines.json"


# -- grid definitions ---------------------------------------------------------------------------


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


def apply_overrides(config: Any, overrides: Mapping[str, Any]) -> Any:
    """Sets dotted paths of an ml_collections config in place; every path must already exist."""
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = config
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise KeyError(f"config has no field {path!r}")
        node[leaf] = value
    return config


def run_names(suite: str, variant: str) -> list[str]:
    """Run names (paths relative to DIR/<suite>) of one variant."""
    if suite == "drtmo":
        return [f"{variant}/{d}" for d in DIRECTIONS]
    return [variant]


# -- tasks --------------------------------------------------------------------------------------


def scaled_widths(model_config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """DrTMO widths of the config's preset and depth, times ``width_factor`` (at least 1)."""
    from hdr_jax.models import drtmo

    preset = drtmo.width_preset(model_config["width"], depth=model_config.get("depth"))
    f = float(model_config.get("width_factor", 1.0))
    return {k: tuple(max(1, round(c * f)) for c in v) for k, v in preset.items()}


class _Compiled:
    """Cuts the compile time of a short run (on a 2-core CPU, compiling takes as long as training).

    * ``init_state`` is compiled as one XLA program (run eagerly, Flax dispatches and compiles
      hundreds of small ops one by one) at XLA backend optimisation level 0: it runs once, and
      the LLVM passes cost far more than they save (measured on CF-Net: 41 s -> 24 s).
    * No previews: the loop would compile one more forward pass per run for a picture the
      ablation report does not use (``hasattr(task, 'previews')`` is False).
    """

    #: --quick: initialise from an 'unsafe_rbg' key derived from the given one (XLA's RNG
    #: instead of threefry: half the compile time of an init, other numbers than the default).
    fast_init_rng: bool = False

    def init_state(self, rng: jax.Array) -> Any:
        init = super().init_state
        if self.fast_init_rng:

            def init(key):
                data = jax.random.key_data(key).ravel()
                rbg = jax.random.wrap_key_data(jnp.resize(data, (4,)), impl="unsafe_rbg")
                return super(_Compiled, self).init_state(rbg).replace(rng=key)

        if isinstance(rng, jax.core.Tracer):  # traced already (eval_shape, an outer jit)
            return init(rng)
        return jax.jit(init, compiler_options=_FAST_COMPILE)(rng)

    @property
    def previews(self):
        raise AttributeError("previews are off in ablation runs")


_FAST_COMPILE = {"xla_backend_optimization_level": 0}


class CFNetVariantTask(_Compiled, tasks.CFNetTask):
    """The stage-2 task with a compiled init and no previews."""


class DrTMOVariantTask(_Compiled, tasks.DrTMOTask):
    """The stage-1 task with two ablation hooks the library task lacks.

    * ``config.model.width_factor`` scales every preset width (the width ablation at CPU scale;
      a 'cpu_half' preset in ``models/drtmo.py`` would make this unnecessary).
    * Validation comes from ``eval_builder`` (a common held-out set for all variants, e.g. one
      rendered through every CRF), training from ``builder``.
    """

    def __init__(self, config: Any, *, builder: Any, eval_builder: Any | None = None):
        super().__init__(config, builder=builder)
        if float(config.model.get("width_factor", 1.0)) != 1.0:
            self.model = self.model.clone(**scaled_widths(config.model))
        self._eval_builder = eval_builder

    def _source(self, split: str):
        if split == "validation" and self._eval_builder is not None:
            return self._eval_builder.as_data_source(split="validation")
        return super()._source(split)


# -- run bookkeeping ----------------------------------------------------------------------------


def latest_checkpoint_step(workdir: str | os.PathLike) -> int | None:
    """Largest finished orbax step directory (orbax renames a step into place when complete)."""
    d = Path(workdir) / "checkpoints"
    if not d.is_dir():
        return None
    steps = [int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(steps) if steps else None


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """Records of a run's metrics.jsonl (a torn last line from a kill is ignored)."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def eval_curve(workdir: str | os.PathLike, key: str = "psnr") -> list[tuple[int, float]]:
    """(step, value) of the evaluation records of a run; the last record of a step wins."""
    by_step = {
        int(r["step"]): float(r[key])
        for r in read_metrics(workdir)
        if r.get("split") == "eval" and key in r
    }
    return sorted(by_step.items())


def run_status(workdir: str | os.PathLike, num_train_steps: int) -> str:
    """'done' (latest checkpoint at num_train_steps and an eval record for it), 'partial' or
    'new'. A run that went past num_train_steps raises: it was trained with another setting."""
    step = latest_checkpoint_step(workdir)
    if step is None:
        return "new"
    if step > num_train_steps:
        raise ValueError(
            f"{workdir}: checkpoint at step {step} is past num_train_steps={num_train_steps}; "
            "use a new --workdir"
        )
    if step == num_train_steps and any(s == step for s, _ in eval_curve(workdir)):
        return "done"
    return "partial"


def append_eval_record(workdir: str | os.PathLike, step: int, means: Mapping[str, float]) -> None:
    """Adds an eval record in the loop's metrics.jsonl format (for a run whose final eval was
    interrupted: the checkpoint is final but the loop has no step left to evaluate at)."""
    with open(Path(workdir) / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": int(step), "split": "eval", **means}) + "\n")


def add_wall_time(workdir: str | os.PathLike, seconds: float) -> float:
    """Accumulates the training wall time of a run over resumptions; returns the total."""
    path = Path(workdir) / TIMING_FILE
    rec = read_json(path) or {"wall_s": 0.0, "sessions": 0}
    rec["wall_s"] = float(rec["wall_s"]) + float(seconds)
    rec["sessions"] = int(rec["sessions"]) + 1
    write_json(path, rec)
    return rec["wall_s"]


def wall_time(workdir: str | os.PathLike) -> float:
    rec = read_json(Path(workdir) / TIMING_FILE)
    return float(rec["wall_s"]) if rec else float("nan")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def write_json(path: str | os.PathLike, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with hdr_io.atomic_output(path, overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(_jsonable(obj), indent=1, allow_nan=False) + "\n")


def _jsonable(obj: Any) -> Any:
    """Plain JSON: arrays as lists, NaN/inf as null (``np.asarray(..., float)`` reads null back
    as NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def restore_final_state(task: Any, config: Any, workdir: str | os.PathLike) -> Any:
    """The train state of the latest checkpoint (model only; the data iterator is not needed)."""
    from hdr_jax.training import checkpoint

    manager = checkpoint.make_manager(os.path.join(workdir, "checkpoints"))
    try:
        template = task.init_state(jax.random.key(config.seed))
        return checkpoint.restore(manager, template)
    finally:
        manager.close()


# -- evaluation ---------------------------------------------------------------------------------


def per_example_eval(task: Any, state: Any) -> dict[str, np.ndarray]:
    """The task's eval_step over its evaluation examples, kept per example (NaN = undefined).

    Same examples, order and metric code as :func:`hdr_jax.training.loop.evaluate`, whose mean
    equals :func:`summarise` of this.
    """
    eval_step = jax.jit(task.eval_step)
    out: dict[str, list[np.ndarray]] = {}
    for batch in task.eval_batches():
        for k, v in jax.device_get(eval_step(state, loop.numeric(batch))).items():
            out.setdefault(k, []).append(np.asarray(v, np.float64).ravel())
    return _undefined_to_nan({k: np.concatenate(v) for k, v in out.items()})


def _undefined_to_nan(per_example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """DrTMO's eval_step gives 'psnr' = 0 for an example with no valid exposure slot (input at
    the end of the bracket in the network's direction); that example has no PSNR: make it NaN
    so that it does not pull the mean down."""
    steps = [v for k, v in per_example.items() if k.startswith("psnr_step")]
    if "psnr" in per_example and steps and np.isnan(steps[0]).any():
        undefined = np.all(np.isnan(np.stack(steps)), axis=0)
        per_example["psnr"] = np.where(undefined, np.nan, per_example["psnr"])
    return per_example


def summarise(values: Iterable[float], cap: float | None = PSNR_CAP) -> dict[str, float]:
    """Mean, standard error of the mean and count of the non-NaN values (capped like the loop)."""
    v = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, np.float64)
    v = v[~np.isnan(v)]
    if cap is not None:
        v = np.minimum(v, cap)
    n = v.size
    mean = float(v.mean()) if n else float("nan")
    se = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": mean, "se": se, "n": int(n)}


def drtmo_naive_baseline(task: Any) -> dict[str, np.ndarray]:
    """Per-example PSNR of the naive re-exposure (inverse sRGB, x tau^step, sRGB, clip) on the
    task's evaluation examples, keyed like the DrTMO eval_step ('psnr', 'psnr_step1'..)."""
    from hdr_jax.data.bracket_pipeline import naive_bracket_baseline

    out: dict[str, list[np.ndarray]] = {}
    for batch in task.eval_batches():
        pred = naive_bracket_baseline(
            np.asarray(batch["input"]), np.asarray(batch["exposure_step"])
        )
        target, mask = np.asarray(batch["target"]), np.asarray(batch["mask"])
        mse = np.mean((pred - target) ** 2, axis=(2, 3, 4))
        psnr = -10.0 * np.log10(np.maximum(mse, 1e-10))
        out.setdefault("psnr", []).append(np.sum(psnr * mask, 1) / np.maximum(np.sum(mask, 1), 1))
        for k in range(mask.shape[1]):
            out.setdefault(f"psnr_step{k + 1}", []).append(
                np.where(mask[:, k] > 0, psnr[:, k], np.nan)
            )
    return _undefined_to_nan({k: np.concatenate(v) for k, v in out.items()})


def cfnet_baselines(task: Any) -> dict[str, dict[str, np.ndarray]]:
    """Per-example PSNR/SSIM(/MEF-SSIM) of the baselines of :mod:`hdr_jax.evaluation` (Mertens +
    bicubic, bicubic under/over) on the task's evaluation crops, with the metric code of
    CFNetTask.eval_step."""
    from hdr_jax import metrics
    from hdr_jax.eval import baselines as evaluation

    methods = evaluation.baseline_methods()
    out: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    scale = task.config.model.scale
    for batch in task.eval_batches():
        for b in range(np.shape(batch["label_hr"])[0]):
            ex = {
                k: np.asarray(batch[k][b], np.float32)
                for k in ("under_lr", "over_lr", "under_hr", "over_hr", "label_hr")
            }
            for name, fn in methods.items():
                pred = np.asarray(fn(ex["under_lr"], ex["over_lr"], scale), np.float32)
                scores = {
                    "psnr": metrics.psnr(pred, ex["label_hr"]),
                    "ssim": metrics.ssim(pred, ex["label_hr"]),
                }
                if min(pred.shape[:2]) >= metrics.MEF_SSIM_MIN_SIDE:
                    stack = np.stack([ex["under_hr"], ex["over_hr"]])
                    scores["mef_ssim"] = metrics.mef_ssim(pred, stack)
                for k, v in scores.items():
                    out[name].setdefault(k, []).append(float(v))
    return {m: {k: np.asarray(v) for k, v in d.items()} for m, d in out.items()}


def drtmo_hdr_eval(
    up: tuple[Any, Any], down: tuple[Any, Any], source: Any, limit: int
) -> dict[str, Any]:
    """PU21 of the merged 17-image stack of an (up, down) pair of (task, state), per example, on
    the first ``limit`` records of ``source``, with the merge rows and protocol of
    :func:`hdr_jax.hdr_eval.evaluate_bracket_record` (input = the middle exposure, gain fitted
    on unclipped pixels, reference peak 1000 cd/m^2). Unlike that function, only the middle
    exposure goes through the networks (it predicts from all 9, which is 9x the work here).

    Returns ``{'per_example': {row: {'pu21': (n,), 'pu21_clipped': (n,)}}, 'kept': (n,),
    'clipped_fraction': (n,)}`` with a row per ``hdr_eval.MERGE_ROWS`` entry; 'kept' counts the
    stack images the monotone selection keeps (1 = the input alone)."""
    from hdr_jax.eval import protocol as hdr_eval
    from hdr_jax.eval import stage1

    def forward(task_state: tuple[Any, Any]):
        task, state = task_state
        fn = jax.jit(lambda v, x: task.model.apply(v, x, train=False))
        return lambda x: np.asarray(fn(state.variables, x))[0]

    nets = {"up": forward(up), "down": forward(down)}
    out: dict[str, dict[str, list[float]]] = {}
    kept, clipped_frac = [], []
    for i in range(min(limit, len(source))):
        record = source[i]
        bracket = np.asarray(record["bracket"], np.float32) / 255.0
        b = (bracket.shape[0] - 1) // 2
        x = bracket[b]
        pred = {d: f(x[None]) for d, f in nets.items()}  # (N, H, W, 3) each
        stack = np.concatenate([pred["down"][::-1], x[None], pred["up"]], axis=0)
        curve = np.asarray(record["crf_curve"], np.float32)
        ref = np.asarray(record["hdr"], np.float32)
        clipped = hdr_eval.clipped_mask(x)
        candidates, (lo, hi) = stage1.merge_candidates(stack, x, curve)
        for row, hdr in candidates.items():
            if clipped.all():
                scores = {"pu21": float("nan"), "pu21_clipped": float("nan")}
            else:
                scores = hdr_eval.pu21_protocol(hdr, ref, clipped)
            for k in ("pu21", "pu21_clipped"):
                out.setdefault(row, {}).setdefault(k, []).append(float(scores[k]))
        kept.append(hi - lo + 1)
        clipped_frac.append(float(clipped.mean()))
    return {
        "per_example": {r: {k: np.asarray(v) for k, v in d.items()} for r, d in out.items()},
        "kept": np.asarray(kept, np.float64),
        "clipped_fraction": np.asarray(clipped_frac, np.float64),
    }


def hdr_row(rows: Iterable[str], *, ours: bool) -> str | None:
    """hdr_eval's row name of the merge the ablations compare networks by (robust, sRGB inverse
    CRF: it uses the whole generated stack, where the pipeline's anchored merge mostly keeps the
    input) or of the linearised input (inverse sRGB)."""
    for r in rows:
        if ours and r.startswith("ours") and "robust" in r and "sRGB" in r:
            return r
        if not ours and r.startswith("linearised") and "sRGB" in r:
            return r
    return None


# -- comparisons and findings -------------------------------------------------------------------


def compare(
    a: Sequence[float], b: Sequence[float], *, paired: bool, claim: str = "greater"
) -> dict[str, Any]:
    """Evidence that mean(a) > mean(b) (``claim='greater'``), or that a brings no gain over b
    (``claim='no_gain'``).

    Paired: mean and SE of a - b over the examples where both are defined. Unpaired: difference
    of the means with SE sqrt(se_a^2 + se_b^2). The verdict rule is in the module docstring.
    """
    a = np.minimum(np.asarray(a, np.float64), PSNR_CAP)
    b = np.minimum(np.asarray(b, np.float64), PSNR_CAP)
    if paired:
        if a.shape != b.shape:
            raise ValueError(f"paired comparison needs equal shapes, got {a.shape} and {b.shape}")
        ok = ~(np.isnan(a) | np.isnan(b))
        d = a[ok] - b[ok]
        n = int(d.size)
        delta = float(d.mean()) if n else float("nan")
        se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    else:
        sa, sb = summarise(a, cap=None), summarise(b, cap=None)
        n = min(sa["n"], sb["n"])
        delta = sa["mean"] - sb["mean"]
        se = math.hypot(sa["se"], sb["se"])
    if not (n > 1 and math.isfinite(delta) and math.isfinite(se)):
        verdict = "not resolved (too few examples)"
    elif claim == "greater":
        if delta > 2 * se:
            verdict = "confirmed"
        elif delta < -2 * se:
            verdict = "contradicted"
        else:
            verdict = "not resolved (|Δ| < 2 SE)"
    elif claim == "no_gain":
        verdict = "contradicted" if delta > 2 * se else "confirmed (no significant gain)"
    else:
        raise ValueError(f"claim must be 'greater' or 'no_gain', got {claim!r}")
    return {"delta": delta, "two_se": 2 * se, "n": n, "paired": paired, "verdict": verdict}


@dataclasses.dataclass(frozen=True)
class Claim:
    """A statement about variant ``a`` versus variant ``b`` on ``metric`` (a per-example key).

    ``a``/``b`` name variants, or '<variant>@<metric>' to compare two metrics of one run set,
    or 'baseline:<name>'. ``kind``: 'runs' (pooled over a DrTMO variant's up and down runs, or
    the CF-Net run), 'hdr' (PU21 of the merged stack).
    """

    suite: str
    text: str
    source: str
    a: str
    b: str
    metric: str = "psnr"
    kind: str = "runs"
    claim: str = "greater"
    paired: bool = True
    unit: str = "dB"


CLAIMS = (
    Claim(
        "drtmo",
        "U-Net skip connections improve the predicted exposures",
        "DrTMO architecture (skips carry image detail to the decoder)",
        "full",
        "no_skips",
    ),
    Claim(
        "drtmo",
        "The residual unit improves them",
        "DrTMO public code (here the residual adds the naive bracket, the CPU recipe)",
        "full",
        "no_residual",
    ),
    Claim(
        "drtmo",
        "Skips and residual together beat neither",
        "DrTMO public code",
        "full",
        "no_skips_no_residual",
    ),
    Claim(
        "drtmo",
        "A 3D decoder beats a 2D decoder",
        "DrTMO (3D deconvolutions relate neighbouring exposures)",
        "full",
        "decoder_2d",
    ),
    Claim(
        "drtmo",
        "Training on 5 CRFs generalises to other cameras better than on 1",
        "DrTMO (5 representative CRFs)",
        "full",
        "crfs_1",
    ),
    Claim(
        "drtmo",
        "10 CRFs bring no gain over 5",
        "DrTMO's choice of 5",
        "crfs_10",
        "full",
        claim="no_gain",
    ),
    Claim(
        "drtmo",
        "Averaging the L1 over valid slots helps the far exposures (|step| >= 6)",
        "SPEC section 3 (the public code's 'all' denominator down-weights them)",
        "l1_valid",
        "full",
        metric="psnr_far",
    ),
    Claim(
        "drtmo",
        "The halved width loses quality",
        "SPEC section 3 (seed variant)",
        "full",
        "width_half",
    ),
    Claim(
        "drtmo",
        "Exposures further from the input are harder (step 1 beats step 8)",
        "DrTMO (why the merge keeps only a monotone sub-stack)",
        "full@psnr_step1",
        "full@psnr_step8",
        paired=False,
    ),
    Claim(
        "drtmo",
        "The network beats naive re-exposure of the input",
        "DrTMO (learned brackets vs inverse CRF + gain)",
        "full",
        "baseline:naive",
    ),
    Claim(
        "drtmo",
        "Merged HDR beats the linearised LDR input on PU21-PSNR",
        "SPEC section 7 (a strong baseline)",
        "full",
        "baseline:linearised_input",
        metric="pu21",
        kind="hdr",
    ),
    Claim(
        "drtmo",
        "Skips improve the merged HDR (PU21-PSNR)",
        "DrTMO architecture",
        "full",
        "no_skips",
        metric="pu21",
        kind="hdr",
    ),
    Claim(
        "drtmo",
        "The 3D decoder improves the merged HDR (PU21-PSNR)",
        "DrTMO",
        "full",
        "decoder_2d",
        metric="pu21",
        kind="hdr",
    ),
    Claim(
        "cfnet",
        "Later feedback steps are better (I_T beats I_1)",
        "CF-Net feedback refinement",
        "full@psnr_step3",
        "full@psnr_step1",
    ),
    Claim("cfnet", "T = 2 beats T = 1", "CF-Net study of T", "T2", "T1"),
    Claim("cfnet", "T = 3 beats T = 2", "CF-Net study of T (T = 3 chosen)", "full", "T2"),
    Claim(
        "cfnet",
        "T = 4 brings no gain over T = 3",
        "CF-Net's choice of T = 3",
        "T4",
        "full",
        claim="no_gain",
    ),
    Claim(
        "cfnet",
        "Coupling the two branches helps",
        "CF-Net (its central claim)",
        "full",
        "uncoupled",
    ),
    Claim("cfnet", "Coupling helps on SSIM", "CF-Net", "full", "uncoupled", metric="ssim", unit=""),
    Claim(
        "cfnet",
        "Separate step weights beat shared ones",
        "CF-Net (separate CFB weights per step)",
        "full",
        "shared_weights",
    ),
    Claim(
        "cfnet", "The SRB loss terms help the fused output", "CF-Net eq. 19", "full", "no_srb_loss"
    ),
    Claim(
        "cfnet",
        "x2 scores higher than x4",
        "CF-Net (x4 is the harder task)",
        "full",
        "x4",
        paired=False,
    ),
    Claim(
        "cfnet",
        "CF-Net beats Mertens fusion + bicubic upscaling",
        "CF-Net comparisons",
        "full",
        "baseline:Mertens + bicubic",
    ),
)


def _values(
    suite_result: Mapping[str, Any], spec: str, metric: str, kind: str
) -> np.ndarray | None:
    """Per-example values a claim compares (None when the run is missing)."""
    if "@" in spec:
        spec, metric = spec.split("@")
    if kind == "hdr":
        if spec.startswith("baseline:"):
            # The linearised input does not depend on the variant: take it from any pair.
            for h in suite_result.get("hdr", {}).values():
                row = hdr_row(h["per_example"], ours=False)
                if row:
                    return np.asarray(h["per_example"][row][metric], np.float64)
            return None
        h = suite_result.get("hdr", {}).get(spec)
        if not h:
            return None
        row = hdr_row(h["per_example"], ours=True)
        return np.asarray(h["per_example"][row][metric], np.float64) if row else None
    if spec.startswith("baseline:"):
        base = suite_result.get("baselines", {}).get(spec.split(":", 1)[1])
        if base is None:
            return None
        parts = (
            [base]
            if "psnr" in base or "ssim" in base
            else [base[d] for d in DIRECTIONS if d in base]
        )
        return _pooled(parts, metric)
    runs = suite_result.get("runs", {})
    names = run_names(suite_result["suite"], spec)
    if not all(n in runs for n in names):
        return None
    return _pooled([runs[n]["per_example"] for n in names], metric)


def _pooled(per_examples: Sequence[Mapping[str, Any]], metric: str) -> np.ndarray | None:
    out = []
    for pe in per_examples:
        if metric == "psnr_far":  # mean PSNR over exposure steps 6..8 of an example
            steps = [
                np.asarray(pe[f"psnr_step{k}"], np.float64)
                for k in (6, 7, 8)
                if f"psnr_step{k}" in pe
            ]
            if not steps:
                return None
            with np.errstate(invalid="ignore"):
                stacked = np.minimum(np.stack(steps), PSNR_CAP)
                ok = ~np.isnan(stacked)
                out.append(
                    np.where(ok.any(0), np.nansum(stacked, 0) / np.maximum(ok.sum(0), 1), np.nan)
                )
        elif metric in pe:
            out.append(np.asarray(pe[metric], np.float64))
        else:
            return None
    return np.concatenate(out) if out else None


def findings(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every claim of :data:`CLAIMS` checked against the per-example numbers of ``results``."""
    out = []
    for c in CLAIMS:
        sr = results.get("suites", {}).get(c.suite)
        if sr is None:
            continue
        a_spec = c.a
        if c.suite == "cfnet" and c.a == "full@psnr_step3":
            # I_T of the full model: its T is in its config.
            t = sr.get("runs", {}).get("full", {}).get("num_steps", 3)
            a_spec = f"full@psnr_step{t}"
        a = _values(sr, a_spec, c.metric, c.kind)
        b = _values(sr, c.b, c.metric, c.kind)
        rec = {
            "suite": c.suite,
            "claim": c.text,
            "source": c.source,
            "metric": c.metric,
            "a": a_spec,
            "b": c.b,
            "unit": c.unit,
        }
        if a is None or b is None:
            rec.update(
                verdict="not run", delta=float("nan"), two_se=float("nan"), n=0, paired=c.paired
            )
        else:
            paired = c.paired and a.shape == b.shape
            rec.update(compare(a, b, paired=paired, claim=c.claim))
        out.append(rec)
    return out


# -- report -------------------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, (float, np.floating)):
        return "–" if not math.isfinite(v) else f"{v:.{digits}f}"
    return str(v)


def _pm(s: Mapping[str, float] | None, digits: int = 2) -> str:
    """'mean ± se' of a summary."""
    if not s or not math.isfinite(s.get("mean", float("nan"))):
        return "–"
    se = s.get("se", float("nan"))
    tail = f" ± {se:.{digits}f}" if math.isfinite(se) else ""
    return f"{s['mean']:.{digits}f}{tail}"


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _metric_summary(per_examples: Sequence[Mapping[str, Any]], key: str) -> dict[str, float] | None:
    v = _pooled(per_examples, key)
    return None if v is None else summarise(v)


def _drtmo_row_metrics(sr: Mapping[str, Any], variant: str) -> dict[str, Any]:
    runs = sr.get("runs", {})
    m: dict[str, Any] = {}
    for d in DIRECTIONS:
        r = runs.get(f"{variant}/{d}")
        m[d] = _metric_summary([r["per_example"]], "psnr") if r else None
        m[f"{d}_wall"] = r["wall_s"] if r else float("nan")
        m[f"{d}_params"] = r["num_params"] if r else None
    h = sr.get("hdr", {}).get(variant)
    row = hdr_row(h["per_example"], ours=True) if h else None
    m["pu21"] = summarise(h["per_example"][row]["pu21"]) if row else None
    m["pu21_clipped"] = summarise(h["per_example"][row]["pu21_clipped"]) if row else None
    m["kept"] = summarise(h["kept"], cap=None) if h and "kept" in h else None
    return m


def _cfnet_row_metrics(sr: Mapping[str, Any], variant: str) -> dict[str, Any]:
    r = sr.get("runs", {}).get(variant)
    if not r:
        return {}
    pe = r["per_example"]
    m = {k: summarise(pe[k], cap=None if k != "psnr" else PSNR_CAP) for k in pe}
    m["wall"] = r["wall_s"]
    m["params"] = r["num_params"]
    m["num_steps"] = r.get("num_steps")
    return m


def drtmo_tables(sr: Mapping[str, Any]) -> str:
    out = []
    for g in GROUPS["drtmo"]:
        rows = []
        for name, label in g.rows.items():
            m = _drtmo_row_metrics(sr, name)
            rows.append(
                [
                    label,
                    _fmt(m["up_params"]),
                    _pm(m["up"]),
                    _pm(m["down"]),
                    _pm(m["pu21"]),
                    _pm(m["pu21_clipped"]),
                    _fmt((m["kept"] or {}).get("mean"), 1),
                    _fmt(m["up_wall"] + m["down_wall"], 0),
                ]
            )
        out.append(
            f"#### {g.title}\n\n"
            + md_table(
                [
                    "variant",
                    "params (each net)",
                    "PSNR up (dB)",
                    "PSNR down (dB)",
                    "PU21-PSNR merged HDR",
                    "PU21-PSNR clipped px",
                    "images merged (of 17)",
                    "train wall s (up + down)",
                ],
                rows,
            )
        )
    return "\n".join(out)


def drtmo_step_table(sr: Mapping[str, Any], num_exposures: int = 8) -> str:
    """PSNR per exposure step, down (-N..-1) then up (+1..+N), per variant and naive baseline."""
    header = (
        ["variant"]
        + [f"{-k:+d}" for k in range(num_exposures, 0, -1)]
        + [f"{k:+d}" for k in range(1, num_exposures + 1)]
    )
    rows = []
    entries = [
        (v.name, sr.get("runs", {}).get(f"{v.name}/down"), sr.get("runs", {}).get(f"{v.name}/up"))
        for v in DRTMO_VARIANTS
    ]
    base = sr.get("baselines", {}).get("naive")
    if base:
        entries.append(
            (
                "naive re-exposure (sRGB)",
                {"per_example": base.get("down", {})},
                {"per_example": base.get("up", {})},
            )
        )
    for name, down, up in entries:
        if not (down or up):
            continue
        cells = [name]
        for run, ks in ((down, range(num_exposures, 0, -1)), (up, range(1, num_exposures + 1))):
            for k in ks:
                pe = run["per_example"] if run else {}
                v = pe.get(f"psnr_step{k}")
                cells.append(_fmt(summarise(v)["mean"]) if v is not None else "–")
        rows.append(cells)
    return md_table(header, rows)


def cfnet_tables(sr: Mapping[str, Any]) -> str:
    max_t = max([r.get("num_steps", 0) or 0 for r in sr.get("runs", {}).values()] + [1])
    header = (
        ["variant", "params", "PSNR (dB)", "SSIM", "MEF-SSIM"]
        + [f"PSNR I_{t}" for t in range(1, max_t + 1)]
        + ["train wall s"]
    )
    out = []
    for g in GROUPS["cfnet"]:
        rows = []
        for name, label in g.rows.items():
            m = _cfnet_row_metrics(sr, name)
            if not m:
                rows.append([label] + ["–"] * (len(header) - 1))
                continue
            rows.append(
                [
                    label,
                    _fmt(m["params"]),
                    _pm(m.get("psnr")),
                    _pm(m.get("ssim"), 4),
                    _pm(m.get("mef_ssim"), 4),
                ]
                + [
                    _fmt(m[f"psnr_step{t}"]["mean"]) if f"psnr_step{t}" in m else "–"
                    for t in range(1, max_t + 1)
                ]
                + [_fmt(m["wall"], 0)]
            )
        out.append(f"#### {g.title}\n\n" + md_table(header, rows))
    base = sr.get("baselines", {})
    if base:
        rows = [
            [
                name,
                "–",
                _pm(summarise(d["psnr"])),
                _pm(summarise(d["ssim"], cap=None), 4),
                _pm(summarise(d["mef_ssim"], cap=None), 4) if "mef_ssim" in d else "–",
            ]
            for name, d in base.items()
            if isinstance(d, Mapping) and "psnr" in d
        ]
        out.append(
            "#### Baselines on the same x2 evaluation crops\n\n" + md_table(header[:5], rows)
        )
    return "\n".join(out)


def findings_markdown(found: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for f in found:
        unit = f" {f['unit']}" if f.get("unit") else ""
        digits = 2 if f.get("unit") else 4
        if f["verdict"] == "not run":
            ev = "–"
        else:
            ev = (
                f"Δ = {f['delta']:+.{digits}f}{unit} (2 SE {f['two_se']:.{digits}f}), "
                f"n = {f['n']}{' paired' if f['paired'] else ', unpaired'}"
            )
        metric = {"pu21": "PU21-PSNR", "psnr_far": "PSNR steps ±6..8"}.get(f["metric"], f["metric"])
        rows.append(
            [
                f["suite"],
                f["claim"],
                f["source"],
                metric,
                f"{f['a']} vs {f['b']}",
                ev,
                f"**{f['verdict']}**",
            ]
        )
    return md_table(["stage", "claim", "from", "metric", "compared", "evidence", "verdict"], rows)


# -- plots --------------------------------------------------------------------------------------


def _figure(nrows: int, ncols: int, size: tuple[float, float]):
    # Figure + Agg canvas directly: no pyplot state, no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A fixed layout: tight/constrained layout draws every figure twice (slow on 2 cores).
    fig = Figure(figsize=size)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.22, top=0.85, wspace=0.3)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with hdr_io.atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def plot_curves(results: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Validation PSNR against training step, one line per run (from each metrics.jsonl)."""
    paths = []
    for suite, sr in results.get("suites", {}).items():
        runs = sr.get("runs", {})
        if not runs:
            continue
        panels = list(DIRECTIONS) if suite == "drtmo" else [None]
        fig, axes = _figure(1, len(panels), (6 * len(panels), 4))
        for ax, d in zip(axes[0], panels):
            for name, r in runs.items():
                if d is not None and not name.endswith(f"/{d}"):
                    continue
                curve = r.get("curve") or []
                if curve:
                    s, v = zip(*curve)
                    ax.plot(s, v, marker="o", ms=3, label=name.split("/")[0])
            ax.set_title(f"{suite} {d or ''} validation".strip())
            ax.set_xlabel("training step")
            ax.set_ylabel("PSNR (dB)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        paths.append(_save(fig, out_dir / f"{suite}_curves.png"))
    return paths


def plot_per_step(results: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """PSNR per exposure step (DrTMO) and per feedback step (CF-Net)."""
    paths = []
    sr = results.get("suites", {}).get("drtmo")
    if sr and sr.get("runs"):
        fig, axes = _figure(1, 1, (8, 4.5))
        ax = axes[0, 0]
        entries = {
            v.name: {d: sr["runs"].get(f"{v.name}/{d}", {}).get("per_example") for d in DIRECTIONS}
            for v in DRTMO_VARIANTS
        }
        if sr.get("baselines", {}).get("naive"):
            entries["naive re-exposure"] = sr["baselines"]["naive"]
        for name, by_dir in entries.items():
            xs, ys = [], []
            for d, sign in (("down", -1), ("up", 1)):
                pe = by_dir.get(d) or {}
                for k in range(1, 9):
                    if f"psnr_step{k}" in pe:
                        xs.append(sign * k)
                        ys.append(summarise(pe[f"psnr_step{k}"])["mean"])
            if xs:
                order = np.argsort(xs)
                ax.plot(
                    np.asarray(xs)[order],
                    np.asarray(ys)[order],
                    marker="o",
                    ms=3,
                    label=name,
                    ls="--" if name.startswith("naive") else "-",
                )
        ax.set_xlabel("exposure step (half stops from the input)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title("DrTMO: PSNR of each predicted exposure")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        paths.append(_save(fig, out_dir / "drtmo_per_step.png"))
    sr = results.get("suites", {}).get("cfnet")
    if sr and sr.get("runs"):
        fig, axes = _figure(1, 1, (6, 4))
        ax = axes[0, 0]
        for name, r in sr["runs"].items():
            pe = r["per_example"]
            ts = sorted(int(k[len("psnr_step") :]) for k in pe if k.startswith("psnr_step"))
            if ts:
                ax.plot(
                    ts, [summarise(pe[f"psnr_step{t}"])["mean"] for t in ts], marker="o", label=name
                )
        ax.set_xlabel("feedback step t")
        ax.set_ylabel("PSNR of I_t (dB)")
        ax.set_title("CF-Net: quality of each feedback step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        paths.append(_save(fig, out_dir / "cfnet_per_step.png"))
    return paths


def plot_bars(results: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """One bar chart per table: one panel per metric, bars = rows, error bars = 1 SE."""
    paths = []
    for suite, sr in results.get("suites", {}).items():
        if not sr.get("runs"):
            continue
        for g in GROUPS[suite]:
            if suite == "drtmo":
                ms = {label: _drtmo_row_metrics(sr, name) for name, label in g.rows.items()}
                panels = [
                    ("PSNR up (dB)", "up"),
                    ("PSNR down (dB)", "down"),
                    ("PU21-PSNR merged HDR", "pu21"),
                ]
            else:
                ms = {label: _cfnet_row_metrics(sr, name) for name, label in g.rows.items()}
                panels = [("PSNR (dB)", "psnr"), ("SSIM", "ssim"), ("MEF-SSIM", "mef_ssim")]
            fig, axes = _figure(1, len(panels), (4.2 * len(panels), 3.6))
            for ax, (title, key) in zip(axes[0], panels):
                labels = list(ms)
                vals = [(ms[lab].get(key) or {}).get("mean", np.nan) for lab in labels]
                errs = [(ms[lab].get(key) or {}).get("se", np.nan) for lab in labels]
                x = np.arange(len(labels))
                ax.bar(
                    x,
                    np.nan_to_num(vals),
                    yerr=np.nan_to_num(errs),
                    capsize=3,
                    color=[f"C{i}" for i in range(len(labels))],
                )
                finite = [v for v in vals if math.isfinite(v)]
                if finite:  # zoom on the differences: they are small next to the values
                    lo, hi = min(finite), max(finite)
                    pad = max(0.15 * (hi - lo), 0.02 * abs(hi), 1e-3)
                    ax.set_ylim(lo - 3 * pad, hi + 2 * pad)
                for xi, v in zip(x, vals):
                    if not math.isfinite(v):
                        ax.text(
                            xi,
                            0.5,
                            "not run",
                            transform=ax.get_xaxis_transform(),
                            ha="center",
                            va="center",
                            rotation=90,
                            fontsize=7,
                            color="0.4",
                        )
                ax.set_xticks(x)
                ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=7)
                ax.set_title(title, fontsize=9)
                ax.grid(axis="y", alpha=0.3)
            fig.suptitle(f"{suite}: {g.title}", fontsize=10)
            paths.append(_save(fig, out_dir / f"{suite}_{g.id}.png"))
    return paths


# -- the report ---------------------------------------------------------------------------------


def report_markdown(results: Mapping[str, Any], plots: Sequence[Path], root: Path) -> str:
    md = ["# Ablations", ""]
    md += [
        (
            "Generated by `experiments/ablations.py` from the runs under this directory; every "
            "number below is computed from them (rerun the command to refresh)."
        ),
        "",
    ]
    md += ["## Reproduce", ""]
    for c in results.get("commands", []):
        wall = f", {c['wall_s'] / 60:.1f} min" if c.get("wall_s") else ""
        md.append(f"- `{c['command']}`  (started {c['time']}{wall})")
    md.append("")
    env = results.get("environment", {})
    md += ["## Setting", ""]
    md.append(
        f"- Seeds: {results.get('seed')} for every run (parameter init, data order, "
        "dropout); evaluation examples and input exposures are fixed, so every variant is "
        "scored on the same examples."
    )
    md.append(
        f"- Mode: {'--quick (smoke test: numbers are meaningless)' if results.get('quick') else 'default grid'}."
    )
    for k, v in env.items():
        md.append(f"- {k}: {v}")
    data = results.get("data", {})
    if data:
        md.append(
            f"- HDR data: `{data.get('hdr_dir')}`, {data.get('num_scenes')} scenes; "
            f"held out (both stages): {', '.join(data.get('heldout', [])) or '–'}."
        )
    for suite, sr in results.get("suites", {}).items():
        for line in sr.get("settings", {}).get("notes", []):
            md.append(f"- {suite}: {line}")
    md.append("")
    timing = results.get("timing", {})
    md += ["## Wall time", ""]
    rows = []
    for suite, sr in results.get("suites", {}).items():
        for name, r in sr.get("runs", {}).items():
            rows.append(
                [
                    f"{suite}/{name}",
                    r.get("steps"),
                    _fmt(r.get("wall_s"), 1),
                    "trained now" if r.get("trained_now") else "cached",
                ]
            )
    md.append(md_table(["run", "steps", "train wall s (all sessions)", "this invocation"], rows))
    md.append(
        f"Total training wall time (sum over runs): {_fmt(timing.get('runs_total_s'), 0)} s; "
        f"whole command (the last one that trained): {_fmt(timing.get('invocation_s'), 0)} s "
        f"(including dataset builds, evaluation and the report). A run's train wall time "
        f"includes its XLA compilations and in-training evaluations.\n"
    )

    sr = results.get("suites", {}).get("drtmo")
    if sr:
        md += ["## Stage 1: DrTMO", ""]
        md += [line for line in sr.get("settings", {}).get("description", [])] + [""]
        md += [
            (
                "Mean ± SE over the held-out examples. PSNR up/down: mean over the valid "
                "predicted exposures of an example. PU21-PSNR: the 17-image stack "
                "(down + input + up) of the variant's two networks, robust merge with the sRGB "
                "inverse CRF, protocol of `hdr_jax/hdr_eval.py`."
            ),
            "",
        ]
        md.append(drtmo_tables(sr))
        md += ["#### PSNR per exposure step (dB)", "", drtmo_step_table(sr)]
        hdr = sr.get("hdr", {})
        if hdr:
            any_h = next(iter(hdr.values()))
            rows = []
            for row in any_h["per_example"]:
                if row.startswith("linearised"):
                    rows.append(
                        [
                            row,
                            _pm(summarise(any_h["per_example"][row]["pu21"])),
                            _pm(summarise(any_h["per_example"][row]["pu21_clipped"])),
                        ]
                    )
            md += [
                "#### HDR baselines (same examples)",
                "",
                md_table(["method", "PU21-PSNR", "PU21-PSNR clipped px"], rows),
            ]
    sr = results.get("suites", {}).get("cfnet")
    if sr:
        md += ["## Stage 2: CF-Net", ""]
        md += [line for line in sr.get("settings", {}).get("description", [])] + [""]
        md += [
            (
                "Mean ± SE over the held-out crops. PSNR/SSIM (RGB) against the fused label, "
                "MEF-SSIM against the HR under/over pair (needs HR crops >= 41 px). PSNR I_t: "
                "0.5 (I_over_t + I_under_t) of feedback step t against the label."
            ),
            "",
        ]
        md.append(cfnet_tables(sr))
    found = results.get("findings", [])
    if found:
        md += [
            "## What this confirms or contradicts at this scale",
            "",
            (
                "Computed from the per-example numbers above (rule: confirmed / contradicted when "
                "the paired mean difference exceeds 2 standard errors with the claimed / the "
                "opposite sign). One training seed per run and short trainings: a verdict says "
                "what these runs show, not what the method can do at full scale."
            ),
            "",
        ]
        counts = {}
        for f in found:
            counts[f["verdict"].split(" (")[0]] = counts.get(f["verdict"].split(" (")[0], 0) + 1
        md.append("Summary: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ".\n")
        md.append(findings_markdown(found))
    discussion = root / "discussion.md"
    if discussion.exists():
        md += [discussion.read_text().rstrip(), ""]
    if plots:
        md += ["## Plots", ""]
        for p in plots:
            rel = os.path.relpath(p, root)
            md.append(f"![{p.stem}]({rel})")
        md.append("")
    return "\n".join(md)


def write_report(
    results: dict[str, Any], root: str | os.PathLike, *, plots: bool = True
) -> dict[str, Path]:
    """Writes DIR/ablations.md, DIR/ablations.json and DIR/plots/*.png (``plots=False`` keeps
    the PNGs already there); returns their paths."""
    root = Path(root)
    results["findings"] = findings(results)
    plot_dir = root / "plots"
    if plots:
        pngs = (
            plot_curves(results, plot_dir)
            + plot_per_step(results, plot_dir)
            + plot_bars(results, plot_dir)
        )
    else:
        pngs = sorted(plot_dir.glob("*.png"))
    write_json(root / "ablations.json", results)
    md_path = root / "ablations.md"
    with hdr_io.atomic_output(md_path, overwrite=True) as tmp:
        Path(tmp).write_text(report_markdown(results, pngs, root))
    return {"markdown": md_path, "json": root / "ablations.json", "plots": plot_dir}
