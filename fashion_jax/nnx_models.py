"""How an NNX module trains through the same TrainState, steps and loop as a Linen one.

Design: one TrainState and one loop for both kinds of model. An `nnx.Module` is split once,
`graphdef, params, rng_state, rest = nnx.split(model, nnx.Param, nnx.RngState, ...)`:

- `params` (every `nnx.Param`) go into `state.params` and `rest` (batch-norm statistics, and any
  other non-parameter variable) into `state.batch_stats`, both as plain nested dicts, so the
  optimizer, the EMA, the digest and the Orbax checkpoints see ordinary pytrees;
- `state.apply_fn` is an `NNXApply`: a frozen, hashable object holding only the static `graphdef`
  and the layout of the RNG state. Called like a Linen `model.apply`,
  `apply_fn(variables, x, train=..., mutable=["batch_stats"], rngs={"dropout": key})`, it
  `nnx.merge`s a module from `variables`, sets train or eval mode with `model.train()` /
  `model.eval()` (flax 0.12: `Dropout.deterministic`, `BatchNorm.use_running_average`), runs it,
  and returns the logits (and `{"batch_stats": ...}` updated when `mutable`).

Why not keep the module's own `nnx.Rngs` state: drawing a dropout mask advances a counter held in
the module, which would make the steps impure and the per-step randomness depend on how many
calls came before (a resumed run would differ from an uninterrupted one). Instead every RNG stream
of the module is re-keyed on each call from the step's key (`fold_in(key, stream index)`), which
the runner derives as `fold_in(step_key, step)`: the steps stay pure functions of their inputs
and a resumed run is bitwise identical. `flax.nnx.bridge` would also fit the Linen interface, but
it keeps RNG counters as module state, which is what this avoids.

A model's contract: `Name(num_classes=..., **model_kwargs, rngs=nnx.Rngs(...))` (plus `dtype` when
its constructor takes one), called as `model(x)` on float32[B, H, W, C] in [0, 1], returning
logits [B, num_classes]. Dropout layers need `rngs=` at construction (`nnx.Dropout(0.5,
rngs=rngs)`), like flax's MNIST example.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, traverse_util


def _str_keys(tree):
    """A pure dict with every key a string (nnx.List layers have int keys): Orbax-friendly."""
    if isinstance(tree, dict):
        return {str(k): _str_keys(v) for k, v in tree.items()}
    return tree


def _pure(state) -> dict:
    return _str_keys(nnx.to_pure_dict(state))


@dataclasses.dataclass(frozen=True)
class NNXApply:
    """A pure `apply(variables, x, train=False, mutable=(), rngs=None)` for a split NNX module.

    graphdef: the module's static structure. rng_layout: (path, kind, shape) of each RNG variable,
    kind "key" or "count", rebuilt on every call (see the module docstring).
    """

    graphdef: Any
    rng_layout: tuple[tuple[tuple, str, tuple[int, ...]], ...]

    def _rng_state(self, key: jax.Array | None) -> dict:
        key = jax.random.key(0) if key is None else key
        flat = {}
        for i, (path, kind, shape) in enumerate(self.rng_layout):
            if kind == "key":
                k = jax.random.fold_in(key, i)
                flat[path] = jax.random.split(k, shape) if shape else k
            else:
                flat[path] = jnp.zeros(shape, jnp.uint32)
        return traverse_util.unflatten_dict(flat)

    def merge(self, variables: dict, rng: jax.Array | None = None) -> nnx.Module:
        """The module with `variables` ({"params", "batch_stats"}) and RNG streams keyed by `rng`."""
        return nnx.merge(
            self.graphdef,
            nnx.restore_int_paths(variables["params"]),
            self._rng_state(rng),
            nnx.restore_int_paths(variables.get("batch_stats") or {}),
        )

    def __call__(self, variables, x, train: bool = False, mutable=(), rngs=None):
        """variables: {"params", "batch_stats"}; x: float32[B, H, W, C] -> logits [B, classes]
        (and {"batch_stats": updated} when `mutable`). rngs: {"dropout": key} (any name) keys
        every RNG stream of the module for this call."""
        key = next(iter(rngs.values())) if rngs else None
        model = self.merge(variables, key)
        if train:
            model.train()
        else:
            model.eval()
        logits = model(x)
        if not mutable:
            return logits
        _, _, _, rest = nnx.split(model, nnx.Param, nnx.RngState, ...)
        return logits, {"batch_stats": _pure(rest)}


def split(model: nnx.Module) -> tuple[NNXApply, dict, dict]:
    """(apply_fn, params, batch_stats) of a constructed NNX module; the dicts are pure pytrees of
    float32 arrays with string keys (what the TrainState and the checkpoints hold)."""
    graphdef, params, rng_state, rest = nnx.split(model, nnx.Param, nnx.RngState, ...)
    layout = []
    for path, var in nnx.to_flat_state(rng_state):
        value = var.get_value() if isinstance(var, nnx.Variable) else var
        kind = "key" if jnp.issubdtype(value.dtype, jax.dtypes.prng_key) else "count"
        layout.append((tuple(path), kind, tuple(value.shape)))
    return NNXApply(graphdef, tuple(layout)), _pure(params), _pure(rest)


def is_nnx_class(obj) -> bool:
    """Whether `obj` is an `nnx.Module` subclass (or a functools.partial of one)."""
    obj = getattr(obj, "func", obj)
    return isinstance(obj, type) and issubclass(obj, nnx.Module)
