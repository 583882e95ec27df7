"""The stronger-recipe options: augmentation, batch norm, EMA, schedules, label smoothing, TTA."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fashion_jax import augment, get_config
from fashion_jax.models import ResNetSmall
from fashion_jax.steps import (
    create_train_state,
    cross_entropy,
    ema_decay_at,
    eval_step,
    learning_rate_schedule,
    train_step,
)


def config(**overrides):
    c = ml_collections.ConfigDict(get_config().to_dict())
    c.update(overrides)
    return c


def images(b=6, seed=0):
    return jax.random.uniform(jax.random.key(seed), (b, 28, 28, 1))


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, k: augment.random_crop(x, k, 4),
        lambda x, k: augment.random_flip(x, k),
        lambda x, k: augment.random_erasing(x, k, 0.5),
        lambda x, k: augment.augment(x, k, 2, True, 0.5),
    ],
)
def test_augmentations_keep_shape_and_dtype_and_are_deterministic_given_the_key(fn):
    x = images(32)
    a, b, c = fn(x, jax.random.key(1)), fn(x, jax.random.key(1)), fn(x, jax.random.key(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_random_crop_shifts_content_by_at_most_the_padding():
    x = jnp.zeros((64, 28, 28, 1)).at[:, 10:18, 10:18].set(1.0)
    out = augment.random_crop(x, jax.random.key(0), 3)
    assert np.allclose(out.sum(axis=(1, 2, 3)), 64.0)  # The 8x8 square always stays inside.
    ys = np.argmax(np.asarray(out[..., 0]).max(axis=2), axis=1)
    assert set(ys.tolist()) <= set(range(7, 14)) and len(set(ys.tolist())) > 3
    np.testing.assert_array_equal(augment.random_crop(x, jax.random.key(0), 0), x)


def test_random_flip_mirrors_about_half_of_the_images_exactly():
    x = images(200)
    out = augment.random_flip(x, jax.random.key(0))
    same = np.all(out == x, axis=(1, 2, 3))
    mirrored = np.all(out == x[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored)
    assert 70 < mirrored.sum() < 130


def test_alternating_flip_mirrors_each_image_once_in_any_two_consecutive_epochs():
    x = images(200)
    ids = jnp.arange(200)
    key = jax.random.key(0)
    flip = lambda imgs, i, epoch, k=key: np.asarray(
        augment.alternating_flip(imgs, i, jnp.int32(epoch), k)
    )
    mirrored = lambda out, imgs=x: np.all(out == imgs[:, :, ::-1], axis=(1, 2, 3))
    same = lambda out, imgs=x: np.all(out == imgs, axis=(1, 2, 3))
    m0, m1, m2 = (mirrored(flip(x, ids, e)) for e in (0, 1, 2))
    assert np.all(m0 | same(flip(x, ids, 0))) and 70 < m0.sum() < 130
    assert np.all(m0 ^ m1) and np.all(m0 == m2)  # Each image once per two epochs, then again.
    # The coin belongs to the example, not to its place in the batch.
    order = np.random.default_rng(0).permutation(200)
    np.testing.assert_array_equal(flip(x[order], ids[order], 0), flip(x, ids, 0)[order])
    assert not np.array_equal(mirrored(flip(x, ids, 0, jax.random.key(1))), m0)  # Other coins.
    cfg = {"augment_crop_padding": 0, "augment_erasing": 0.0, "augment_flip": True}
    assert augment.from_config(cfg) == (augment.random_flip,)
    assert augment.from_config({**cfg, "augment_flip_alternating": True}) == ()  # The loop's.


def test_random_erasing_replaces_one_rectangle_within_the_area_bounds():
    x = jnp.full(
        (100, 28, 28, 1), 2.0
    )  # Outside [0, 1], so erased pixels (uniform noise) are visible.
    out = np.asarray(augment.random_erasing(x, jax.random.key(0), 1.0))
    erased = out[..., 0] != 2.0
    area = erased.sum(axis=(1, 2)) / (28 * 28)
    assert np.all(area > 0) and np.all(area <= 0.25 * 1.3 + 0.05)
    for m in erased:  # A filled rectangle: its bounding box is fully erased.
        rows, cols = np.nonzero(m)
        assert m[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
    np.testing.assert_array_equal(augment.random_erasing(x, jax.random.key(0), 0.0), x)


def test_resnet_small_is_under_a_million_parameters_and_has_batch_norm_state():
    v = ResNetSmall().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    assert sum(p.size for p in jax.tree.leaves(v["params"])) < 1_000_000
    assert jax.tree.leaves(v["batch_stats"])


def test_batch_norm_statistics_update_in_training_and_not_in_evaluation():
    state = create_train_state(jax.random.key(0), config(model="convnet_s"))
    batch = {"image": (images(8) * 255).astype(jnp.uint8), "label": jnp.arange(8) % 10}
    before = jax.tree.map(np.asarray, state.batch_stats)
    new_state, _ = jax.jit(train_step)(state, batch)
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before, new_state.batch_stats)
    assert all(jax.tree.leaves(changed))
    # Evaluation normalizes with the running averages: an example's result does not depend on
    # the rest of its batch (with batch statistics it would).
    evaluate = jax.jit(eval_step)
    alone = evaluate(new_state, {k: v[:4] for k, v in batch.items()})
    among = evaluate(new_state, {**batch, "mask": jnp.arange(8) < 4})
    np.testing.assert_allclose(float(alone["loss_sum"]), float(among["loss_sum"]), rtol=1e-5)
    trained = jax.jit(train_step)(new_state, {k: v[:4] for k, v in batch.items()})[1]["loss"]
    assert np.isfinite(float(trained))


def test_ema_follows_its_warmed_up_formula_for_params_and_batch_norm_statistics():
    d = 0.9
    state = create_train_state(jax.random.key(0), config(model="convnet_s", ema_decay=d))
    batch = {"image": (images(8) * 255).astype(jnp.uint8), "label": jnp.arange(8) % 10}
    ema0 = jax.tree.map(np.asarray, state.ema)
    step = jax.jit(train_step)
    s1, _ = step(state, batch)
    s2, _ = step(s1, batch)
    decay = lambda t: min(d, (1 + t) / (10 + t))  # t: updates so far, after this one.
    live = lambda s: {"params": s.params, "batch_stats": s.batch_stats}
    expected1 = jax.tree.map(lambda e, p: decay(1) * e + (1 - decay(1)) * p, ema0, live(s1))
    expected2 = jax.tree.map(lambda e, p: decay(2) * e + (1 - decay(2)) * p, expected1, live(s2))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), s2.ema, expected2
    )
    assert float(ema_decay_at(d, 10_000)) == pytest.approx(d)
    # Evaluation uses the EMA parameters and the EMA batch-norm statistics.
    swapped = s2.replace(params=s2.ema["params"], batch_stats=s2.ema["batch_stats"], ema=None)
    np.testing.assert_allclose(
        float(eval_step(s2, batch)["loss_sum"]),
        float(eval_step(swapped, batch)["loss_sum"]),
        rtol=1e-6,
    )


def test_ema_evaluation_is_close_to_the_live_one_early_in_a_run():
    """With decay 0.999 and no warm-up, an EMA 100 steps in is ~90% the random initialization."""
    c = config(model="convnet_s", ema_decay=0.999, learning_rate=3e-3)
    state = create_train_state(jax.random.key(0), c)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 256).astype(np.int32)
    imgs = rng.integers(0, 40, (256, 28, 28, 1)).astype(np.uint8)
    for i, k in enumerate(labels):
        imgs[i, 2 * k + 3 : 2 * k + 7, 4:24] = 220
    step = jax.jit(train_step)
    for i in range(60):
        sl = slice((i % 8) * 32, (i % 8) * 32 + 32)
        state, _ = step(state, {"image": imgs[sl], "label": labels[sl]})
    batch = {"image": jnp.asarray(imgs), "label": jnp.asarray(labels)}
    ema = eval_step(state, batch)
    live = eval_step(state.replace(ema=None), batch)
    assert int(live["correct"]) > 128  # The live model has learned the task...
    assert (
        int(ema["correct"]) >= int(live["correct"]) - 26
    )  # ...and the EMA is within 10 points of it.


def test_schedules_follow_their_formulas():
    c = config(schedule="cosine", learning_rate=0.01, warmup_epochs=1.0, num_epochs=10)
    lr = learning_rate_schedule(c, total_steps=1000)
    assert float(lr(0)) == 0.0
    assert float(lr(50)) == pytest.approx(0.005)
    assert float(lr(100)) == pytest.approx(0.01)
    assert float(lr(550)) == pytest.approx(0.01 * 0.5 * (1 + np.cos(np.pi * 0.5)), rel=1e-5)
    assert float(lr(1000)) == pytest.approx(0.0, abs=1e-9)
    one = learning_rate_schedule(
        config(schedule="onecycle", learning_rate=0.01, warmup_epochs=3.0, num_epochs=10),
        total_steps=1000,
    )
    assert float(one(300)) == pytest.approx(0.01, rel=1e-4)
    assert float(one(0)) < 0.001 and float(one(1000)) < 1e-5
    assert learning_rate_schedule(config(), None) == 1e-3


def test_the_triangular_schedule_and_its_old_name_linear():
    from fashion_jax.config import validate

    c = config(schedule="triangular", learning_rate=0.1, warmup_epochs=2.0, num_epochs=10)
    tri = learning_rate_schedule(validate(c), total_steps=1000)  # Up over 200 steps, down over 800.
    expected = {0: 0.0, 100: 0.05, 200: 0.1, 600: 0.05, 1000: 0.0}
    assert {t: float(tri(t)) for t in expected} == pytest.approx(expected, abs=1e-7)
    old = config(schedule="linear", learning_rate=0.1, warmup_epochs=2.0, num_epochs=10)
    with pytest.warns(DeprecationWarning, match="'linear' is deprecated; it is 'triangular'"):
        lin = learning_rate_schedule(validate(old), total_steps=1000)
    assert [float(lin(t)) for t in range(0, 1001, 50)] == [
        float(tri(t)) for t in range(0, 1001, 50)
    ]


def test_a_run_started_with_linear_resumes_as_triangular_but_not_as_cosine():
    """The renamed schedule is the same training, so a workdir recorded with the old name resumes
    under the new one; another schedule is still refused."""
    from fashion_jax.config import check_resume
    from fashion_jax.errors import CheckpointError

    previous = {**config().to_dict(), "schedule": "linear"}
    check_resume(previous, config(schedule="triangular"))
    with pytest.raises(CheckpointError, match="schedule: 'linear' -> 'cosine'"):
        check_resume(previous, config(schedule="cosine"))


def test_label_smoothing_matches_the_smoothed_targets():
    logits = jax.random.normal(jax.random.key(0), (5, 10))
    labels = jnp.array([0, 3, 9, 2, 2])
    eps = 0.1
    targets = np.full((5, 10), eps / 10)
    targets[np.arange(5), labels] += 1 - eps
    manual = -(targets * np.asarray(jax.nn.log_softmax(logits))).sum(-1)
    np.testing.assert_allclose(cross_entropy(logits, labels, eps), manual, rtol=1e-5)
    np.testing.assert_allclose(
        cross_entropy(logits, labels, 0.0),
        -np.asarray(jax.nn.log_softmax(logits))[np.arange(5), labels],
        rtol=1e-5,
    )


def test_flip_tta_equals_plain_evaluation_on_mirror_symmetric_images():
    state = create_train_state(jax.random.key(0), config())
    half = (images(4)[:, :, :14] * 255).astype(jnp.uint8)
    symmetric = jnp.concatenate([half, half[:, :, ::-1]], axis=2)
    batch = {"image": symmetric, "label": jnp.arange(4)}
    np.testing.assert_allclose(
        float(eval_step(state, batch, tta_flip=True)["loss_sum"]),
        float(eval_step(state, batch)["loss_sum"]),
        rtol=1e-5,
    )
    asym = {"image": (images(4) * 255).astype(jnp.uint8), "label": jnp.arange(4)}
    assert float(eval_step(state, asym, tta_flip=True)["loss_sum"]) != float(
        eval_step(state, asym)["loss_sum"]
    )


def test_shift_tta_averages_the_log_probabilities_of_the_moved_views():
    """tta_shift=2 with the flip: 10 views, each image and its mirror image moved by 2 pixels up,
    down, left and right with a zero border; the log-probabilities are averaged."""
    from fashion_jax.steps import predict_logits, shift

    one = np.zeros((1, 6, 6, 1), np.uint8)
    one[0, 2, 3, 0] = 9
    moved = np.asarray(shift(jnp.asarray(one), 2, -1))
    assert moved[0, 4, 2, 0] == 9 and moved.sum() == 9  # Down 2, left 1.
    assert np.asarray(shift(jnp.asarray(one), -3, 0)).sum() == 0  # Moved off the image.

    state = create_train_state(jax.random.key(0), config())
    x = (images(3) * 255).astype(jnp.uint8)
    logp = lambda v: jax.nn.log_softmax(predict_logits(state, v))
    by_hand = []
    for v in (x, x[:, :, ::-1]):
        by_hand.append(logp(v))
        for dy, dx in ((2, 0), (-2, 0), (0, 2), (0, -2)):
            p = np.zeros((3, 32, 32, 1), np.uint8)
            p[:, 2:30, 2:30] = v
            by_hand.append(logp(p[:, 2 - dy : 30 - dy, 2 - dx : 30 - dx]))
    expected = sum(by_hand) / 10
    got = predict_logits(state, x, tta_flip=True, tta_shift=2)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    no_flip = predict_logits(state, x, tta_shift=2)
    np.testing.assert_allclose(no_flip, sum(by_hand[:5]) / 5, rtol=1e-5, atol=1e-6)
    batch = {"image": x, "label": jnp.arange(3)}
    assert float(eval_step(state, batch, tta_flip=True, tta_shift=2)["loss_sum"]) != float(
        eval_step(state, batch, tta_flip=True)["loss_sum"]
    )


def test_augmented_training_step_needs_and_uses_the_key():
    state = create_train_state(jax.random.key(0), config())
    batch = {"image": (images(8) * 255).astype(jnp.uint8), "label": jnp.arange(8) % 10}
    opts = dict(
        augmentations=augment.from_config(
            {"augment_crop_padding": 2, "augment_flip": True, "augment_erasing": 0.5}
        )
    )
    step = jax.jit(functools.partial(train_step, **opts))
    a, _ = step(state, batch, jax.random.key(1))
    b, _ = step(state, batch, jax.random.key(1))
    c, _ = step(state, batch, jax.random.key(2))
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    assert not np.array_equal(a.params["Dense_1"]["kernel"], c.params["Dense_1"]["kernel"])
