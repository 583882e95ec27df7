"""The convnet_* models compute what the same network written with plain Linen layers computes.

`ConvNet` is built from `ConvBlock`s, which compute through `cpu_ops.conv_pool` in their
`formulation`: "fast" (im2col, the custom-VJP convolution, pooling before batch norm on only the
outputs the pool keeps) or "plain" (standard lax ops). Here the same network is written the obvious
way (`nn.Conv` SAME, `nn.max_pool`, `nn.BatchNorm`, ReLU, global max pool, `nn.Dense`) and both
formulations are compared with it on the registered configurations: logits, updated batch-norm
statistics and gradients, in train and in eval mode.
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fashion_jax.models import MODELS


class LinenBlock(nn.Module):
    features: int
    pool: bool

    @nn.compact
    def __call__(self, x, train):
        y = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False, name="Conv")(x)
        if self.pool:
            y = nn.max_pool(y, (2, 2), (2, 2), padding="VALID")
        return nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(y))


class LinenConvNet(nn.Module):
    widths: tuple
    extra: tuple = ()

    @nn.compact
    def __call__(self, x, train=False):
        x = x - 0.286
        n = 0
        for i, width in enumerate(self.widths):
            x = LinenBlock(width, pool=True, name=f"ConvBlock_{n}")(x, train)
            n += 1
            for after, extra_width in self.extra:
                if after == i:
                    x = LinenBlock(extra_width, pool=False, name=f"ConvBlock_{n}")(x, train)
                    n += 1
        return nn.Dense(10)(x.max(axis=(1, 2)))


def to_linen(tree):
    """ConvBlock_i/kernel -> ConvBlock_i/Conv/kernel (nn.Conv keeps its kernel one level down)."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))
    moved = {
        (
            k[:-1] + ("Conv", "kernel")
            if k[-1] == "kernel" and k[-2].startswith("ConvBlock")
            else k
        ): v
        for k, v in flat.items()
    }
    return flax.traverse_util.unflatten_dict(moved)


# convnet_l has both kinds of block (pooled, and the extra one at 3x3 without a pool); convnet_s
# and convnet_m are the same pooled blocks, narrower (each block shape: test_cpu_ops.py).
@pytest.mark.parametrize("name", ["convnet_l"])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("formulation", ["fast", "plain"])
def test_convnet_equals_its_plain_linen_version(name, train, formulation):
    model = MODELS[name](formulation=formulation)
    linen = LinenConvNet(widths=model.widths, extra=model.extra)
    x = jax.random.uniform(jax.random.key(1), (8, 28, 28, 1))
    labels = jnp.arange(8) % 10
    variables = model.init(jax.random.key(0), x, False)
    # Non-trivial batch-norm statistics, so that eval mode does not normalize by (0, 1).
    stats = jax.tree_util.tree_map_with_path(
        lambda path, s: (
            s * jax.random.uniform(jax.random.key(2), s.shape, minval=0.5, maxval=1.5)
            if path[-1].key == "var"
            else s + jax.random.uniform(jax.random.key(3), s.shape, minval=-0.05, maxval=0.05)
        ),
        variables["batch_stats"],
    )
    params = variables["params"]
    linen_vars = {"params": to_linen(params), "batch_stats": stats}
    assert jax.tree.structure(linen.init(jax.random.key(0), x, False)) == jax.tree.structure(
        linen_vars
    )

    def loss(m, p, s):
        logits, updates = m.apply(
            {"params": p, "batch_stats": s}, x, train, mutable=["batch_stats"]
        )
        ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean()
        return ce, (logits, updates["batch_stats"])

    # Eager, not jitted: under jax.jit, XLA:CPU's gradients of both versions move away from their
    # eager values (by up to ~0.4 here, for the Linen version too), so a jitted comparison would
    # test XLA's compilation of this network rather than the formulation.
    grad = lambda m: jax.value_and_grad(lambda p, s: loss(m, p, s), has_aux=True)
    (m_loss, (m_logits, m_stats)), m_grads = grad(model)(params, stats)
    (l_loss, (l_logits, l_stats)), l_grads = grad(linen)(linen_vars["params"], stats)
    np.testing.assert_allclose(m_logits, l_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(m_loss, l_loss, rtol=1e-5)
    assert float(jnp.abs(m_logits).max()) > 0.01  # Not a network that outputs zeros.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
        to_linen(m_stats),
        to_linen(l_stats),
    )
    if train:  # The running statistics moved, the same way in both.
        moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), m_stats, stats)
        assert min(jax.tree.leaves(moved)) > 0
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5),
        to_linen(m_grads),
        l_grads,
    )
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(l_grads)) > 1e-4
