"""The fast formulation computes what the plain one computes, per op and per network: values and
gradients, with the same parameters; and the plain one is the Keras-like Linen network."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fashion_jax import cpu_ops
from fashion_jax.models import MODELS, ConvBlock
from fashion_jax.steps import cross_entropy

SHAPES = {  # op -> (input shape, kernel shape or None)
    "max_pool_2x2": [((3, 26, 26, 5), None), ((3, 11, 11, 5), None), ((2, 4, 7, 3), None)],
    "conv_valid": [((4, 9, 8, 3), (3, 3, 3, 5)), ((2, 12, 12, 16), (3, 3, 16, 8))],
    "conv_valid_im2col": [((4, 28, 28, 1), (3, 3, 1, 6)), ((2, 9, 8, 3), (3, 3, 3, 5))],
}
CASES = [(op, x, w) for op, shapes in SHAPES.items() for x, w in shapes]


def test_every_fast_op_has_cases():
    assert set(SHAPES) == set(cpu_ops.PLAIN)


def assert_same_values_and_gradients(fast, plain, args, tol=1e-4):
    """fast(*args) == plain(*args), and the gradients of sum(out ** 2) for every argument."""
    np.testing.assert_allclose(fast(*args), plain(*args), rtol=1e-5, atol=1e-5)
    argnums = tuple(range(len(args)))
    grads = lambda f: jax.jit(jax.grad(lambda *a: (f(*a) ** 2).sum(), argnums=argnums))(*args)
    for g_fast, g_plain in zip(grads(fast), grads(plain), strict=True):
        assert float(jnp.abs(g_plain).max()) > 0  # A gradient that can differ.
        np.testing.assert_allclose(g_fast, g_plain, rtol=tol, atol=tol)


@pytest.mark.parametrize("op,x_shape,w_shape", CASES)
def test_fast_op_matches_the_plain_op_in_values_and_gradients(op, x_shape, w_shape):
    fast, plain = cpu_ops.PLAIN[op]
    args = [jax.random.normal(jax.random.key(0), x_shape)]
    if w_shape:
        args.append(jax.random.normal(jax.random.key(1), w_shape))
    assert_same_values_and_gradients(fast, plain, args)


# conv_pool: (input shape, kernel shape, padding, bias, relu, pool). Cin 1 (im2col) and more
# (custom-VJP conv); even and odd sizes, so that the fast pooled path crops rows or does not.
CONV_POOL = [
    ((4, 28, 28, 1), (3, 3, 1, 6), "VALID", True, True, True),  # SeedCNN's first layer.
    ((2, 13, 13, 8), (3, 3, 8, 6), "VALID", True, True, True),  # Its second: 13 -> 12 rows.
    ((2, 12, 11, 3), (3, 3, 3, 5), "VALID", True, True, False),
    ((4, 28, 28, 1), (3, 3, 1, 6), "SAME", False, False, True),  # ConvBlock's layers.
    ((2, 7, 7, 8), (3, 3, 8, 6), "SAME", False, False, True),  # 7 + 2 -> 8 rows.
    ((2, 7, 6, 8), (3, 3, 8, 6), "SAME", False, False, False),
    ((2, 9, 10, 4), (5, 4, 4, 3), "SAME", True, True, True),  # Uneven SAME padding.
]


@pytest.mark.parametrize("x_shape,w_shape,padding,bias,relu,pool", CONV_POOL)
def test_conv_pool_is_the_same_in_both_formulations(x_shape, w_shape, padding, bias, relu, pool):
    args = [
        jax.random.normal(jax.random.key(0), x_shape),
        jax.random.normal(jax.random.key(1), w_shape),
    ]
    if bias:
        args.append(jax.random.normal(jax.random.key(2), w_shape[-1:]))
    layer = lambda formulation: (
        lambda *a: cpu_ops.conv_pool(
            *a, padding=padding, relu=relu, pool=pool, formulation=formulation
        )
    )
    # The plain formulation is the obvious composition, in standard ops.
    y = jax.lax.conv_general_dilated(
        args[0], args[1], (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    y = y + args[2] if bias else y
    y = nn.relu(y) if relu else y
    y = nn.max_pool(y, (2, 2), (2, 2), padding="VALID") if pool else y
    np.testing.assert_allclose(layer("plain")(*args), y, rtol=1e-5, atol=1e-5)
    assert_same_values_and_gradients(layer("fast"), layer("plain"), args, tol=1e-3)


def test_an_unknown_formulation_is_refused():
    x, w = jnp.zeros((1, 5, 5, 1)), jnp.zeros((3, 3, 1, 2))
    with pytest.raises(ValueError, match="formulation"):
        cpu_ops.conv_pool(x, w, formulation="fastest")


# ----------------------------------------------------------------------------- the networks


def _formulation(name):
    """The registered model's `formulation` field, or None where it has none."""
    model = MODELS[name]()
    fields = {f.name for f in dataclasses.fields(model)}
    return model.formulation if "formulation" in fields else None


def _uses_a_custom_vjp(model):
    """Whether the model's forward pass calls a custom-VJP op (the fast formulations)."""
    x = jnp.zeros((2, 28, 28, 1))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    return "custom_vjp" in str(jax.make_jaxpr(lambda v: model.apply(v, x))(variables))


def perturbed(params):
    """The parameters plus noise: biases away from their initial zeros."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    noise = [0.1 * jax.random.normal(k, p.shape) for k, p in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(tree, [p + n for p, n in zip(leaves, noise, strict=True)])


FAST = ["seed_cnn", "fast_cnn", "convnet_s", "convnet_m", "convnet_l"]


def test_every_fast_network_has_the_switch_and_the_plain_registry_names_set_it():
    assert sorted(n for n in MODELS if _uses_a_custom_vjp(MODELS[n]())) == sorted(FAST)
    assert sorted(n for n in MODELS if _formulation(n) == "fast") == sorted(FAST)
    assert {n for n in MODELS if _formulation(n) == "plain"} == {"plain_seed_cnn", "plain_fast_cnn"}
    for name in FAST:  # The switch reaches every layer.
        assert not _uses_a_custom_vjp(MODELS[name]().clone(formulation="plain")), name
    for name in ("seed_cnn", "fast_cnn"):
        assert MODELS[f"plain_{name}"]() == MODELS[name]().clone(formulation="plain")


@pytest.mark.parametrize("name", ["seed_cnn", "fast_cnn"])
def test_fast_network_computes_what_its_plain_formulation_computes(name):
    """Same parameter tree and init, same logits, same gradients: the fast formulation is exact."""
    x = jax.random.uniform(jax.random.key(2), (16, 28, 28, 1))
    labels = jnp.arange(16) % 10
    fast = MODELS[name]()
    plain = fast.clone(formulation="plain")
    params = plain.init(jax.random.key(0), x)["params"]
    fast_params = fast.init(jax.random.key(0), x)["params"]
    assert jax.tree.structure(params) == jax.tree.structure(fast_params)
    jax.tree.map(np.testing.assert_array_equal, params, fast_params)
    params = perturbed(params)
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


class KerasLikeCNN(nn.Module):
    """SeedCNN in Linen layers, as the Keras tutorial writes it."""

    features: tuple
    hidden: int
    hidden_relu: bool

    @nn.compact
    def __call__(self, x):
        pool = lambda y: nn.max_pool(y, (2, 2), (2, 2), padding="VALID")
        x = pool(nn.relu(nn.Conv(self.features[0], (3, 3), padding="VALID")(x)))
        x = pool(nn.relu(nn.Conv(self.features[1], (3, 3), padding="VALID")(x)))
        x = nn.Dense(self.hidden)(x.reshape(x.shape[0], -1))
        return nn.Dense(10)(nn.relu(x) if self.hidden_relu else x)


@pytest.mark.parametrize("name", ["plain_seed_cnn", "plain_fast_cnn"])
def test_plain_formulation_is_the_keras_like_linen_network(name):
    x = jax.random.uniform(jax.random.key(2), (8, 28, 28, 1))
    model = MODELS[name]()
    reference = KerasLikeCNN(model.features, model.hidden, model.hidden_relu)
    params = reference.init(jax.random.key(0), x)["params"]
    own = model.init(jax.random.key(0), x)["params"]
    assert jax.tree.map(jnp.shape, own) == jax.tree.map(jnp.shape, params)
    jax.tree.map(np.testing.assert_array_equal, own, params)
    params = perturbed(params)
    logits = reference.apply({"params": params}, x)
    assert float(jnp.abs(logits).max()) > 0.01
    np.testing.assert_allclose(model.apply({"params": params}, x), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "cin,hw,pool", [(1, 28, True), (24, 14, True), (48, 7, True), (16, 7, False)]
)
@pytest.mark.parametrize("train", [True, False])
def test_conv_block_is_the_same_in_both_formulations(cin, hw, pool, train):
    x = jax.random.normal(jax.random.key(3), (8, hw, hw, cin))
    fast, plain = ConvBlock(12, pool=pool), ConvBlock(12, pool=pool, formulation="plain")
    variables = plain.init(jax.random.key(0), x, train)
    jax.tree.map(np.testing.assert_array_equal, variables, fast.init(jax.random.key(0), x, train))

    def run(model, v):
        out, _ = model.apply(v, x, train, mutable=["batch_stats"])
        return out

    np.testing.assert_allclose(run(fast, variables), run(plain, variables), rtol=1e-4, atol=1e-4)
    g = lambda m: jax.grad(lambda v: (run(m, v) ** 2).sum())(variables)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3), g(fast), g(plain)
    )
