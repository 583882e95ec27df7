"""A Linen model of your own: two conv-ReLU-pool blocks, dropout, a dense head.

The runner builds it as `CNN(num_classes=..., **config.model_kwargs, dtype=...)` and calls it as
`model.apply(variables, x, train=...)` on float32[B, H, W, C] in [0, 1].
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class CNN(nn.Module):
    num_classes: int
    width: int = 32
    dropout: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """x: float32[B, H, W, C] in [0, 1] -> logits float32[B, num_classes]."""
        for features in (self.width, 2 * self.width):
            x = nn.Conv(features, (3, 3), dtype=self.dtype)(x)
            x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x.reshape(x.shape[0], -1))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
