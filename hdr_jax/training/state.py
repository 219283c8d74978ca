"""Train state and optimiser construction (plain pytrees; no methods that hide the maths)."""

from __future__ import annotations

from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax


@flax.struct.dataclass
class TrainState:
    """Everything a step needs and a checkpoint must hold.

    `rng` is the base key; per-step randomness is `fold_in(rng, step)`, so a resumed run draws the
    same dropout masks as an uninterrupted one.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array

    @property
    def variables(self) -> dict[str, Any]:
        v = {"params": self.params}
        if self.batch_stats:
            v["batch_stats"] = self.batch_stats
        return v


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam with an optional step decay (CF-Net's StepLR) and optional low-precision moments.

    `config.mu_dtype='bfloat16'` stores the first moment in bf16 (halves its memory; see
    benchmarks/ for what it costs); `config.nu_dtype='bfloat16'` also the second moment
    (`scale_by_adam_low_precision`).
    """
    lr = config.learning_rate
    if config.get("decay_every", 0):
        lr = optax.exponential_decay(
            lr,
            transition_steps=config.decay_every,
            decay_rate=config.get("decay_rate", 0.5),
            staircase=True,
        )
    mu_dtype = config.get("mu_dtype", None)
    nu_dtype = config.get("nu_dtype", None)
    b1, b2 = config.get("b1", 0.9), config.get("b2", 0.999)
    if nu_dtype:
        tx = optax.chain(
            scale_by_adam_low_precision(b1, b2, mu_dtype=mu_dtype or None, nu_dtype=nu_dtype),
            optax.scale_by_learning_rate(lr),
        )
    else:
        tx = optax.adam(lr, b1=b1, b2=b2, mu_dtype=jnp.dtype(mu_dtype) if mu_dtype else None)
    if config.get("grad_clip", 0.0):
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip), tx)
    return tx


class ScaleByAdamLowPrecisionState(NamedTuple):
    count: jax.Array
    mu: Any
    nu: Any


def scale_by_adam_low_precision(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformation:
    """Adam's scaling (Kingma & Ba, Algorithm 1) with the moments *stored* in `mu_dtype` /
    `nu_dtype` (e.g. bfloat16) and updated in float32. Equals `optax.scale_by_adam` for float32
    storage. bf16 keeps 8 mantissa bits: nu's EMA with b2 = 0.999 moves by < 2^-8 per step, so
    the stored value is rounded to nearest and its drift is that of bf16 rounding (not zero)."""

    def cast(tree, dtype):
        return tree if dtype is None else jax.tree.map(lambda x: x.astype(dtype), tree)

    def init_fn(params):
        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        return ScaleByAdamLowPrecisionState(
            jnp.zeros([], jnp.int32), cast(zeros, mu_dtype), cast(zeros, nu_dtype)
        )

    def update_fn(updates, state, params=None):
        del params
        f32 = lambda t: jax.tree.map(lambda x: x.astype(jnp.float32), t)  # noqa: E731
        g = f32(updates)
        mu = jax.tree.map(lambda m, x: b1 * m + (1.0 - b1) * x, f32(state.mu), g)
        nu = jax.tree.map(lambda v, x: b2 * v + (1.0 - b2) * x * x, f32(state.nu), g)
        count = optax.safe_int32_increment(state.count)
        c1 = 1.0 - b1 ** count.astype(jnp.float32)
        c2 = 1.0 - b2 ** count.astype(jnp.float32)
        out = jax.tree.map(
            lambda m, v, u: ((m / c1) / (jnp.sqrt(v / c2) + eps)).astype(u.dtype), mu, nu, updates
        )
        return out, ScaleByAdamLowPrecisionState(count, cast(mu, mu_dtype), cast(nu, nu_dtype))

    return optax.GradientTransformation(init_fn, update_fn)


def count_params(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
