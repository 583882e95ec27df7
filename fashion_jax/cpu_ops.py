"""Exact fast formulations of standard layers for XLA:CPU, each tested against the plain version.

XLA's CPU backend runs some of autodiff's ops slowly for small networks (benchmarks/NOTES.md):
the select-and-scatter gradient of `lax.reduce_window` pooling, transposed convolutions inside
`lax.fori_loop`/`scan`, Cin=1 convolutions. These functions compute the same values (and, where
noted, the same gradients) in forms that XLA:CPU runs fast. They are pure and shape-polymorphic;
`tests/test_cpu_ops.py` checks each against its plain counterpart in `PLAIN`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    """2x2 max pooling, stride 2, VALID (odd edges dropped, as Keras' MaxPooling2D).

    The max of four strided views rather than `nn.max_pool`: the same values, but the gradient
    is a few selects, where `lax.reduce_window`'s is a select-and-scatter and `.max(axis=...)`'s
    adds a tie-counting reduction, the two slowest ops of this network on XLA's CPU backend
    (benchmarks/NOTES.md). At exact ties the gradient goes to one input instead of being split.

    x: float[B, H, W, C] -> float[B, H // 2, W // 2, C].
    """
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2, :].reshape(b, h // 2, 2, w // 2, 2, c)
    return jnp.maximum(
        jnp.maximum(x[:, :, 0, :, 0], x[:, :, 0, :, 1]),
        jnp.maximum(x[:, :, 1, :, 0], x[:, :, 1, :, 1]),
    )


def _conv_valid(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    return lax.conv_general_dilated(
        x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@jax.custom_vjp
def conv_valid(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """VALID stride-1 convolution, x: float[B, H, W, Cin], w: float[kh, kw, Cin, Cout].

    Same values and gradients as `lax.conv_general_dilated`; the backward pass is written as two
    plain forward convolutions, which XLA's CPU backend runs through its fast library kernels even
    inside a `lax.fori_loop`/`scan` body (autodiff's own transposed convolutions fall back to slow
    loops there: benchmarks/NOTES.md).
    """
    return _conv_valid(x, w)


def _conv_valid_fwd(x, w):
    return _conv_valid(x, w), (x, w)


def _conv_valid_bwd(residuals, dy):
    x, w = residuals
    kh, kw = w.shape[:2]
    dy_padded = jnp.pad(dy, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
    dx = _conv_valid(dy_padded, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2))
    dw = _conv_valid(x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3)).transpose(1, 2, 0, 3)
    return dx, dw


conv_valid.defvjp(_conv_valid_fwd, _conv_valid_bwd)


def conv_valid_im2col(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """VALID stride-1 convolution as patches @ kernel: fastest when Cin is 1 (the patches are small)."""
    kh, kw, cin, cout = w.shape
    b, h, wd, _ = x.shape
    oh, ow = h - kh + 1, wd - kw + 1
    patches = jnp.concatenate(
        [x[:, i : i + oh, j : j + ow, :] for i in range(kh) for j in range(kw)], axis=-1
    )
    return jnp.dot(patches.reshape(-1, kh * kw * cin), w.reshape(kh * kw * cin, cout)).reshape(
        b, oh, ow, cout
    )


def plain_max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    """The reference for `max_pool_2x2`: `nn.max_pool`, 2x2, stride 2, VALID."""
    return nn.max_pool(x, (2, 2), (2, 2), padding="VALID")


# Each fast formulation and the plain op it must match (values and gradients).
PLAIN = {
    "max_pool_2x2": (max_pool_2x2, plain_max_pool_2x2),
    "conv_valid": (conv_valid, _conv_valid),
    "conv_valid_im2col": (conv_valid_im2col, _conv_valid),
}
