"""An NNX model of your own: conv-BN-ReLU-pool twice, global average pooling, dropout, dense.

The runner builds it as `CNN(num_classes=..., **config.model_kwargs, dtype=..., rngs=nnx.Rngs(...))`
and calls it on float32[B, H, W, C] in [0, 1]; train and eval modes (`model.train()` /
`model.eval()`) switch its BatchNorm and Dropout.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx


class CNN(nnx.Module):
    def __init__(
        self,
        num_classes: int,
        *,
        in_channels: int = 1,
        widths: tuple[int, ...] = (32, 64),
        dropout: float = 0.2,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.convs = nnx.List()
        self.norms = nnx.List()
        cin = in_channels
        for width in widths:
            self.convs.append(nnx.Conv(cin, width, (3, 3), use_bias=False, dtype=dtype, rngs=rngs))
            self.norms.append(nnx.BatchNorm(width, momentum=0.9, dtype=dtype, rngs=rngs))
            cin = width
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = nnx.Linear(cin, num_classes, dtype=dtype, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """x: float32[B, H, W, C] in [0, 1] -> logits float32[B, num_classes]."""
        for conv, norm in zip(self.convs, self.norms):
            x = nnx.max_pool(nnx.relu(norm(conv(x))), (2, 2), (2, 2))
        x = self.dropout(x.mean(axis=(1, 2)))
        return self.head(x).astype(jnp.float32)
