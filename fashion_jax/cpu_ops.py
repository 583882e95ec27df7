"""The layers' two formulations: "fast" for XLA:CPU and "plain" in standard ops, equal in value.

XLA's CPU backend runs some of autodiff's ops slowly for small networks (benchmarks/NOTES.md):
the select-and-scatter gradient of `lax.reduce_window` pooling, transposed convolutions inside
`lax.fori_loop`/`scan`, Cin=1 convolutions. The fast functions here compute the same values (and,
where noted, the same gradients) in forms that XLA:CPU runs fast. `conv_pool`, the layer the
built-in networks call, takes a `formulation`: "fast" (what they train with) or "plain" (the
obvious `nn.Conv` -> ReLU -> `nn.max_pool` in standard lax ops, what `export` writes out, since
ONNX and TF converters want standard ops). Everything is pure and shape-polymorphic;
`tests/test_cpu_ops.py` checks each fast op against its plain counterpart in `PLAIN`, and
`conv_pool` and the networks in one formulation against the other.
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


FORMULATIONS = ("fast", "plain")


def conv_pool(
    x: jnp.ndarray,
    kernel: jnp.ndarray,
    bias: jnp.ndarray | None = None,
    *,
    padding: str = "VALID",
    relu: bool = False,
    pool: bool = False,
    formulation: str = "fast",
) -> jnp.ndarray:
    """A stride-1 convolution (+ bias) (-> ReLU) (-> 2x2 max pool): `nn.Conv` and what follows it.

    x: float[B, H, W, Cin]; kernel: float[kh, kw, Cin, Cout]; bias: float[Cout] or None; padding:
    "VALID" or "SAME". Returns float[B, H', W', Cout], H' = H - kh + 1 (VALID) or H (SAME), halved
    (floor) with `pool`. The arrays are used in their own dtype.

    formulation "plain" computes it in that order with `lax.conv_general_dilated` and
    `nn.max_pool`. "fast" computes the same values in an order XLA:CPU runs several times faster
    (benchmarks/NOTES.md): pooling before the bias and ReLU (max commutes with both), the
    convolution only on the rows and columns the floor pooling keeps, the SAME padding as explicit
    zeros around a VALID convolution: im2col where Cin is 1, else the custom-VJP `conv_valid`; then
    `max_pool_2x2`.
    """
    kh, kw, cin, _ = kernel.shape
    if formulation == "plain":
        y = lax.conv_general_dilated(
            x, kernel, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        y = y if bias is None else y + bias
        y = nn.relu(y) if relu else y
        return plain_max_pool_2x2(y) if pool else y
    if formulation != "fast":
        raise ValueError(f"formulation {formulation!r}: choose one of {FORMULATIONS}.")
    if padding == "SAME":  # Stride 1: lax pads (k - 1) // 2 before and k // 2 after.
        x = jnp.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
    elif padding != "VALID":
        raise ValueError(f"padding {padding!r}: choose 'VALID' or 'SAME'.")
    if pool:  # Only the input rows and columns of the outputs that the floor pooling keeps.
        h, w = (x.shape[1] - kh + 1) // 2 * 2 + kh - 1, (x.shape[2] - kw + 1) // 2 * 2 + kw - 1
        if (h, w) != x.shape[1:3]:
            x = x[:, :h, :w, :]
    y = (conv_valid_im2col if cin == 1 else conv_valid)(x, kernel)
    y = max_pool_2x2(y) if pool else y
    y = y if bias is None else y + bias
    return nn.relu(y) if relu else y


# Each fast formulation and the plain op it must match (values and gradients).
PLAIN = {
    "max_pool_2x2": (max_pool_2x2, plain_max_pool_2x2),
    "conv_valid": (conv_valid, _conv_valid),
    "conv_valid_im2col": (conv_valid_im2col, _conv_valid),
}
