"""Data parallelism over a `jax.sharding.Mesh`, on one host or several (`jax.distributed`).

One mesh axis, `data`, spans every device of every process. The train state is replicated
(`P()`); a global batch is split along `data` (`P("data")`). The datasets are small (47 MB of
uint8 for all of Fashion-MNIST), so every process holds them whole on each of its devices, and
each device gathers only its own rows of every global batch: no batch crosses the network.
"""

from __future__ import annotations

import contextlib

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fashion_jax.errors import ConfigError, UserError

DATA_AXIS = "data"


def initialize_distributed(config) -> None:
    """Joins JAX's distributed runtime when `config.distributed` is set (call before any JAX op).

    Empty coordinator address / 0 processes / process id -1 mean auto-detection, which JAX does
    on TPU VMs, SLURM and Open MPI. On CPU, collectives go through gloo. Raises ConfigError when
    nothing names the coordinator, and UserError when a process other than 0 cannot reach the
    coordinator within `distributed_timeout_seconds`. Process 0 waiting for a peer that never
    starts, or a peer lost after joining, ends in JAX's own abort after that timeout; the runner
    turns that into one error line (`supervisor`).
    """
    if not config.distributed:
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # Used only by CPU devices.
    timeout = config.distributed_timeout_seconds
    try:
        if config.coordinator_address and config.process_id > 0:
            _wait_for_coordinator(config.coordinator_address, timeout)
        jax.distributed.initialize(
            coordinator_address=config.coordinator_address or None,
            num_processes=config.num_processes or None,
            process_id=config.process_id if config.process_id >= 0 else None,
            initialization_timeout=timeout,
            heartbeat_timeout_seconds=min(100, timeout),
        )
    except (ValueError, TypeError) as e:  # Nothing named (or detected) the coordinator.
        raise ConfigError(
            f"distributed = true, but {str(e).rstrip('.')} and none was detected: give every "
            "process --config.coordinator_address=HOST:PORT --config.num_processes=N "
            "--config.process_id=I (auto-detection works on TPU VMs, SLURM and Open MPI)."
        ) from None
    except RuntimeError as e:
        if "must be called before" in str(e):
            raise
        _forget_failed_client()
        raise UserError(
            f"Could not join the distributed run at {config.coordinator_address or 'the detected coordinator'} "
            f"within distributed_timeout_seconds = {timeout}: the coordinator (process 0) is not "
            "reachable, or not every process started. Start all num_processes processes with the "
            "same command (or raise distributed_timeout_seconds)."
        ) from None


def _wait_for_coordinator(address: str, timeout: float) -> None:
    """Raises UserError unless something accepts TCP connections at `address` (HOST:PORT) within
    `timeout` seconds: JAX's client would otherwise end the process with a C++ check failure."""
    import socket
    import time

    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise UserError(
                    f"Could not join the distributed run at {address} within "
                    f"distributed_timeout_seconds = {timeout:g}: the coordinator (process 0) is "
                    "not reachable. Start all num_processes processes with the same command (or "
                    "raise distributed_timeout_seconds)."
                ) from None
            time.sleep(0.5)


def _forget_failed_client() -> None:
    """Drops a client (and service) that failed to connect, so exiting does not shut it down
    again (which raises and prints a traceback at exit)."""
    try:
        from jax._src import distributed as jax_distributed

        state = jax_distributed.global_state
        state.client = None
        if state.service is not None:
            with contextlib.suppress(Exception):
                state.service.shutdown()
            state.service = None
    except (ImportError, AttributeError):
        pass


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
