"""Train state and optimiser construction (plain pytrees; no methods that hide the maths)."""

from __future__ import annotations

from typing import Any

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
    benchmarks/ for what it costs).
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
    tx = optax.adam(
        lr,
        b1=config.get("b1", 0.9),
        b2=config.get("b2", 0.999),
        mu_dtype=jnp.dtype(mu_dtype) if mu_dtype else None,
    )
    if config.get("grad_clip", 0.0):
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip), tx)
    return tx


def count_params(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
