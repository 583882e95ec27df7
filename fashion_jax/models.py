"""Flax Linen classifiers. Inputs are NHWC float32 in [0, 1]; outputs are logits float32[B, 10].

`SeedCNN` is the tutorial's Keras network layer for layer (140,682 parameters). The stronger
models are selected by name through `get_model(config)`.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    """2x2 max pooling, stride 2, VALID (odd edges dropped, as Keras' MaxPooling2D).

    Written as reshape + max rather than `nn.max_pool`: the same numbers, but its gradient is a
    cheap compare-and-select where `lax.reduce_window`'s is a select-and-scatter, the slowest op
    of this network on XLA's CPU backend (benchmarks/NOTES.md).

    x: float[B, H, W, C] -> float[B, H // 2, W // 2, C].
    """
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2, :]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class SeedCNN(nn.Module):
    """The tutorial's network: Conv64-ReLU-Pool, Conv64-ReLU-Pool, Dense64 (linear), Dense10."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """x: float32[B, 28, 28, 1] in [0, 1] -> logits float32[B, num_classes]."""
        del train  # No dropout or batch norm: kept for a uniform model signature.
        x = max_pool_2x2(nn.relu(nn.Conv(64, (3, 3), padding="VALID")(x)))
        x = max_pool_2x2(nn.relu(nn.Conv(64, (3, 3), padding="VALID")(x)))
        x = x.reshape(x.shape[0], -1)
        x = nn.Dense(64)(x)  # No activation, as in the tutorial.
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


MODELS = {"seed_cnn": SeedCNN, "resnet_small": ResNetSmall}


def get_model(name: str, num_classes: int = 10) -> nn.Module:
    """Returns the Linen module registered under `name` (see `MODELS`)."""
    return MODELS[name](num_classes=num_classes)
