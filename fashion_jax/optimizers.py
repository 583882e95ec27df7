"""Optimizers and learning-rate schedules, by name. Pure: configs in, Optax objects out.

To add an optimizer, add a builder `(config, learning_rate) -> optax.GradientTransformation` to
`OPTIMIZERS` (and its name to the choices in config.py); to add a schedule, add a builder
`(config, total_steps, warmup_steps) -> optax.Schedule` to `SCHEDULES`.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import optax

from fashion_jax import config as config_lib
from fashion_jax.config import SCHEDULE_ALIASES
from fashion_jax.errors import ConfigError


def _sgd(config, lr):
    return optax.chain(
        optax.identity()
        if config_lib.is_off(config.weight_decay)
        else optax.add_decayed_weights(config.weight_decay),
        optax.sgd(
            lr,
            momentum=None if config_lib.is_off(config.momentum) else config.momentum,
            nesterov=config.nesterov,
        ),
    )


def _is_conv_kernel(p) -> bool:
    """Muon's parameters: the HWIO convolution kernels (the only 4-D parameters here)."""
    return p.ndim == 4


def _renormalized_first() -> optax.GradientTransformation:
    """Makes each parameter's step `p -> p * sqrt(Cout) / |p| + update` (|p| its Frobenius norm,
    Cout its last axis): the kernel is rescaled to its initial norm (`lecun_normal`'s expectation),
    then stepped, as airbench94_muon does. Behind batch norm the rescaling changes no output, and
    the orthogonal steps (Frobenius norm ~sqrt(Cout) x rate) keep one size relative to the kernel;
    without it the kernels' norms grow during a run and their effective rate falls."""

    def update(updates, state, params):
        if params is None:
            raise ValueError("muon_renormalize needs the parameters: pass params to update().")

        def one(u, p):
            scale = jnp.sqrt(jnp.asarray(p.shape[-1], p.dtype)) / (
                jnp.linalg.norm(p.ravel()) + 1e-12
            )
            return u + (scale - 1) * p

        return jax.tree.map(one, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _muon(config, lr):
    """Muon on the convolution kernels, `sgd` on every other parameter (airbench94_muon's split).

    Each HWIO kernel's momentum is orthogonalised as one (H*W*Cin, Cout) matrix by
    `muon_ns_steps` Newton-Schulz iterations (`optax.contrib.scale_by_muon`, with `momentum` as
    its beta and `nesterov`), then decayed by `weight_decay` (decoupled) and scaled by the
    schedule times `muon_scale`; with `muon_renormalize`, each kernel is first rescaled to
    Frobenius norm sqrt(Cout) (`_renormalized_first`). Dense kernels, biases and batch-norm
    parameters take Nesterov SGD at the schedule's rate, as `sgd`. (`optax.contrib.muon` alone
    would send 4-D kernels to AdamW without saying so.)"""
    conv = optax.contrib.MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3)

    def dimension_numbers(params):
        return jax.tree.map(lambda p: conv if _is_conv_kernel(p) else None, params)

    kernels = optax.chain(
        optax.contrib.scale_by_muon(
            beta=config.momentum,
            nesterov=config.nesterov,
            ns_steps=config.muon_ns_steps,
            weight_dimension_numbers=dimension_numbers,
        ),
        optax.identity()
        if config_lib.is_off(config.weight_decay)
        else optax.add_decayed_weights(config.weight_decay),
        optax.scale_by_learning_rate(lr),
        optax.scale(config.muon_scale),
        _renormalized_first() if config.muon_renormalize else optax.identity(),
    )
    return optax.multi_transform(
        {"muon": kernels, "rest": _sgd(config, lr)},
        lambda params: jax.tree.map(lambda p: "muon" if _is_conv_kernel(p) else "rest", params),
    )


OPTIMIZERS = {
    "adam": lambda config, lr: optax.adam(lr),  # The tutorial's.
    "adamw": lambda config, lr: optax.adamw(lr, weight_decay=config.weight_decay),
    # SGD with (Nesterov) momentum; weight_decay is L2 added to the gradient, as in most SGD recipes.
    "sgd": _sgd,
    "muon": _muon,
}

SCHEDULES = {
    # Linear warm-up from 0, then cosine decay to 0.
    "cosine": lambda c, total, warmup: optax.warmup_cosine_decay_schedule(
        0.0, c.learning_rate, warmup, total, end_value=0.0
    ),
    # Cosine up from lr/25 over the warm-up, then cosine down to ~0 (Smith's one-cycle).
    "onecycle": lambda c, total, warmup: optax.cosine_onecycle_schedule(
        total, c.learning_rate, pct_start=max(warmup, 1) / total
    ),
    # Linear up from 0 over the warm-up, then linear down to 0 (airbench's triangular schedule).
    "triangular": lambda c, total, warmup: optax.join_schedules(
        [
            optax.linear_schedule(0.0, c.learning_rate, max(warmup, 1)),
            optax.linear_schedule(c.learning_rate, 0.0, max(total - warmup, 1)),
        ],
        [max(warmup, 1)],
    ),
}


def schedule_name(name: str) -> str:
    """The `SCHEDULES` name for a config's `schedule` (a deprecated alias maps to its new name)."""
    if name in SCHEDULE_ALIASES:
        warnings.warn(
            f"schedule '{name}' is deprecated; it is '{SCHEDULE_ALIASES[name]}' (the same schedule).",
            DeprecationWarning,
            stacklevel=2,
        )
    return SCHEDULE_ALIASES.get(name, name)


def learning_rate_schedule(config, total_steps: int | None = None) -> optax.Schedule | float:
    """The config's learning rate: a float for "constant", else a schedule over `total_steps`."""
    if config.schedule == "constant":
        return config.learning_rate
    if not total_steps:
        raise ValueError(f"schedule '{config.schedule}' needs total_steps")
    warmup = int(round(config.warmup_epochs / config.num_epochs * total_steps))
    if config.schedule in config_lib.DECAYING_AFTER_WARMUP and warmup >= total_steps:
        raise ConfigError(
            config_lib.WARMUP_FILLS_RUN.format(config=config)
            + f" (its {warmup} warm-up steps leave none of the run's {total_steps})"
        )
    return SCHEDULES[schedule_name(config.schedule)](config, total_steps, warmup)


def make_optimizer(config, total_steps: int | None = None) -> optax.GradientTransformation:
    """`config.optimizer` on the config's learning-rate schedule."""
    return OPTIMIZERS[config.optimizer](config, learning_rate_schedule(config, total_steps))
