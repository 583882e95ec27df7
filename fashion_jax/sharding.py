"""Data parallelism over a `jax.sharding.Mesh`, on one host or several (`jax.distributed`).

One mesh axis, `data`, spans every device of every process. The train state is replicated
(`P()`); a global batch is split along `data` (`P("data")`). The datasets are small (47 MB of
uint8 for all of Fashion-MNIST), so every process holds them whole on each of its devices, and
each device gathers only its own rows of every global batch: no batch crosses the network.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fashion_jax.errors import ConfigError

DATA_AXIS = "data"


def initialize_distributed(config) -> None:
    """Joins JAX's distributed runtime when `config.distributed` is set (call before any JAX op).

    Empty coordinator address / 0 processes / process id -1 mean auto-detection, which JAX does
    on TPU VMs, SLURM and Open MPI. On CPU, collectives go through gloo.
    """
    if not config.distributed:
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # Used only by CPU devices.
    jax.distributed.initialize(
        coordinator_address=config.coordinator_address or None,
        num_processes=config.num_processes or None,
        process_id=config.process_id if config.process_id >= 0 else None,
        initialization_timeout=config.distributed_timeout_seconds,
        heartbeat_timeout_seconds=min(100, config.distributed_timeout_seconds),
    )


def make_mesh() -> Mesh:
    """A 1-D mesh named `data` over all devices of all processes."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(name: str, batch_size: int, mesh: Mesh) -> None:
    """Raises ConfigError unless `batch_size` splits evenly over the mesh's devices."""
    n = mesh.devices.size
    if batch_size % n:
        lower, upper = batch_size // n * n, (batch_size // n + 1) * n
        options = f"{lower} or {upper}" if lower else f"{upper}"
        raise ConfigError(
            f"{name} = {batch_size} does not split evenly over {n} devices; "
            f"use a multiple of {n} (for example {options})."
        )


def put_replicated(array: np.ndarray, mesh: Mesh) -> jax.Array:
    """Places a host array (identical on every process) whole on every device of the mesh."""
    return jax.make_array_from_process_local_data(replicated(mesh), array, array.shape)
