"""Flax Linen classifiers. Inputs are NHWC float32 in [0, 1]; outputs are logits float32[B, 10].

Every model takes `dtype`, the dtype its convolutions and matmuls compute in (bfloat16 for mixed
precision on accelerators); parameters are float32 and logits come back as float32.

`SeedCNN` is the tutorial's Keras network layer for layer (140,682 parameters). The stronger
models are selected by name through `get_model(config)`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fashion_jax.cpu_ops import conv_valid, conv_valid_im2col, max_pool_2x2


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
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """x: float32[B, 28, 28, 1] in [0, 1] -> logits float32[B, num_classes]."""
        del train  # No dropout or batch norm: kept for a uniform model signature.
        cast = lambda *a: [t.astype(self.dtype) for t in a]
        kernel, bias = cast(*_ConvParams(self.features[0], name="Conv_0")(x.shape[-1]))
        x = nn.relu(max_pool_2x2(conv_valid_im2col(*cast(x), kernel)) + bias)  # [B, 13, 13, C1]
        kernel, bias = cast(*_ConvParams(self.features[1], name="Conv_1")(x.shape[-1]))
        x = nn.relu(max_pool_2x2(conv_valid(x[:, :12, :12, :], kernel)) + bias)  # [B, 5, 5, C2]
        x = x.reshape(x.shape[0], -1)
        x = nn.Dense(self.hidden, dtype=self.dtype, name="Dense_0")(x)
        if self.hidden_relu:
            x = nn.relu(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="Dense_1")(x).astype(jnp.float32)


class PlainSeedCNN(nn.Module):
    """SeedCNN written the obvious way (nn.Conv, nn.max_pool): the reference that `SeedCNN` (and
    `fast_cnn`, with the same fields) must match, parameter for parameter and logit for logit."""

    num_classes: int = 10
    features: tuple[int, int] = (64, 64)
    hidden: int = 64
    hidden_relu: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """x: float32[B, 28, 28, 1] in [0, 1] -> logits float32[B, num_classes]."""
        del train
        pool = lambda y: nn.max_pool(y, (2, 2), (2, 2), padding="VALID")
        x = pool(nn.relu(nn.Conv(self.features[0], (3, 3), padding="VALID", dtype=self.dtype)(x)))
        x = pool(nn.relu(nn.Conv(self.features[1], (3, 3), padding="VALID", dtype=self.dtype)(x)))
        x = nn.Dense(self.hidden, dtype=self.dtype)(x.reshape(x.shape[0], -1))
        if self.hidden_relu:
            x = nn.relu(x)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class ResidualBlock(nn.Module):
    """Pre-activation basic block: (BN-ReLU-Conv3x3) x 2 plus a (1x1 projected) shortcut."""

    features: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
        y = nn.relu(norm()(x))
        shortcut = x
        if self.strides != 1 or x.shape[-1] != self.features:
            shortcut = conv(self.features, (1, 1), self.strides)(y)
        y = conv(self.features, (3, 3), self.strides, padding="SAME")(y)
        y = nn.relu(norm()(y))
        y = conv(self.features, (3, 3), padding="SAME")(y)
        return y + shortcut


class ResNetSmall(nn.Module):
    """A pre-activation ResNet for 28x28 inputs: 3 stages (28, 14, 7 px), batch norm, global pooling.

    With the default widths (32, 64, 128) and 2 blocks per stage: 695,658 parameters (under 1M, a
    test asserts it) and about 146 MFLOP per forward pass of one image (SeedCNN: 10 MFLOP).
    """

    num_classes: int = 10
    widths: tuple[int, ...] = (32, 64, 128)
    blocks_per_stage: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """x: float32[B, 28, 28, 1] in [0, 1] -> logits float32[B, num_classes]."""
        x = nn.Conv(self.widths[0], (3, 3), padding="SAME", use_bias=False, dtype=self.dtype)(
            x - 0.286
        )
        for stage, width in enumerate(self.widths):
            for block in range(self.blocks_per_stage):
                strides = 2 if stage > 0 and block == 0 else 1
                x = ResidualBlock(width, strides, dtype=self.dtype)(x, train)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x))
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class ConvBlock(nn.Module):
    """3x3 SAME convolution -> (2x2 max pool) -> batch norm -> ReLU, the airbench block order: the
    normalization and activation run on the pooled, 4x smaller tensor.

    Computed with the fast CPU formulations (im2col for one input channel, the custom-VJP VALID
    convolution on the zero-padded input; before a pool only the outputs it keeps). The parameters
    are those of `nn.Conv(features, (3, 3), use_bias=False)` and `nn.BatchNorm`.
    """

    features: int
    pool: bool = False
    bn_momentum: float = 0.9
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """x: float[B, H, W, Cin] -> float[B, H, W, features] (H // 2, W // 2 with `pool`)."""
        cin = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, cin, self.features))
        x = jnp.pad(x.astype(self.dtype), ((0, 0), (1, 1), (1, 1), (0, 0)))
        if self.pool:  # Only the rows and columns the floor pooling keeps.
            x = x[:, : (x.shape[1] - 2) // 2 * 2 + 2, : (x.shape[2] - 2) // 2 * 2 + 2, :]
        conv = conv_valid_im2col if cin == 1 else conv_valid
        y = conv(x, kernel.astype(self.dtype))
        if self.pool:
            y = max_pool_2x2(y)
        y = nn.BatchNorm(
            use_running_average=not train, momentum=self.bn_momentum, dtype=self.dtype
        )(y)
        return nn.relu(y)


class ConvNet(nn.Module):
    """A plain network of `ConvBlock`s for accuracy per FLOP at 28x28: every block but `extra`
    ones pools (28 -> 14 -> 7 -> 3 px), so most FLOPs are spent at low resolution; then a global
    max pool and one Dense layer.

    widths: the channels of the pooling blocks; extra: (after_block, width) pairs of non-pooling
    blocks inserted after the given pooling block (0-based).
    """

    num_classes: int = 10
    widths: tuple[int, ...] = (24, 48, 96)
    extra: tuple[tuple[int, int], ...] = ()
    bn_momentum: float = 0.9
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """x: float32[B, 28, 28, 1] in [0, 1] -> logits float32[B, num_classes]."""
        x = x - 0.286  # The training set's mean pixel.
        for i, width in enumerate(self.widths):
            x = ConvBlock(width, pool=True, bn_momentum=self.bn_momentum, dtype=self.dtype)(
                x, train
            )
            for after, extra_width in self.extra:
                if after == i:
                    x = ConvBlock(extra_width, bn_momentum=self.bn_momentum, dtype=self.dtype)(
                        x, train
                    )
        x = x.max(axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


MODELS = {
    "seed_cnn": SeedCNN,
    # SeedCNN at a third of its FLOPs (conv widths 32/32) with a ReLU, wider hidden layer: the
    # time-to-accuracy model of experiments/fast.
    "fast_cnn": functools.partial(SeedCNN, features=(32, 32), hidden=128, hidden_relu=True),
    "plain_seed_cnn": PlainSeedCNN,
    "plain_fast_cnn": functools.partial(
        PlainSeedCNN, features=(32, 32), hidden=128, hidden_relu=True
    ),
    "resnet_small": ResNetSmall,
    # Accuracy per CPU-minute (benchmarks/NOTES.md, "Frontier"): ~7, ~12 and ~33 MFLOP per image.
    "convnet_s": functools.partial(ConvNet, widths=(24, 48, 96)),
    "convnet_m": functools.partial(ConvNet, widths=(32, 64, 128)),
    "convnet_l": functools.partial(ConvNet, widths=(48, 96, 192), extra=((2, 192),)),
}


def get_model(name: str, num_classes: int = 10, dtype: Any = jnp.float32) -> nn.Module:
    """The Linen module registered under `name` (see `MODELS`), computing in `dtype`."""
    return MODELS[name](num_classes=num_classes, dtype=dtype)
