import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fashion_jax import SeedCNN, create_train_state, eval_step, get_config, get_model, train_step
from fashion_jax.models import MODELS


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
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    logits = jax.jit(model.apply)(variables, jnp.zeros((3, 28, 28, 1)))
    assert logits.shape == (3, 10) and logits.dtype == jnp.float32
    assert sum(x.size for x in jax.tree.leaves(variables["params"])) < 1_000_000


def fixed_batch(n=64, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.int32)
    images = rng.integers(0, 50, (n, 28, 28, 1)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 * k + 3 : 2 * k + 7, 4:24] = 220
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
    evaluate = jax.jit(eval_step)
    full = evaluate(state, batch)
    assert int(full["count"]) == 50
    mask = jnp.arange(50) < 37
    masked = evaluate(state, {**batch, "mask": mask})
    head = evaluate(state, {k: v[:37] for k, v in batch.items()})
    assert int(masked["count"]) == 37
    assert int(masked["correct"]) == int(head["correct"])
    np.testing.assert_allclose(float(masked["loss_sum"]), float(head["loss_sum"]), rtol=1e-5)


def test_float_and_uint8_images_give_the_same_logits():
    state = create_train_state(jax.random.key(0), get_config())
    batch = fixed_batch(8)
    evaluate = jax.jit(eval_step)
    a = evaluate(state, batch)
    b = evaluate(state, {**batch, "image": batch["image"].astype(jnp.float32) / 255.0})
    np.testing.assert_allclose(float(a["loss_sum"]), float(b["loss_sum"]), rtol=1e-6)


def test_muon_orthogonalises_conv_kernels_and_steps_the_rest_with_sgd():
    config = get_config()
    config.optimizer, config.learning_rate, config.muon_scale = "muon", 0.05, 2.0
    config.model, config.weight_decay = "convnet_s", 0.0
    muon = create_train_state(jax.random.key(0), config)
    config.optimizer = "sgd"
    sgd = create_train_state(jax.random.key(0), config)
    batch = fixed_batch()
    after = {name: jax.jit(train_step)(s, batch)[0] for name, s in (("muon", muon), ("sgd", sgd))}
    moved = jax.tree.map(lambda a, b: np.asarray(a - b), after["muon"].params, muon.params)
    kernels = [x for x in jax.tree.leaves(moved) if x.ndim == 4]
    assert len(kernels) >= 3
    for update in kernels:  # -lr * scale * O, O with singular values near 1 (Newton-Schulz).
        matrix = update.reshape(-1, update.shape[-1]) / -(0.05 * 2.0)
        singular = np.linalg.svd(matrix, compute_uv=False)
        assert 0.5 < singular.min() and singular.max() < 1.5, singular
    # Every other parameter (dense kernels, biases, batch norm) took exactly sgd's step.
    for path, m, s in zip(
        jax.tree_util.tree_leaves_with_path(after["muon"].params),
        jax.tree.leaves(after["muon"].params),
        jax.tree.leaves(after["sgd"].params),
    ):
        if m.ndim != 4:
            np.testing.assert_allclose(m, s, rtol=1e-6, atol=1e-7, err_msg=str(path[0]))
    # And it learns: the loss halves on a fixed batch.
    state, losses = muon, []
    for _ in range(15):
        state, metrics = jax.jit(train_step)(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0], losses


def test_muon_options_renormalise_kernels_and_set_the_newton_schulz_iterations():
    config = get_config()
    config.optimizer, config.learning_rate, config.model = "muon", 0.05, "convnet_s"
    config.weight_decay = 0.0
    batch, step = fixed_batch(), jax.jit(train_step)

    def first_step(**options):
        config.update(options)
        state = create_train_state(jax.random.key(0), config)
        return state.params, step(state, batch)[0].params

    def kernels(tree):
        return [x for x in jax.tree.leaves(tree) if x.ndim == 4]

    before, plain = first_step(muon_renormalize=False)
    _, renormalised = first_step(muon_renormalize=True)
    # The same orthogonal step, taken from the kernel rescaled to norm sqrt(Cout); the rest as is.
    for p, a, b in zip(
        jax.tree.leaves(before), jax.tree.leaves(plain), jax.tree.leaves(renormalised)
    ):
        if p.ndim == 4:
            rescaled = p * np.sqrt(p.shape[-1]) / np.linalg.norm(p)
            np.testing.assert_allclose(b, rescaled + (a - p), rtol=1e-5, atol=1e-6)
            assert abs(np.linalg.norm(rescaled) / np.linalg.norm(p) - 1) > 1e-4  # It moved.
        else:
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)

    # Over many steps the renormalised kernels keep their norm; the plain ones grow.
    def norms_after(renormalise, n=30):
        config.update(muon_renormalize=renormalise, learning_rate=0.3)
        state = create_train_state(jax.random.key(0), config)
        for _ in range(n):
            state = step(state, batch)[0]
        return [np.linalg.norm(k) / np.sqrt(k.shape[-1]) for k in kernels(state.params)]

    renormalised_norms, plain_norms = norms_after(True), norms_after(False)
    assert all(r < 1.35 for r in renormalised_norms), renormalised_norms
    assert all(r > 1.5 for r in plain_norms), plain_norms

    # Fewer Newton-Schulz iterations orthogonalise less: the singular values of the kernels'
    # steps lie further apart (smallest over largest).
    config.update(muon_renormalize=False, learning_rate=0.05)
    evenness = {}
    for n in (1, 5):
        config.muon_ns_steps = n
        p, after = first_step()
        singular = [
            np.linalg.svd((a - b).reshape(-1, a.shape[-1]), compute_uv=False)
            for a, b in zip(kernels(after), kernels(p))
        ]
        evenness[n] = min(s.min() / s.max() for s in singular)
    assert evenness[5] > 0.25 > evenness[1], evenness


def test_convnet_airbench_options_dirac_init_gelu_bn_epsilon_and_no_bn_scale():
    from fashion_jax.errors import ConfigError
    from fashion_jax.models import ConvNet, build

    x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))

    def init(**options):
        return ConvNet(widths=(8, 16), **options).init(jax.random.key(0), x)

    plain, dirac = init(), init(dirac_init=True)
    k_plain, k_dirac = (
        plain["params"]["ConvBlock_1"]["kernel"],
        dirac["params"]["ConvBlock_1"]["kernel"],
    )
    assert k_dirac.shape == (3, 3, 8, 16)
    identity = np.zeros((3, 3, 8, 8), np.float32)
    identity[1, 1] = np.eye(8)
    np.testing.assert_array_equal(k_dirac[..., :8], identity)
    np.testing.assert_array_equal(k_dirac[..., 8:], k_plain[..., 8:])  # the other filters: lecun
    assert float(jnp.abs(k_plain[..., :8] - identity).max()) > 0.1
    # The 1-channel input's block: filter 0 passes the image through, the other 7 are lecun's.
    np.testing.assert_array_equal(
        dirac["params"]["ConvBlock_0"]["kernel"][..., 0].ravel(), [0, 0, 0, 0, 1, 0, 0, 0, 0]
    )

    # One activation, applied to the same normalised tensor: relu(z) where relu's output is
    # positive equals z, so gelu's output there is gelu(relu's output); elsewhere gelu is <= 0.
    def block_output(activation):
        _, state = ConvNet(widths=(8, 16), activation=activation).apply(
            plain, x, capture_intermediates=True, mutable=["intermediates"]
        )
        return state["intermediates"]["ConvBlock_0"]["__call__"][0]

    r, g = block_output("relu"), block_output("gelu")
    assert float(r.min()) == 0.0 and float(g.min()) < -0.1
    positive = r > 0
    np.testing.assert_allclose(g[positive], nn.gelu(r[positive]), rtol=1e-5, atol=1e-6)
    assert float(g[~positive].max()) <= 0.0

    # bn_epsilon: on a faint image (conv outputs of variance ~1e-8) flax's 1e-5 swamps the batch
    # variance; airbench's 1e-12 normalises it to unit variance (relu: half-normal, std ~0.58).
    faint = 0.286 + (x - 0.5) * 1e-4  # The network subtracts 0.286, the mean pixel.

    def faint_block_std(**options):
        _, state = ConvNet(widths=(8, 16), **options).apply(
            plain,
            faint,
            train=True,
            capture_intermediates=True,
            mutable=["intermediates", "batch_stats"],
        )
        return float(state["intermediates"]["ConvBlock_0"]["__call__"][0].std())

    assert faint_block_std() < 0.05 < 0.4 < faint_block_std(bn_epsilon=1e-12)

    no_scale = init(bn_scale=False)
    assert "scale" not in no_scale["params"]["ConvBlock_0"]["BatchNorm_0"]
    assert n_params(plain["params"]) - n_params(no_scale["params"]) == 8 + 16

    config = get_config()
    config.model, config.model_kwargs = "convnet_s", {"activation": "tanh"}
    with pytest.raises(ConfigError, match=r"activation 'tanh' is not one of \['gelu', 'relu'\]"):
        build(config, num_classes=10)


def test_patch_whitening_is_fitted_on_the_first_training_batch_and_then_frozen():
    from fashion_jax.models import whitening_kernel

    # Images with correlated neighbouring pixels (smoothed noise), as real images have.
    noise = jax.random.normal(jax.random.key(2), (32, 29, 29, 1))
    smooth = (noise[:, 1:, 1:] + noise[:, :-1, 1:] + noise[:, 1:, :-1] + noise[:, :-1, :-1]) / 4
    kernel = whitening_kernel(smooth)
    assert kernel.shape == (2, 2, 1, 8)
    np.testing.assert_array_equal(kernel[..., 4:], -kernel[..., :4])
    out = jax.lax.conv_general_dilated(
        smooth, kernel[..., :4], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    ).reshape(-1, 4)
    raw = np.cov(np.asarray(smooth[:, :27, :27]).ravel(), np.asarray(smooth[:, 1:28, :27]).ravel())
    assert raw[0, 1] / raw[0, 0] > 0.4  # neighbours correlate before
    np.testing.assert_allclose(out.T @ out / out.shape[0], np.eye(4), atol=0.02)  # not after

    config = get_config()
    config.model, config.optimizer, config.learning_rate = "convnet_s", "sgd", 0.1
    config.model_kwargs = {"widths": (8, 16), "whiten": True}
    state = create_train_state(jax.random.key(0), config, image_shape=(28, 28, 1), num_classes=10)
    whiten = lambda s: s.batch_stats["PatchWhiten_0"]  # noqa: E731
    assert float(whiten(state)["fitted"]) == 0 and not np.any(whiten(state)["kernel"])
    assert state.params["PatchWhiten_0"]["bias"].shape == (8,)  # learned; the filters are not
    step = jax.jit(train_step)
    first, second = fixed_batch(seed=0), fixed_batch(seed=1)
    state, _ = step(state, first)
    fitted = whiten(state)["kernel"]
    assert float(whiten(state)["fitted"]) == 1
    np.testing.assert_allclose(
        fitted, whitening_kernel(first["image"] / 255.0 - 0.286), rtol=1e-4, atol=1e-4
    )
    state, _ = step(state, second)
    np.testing.assert_array_equal(whiten(state)["kernel"], fitted)  # frozen from then on
    assert float(jnp.abs(state.params["PatchWhiten_0"]["bias"]).max()) > 0  # the bias trains
    # Evaluation uses the fitted filters; fast and plain formulations agree with them.
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    x = second["image"][:8] / 255.0
    fast = state.apply_fn(variables, x)
    plain = get_model("convnet_s").clone(widths=(8, 16), whiten=True, formulation="plain")
    np.testing.assert_allclose(plain.apply(variables, x), fast, rtol=1e-4, atol=1e-4)
    unfitted = {
        **variables,
        "batch_stats": {
            **state.batch_stats,
            "PatchWhiten_0": {"kernel": jnp.zeros_like(fitted), "fitted": jnp.zeros(())},
        },
    }
    assert float(jnp.abs(state.apply_fn(unfitted, x) - fast).max()) > 1e-3
