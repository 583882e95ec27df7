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


MODELS = {"seed_cnn": SeedCNN}


def get_model(name: str, num_classes: int = 10) -> nn.Module:
    """Returns the Linen module registered under `name` (see `MODELS`)."""
    return MODELS[name](num_classes=num_classes)
