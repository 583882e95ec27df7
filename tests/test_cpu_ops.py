"""Every fast CPU formulation computes what the plain version computes: values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fashion_jax import cpu_ops
from fashion_jax.models import MODELS, ConvBlock, PlainConvBlock
from fashion_jax.steps import cross_entropy

SHAPES = {  # op -> (input shape, kernel shape or None)
    "max_pool_2x2": [((3, 26, 26, 5), None), ((3, 11, 11, 5), None), ((2, 4, 7, 3), None)],
    "conv_valid": [((4, 9, 8, 3), (3, 3, 3, 5)), ((2, 12, 12, 16), (3, 3, 16, 8))],
    "conv_valid_im2col": [((4, 28, 28, 1), (3, 3, 1, 6)), ((2, 9, 8, 3), (3, 3, 3, 5))],
}
CASES = [(op, x, w) for op, shapes in SHAPES.items() for x, w in shapes]


def test_every_fast_op_has_cases():
    assert set(SHAPES) == set(cpu_ops.PLAIN)


@pytest.mark.parametrize("op,x_shape,w_shape", CASES)
def test_fast_op_matches_the_plain_op_in_values_and_gradients(op, x_shape, w_shape):
    fast, plain = cpu_ops.PLAIN[op]
    args = [jax.random.normal(jax.random.key(0), x_shape)]
    if w_shape:
        args.append(jax.random.normal(jax.random.key(1), w_shape))
    np.testing.assert_allclose(fast(*args), plain(*args), rtol=1e-5, atol=1e-5)
    argnums = tuple(range(len(args)))
    grads = lambda f: jax.jit(jax.grad(lambda *a: (f(*a) ** 2).sum(), argnums=argnums))(*args)
    for g_fast, g_plain in zip(grads(fast), grads(plain)):
        np.testing.assert_allclose(g_fast, g_plain, rtol=1e-4, atol=1e-4)


# Each fast network and its plain Linen reference (same parameter tree).
MODEL_PAIRS = [("seed_cnn", "plain_seed_cnn"), ("fast_cnn", "plain_fast_cnn")]


# The ConvNet models, compared with their plain version in test_convnet_plain.py.
CONVNETS = {"convnet_s", "convnet_m", "convnet_l"}


def _uses_a_custom_vjp(name):
    """Whether the registered model's forward pass calls a custom-VJP op (the fast formulations)."""
    model, x = MODELS[name](), jnp.zeros((2, 28, 28, 1))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    return "custom_vjp" in str(jax.make_jaxpr(lambda v: model.apply(v, x))(variables))


def test_every_fast_network_has_a_plain_reference():
    fast = {name for name in MODELS if _uses_a_custom_vjp(name)}
    assert {"seed_cnn", "fast_cnn"} <= fast  # The detection finds the known fast networks...
    assert not {b for _, b in MODEL_PAIRS} & fast  # ...and not their plain versions.
    assert fast == {a for a, _ in MODEL_PAIRS} | CONVNETS, fast
    assert all(b in MODELS for _, b in MODEL_PAIRS)


@pytest.mark.parametrize("fast_name,plain_name", MODEL_PAIRS)
def test_fast_network_computes_what_its_plain_linen_version_computes(fast_name, plain_name):
    """Same parameter tree and init, same logits, same gradients: the fast formulation is exact."""
    x = jax.random.uniform(jax.random.key(2), (16, 28, 28, 1))
    labels = jnp.arange(16) % 10
    fast, plain = MODELS[fast_name](), MODELS[plain_name]()
    params = plain.init(jax.random.key(0), x)["params"]
    fast_params = fast.init(jax.random.key(0), x)["params"]
    assert jax.tree.structure(params) == jax.tree.structure(fast_params)
    jax.tree.map(np.testing.assert_array_equal, params, fast_params)
    np.testing.assert_allclose(
        fast.apply({"params": params}, x), plain.apply({"params": params}, x), rtol=1e-5, atol=1e-5
    )
    loss = lambda model: jax.jit(
        jax.grad(lambda p: cross_entropy(model.apply({"params": p}, x), labels).mean())
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        loss(fast)(params),
        loss(plain)(params),
    )


@pytest.mark.parametrize(
    "cin,hw,pool", [(1, 28, True), (24, 14, True), (48, 7, True), (16, 7, False)]
)
@pytest.mark.parametrize("train", [True, False])
def test_conv_block_matches_its_plain_version(cin, hw, pool, train):
    x = jax.random.normal(jax.random.key(3), (8, hw, hw, cin))
    fast, plain = ConvBlock(12, pool=pool), PlainConvBlock(12, pool=pool)
    variables = plain.init(jax.random.key(0), x, train)
    assert jax.tree.structure(variables) == jax.tree.structure(
        fast.init(jax.random.key(0), x, train)
    )

    def run(model, v):
        out, _ = model.apply(v, x, train, mutable=["batch_stats"])
        return out

    np.testing.assert_allclose(run(fast, variables), run(plain, variables), rtol=1e-4, atol=1e-4)
    g = lambda m: jax.grad(lambda v: (run(m, v) ** 2).sum())(variables)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3), g(fast), g(plain)
    )
