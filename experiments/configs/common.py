"""Shared pieces of the training configs: a strict variant parser and the common blocks.

A config file is selected as ``--config experiments/configs/NAME.py:VARIANT`` where VARIANT is a
comma-separated list of options. Every option must be known to that config: a typo (``x3``,
``tyni``) is an error, not a silent fallback to the default.
"""

from __future__ import annotations

from collections.abc import Collection

import ml_collections


def parse_variant(variant: str, allowed: Collection[str], *, name: str) -> frozenset[str]:
    """The set of options in ``variant``; ValueError on any option not in ``allowed``."""
    opts = frozenset(v.strip() for v in variant.split(",") if v.strip())
    unknown = sorted(opts - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown {name} config variant(s) {unknown}; choose from {sorted(allowed)}"
        )
    return opts


def one_of(opts: frozenset[str], group: Collection[str], *, name: str,
           default: str | None = None) -> str:
    """The single option of ``group`` in ``opts`` (``default`` when none; required if None)."""
    chosen = sorted(opts & set(group))
    if len(chosen) > 1:
        raise ValueError(f"{name} config takes one of {sorted(group)}, got {chosen}")
    if chosen:
        return chosen[0]
    if default is None:
        raise ValueError(f"{name} config needs one of {sorted(group)} in the variant")
    return default


def adam(learning_rate: float, b1: float = 0.9, b2: float = 0.999,
         **extra) -> ml_collections.ConfigDict:
    """The optimizer block (hdr_jax.training.state.make_optimizer reads it)."""
    return ml_collections.ConfigDict(dict(learning_rate=learning_rate, b1=b1, b2=b2, **extra))


def set_schedule(config: ml_collections.ConfigDict, *, num_train_steps: int, log_every: int,
                 eval_every: int, checkpoint_every: int) -> None:
    """Training length and the cadence of logging, validation and checkpoints."""
    config.num_train_steps = num_train_steps
    config.log_every = log_every
    config.eval_every = eval_every
    config.checkpoint_every = checkpoint_every


def set_tiny_schedule(config: ml_collections.ConfigDict, batch_size: int) -> None:
    """The test-sized run of every config: 4 steps, a log, a validation and two checkpoints."""
    config.batch_size = batch_size
    set_schedule(config, num_train_steps=4, log_every=2, eval_every=4, checkpoint_every=2)
