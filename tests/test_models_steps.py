import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fashion_jax import SeedCNN, create_train_state, eval_step, get_config, get_model, train_step
from fashion_jax.models import MODELS, PlainSeedCNN, conv_valid, conv_valid_im2col, max_pool_2x2
from fashion_jax.steps import cross_entropy


def n_params(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


def test_seed_cnn_has_the_keras_parameter_count_and_shapes():
    params = SeedCNN().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    assert n_params(params) == 140_682
    shapes = {k: {n: v.shape for n, v in layer.items()} for k, layer in params.items()}
    assert shapes["Conv_0"]["kernel"] == (3, 3, 1, 64)
    assert shapes["Conv_1"]["kernel"] == (3, 3, 64, 64)
    assert shapes["Dense_0"]["kernel"] == (1600, 64)
    assert shapes["Dense_1"]["kernel"] == (64, 10)
    logits = SeedCNN().apply({"params": params}, jnp.zeros((5, 28, 28, 1)))
    assert logits.shape == (5, 10) and logits.dtype == jnp.float32


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_maps_images_to_logits(name):
    model = get_model(name)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    logits = model.apply(variables, jnp.zeros((3, 28, 28, 1)))
    assert logits.shape == (3, 10) and logits.dtype == jnp.float32
    assert sum(x.size for x in jax.tree.leaves(variables["params"])) < 1_000_000


@pytest.mark.parametrize("hw", [(26, 26), (11, 11), (4, 7)])
def test_max_pool_matches_flax_max_pool_values_and_gradients(hw):
    x = jax.random.normal(jax.random.key(1), (3, *hw, 5))
    ref = lambda x: nn.max_pool(x, (2, 2), (2, 2), padding="VALID")
    np.testing.assert_array_equal(max_pool_2x2(x), ref(x))
    g = jax.grad(lambda x: (max_pool_2x2(x) ** 2).sum())(x)
    g_ref = jax.grad(lambda x: (ref(x) ** 2).sum())(x)
    np.testing.assert_allclose(g, g_ref, rtol=1e-6)


def test_seed_cnn_computes_what_the_plain_linen_network_computes():
    """Same parameter tree, same logits, same gradients: the fast formulation is exact."""
    x = jax.random.uniform(jax.random.key(2), (16, 28, 28, 1))
    labels = jnp.arange(16) % 10
    params = PlainSeedCNN().init(jax.random.key(0), x)["params"]
    fast_params = SeedCNN().init(jax.random.key(0), x)["params"]
    assert jax.tree.structure(params) == jax.tree.structure(fast_params)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), params, fast_params)  # Same init too.

    def loss(model, p):
        return cross_entropy(model.apply({"params": p}, x), labels).mean()

    np.testing.assert_allclose(SeedCNN().apply({"params": params}, x), PlainSeedCNN().apply({"params": params}, x),
                               rtol=1e-5, atol=1e-5)
    g_fast = jax.jit(jax.grad(lambda p: loss(SeedCNN(), p)))(params)
    g_plain = jax.jit(jax.grad(lambda p: loss(PlainSeedCNN(), p)))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g_fast, g_plain)


def test_conv_valid_custom_gradient_matches_autodiff():
    x = jax.random.normal(jax.random.key(0), (4, 9, 8, 3))
    w = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))
    ref = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "VALID",
                                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(conv_valid(x, w), ref(x, w), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(conv_valid_im2col(x, w), ref(x, w), rtol=1e-5, atol=1e-5)
    f = lambda conv: jax.grad(lambda x, w: (conv(x, w) ** 2).sum(), argnums=(0, 1))(x, w)
    for a, b in zip(f(conv_valid), f(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def fixed_batch(n=64, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.int32)
    images = rng.integers(0, 50, (n, 28, 28, 1)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 * k + 3: 2 * k + 7, 4:24] = 220
    return {"image": jnp.asarray(images), "label": jnp.asarray(labels)}


def test_train_steps_lower_the_loss_on_a_fixed_batch():
    state = create_train_state(jax.random.key(0), get_config())
    assert int(state.step) == 0
    batch = fixed_batch()
    step = jax.jit(train_step)
    losses = []
    for _ in range(15):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    assert int(state.step) == 15
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(np.isfinite(losses))


def test_eval_step_counts_only_unmasked_examples():
    state = create_train_state(jax.random.key(0), get_config())
    batch = fixed_batch(50)
    full = eval_step(state, batch)
    assert int(full["count"]) == 50
    mask = jnp.arange(50) < 37
    masked = eval_step(state, {**batch, "mask": mask})
    head = eval_step(state, {k: v[:37] for k, v in batch.items()})
    assert int(masked["count"]) == 37
    assert int(masked["correct"]) == int(head["correct"])
    np.testing.assert_allclose(float(masked["loss_sum"]), float(head["loss_sum"]), rtol=1e-5)


def test_float_and_uint8_images_give_the_same_logits():
    state = create_train_state(jax.random.key(0), get_config())
    batch = fixed_batch(8)
    a = eval_step(state, batch)
    b = eval_step(state, {**batch, "image": batch["image"].astype(jnp.float32) / 255.0})
    np.testing.assert_allclose(float(a["loss_sum"]), float(b["loss_sum"]), rtol=1e-6)
