"""Flax Linen classifiers. Inputs are NHWC float32 in [0, 1]; outputs are logits float32[B, 10].

`SeedCNN` is the tutorial's Keras network layer for layer (140,682 parameters). The stronger
models are selected by name through `get_model(config)`.
"""

from __future__ import annotations

import functools

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
    return jnp.maximum(jnp.maximum(x[:, :, 0, :, 0], x[:, :, 0, :, 1]),
                       jnp.maximum(x[:, :, 1, :, 0], x[:, :, 1, :, 1]))


def _conv_valid(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    return lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


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
    patches = jnp.concatenate([x[:, i:i + oh, j:j + ow, :] for i in range(kh) for j in range(kw)], axis=-1)
    return jnp.dot(patches.reshape(-1, kh * kw * cin), w.reshape(kh * kw * cin, cout)).reshape(b, oh, ow, cout)


class _ConvParams(nn.Module):
    """The parameters of `nn.Conv(features, (3, 3))` (kernel [3, 3, Cin, features], bias), unapplied."""

    features: int

    @nn.compact
    def __call__(self, cin: int):
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, cin, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return kernel, bias


class SeedCNN(nn.Module):
    """The tutorial's network: Conv64-ReLU-Pool, Conv64-ReLU-Pool, Dense64 (linear), Dense10.

    Parameters and outputs are those of the plain Linen version
    (`nn.Conv(64, (3, 3), padding="VALID")` -> relu -> 2x2 max pool, twice, then two `nn.Dense`;
    tests check both), computed in an order that is 3x faster on CPU (benchmarks/NOTES.md):
    pooling comes before the bias and ReLU (max commutes with both), and the second convolution
    only computes the 10x10 outputs that its pooling keeps.
    """

    num_classes: int = 10
    features: tuple[int, int] = (64, 64)  # The two convolutions' widths.
    hidden: int = 64  # Width of the first Dense layer.
    hidden_relu: bool = False  # The tutorial has no activation there.

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """x: float32[B, 28, 28, 1] in [0, 1] -> logits float32[B, num_classes]."""
        del train  # No dropout or batch norm: kept for a uniform model signature.
        kernel, bias = _ConvParams(self.features[0], name="Conv_0")(x.shape[-1])
        x = nn.relu(max_pool_2x2(conv_valid_im2col(x, kernel)) + bias)  # [B, 13, 13, C1]
        kernel, bias = _ConvParams(self.features[1], name="Conv_1")(x.shape[-1])
        x = nn.relu(max_pool_2x2(conv_valid(x[:, :12, :12, :], kernel)) + bias)  # [B, 5, 5, C2]
        x = x.reshape(x.shape[0], -1)
        x = nn.Dense(self.hidden, name="Dense_0")(x)
        if self.hidden_relu:
            x = nn.relu(x)
        return nn.Dense(self.num_classes, name="Dense_1")(x)


class PlainSeedCNN(nn.Module):
    """SeedCNN written the obvious way (nn.Conv, nn.max_pool): the reference `SeedCNN` must match."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        del train
        pool = lambda y: nn.max_pool(y, (2, 2), (2, 2), padding="VALID")
        x = pool(nn.relu(nn.Conv(64, (3, 3), padding="VALID")(x)))
        x = pool(nn.relu(nn.Conv(64, (3, 3), padding="VALID")(x)))
        x = nn.Dense(64)(x.reshape(x.shape[0], -1))
        return nn.Dense(self.num_classes)(x)


class ResidualBlock(nn.Module):
    """Pre-activation basic block: (BN-ReLU-Conv3x3) x 2 plus a (1x1 projected) shortcut."""

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)
        y = nn.relu(norm()(x))
        shortcut = x
        if self.strides != 1 or x.shape[-1] != self.features:
            shortcut = nn.Conv(self.features, (1, 1), self.strides, use_bias=False)(y)
        y = nn.Conv(self.features, (3, 3), self.strides, padding="SAME", use_bias=False)(y)
        y = nn.relu(norm()(y))
        y = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False)(y)
        return y + shortcut


class ResNetSmall(nn.Module):
    """A pre-activation ResNet for 28x28 inputs: 3 stages (28, 14, 7 px), batch norm, global pooling.

    With the default widths (32, 64, 128) and 2 blocks per stage: 695,658 parameters (under 1M, a
    test asserts it) and about 146 MFLOP per forward pass of one image (SeedCNN: 10 MFLOP).
    """

    num_classes: int = 10
    widths: tuple[int, ...] = (32, 64, 128)
    blocks_per_stage: int = 2

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """x: float32[B, 28, 28, 1] in [0, 1] -> logits float32[B, num_classes]."""
        x = nn.Conv(self.widths[0], (3, 3), padding="SAME", use_bias=False)(x - 0.286)  # Data mean.
        for stage, width in enumerate(self.widths):
            for block in range(self.blocks_per_stage):
                strides = 2 if stage > 0 and block == 0 else 1
                x = ResidualBlock(width, strides)(x, train)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes)(x)


MODELS = {
    "seed_cnn": SeedCNN,
    # SeedCNN at a third of its FLOPs (conv widths 32/32) with a ReLU, wider hidden layer: the
    # time-to-accuracy model of experiments/fast.
    "fast_cnn": functools.partial(SeedCNN, features=(32, 32), hidden=128, hidden_relu=True),
    "plain_seed_cnn": PlainSeedCNN,
    "resnet_small": ResNetSmall,
}


def get_model(name: str, num_classes: int = 10) -> nn.Module:
    """Returns the Linen module registered under `name` (see `MODELS`)."""
    return MODELS[name](num_classes=num_classes)
