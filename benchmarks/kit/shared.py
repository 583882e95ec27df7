"""What every section shares: the context, configs, fresh states and device-resident synthetic data."""

from __future__ import annotations

import dataclasses
import functools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fashion_jax import config as config_lib
from fashion_jax import sharding, steps
from fashion_jax.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
N_TRAIN = 60000


class Clock:
    """Seconds since the kit started, and the deadline every section checks."""

    def __init__(self, deadline_s: float):
        self.t0, self.deadline_s = time.perf_counter(), deadline_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.deadline_s - self.elapsed()


@dataclasses.dataclass
class Context:
    """One kit run: its arguments, clock, mesh, the recipes, the results line, the peaks
    (TFLOP/s per device by dtype, once the peak section has run) and the FLOPs per step counted
    on the host's CPU for runs off it, by (model, config, batch, dtype)."""

    args: Any
    clock: Clock
    mesh: Any
    recipes: list[tuple[str, Any]]
    results: Any
    peaks: dict[str, float] = dataclasses.field(default_factory=dict)
    step_flops: dict[Any, Any] = dataclasses.field(default_factory=dict)

    @property
    def platform(self) -> str:
        return jax.devices()[0].platform


def recipe_configs() -> list[tuple[str, Any]]:
    """[(name, config)] of every experiments/*/config.py, `fast` first, then by name."""
    out = []
    for path in sorted((ROOT / "experiments").glob("*/config.py")):
        name = path.parent.name
        try:
            out.append((name, config_lib.load_experiment(path)))
        except UserError as e:
            print(f"skipping experiments/{name}: {e}", file=sys.stderr)
    out.sort(key=lambda nc: (nc[0] != "fast", nc[0]))
    return out


def override(config, **values):
    """A validated copy of `config` with `values` set (as command-line overrides are)."""
    config = config_lib.apply_overrides(config, {k: str(v) for k, v in values.items()})
    return config_lib.validate(config)


def data_overrides(args) -> dict[str, str]:
    """The runner's data source from --data-dir / --idx-dir (no download when either is given)."""
    out = {}
    if args.data_dir:
        out["data_dir"] = args.data_dir
    if args.idx_dir:
        out["idx_dir"] = args.idx_dir
    if args.data_dir or args.idx_dir:
        out["download"] = "false"
    return out


_STATES: dict[str, Any] = {}


def fresh_state(config, mesh, total_steps: int = 100_000):
    """A new train state for `config` at step 0 (a copy: callers donate it). Initialized and
    compiled once per state-defining config; batch size and steps per call do not change it."""
    key = config_lib.to_json(override(config, batch_size=1, steps_per_call=0)) + str(total_steps)
    if key not in _STATES:
        init = jax.jit(
            functools.partial(steps.create_train_state, config=config, total_steps=total_steps),
            out_shardings=sharding.replicated(mesh),
        )
        _STATES[key] = init(jax.random.key(config.seed))
    return jax.tree.map(jnp.copy, _STATES[key])


def synthetic_data(mesh, n: int):
    """(images uint8[n, 28, 28, 1], labels int32[n]) of random values, replicated on `mesh`."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(n,), dtype=np.int32)
    return sharding.put_replicated(images, mesh), sharding.put_replicated(labels, mesh)


def batch_order(mesh, n_examples: int, batch: int, batches: int):
    """int32[batch * batches] example indices in [0, n_examples), replicated on `mesh`."""
    rng = np.random.default_rng(1)
    return sharding.put_replicated(
        rng.integers(0, n_examples, size=(batch * batches,), dtype=np.int32), mesh
    )


def spread(times: list[float]) -> float:
    """(max - min) / median of a list of window times."""
    return (max(times) - min(times)) / statistics.median(times)


def one_line(e: BaseException) -> str:
    """`Type: first line of the message` (at most 200 characters) of an exception."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}".rstrip(": ")
