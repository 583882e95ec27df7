"""`OverheadProbe`: a classifier with negligible compute, for measuring host overhead per step."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

NAME = "overhead_probe"


class OverheadProbe(nn.Module):
    """7x7 average pooling to 4x4, then one Dense layer.

    x: uint8 or float[B, 28, 28, 1] -> float32 logits[B, num_classes].
    """

    num_classes: int = 10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        del train
        x = nn.avg_pool(x, (7, 7), (7, 7)).reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
