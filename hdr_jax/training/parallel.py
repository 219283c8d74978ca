"""Data-parallel training on a device mesh: one code path for one device, N devices of one host
and N processes on several hosts (JAX's own runtime, `jax.distributed`).

The mesh has one axis, ``data``. The global batch (``config.batch_size``) is split along it:
each process loads its rows (grain, :mod:`hdr_jax.data.sharding`), the rows are assembled into
one global array (`jax.make_array_from_process_local_data`) and every device holds
``batch_size / device_count`` of them. The jitted step sees the global batch, so a mean over the
batch (the losses, batch norm's statistics) is the mean over every device's rows: the update is
the one-device update on the same global batch, up to the order of the float reductions.

The train state is replicated by default. ``config.state_sharding`` shards it over ``data``
instead, ZeRO/FSDP-style: ``'optimizer'`` the optimiser state (Adam's two moments, twice the
parameters), ``'fsdp'`` the parameters too; XLA's partitioner inserts the gathers and
reduce-scatters the step then needs. Orbax stores global arrays, so a checkpoint restores on
any number of devices (the restore target carries this run's shardings).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from absl import flags
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
STATE_SHARDINGS = ("replicated", "optimizer", "fsdp")


class ParallelConfigError(ValueError):
    """The run's layout is inconsistent (a batch that does not split, a missing coordinator)."""


# -- processes ------------------------------------------------------------------------------------


def define_flags() -> None:
    """Flags of a multi-process run. Defaults from the environment: JAX_COORDINATOR_ADDRESS
    (which `jax.distributed` reads too), JAX_NUM_PROCESSES and JAX_PROCESS_ID."""
    env = os.environ.get
    flags.DEFINE_string(
        "coordinator_address",
        env("JAX_COORDINATOR_ADDRESS"),
        "host:port of process 0's coordinator (multi-process runs; env JAX_COORDINATOR_ADDRESS).",
    )
    flags.DEFINE_integer(
        "num_processes",
        int(env("JAX_NUM_PROCESSES", "1")),
        "Processes in the run (env JAX_NUM_PROCESSES).",
    )
    flags.DEFINE_integer(
        "process_id", int(env("JAX_PROCESS_ID", "0")), "This process's index (env JAX_PROCESS_ID)."
    )
    flags.DEFINE_bool(
        "distributed_auto",
        False,
        "Call jax.distributed.initialize() with JAX's cluster auto-detection (SLURM, MPI, TPU).",
    )
    flags.DEFINE_integer(
        "distributed_timeout", 300, "Seconds to wait for every process to join the run."
    )


def initialize_from_flags() -> None:
    """`jax.distributed.initialize` as the flags ask; a no-op for a single-process run.

    Must run before anything touches a device: the process's backends are created with the
    run's topology. CPU processes talk through JAX's default CPU collectives, gloo
    (``jax_cpu_collectives_implementation``).
    """
    f = flags.FLAGS
    if not f.distributed_auto and f.num_processes <= 1 and not f.coordinator_address:
        return
    if f.distributed_auto:
        jax.distributed.initialize(initialization_timeout=f.distributed_timeout)
        return
    if not f.coordinator_address:
        raise ParallelConfigError("--num_processes > 1 needs --coordinator_address=HOST:PORT")
    jax.distributed.initialize(
        coordinator_address=f.coordinator_address,
        num_processes=f.num_processes,
        process_id=f.process_id,
        initialization_timeout=f.distributed_timeout,
    )


def is_primary() -> bool:
    """Process 0 writes metrics, previews and files that are not checkpoints."""
    return jax.process_index() == 0


# -- mesh and shardings ---------------------------------------------------------------------------


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """`devices` (default: every device of every process) on the ``data`` axis.

    The axis is `Auto`: the steps are written for one device and XLA's partitioner propagates
    the input shardings through them (no sharding in the types of the model's arrays).
    """
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh(
        (len(devices),), (DATA_AXIS,), devices=devices, axis_types=(AxisType.Auto,)
    )


def per_device_batch(batch_size: int, num_devices: int | None = None) -> int:
    """`batch_size / num_devices` (default: all devices), or `ParallelConfigError` (one line)."""
    n = jax.device_count() if num_devices is None else num_devices
    if batch_size % n:
        raise ParallelConfigError(
            f"batch_size {batch_size} does not divide over {n} devices; use a multiple of {n}"
        )
    return batch_size // n


def per_process_batch(batch_size: int, mesh: Mesh) -> int:
    """Rows of the global batch this process loads, after checking the split over devices."""
    per_device_batch(batch_size, mesh.size)
    p = jax.process_count()
    if batch_size % p:
        raise ParallelConfigError(
            f"batch_size {batch_size} does not divide over {p} processes; use a multiple of {p}"
        )
    return batch_size // p


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``data``."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def _sharded_over_data(x: Any, mesh: Mesh) -> NamedSharding:
    """The largest axis that splits evenly over ``data`` (the last such on ties, a layer's
    output features); replicated when none does (scalars, biases of odd size)."""
    n = mesh.shape[DATA_AXIS]
    shape = np.shape(x)
    axes = [i for i, d in enumerate(shape) if d % n == 0 and d >= n]
    if n == 1 or not axes:
        return replicated(mesh)
    axis = max(axes, key=lambda i: (shape[i], i))
    spec = [None] * len(shape)
    spec[axis] = DATA_AXIS
    return NamedSharding(mesh, PartitionSpec(*spec))


def state_shardings(state: Any, mesh: Mesh, mode: str = "replicated") -> Any:
    """Shardings of a `TrainState` (concrete or abstract): replicated, or with the optimiser
    state (``'optimizer'``) or parameters and optimiser state (``'fsdp'``) split over ``data``."""
    if mode not in STATE_SHARDINGS:
        raise ValueError(f"state_sharding must be one of {STATE_SHARDINGS}, got {mode!r}")
    shardings = jax.tree.map(lambda _: replicated(mesh), state)
    split = lambda tree: jax.tree.map(lambda x: _sharded_over_data(x, mesh), tree)  # noqa: E731
    if mode == "optimizer":
        shardings = shardings.replace(opt_state=split(state.opt_state))
    elif mode == "fsdp":
        shardings = shardings.replace(params=split(state.params), opt_state=split(state.opt_state))
    return shardings


def global_batch(local: dict, sharding: NamedSharding) -> dict:
    """This process's rows of every batch entry assembled into global arrays."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local
    )


def host_copy(tree: Any) -> Any:
    """NumPy copy of a (possibly sharded, possibly multi-process) pytree on every process."""
    return multihost_utils.process_allgather(tree, tiled=True)
