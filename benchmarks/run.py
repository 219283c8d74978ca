"""Memory, FLOP and CPU-time benchmarks of both networks (SPEC sections 5, 8, 9).

    python -m benchmarks.run                 # default grid, < 15 min on 2 quiet cores
    python -m benchmarks.run --grid=full     # every training variant at every shape (slow)
    python -m benchmarks.run --quick         # tiny shapes, seconds (tests)

Per configuration: parameter count; forward GFLOP (XLA cost analysis of the lowered inference);
compiled peak memory (XLA memory analysis, argument + output - alias + temp; the train state is
donated as in `training.loop`, so its outputs alias its inputs) of the training step and of
inference; and, for the timed subset, the median wall time after warm-up and the achieved
GFLOP/s (the compiled step's FLOPs, recomputation included, over its time). Variants: the
stride-1 conv as 'im2col' + matmul, as lax.conv ('xla'), or 'auto' (lax.conv for 2-d kernels of
more than 2 taps, im2col otherwise; CF-Net's training default); '+remat' (CF-Net: every SRB and
feedback step, the steps as a rolled loop; DrTMO: every layer); '+remat-save' (remat keeping the
projection outputs / the matmul outputs); '+bf16' (bf16 compute and bf16
Adam moments; parameters stay float32). The memory targets use `memory.choose_training_settings`,
whose last resort adds gradient accumulation (`microbatches`). Every batch here is one
device's: on N devices the same peak trains a global batch (`config.batch_size`) N times larger,
which is how `--memory_budget` sizes a multi-device run (`benchmarks/scaling.py` times the
layouts).

Compile-only numbers use `memory.ANALYSIS_OPTIONS` (same buffer assignment, faster compile);
timed ones the default options. A float32 matmul measured in the same run is the machine's
reference GFLOP/s. Results: a table on stdout, `<out>.json`, and `<out>.md` (the part between
the results markers is replaced, the rest of the file is kept).
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments.configs import cfnet as cfnet_configs
from experiments.configs import drtmo as drtmo_configs
from hdr_jax import memory
from hdr_jax.training import tasks
from hdr_jax.training.state import TrainState

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command-line flags (defined only when run as a program: importing this module, as
    the tests do, must not clash with other absl programs' flags such as --quick)."""
    flags.DEFINE_bool("quick", False, "Tiny shapes, one configuration per network (seconds).")
    flags.DEFINE_enum("grid", "default", ["default", "full"], "Compile-only coverage.")
    flags.DEFINE_bool("timing", True, "Run the timed subset (else compile-only).")
    flags.DEFINE_bool("profile", True, "Per-layer CF-Net timing (forward + gradient).")
    flags.DEFINE_integer("reps", 2, "Timed repetitions after one warm-up call (median).")
    flags.DEFINE_string("budget", "4GiB", "Memory budget of the targets.")
    flags.DEFINE_bool("pipeline", True, "Time the two-stage pipeline (bundled weights) on a photo.")
    flags.DEFINE_float("megapixels", 1.0, "Photo size of the pipeline timing.")
    flags.DEFINE_string("out", "docs/benchmarks", "Output prefix: writes <out>.json and <out>.md.")


GiB = 2**30
PIPELINE_TARGET_S = 60.0
MD_BEGIN, MD_END = "<!-- results:begin -->", "<!-- results:end -->"

# SPEC section 8 (PyTorch 2 threads, batch 1, T = 3) and the targets.
TORCH_TRAIN_S = {2: 3.0, 4: 10.4}
_BF16_ADAM = {"optimizer": {"mu_dtype": "bfloat16", "nu_dtype": "bfloat16"}}
_F32_ADAM = {"optimizer": {"mu_dtype": "", "nu_dtype": ""}}


def _cf(impl: str, remat: str = "none", dtype: str = "float32") -> dict:
    opt = _BF16_ADAM if dtype == "bfloat16" else _F32_ADAM
    return {"model": {"remat_policy": remat, "dtype": dtype, "conv_impl": impl}, **opt}


def _dr(impl: str, remat: bool = False, dtype: str = "float32") -> dict:
    opt = _BF16_ADAM if dtype == "bfloat16" else _F32_ADAM
    return {"model": {"remat": remat, "dtype": dtype, "conv_impl": impl}, **opt}


# Stride-1 conv as im2col + matmul or as lax.conv ('xla'); remat of every feedback step (CF-Net:
# a rolled loop) or of every layer (DrTMO); bf16 compute with bf16 Adam moments.
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


def _inference_variant(net: str, name: str) -> tuple[str, dict]:
    """Inference settings of a training variant: remat and the optimiser do not matter there,
    the conv implementation and compute dtype do."""
    model = (CFNET_VARIANTS if net == "cfnet" else DRTMO_VARIANTS)[name]["model"]
    key = f"{model['conv_impl']}+{model['dtype']}"
    remat = {"remat_policy": "none"} if net == "cfnet" else {"remat": False}
    return key, {"model": {**model, **remat}}


def _rolled(net: str, name: str) -> bool:
    """CF-Net with remat runs its feedback steps as a rolled loop, whose body XLA's cost analysis
    counts once: no FLOP count for those rows."""
    return net == "cfnet" and CFNET_VARIANTS[name]["model"]["remat_policy"] != "none"


# -- the grid -------------------------------------------------------------------------------------


def _cfnet_config(scale: int, steps: int, quick: bool) -> Any:
    cfg = cfnet_configs.get_config(f"x{scale}" + (",tiny" if quick else ""))
    cfg.model.num_steps = steps
    if quick:  # the smallest graph: XLA:CPU compile time grows with the number of layers
        cfg.model.update(features=4, num_groups=1)
    return cfg


def _drtmo_config(width: str, depth: int, quick: bool) -> Any:
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
                "config": _cfnet_config(2, 2, True),
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
                "config": _drtmo_config("tiny", 3, True),
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
                            "config": _cfnet_config(scale, steps, False),
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
                "config": _drtmo_config(width, depth, False),
                "size": size,
                "batch": 1,
                "depth": depth,
                "train": dr_all if full else train,
                "infer": dr_all if full else train,
                "timed": timed,
            }
        )
    return rows


# -- measurement helpers --------------------------------------------------------------------------


def _median_time(fn: Callable[[], Any], reps: int) -> tuple[float, list[float]]:
    jax.block_until_ready(fn())  # warm-up (compile is outside: fn is already compiled)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def _random_leaf(path: Any, shape: Any, rng: np.random.Generator) -> np.ndarray:
    """Variables of roughly the trained scale (activations neither vanish nor overflow)."""
    name = jax.tree_util.keystr(path)
    s = shape.shape
    if "slope" in name:
        return np.full(s, 0.2, shape.dtype)
    if name.endswith(("['scale']", "['var']")):
        return np.ones(s, shape.dtype)
    if "kernel" in name:
        fan_in = math.prod(s[:-1])
        return (rng.uniform(-1, 1, s) * math.sqrt(3.0 / fan_in)).astype(shape.dtype)
    return np.zeros(s, shape.dtype)


def _concrete(tree: Any, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map_with_path(lambda p, s: _random_leaf(p, s, rng), tree)


def _random_batch(shapes: dict, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for k, s in shapes.items():
        out[k] = np.ones(s.shape, np.float32) if k == "mask" else rng.uniform(0, 1, s.shape)
        out[k] = out[k].astype(np.float32)
    return out


def matmul_gflops(n: int, reps: int) -> dict:
    """Median GFLOP/s of an n x n float32 matrix product (the machine's reference rate)."""
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((n, n), np.float32))
    b = jnp.asarray(rng.standard_normal((n, n), np.float32))
    f = jax.jit(jnp.matmul).lower(a, b).compile()
    t, _ = _median_time(lambda: f(a, b), reps)
    return {"n": n, "seconds": t, "gflops": 2 * n**3 / t / 1e9}


def time_training(row: dict, settings: dict, reps: int) -> dict:
    """Compiles (default options) and times the train step; returns stats, FLOPs and times."""
    cfg = memory._apply_settings(memory._experiment_config(row["config"]), settings)
    batch_size, patch = row["batch"], row["size"]
    t0 = time.perf_counter()
    lowered = memory.lower_training(cfg, batch_size, patch)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    stats, flops = memory.training_analysis(cfg, batch_size, patch, compiled=compiled)
    _, (state_shape, batch_shape) = memory.training_step_fn(cfg, batch_size, patch)
    params = _concrete(state_shape.params)
    state = TrainState(
        step=jnp.int32(0),
        params=params,
        batch_stats=_concrete(state_shape.batch_stats),
        opt_state=tasks.make_task(cfg, builder=object()).tx.init(params),
        rng=jax.random.key(0),
    )
    batch = jax.device_put(_random_batch(batch_shape))
    holder = [state]

    def step():
        holder[0], metrics = compiled(holder[0], batch)
        return metrics

    seconds, times = _median_time(step, reps)
    return {
        "memory": stats,
        "flops": flops,
        "seconds": seconds,
        "times": times,
        "compile_s": compile_s,
    }


def time_inference(row: dict, settings: dict, reps: int) -> dict:
    cfg, batch_size, tile = row["config"], row["batch"], row["size"]
    compiled = memory.lower_inference(cfg, batch_size, tile, settings).compile()
    stats, flops = memory.inference_analysis(cfg, batch_size, tile, settings, compiled=compiled)
    _, args = memory.inference_fn(cfg, batch_size, tile, settings)
    variables = jax.device_put(_concrete(args[0]))
    inputs = [jax.device_put(_random_batch({"x": a})["x"]) for a in args[1:]]
    seconds, times = _median_time(lambda: compiled(variables, *inputs), reps)
    return {"memory": stats, "flops": flops, "seconds": seconds, "times": times}


def forward_gflop_and_params(row: dict) -> tuple[float, int]:
    """Forward FLOPs from the *lowered* inference (no compile) and the parameter count."""
    fn, args = memory.inference_fn(row["config"], row["batch"], row["size"])
    flops = float(jax.jit(fn).lower(*args).cost_analysis()["flops"])
    params = sum(math.prod(a.shape) for a in jax.tree.leaves(args[0]["params"]))
    return flops / 1e9, params


def measure_row(row: dict, reps: int, log: Callable[[str], None]) -> list[dict]:
    variants = CFNET_VARIANTS if row["net"] == "cfnet" else DRTMO_VARIANTS
    gflop, params = forward_gflop_and_params(row)
    out, inferred = [], {}
    base = {
        "net": row["net"],
        "model": row["label"],
        "size": row["size"],
        "batch": row["batch"],
        "depth": row["depth"],
        "params": params,
        "forward_gflop": gflop,
    }
    if not row["train"] and not row["infer"]:  # FLOPs and parameters only
        rec = {**base, "variant": "–"}
        log(_row_text(rec))
        return [rec]
    for name in variants:
        if name not in row["train"] and name not in row["infer"]:
            continue
        rec = {**base, "variant": name}
        settings = variants[name]
        t0 = time.perf_counter()
        if name in row["train"]:
            if name in row["timed"]:
                r = time_training(row, settings, reps)
                rec.update(
                    train_seconds=r["seconds"],
                    train_times=r["times"],
                    train_compile_s=r["compile_s"],
                )
                if not _rolled(row["net"], name):
                    rec["train_gflops"] = r["flops"] / r["seconds"] / 1e9
            else:
                r = dict(
                    zip(
                        ("memory", "flops"),
                        memory.training_analysis(
                            row["config"], row["batch"], row["size"], settings
                        ),
                    )
                )
            rec["train_memory"] = r["memory"].as_dict()
            if not _rolled(row["net"], name):
                rec["train_gflop"] = r["flops"] / 1e9
        # inference depends on the conv implementation and dtype only: shared between variants
        infer_key, infer_settings = _inference_variant(row["net"], name)
        if name in row["infer"]:
            if infer_key not in inferred:
                if name in row["timed"]:  # inference is timed wherever training is
                    inferred[infer_key] = time_inference(row, infer_settings, reps)
                else:
                    stats, flops = memory.inference_analysis(
                        row["config"], row["batch"], row["size"], infer_settings
                    )
                    inferred[infer_key] = {"memory": stats, "flops": flops}
            r = inferred[infer_key]
            if "seconds" in r:
                rec["infer_seconds"] = r["seconds"]
            rec["infer_memory"] = r["memory"].as_dict()
        rec["wall_s"] = time.perf_counter() - t0
        log(_row_text(rec))
        out.append(rec)
    return out


# -- per-layer profile ----------------------------------------------------------------------------


def layer_profile(scale: int, lr: int, reps: int, only: Sequence[str] = ()) -> list[dict]:
    """Forward and gradient (params + input) time of each CF-Net layer kind at LR lr, batch 1,
    64 features, with its count per training step (T = 3, 6 groups) and implied share."""
    from hdr_jax.losses import ssim_loss
    from hdr_jax.models import cfnet

    k, s, p = cfnet.PROJECTION_GEOMETRY[scale]
    hr = lr * scale
    f, groups, steps = 64, 6, 3
    blocks = 2 * (1 + steps)  # SRB + T CFBs, two branches
    # (name, module, input shape, count per forward pass)
    kinds = [
        ("FEB conv3x3 3->256 (LR)", cfnet.ConvBlock(4 * f, 3), (lr, 3), 2),
        ("FEB conv1x1 256->64 (LR)", cfnet.ConvBlock(f, 1), (lr, 4 * f), 2),
        (
            "up projection (LR->HR)",
            cfnet.ConvBlock(f, k, s, p, transpose=True),
            (lr, f),
            blocks * groups,
        ),
        ("down projection (HR->LR)", cfnet.ConvBlock(f, k, s, p), (hr, f), blocks * groups),
        (
            "1x1 over LR concat (avg 4x64)",
            cfnet.ConvBlock(f, 1),
            (lr, 4 * f),
            blocks * (groups + 1),
        ),
        (
            "1x1 over HR concat (avg 4x64)",
            cfnet.ConvBlock(f, 1),
            (hr, 4 * f),
            blocks * (groups - 1),
        ),
        ("REC deconv (LR->HR)", cfnet.ConvBlock(f, k, s, p, transpose=True), (lr, f), blocks),
        ("REC conv3x3 64->3 (HR)", cfnet.ConvBlock(3, 3, act=False), (hr, f), blocks),
    ]
    rows = []
    rng = np.random.default_rng(0)
    if only:
        kinds = [kind for kind in kinds if kind[0] in only]
    for name, module, (size, cin), count in kinds:
        x = jnp.asarray(rng.uniform(-1, 1, (1, size, size, cin)).astype(np.float32))
        variables = _concrete(jax.eval_shape(module.init, jax.random.key(0), x))
        fwd = jax.jit(module.apply)
        grad = jax.jit(jax.grad(lambda v, x, m=module: jnp.sum(m.apply(v, x) ** 2), (0, 1)))
        t_fwd, _ = _median_time(functools.partial(fwd, variables, x), reps)
        t_grad, _ = _median_time(functools.partial(grad, variables, x), reps)
        flops = float(fwd.lower(variables, x).cost_analysis()["flops"])
        rows.append(
            {
                "layer": name,
                "count": count,
                "forward_ms": 1e3 * t_fwd,
                "grad_ms": 1e3 * t_grad,
                "forward_gflops": flops / t_fwd / 1e9,
                "grad_gflops": 2 * flops / t_grad / 1e9,  # the gradient is ~2 forward convs
                "step_share_s": count * (t_fwd + t_grad),
            }
        )
    if only and "SSIM loss" not in only:
        return _tag(rows, scale, lr)
    # the loss: 2 SRB + 2T CFB (1 - SSIM) terms on HR images
    a = jnp.asarray(rng.uniform(0, 1, (1, hr, hr, 3)).astype(np.float32))
    loss_grad = jax.jit(jax.grad(ssim_loss))
    t_l, _ = _median_time(lambda: loss_grad(a, a * 0.9), reps)
    rows.append(
        {
            "layer": "SSIM loss + gradient (HR)",
            "count": 2 + 2 * steps,
            "forward_ms": float("nan"),
            "grad_ms": 1e3 * t_l,
            "forward_gflops": float("nan"),
            "grad_gflops": float("nan"),
            "step_share_s": (2 + 2 * steps) * t_l,
        }
    )
    return _tag(rows, scale, lr)


def _tag(rows: list[dict], scale: int, lr: int) -> list[dict]:
    for r in rows:
        r["scale"], r["lr"] = scale, lr
    return rows


# -- the whole pipeline ---------------------------------------------------------------------------


def pipeline_timing(megapixels: float, reps: int = 0) -> dict:
    """`pipeline.reconstruct` (bundled weights, x2) on the demo photo resized to `megapixels`:
    per-stage seconds of the first call (what one `hdr-jax reconstruct` pays, compilation
    included) and of `reps` more calls on the same photo (compiled)."""
    from hdr_jax import io as hdr_io
    from hdr_jax import pipeline

    photo = hdr_io.read_ldr(os.path.join(os.path.dirname(pipeline.__file__), "assets", "demo.jpg"))
    h0, w0 = photo.shape[:2]
    f = math.sqrt(megapixels * 1e6 / (h0 * w0))
    h, w = max(32, round(h0 * f)), max(32, round(w0 * f))
    image = np.clip(np.asarray(jax.image.resize(photo, (h, w, 3), "cubic")), 0.0, 1.0)
    t0 = time.perf_counter()
    pipe = pipeline.Pipeline.load()
    pipe.cfnet(2)
    load_s = time.perf_counter() - t0
    runs = []
    for _ in range(1 + reps):
        t0 = time.perf_counter()
        res = pipeline.reconstruct(pipe, image, scale=2)
        total = time.perf_counter() - t0
        stages = {k: round(v, 3) for k, v in res.timings.items()}
        stages["other_s"] = round(total - sum(res.timings.values()), 3)  # preview, glue
        runs.append({"total_s": total, **stages})
    return {
        "width": w,
        "height": h,
        "megapixels": h * w / 1e6,
        "load_s": load_s,
        "first": runs[0],
        "warm": runs[1:],
    }


# -- targets --------------------------------------------------------------------------------------


def check_targets(
    results: list[dict],
    matmul: dict,
    budget: str,
    quick: bool,
    log: Callable[[str], None],
    pipe: dict | None = None,
) -> tuple[list[dict], dict]:
    """PASS/FAIL of the issue's targets, with the numbers behind each."""
    targets = []

    def add(name: str, ok: bool | None, detail: str) -> None:
        status = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        targets.append({"target": name, "status": status, "detail": detail})
        log(f"{status:4s}  {name}: {detail}")

    limit = memory.parse_bytes(budget)
    mem_targets = (
        [
            ("CF-Net x2 tiny LR 8 batch 1", _cfnet_config(2, 2, True), 1, 8),
            ("DrTMO tiny 8x8 batch 1", _drtmo_config("tiny", 3, True), 1, 8),
        ]
        if quick
        else [
            ("CF-Net x4 T=3 LR 128 batch 4", _cfnet_config(4, 3, False), 4, 128),
            ("DrTMO paper width 512x512 batch 1", _drtmo_config("paper", 9, False), 1, 512),
        ]
    )
    settings = {}
    for name, cfg, batch, patch in mem_targets:
        try:
            choice = memory.choose_training_settings(cfg, batch, patch, budget)
        except memory.MemoryBudgetError as e:
            add(f"{name}: training step <= {budget}", False, str(e))
            continue
        tried = ", ".join(f"{n} {memory.format_bytes(b)}" for n, b in choice["tried"])
        add(
            f"{name}: training step <= {budget}",
            choice["peak_bytes"] <= limit,
            f"chosen {choice['name']!r}: {memory.format_bytes(choice['peak_bytes'])} (tried: {tried})",
        )
        settings[name] = {k: v for k, v in choice.items()}

    def timed(model: str) -> dict | None:
        """The fastest timed float32 step without remat (either conv implementation)."""
        rows = [
            r
            for r in results
            if (r["net"], r["model"]) == ("cfnet", model)
            and "train_seconds" in r
            and not _rolled("cfnet", r["variant"])
            and CFNET_VARIANTS[r["variant"]]["model"]["dtype"] == "float32"
        ]
        return min(rows, key=lambda r: r["train_seconds"]) if rows else None

    for scale, factor in ((2, 1.0), (4, 2.0)):
        r = timed(f"x{scale}")
        ref = TORCH_TRAIN_S[scale]
        goal = ref / factor
        name = f"CF-Net x{scale} training step (LR 64, batch 1, T=3) <= {goal:.1f} s"
        name += " (PyTorch ~{:.1f} s{})".format(ref, "" if factor == 1 else ", >= 2x faster")
        if r is None:
            add(name, None, "not timed")
        else:
            add(name, r["train_seconds"] <= goal, f"{r['train_seconds']:.2f} s ({r['variant']})")
    for scale in (2, 4):
        r = timed(f"x{scale}")
        name = f"CF-Net x{scale} training GFLOP/s >= half the matmul's ({matmul['gflops']:.0f})"
        if r is None:
            add(name, None, "not timed")
        else:
            ratio = r["train_gflops"] / matmul["gflops"]
            add(
                name,
                ratio >= 0.5,
                f"{r['train_gflops']:.1f} GFLOP/s = {ratio:.2f} x matmul ({r['variant']})",
            )
    # Remat must lower the peak: XLA:CPU schedules an unrolled loop's recomputation early (no
    # saving), so remat runs the feedback steps as a rolled loop.
    peaks = {}
    for r in results:
        if r["net"] == "cfnet" and "train_memory" in r:
            key = (r["model"], r["size"], r["batch"], r["depth"])
            peaks.setdefault(key, {})[r["variant"]] = r["train_memory"]["peak"]
    pairs = [(k, v) for k, v in peaks.items() if "xla" in v and "xla+remat" in v]
    if pairs:
        key, v = pairs[0]
        add(
            f"cfnet remat lowers the training peak ({key[0]} {key[1]}², batch {key[2]})",
            v["xla+remat"] < 0.9 * v["xla"],
            f"{v['xla'] / GiB:.2f} GiB (xla) vs {v['xla+remat'] / GiB:.2f} GiB (xla+remat)",
        )
    if pipe:
        first = pipe["first"]
        stages = ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in first.items() if k != "total_s")
        warm = f"; second call {pipe['warm'][-1]['total_s']:.1f} s" if pipe["warm"] else ""
        add(
            f"two-stage pipeline, {pipe['width']}x{pipe['height']} photo, x2, bundled weights: "
            f"< {PIPELINE_TARGET_S:.0f} s",
            first["total_s"] + pipe["load_s"] < PIPELINE_TARGET_S,
            f"first call {first['total_s']:.1f} s + load {pipe['load_s']:.1f} s ({stages}){warm}",
        )
    return targets, settings


# -- output ---------------------------------------------------------------------------------------

COLUMNS = [
    ("net", "{}"),
    ("model", "{}"),
    ("in", "{}"),
    ("batch", "{}"),
    ("T/depth", "{}"),
    ("variant", "{}"),
    ("params M", "{:.2f}"),
    ("fwd GFLOP", "{:.1f}"),
    ("train GFLOP", "{:.1f}"),
    ("train peak GiB", "{:.2f}"),
    ("(temp GiB)", "{:.2f}"),
    ("infer peak GiB", "{:.2f}"),
    ("train s", "{:.2f}"),
    ("infer s", "{:.3f}"),
    ("train GFLOP/s", "{:.1f}"),
]


def _cells(r: dict) -> list[str]:
    tm, im = r.get("train_memory"), r.get("infer_memory")
    values = [
        r["net"],
        r["model"],
        f"{r['size']}²",
        r["batch"],
        r["depth"],
        r["variant"],
        r["params"] / 1e6,
        r["forward_gflop"],
        r.get("train_gflop"),
        tm["peak"] / GiB if tm else None,
        tm["temp"] / GiB if tm else None,
        im["peak"] / GiB if im else None,
        r.get("train_seconds"),
        r.get("infer_seconds"),
        r.get("train_gflops"),
    ]
    return ["–" if v is None else fmt.format(v) for v, (_, fmt) in zip(values, COLUMNS)]


def _row_text(r: dict) -> str:
    return " | ".join(_cells(r))


def markdown_table(results: list[dict]) -> str:
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    return "\n".join([head, sep] + ["| " + " | ".join(_cells(r)) + " |" for r in results])


def profile_table(rows: list[dict]) -> str:
    lines = [
        "| scale | layer | count/step | forward ms | gradient ms | forward GFLOP/s | gradient GFLOP/s | ≈ s per step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| x{r['scale']} | {r['layer']} | {r['count']} | {r['forward_ms']:.1f} | "
            f"{r['grad_ms']:.1f} | {r['forward_gflops']:.1f} | {r['grad_gflops']:.1f} | "
            f"{r['step_share_s']:.2f} |"
        )
    return "\n".join(lines)


def report_markdown(doc: dict) -> str:
    env, mm = doc["environment"], doc["matmul"]
    parts = [
        (
            f"Generated by `python -m benchmarks.run{' --quick' if doc['quick'] else ''}` on "
            f"{env['date']} ({env['cpu_count']} CPUs, jax {env['jax']}, {env['backend']}); "
            f"total {doc['total_s'] / 60:.1f} min."
        ),
        "",
        f"Reference: float32 matmul {mm['n']}x{mm['n']}: **{mm['gflops']:.1f} GFLOP/s**.",
        "",
        "### Targets",
        "",
        "\n".join(f"- **{t['status']}** {t['target']}: {t['detail']}" for t in doc["targets"]),
        "",
        "### Grid",
        "",
        markdown_table(doc["results"]),
    ]
    pipe = doc.get("pipeline")
    if pipe:
        keys = [k for k in pipe["first"] if k != "total_s"] + ["total_s"]
        runs = [("first call", pipe["first"])] + [("second call", r) for r in pipe["warm"]]
        parts += [
            "",
            (
                f"### Two-stage pipeline, {pipe['width']}x{pipe['height']} photo "
                f"({pipe['megapixels']:.2f} MP), x2, bundled weights (seconds)"
            ),
            "",
            "| call | " + " | ".join(k[:-2] for k in keys) + " |",
            "|---|" + "---|" * len(keys),
        ]
        parts += [
            f"| {name} | " + " | ".join(f"{r[k]:.1f}" for k in keys) + " |" for name, r in runs
        ]
        parts += ["", f"Loading the weights: {pipe['load_s']:.1f} s."]
    if doc.get("profile"):
        parts += [
            "",
            "### CF-Net per-layer profile (LR 64, batch 1)",
            "",
            profile_table(doc["profile"]),
        ]
    return "\n".join(parts) + "\n"


def write_outputs(doc: dict, out: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(doc, f, indent=1, default=str)
    md_path = out + ".md"
    block = f"{MD_BEGIN}\n{report_markdown(doc)}{MD_END}\n"
    if os.path.exists(md_path):
        with open(md_path) as f:
            text = f.read()
        if MD_BEGIN in text and MD_END in text:
            head, rest = text.split(MD_BEGIN, 1)
            text = head + block + rest.split(MD_END, 1)[1].lstrip("\n")
        else:
            text = text.rstrip("\n") + "\n\n" + block
    else:
        text = "# Benchmarks\n\n" + block
    with open(md_path, "w") as f:
        f.write(text)


def run(
    *,
    quick: bool = False,
    grid: str = "default",
    timing: bool = True,
    profile: bool = True,
    reps: int = 2,
    budget: str = "4GiB",
    pipeline: bool = True,
    megapixels: float = 1.0,
    out: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Runs the benchmark; returns the JSON document (also written to `out` when given)."""
    t_start = time.perf_counter()
    env = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "loadavg_start": os.getloadavg(),
    }
    log(f"environment: {env}")
    mm = matmul_gflops(512 if quick else 4096, reps)
    log(f"float32 matmul {mm['n']}^2: {mm['gflops']:.1f} GFLOP/s")
    log(" | ".join(c for c, _ in COLUMNS))
    results = []
    for row in plan(quick, grid, timing):
        results += measure_row(row, reps, log)
    prof = []
    if profile and timing:
        if quick:
            prof = layer_profile(2, 8, reps, only=["up projection (LR->HR)"])
        else:
            prof = layer_profile(2, 64, reps) + layer_profile(4, 64, reps)
        log(profile_table(prof))
    pipe = None
    if pipeline and timing and not quick:  # compiling both stages takes ~40 s even on a tiny photo
        pipe = pipeline_timing(megapixels, reps=1 if grid == "full" else 0)
        log(f"pipeline: {json.dumps(pipe)}")
    targets, settings = check_targets(results, mm, budget, quick, log, pipe)
    doc = {
        "quick": quick,
        "grid": grid,
        "environment": env,
        "matmul": mm,
        "results": results,
        "profile": prof,
        "targets": targets,
        "pipeline": pipe,
        "chosen_settings": settings,
        "total_s": time.perf_counter() - t_start,
    }
    env["loadavg_end"] = os.getloadavg()
    log(f"total {doc['total_s']:.0f} s")
    if out:
        write_outputs(doc, out)
    return doc


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    run(
        quick=FLAGS.quick,
        grid=FLAGS.grid,
        timing=FLAGS.timing,
        profile=FLAGS.profile,
        reps=FLAGS.reps,
        budget=FLAGS.budget,
        pipeline=FLAGS.pipeline,
        megapixels=FLAGS.megapixels,
        out=FLAGS.out or None,
        log=lambda s: print(s, flush=True),
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
