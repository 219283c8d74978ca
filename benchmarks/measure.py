"""Measurements: compiled memory and FLOPs, median step times, the per-layer CF-Net profile,
the two-stage pipeline's time on a photo, and the machine's reference matmul rate."""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import grid, report
from hdr_jax import memory
from hdr_jax.losses import ssim_loss
from hdr_jax.models import cfnet

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


def random_batch(shapes: dict, seed: int = 1) -> dict:
    """Arrays of the abstract ``shapes``: images uniform in [0, 1], masks all ones."""
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
    batch_size, patch = row["batch"], row["size"]
    task, batch_shape = memory.training_setup(row["config"], batch_size, patch, settings)
    t0 = time.perf_counter()
    lowered = memory.lower_training(row["config"], batch_size, patch, settings)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    stats, flops = memory.training_analysis(row["config"], batch_size, patch, settings,
                                            compiled=compiled)
    # The task's own state, with variables of roughly the trained scale (see _random_leaf).
    state = jax.eval_shape(task.init_state, jax.random.key(0))
    params = _concrete(state.params)
    state = task.init_state(jax.random.key(0)).replace(
        params=params, batch_stats=_concrete(state.batch_stats), opt_state=task.tx.init(params)
    )
    batch = jax.device_put(random_batch(batch_shape))
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
    inputs = [jax.device_put(random_batch({"x": a})["x"]) for a in args[1:]]
    seconds, times = _median_time(lambda: compiled(variables, *inputs), reps)
    return {"memory": stats, "flops": flops, "seconds": seconds, "times": times}


def forward_gflop_and_params(row: dict) -> tuple[float, int]:
    """Forward FLOPs from the *lowered* inference (no compile) and the parameter count."""
    fn, args = memory.inference_fn(row["config"], row["batch"], row["size"])
    flops = float(jax.jit(fn).lower(*args).cost_analysis()["flops"])
    params = sum(math.prod(a.shape) for a in jax.tree.leaves(args[0]["params"]))
    return flops / 1e9, params


def measure_row(row: dict, reps: int, log: Callable[[str], None]) -> list[dict]:
    variants = grid.CFNET_VARIANTS if row["net"] == "cfnet" else grid.DRTMO_VARIANTS
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
        log(report.row_text(rec))
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
                if not grid.rolled(row["net"], name):
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
            if not grid.rolled(row["net"], name):
                rec["train_gflop"] = r["flops"] / 1e9
        # inference depends on the conv implementation and dtype only: shared between variants
        infer_key, infer_settings = grid.inference_variant(row["net"], name)
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
        log(report.row_text(rec))
        out.append(rec)
    return out


#: Conv implementations the per-layer profile compares (CF-Net trains with 'auto').
PROFILE_IMPLS = ("im2col", "auto")


def layer_profile(scale: int, lr: int, reps: int, only: Sequence[str] = (),
                  impls: Sequence[str] = PROFILE_IMPLS) -> list[dict]:
    """Forward and gradient (params + input) time of each CF-Net layer kind at LR lr, batch 1,
    64 features, under each conv implementation in `impls`, with its count per training step
    (T = 3, 6 groups) and implied share (the loss row once)."""
    k, s, p = cfnet.PROJECTION_GEOMETRY[scale]
    hr = lr * scale
    f, groups, steps = 64, 6, 3
    blocks = 2 * (1 + steps)  # SRB + T CFBs, two branches
    # (name, module, input shape, count per forward pass)
    def block(impl, *args, **kw):
        return cfnet.ConvBlock(*args, conv_impl=impl, **kw)

    kinds = [
        ("FEB conv3x3 3->256 (LR)", (4 * f, 3), {}, (lr, 3), 2),
        ("FEB conv1x1 256->64 (LR)", (f, 1), {}, (lr, 4 * f), 2),
        ("up projection (LR->HR)", (f, k, s, p), {"transpose": True}, (lr, f), blocks * groups),
        ("down projection (HR->LR)", (f, k, s, p), {}, (hr, f), blocks * groups),
        ("1x1 over LR concat (avg 4x64)", (f, 1), {}, (lr, 4 * f), blocks * (groups + 1)),
        ("1x1 over HR concat (avg 4x64)", (f, 1), {}, (hr, 4 * f), blocks * (groups - 1)),
        ("REC deconv (LR->HR)", (f, k, s, p), {"transpose": True}, (lr, f), blocks),
        ("REC conv3x3 64->3 (HR)", (3, 3), {"act": False}, (hr, f), blocks),
    ]
    rows = []
    rng = np.random.default_rng(0)
    if only:
        kinds = [kind for kind in kinds if kind[0] in only]
    for (name, args, kw, (size, cin), count), impl in itertools.product(kinds, impls):
        module = block(impl, *args, **kw)
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
                "impl": impl,
                "count": count,
                "forward_ms": 1e3 * t_fwd,
                "grad_ms": 1e3 * t_grad,
                "forward_gflops": flops / t_fwd / 1e9,
                "grad_gflops": 2 * flops / t_grad / 1e9,  # the gradient is ~2 forward convs
                "step_share_s": count * t_grad,  # the gradient call runs the forward too
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
            "impl": "-",
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


def pipeline_timing_in(code: str, megapixels: float, scale: int = 2) -> dict:
    """`benchmarks/pipeline_timing.py` in a fresh process that imports `hdr_jax` from the
    checkout at ``code`` (this one or, say, an older commit's `git worktree`): its JSON, or
    {'skipped': reason}. Both sides of a comparison are timed this way, imports and
    compilation included."""
    script = os.path.join(os.path.dirname(__file__), "pipeline_timing.py")
    env = {**os.environ, "PYTHONPATH": os.path.abspath(code)}
    cmd = [sys.executable, script, "--megapixels", str(megapixels), "--scale", str(scale)]
    result = _json_of(cmd, env)
    timed = result.get("code")
    if timed and os.path.realpath(timed) != os.path.realpath(code):  # no hdr_jax there
        return {"skipped": f"{code} holds no hdr_jax package (would have timed {timed})"}
    return result


def git_commit(path: str) -> str:
    """The commit checked out at ``path`` ('' when it is not a git checkout)."""
    try:
        out = subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _json_of(cmd: list[str], env: dict | None = None) -> dict:
    """The last stdout line of a benchmark subprocess as JSON, or {'skipped': reason}."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False,
                              env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"skipped": f"{type(e).__name__}: {e}"}
    if proc.returncode != 0:
        return {"skipped": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def torch_reference(python: str, scale: int, lr: int, reps: int) -> dict:
    """`benchmarks/torch_reference.py` run in the interpreter ``python`` (one that has torch):
    its JSON result, or {'skipped': reason}."""
    script = os.path.join(os.path.dirname(__file__), "torch_reference.py")
    cmd = [python, script, "--scale", str(scale), "--lr", str(lr), "--reps", str(reps),
           "--threads", str(os.cpu_count() or 1)]
    return _json_of(cmd)
