"""Pure training and evaluation steps. Nothing here is jitted, touches files or reads flags.

Wrap them yourself (`jax.jit(train_step, donate_argnums=0)`) or use the runner, which jits them
with shardings. A batch is a dict:

  image: uint8[B, H, W, C] (or float32 in [0, 1])
  label: int32[B]
  mask:  bool[B], optional; False rows (padding) count for nothing in `eval_step`.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from flax.training import train_state

from fashion_jax import augment, models, nnx_models, optimizers
from fashion_jax.config import is_off
from fashion_jax.optimizers import learning_rate_schedule, make_optimizer  # noqa: F401 (re-exported)


class TrainState(train_state.TrainState):
    """Flax's TrainState (step, params, opt_state, apply_fn, tx) plus what stronger recipes need.

    batch_stats: batch-norm running statistics ({} for models without batch norm).
    ema: {"params", "batch_stats"}, exponential moving averages used for evaluation, or None.
    ema_decay: the EMA's decay (static; 0 means no EMA).
    """

    batch_stats: Any = flax.struct.field(default_factory=dict)
    ema: Any = None
    ema_decay: float = flax.struct.field(pytree_node=False, default=0.0)


def normalize(images: jnp.ndarray) -> jnp.ndarray:
    """uint8[..., H, W, C] in 0..255 -> float32 in [0, 1]; float input passes through as float32."""
    if jnp.issubdtype(images.dtype, jnp.integer):
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


def create_train_state(
    rng: jax.Array,
    config,
    total_steps: int | None = None,
    *,
    image_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    search_dirs: tuple = (),
) -> TrainState:
    """Initializes the model `config.model` names, its optimizer and (if `ema_decay` > 0) its EMA.

    rng: a PRNG key. config: a `fashion_jax.config.get_config()`-shaped config. total_steps: the
    run's length, needed by schedules other than "constant". image_shape (H, W, C) and num_classes:
    the data's (None: those of `config.dataset`, from `fashion_jax.data.describe`). search_dirs:
    where a "module:Name" model's file is looked for (`models.resolve`; the config's `model_dir`
    comes first). A Linen model is initialized with `model.init`; an NNX model is constructed with
    `rngs=nnx.Rngs(rng)` and split (`nnx_models.split`), so the state holds plain dicts either way.
    Parameters, optimizer state and batch-norm statistics are float32 whatever
    `config.compute_dtype` is. Returns a TrainState at step 0.
    """
    if image_shape is None or num_classes is None:
        from fashion_jax import data

        info = data.describe(config)
        image_shape = info.image_shape if image_shape is None else image_shape
        num_classes = info.num_classes if num_classes is None else num_classes
    dirs = (config.get("model_dir", ""), *search_dirs)
    kind, model = models.build(config, num_classes, dirs, rngs=nnx.Rngs(rng))
    if kind == "nnx":
        apply_fn, params, batch_stats = nnx_models.split(model)
    else:
        variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
        params, batch_stats = variables["params"], variables.get("batch_stats", {})
        apply_fn = model.apply
    ema = {"params": params, "batch_stats": batch_stats} if config.ema_decay > 0 else None
    return TrainState.create(
        apply_fn=apply_fn,
        params=params,
        tx=optimizers.make_optimizer(config, total_steps),
        batch_stats=batch_stats,
        ema=jax.tree.map(jnp.copy, ema),
        ema_decay=float(config.ema_decay),
    )


def ema_decay_at(decay: float, step: jnp.ndarray) -> jnp.ndarray:
    """The EMA decay used after `step` updates: min(decay, (1 + step) / (10 + step)).

    The warm-up (TensorFlow's `ExponentialMovingAverage(num_updates=...)`) keeps the average close
    to the live weights early on, so the EMA is usable from the first evaluation instead of
    lagging behind the random initialization for ~1/(1 - decay) steps.
    """
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def update_ema(state: TrainState) -> TrainState:
    """Moves `state.ema` (parameters and batch-norm statistics) toward the live ones."""
    d = ema_decay_at(state.ema_decay, state.step)
    live = {"params": state.params, "batch_stats": state.batch_stats}
    return state.replace(ema=jax.tree.map(lambda e, p: d * e + (1 - d) * p, state.ema, live))


def cross_entropy(
    logits: jnp.ndarray, labels: jnp.ndarray, label_smoothing: float = 0.0
) -> jnp.ndarray:
    """Per-example softmax cross-entropy: logits float32[B, C], labels int32[B] -> float32[B]."""
    if not is_off(label_smoothing):
        num_classes = logits.shape[-1]
        targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
        return optax.softmax_cross_entropy(logits, targets)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def train_options(config) -> dict[str, Any]:
    """The keyword options of `train_step` that a config sets."""
    return {"label_smoothing": config.label_smoothing, "augmentations": augment.from_config(config)}


def eval_options(config) -> dict[str, Any]:
    """The keyword options of `predict_logits` and `eval_step` (test-time augmentation) that a
    config sets; a run recorded before a key existed gets its default."""
    return {
        "tta_flip": bool(config.get("tta_flip", False)),
        "tta_shift": int(config.get("tta_shift", 0)),
    }


def train_step(
    state: TrainState,
    batch: dict[str, jnp.ndarray],
    rng: jax.Array | None = None,
    *,
    label_smoothing: float = 0.0,
    augmentations: tuple = (),
) -> tuple[TrainState, dict[str, Any]]:
    """One optimizer step on the mean cross-entropy of `batch`.

    rng: a PRNG key for this step (the runner passes `fold_in(key, state.step)`), split into the
    augmentation key and the `"dropout"` key of `apply`; needed only when a model uses randomness
    or `augmentations` (functions (images, key) -> images, see `augment.from_config`) is not empty.
    Batch-norm statistics and the EMA (when the state has one) are updated too. Returns the new
    state and metrics {"loss": float32[], "accuracy": float32[]}, means over the batch, computed
    from the logits before the update.
    """
    images = normalize(batch["image"])
    rngs = {}
    if rng is not None:
        aug_key, dropout_key = jax.random.split(rng)
        images = augment.apply(images, aug_key, augmentations)
        rngs = {"dropout": dropout_key}
    elif augmentations:
        raise ValueError("train_step: augmentations need an rng key")

    def loss_fn(params):
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
            rngs=rngs,
        )
        loss = cross_entropy(logits, batch["label"], label_smoothing).mean()
        return loss, (logits, updates.get("batch_stats", {}))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    if state.ema is not None:
        state = update_ema(state)
    accuracy = (logits.argmax(-1) == batch["label"]).mean()
    return state, {"loss": loss, "accuracy": accuracy}


def shift(images: jnp.ndarray, dy: int, dx: int) -> jnp.ndarray:
    """images [B, H, W, C] moved by `dy` rows and `dx` columns, the uncovered border zero."""
    h, w = images.shape[1:3]
    pad = max(abs(dy), abs(dx))
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return padded[:, pad - dy : pad - dy + h, pad - dx : pad - dx + w, :]


def predict_logits(
    state: TrainState, images: jnp.ndarray, tta_flip: bool = False, tta_shift: int = 0
) -> jnp.ndarray:
    """Evaluation-mode logits float32[B, num_classes] for images [B, H, W, C] (uint8 or float32):
    the EMA if the state has one, running BN statistics.

    tta_flip: average the log-probabilities of each image and its mirror image.
    tta_shift: also average over the image (and its mirror image) moved by `tta_shift` pixels
    up, down, left and right (zero fill): 5 or 10 views instead of 1 or 2.
    """
    variables = (
        state.ema
        if state.ema is not None
        else {"params": state.params, "batch_stats": state.batch_stats}
    )
    apply = lambda x: state.apply_fn(variables, x, train=False)
    x = normalize(images)
    if not tta_flip and not tta_shift:
        return apply(x)
    views = [x, x[:, :, ::-1, :]] if tta_flip else [x]
    if tta_shift:
        s = tta_shift
        views += [
            shift(v, dy, dx) for v in views[:] for dy, dx in ((s, 0), (-s, 0), (0, s), (0, -s))
        ]
    return sum(jax.nn.log_softmax(apply(v)) for v in views) / len(views)


def eval_step(
    state: TrainState,
    batch: dict[str, jnp.ndarray],
    *,
    tta_flip: bool = False,
    tta_shift: int = 0,
) -> dict[str, jnp.ndarray]:
    """Sums over the unmasked examples of `batch`.

    Returns {"loss_sum": float32[], "correct": int32[], "count": int32[]}; add them over batches
    and divide for the means. Rows with mask False (padding of a last partial batch) add nothing.
    """
    logits = predict_logits(state, batch["image"], tta_flip, tta_shift)
    mask = batch.get("mask", jnp.ones(batch["label"].shape, bool))
    loss = cross_entropy(logits, batch["label"])
    return {
        "loss_sum": jnp.where(mask, loss, 0.0).sum(),
        "correct": ((logits.argmax(-1) == batch["label"]) & mask).sum(dtype=jnp.int32),
        "count": mask.sum(dtype=jnp.int32),
    }
