"""Pure training and evaluation steps. Nothing here is jitted, touches files or reads flags.

Wrap them yourself (`jax.jit(train_step, donate_argnums=0)`) or use the runner, which jits them
with shardings. A batch is a dict:

  image: uint8[B, 28, 28, 1] (or float32 in [0, 1])
  label: int32[B]
  mask:  bool[B], optional; False rows (padding) count for nothing in `eval_step`.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from fashion_jax import augment
from fashion_jax.models import get_model


class TrainState(train_state.TrainState):
    """Flax's TrainState (step, params, opt_state, apply_fn, tx) plus what stronger recipes need.

    batch_stats: batch-norm running statistics ({} for models without batch norm).
    ema_params: exponential moving average of params used for evaluation, or None when off.
    ema_decay: the EMA decay (static; 0 means no EMA).
    """

    batch_stats: Any = flax.struct.field(default_factory=dict)
    ema_params: Any = None
    ema_decay: float = flax.struct.field(pytree_node=False, default=0.0)


def normalize(images: jnp.ndarray) -> jnp.ndarray:
    """uint8[..., 28, 28, 1] in 0..255 -> float32 in [0, 1]; float input passes through as float32."""
    if jnp.issubdtype(images.dtype, jnp.integer):
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


def learning_rate_schedule(config, total_steps: int | None = None) -> optax.Schedule | float:
    """The config's schedule: "constant", "cosine" (linear warm-up, cosine decay to 0) or "onecycle"."""
    if config.schedule == "constant":
        return config.learning_rate
    if not total_steps:
        raise ValueError(f"schedule '{config.schedule}' needs total_steps")
    warmup = int(round(config.warmup_epochs / config.num_epochs * total_steps))
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, total_steps, end_value=0.0)
    if config.schedule == "onecycle":
        return optax.cosine_onecycle_schedule(total_steps, config.learning_rate,
                                              pct_start=max(warmup, 1) / total_steps)
    raise ValueError(f"unknown schedule {config.schedule!r}")


def make_optimizer(config, total_steps: int | None = None) -> optax.GradientTransformation:
    """Adam (the tutorial's) or AdamW with `weight_decay`, on the config's learning-rate schedule."""
    lr = learning_rate_schedule(config, total_steps)
    if config.optimizer == "adamw":
        return optax.adamw(lr, weight_decay=config.weight_decay)
    return optax.adam(lr)


def create_train_state(rng: jax.Array, config, total_steps: int | None = None) -> TrainState:
    """Initializes the model named by `config.model`, its optimizer and (if `ema_decay` > 0) its EMA.

    rng: a PRNG key. config: a `fashion_jax.config.get_config()`-shaped config. total_steps: the
    run's length, needed by the "cosine" and "onecycle" schedules. Returns a TrainState at step 0.
    """
    model = get_model(config.model)
    variables = model.init(rng, jnp.zeros((1, 28, 28, 1), jnp.float32))
    params = variables["params"]
    return TrainState.create(
        apply_fn=model.apply, params=params, tx=make_optimizer(config, total_steps),
        batch_stats=variables.get("batch_stats", {}),
        ema_params=jax.tree.map(jnp.copy, params) if config.ema_decay > 0 else None,
        ema_decay=float(config.ema_decay))


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray, label_smoothing: float = 0.0) -> jnp.ndarray:
    """Per-example softmax cross-entropy: logits float32[B, C], labels int32[B] -> float32[B]."""
    if label_smoothing:
        num_classes = logits.shape[-1]
        targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
        return optax.softmax_cross_entropy(logits, targets)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def train_options(config) -> dict[str, Any]:
    """The keyword options of `train_step` that a config sets."""
    return {"label_smoothing": config.label_smoothing, "crop_padding": config.augment_crop_padding,
            "flip": config.augment_flip, "erasing": config.augment_erasing}


def train_step(state: TrainState, batch: dict[str, jnp.ndarray], rng: jax.Array | None = None, *,
               label_smoothing: float = 0.0, crop_padding: int = 0, flip: bool = False, erasing: float = 0.0
               ) -> tuple[TrainState, dict[str, Any]]:
    """One optimizer step on the mean cross-entropy of `batch`.

    rng: a PRNG key for this step's augmentation (the runner passes `fold_in(key, state.step)`);
    needed only when an augmentation is on. Batch-norm statistics and the parameter EMA (when the
    state has them) are updated too. Returns the new state and metrics {"loss": float32[],
    "accuracy": float32[]}, means over the batch, computed from the logits before the update.
    """
    images = normalize(batch["image"])
    if crop_padding or flip or erasing:
        images = augment.augment(images, rng, crop_padding, flip, erasing)

    def loss_fn(params):
        logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, images,
                                         train=True, mutable=["batch_stats"])
        loss = cross_entropy(logits, batch["label"], label_smoothing).mean()
        return loss, (logits, updates.get("batch_stats", {}))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    if state.ema_params is not None:
        d = state.ema_decay
        state = state.replace(ema_params=jax.tree.map(lambda e, p: d * e + (1 - d) * p,
                                                      state.ema_params, state.params))
    accuracy = (logits.argmax(-1) == batch["label"]).mean()
    return state, {"loss": loss, "accuracy": accuracy}


def predict_logits(state: TrainState, images: jnp.ndarray, tta_flip: bool = False) -> jnp.ndarray:
    """Evaluation-mode logits float32[B, 10] (EMA params if the state has them; running BN statistics).

    tta_flip: average the log-probabilities of each image and its mirror image.
    """
    params = state.ema_params if state.ema_params is not None else state.params
    apply = lambda x: state.apply_fn({"params": params, "batch_stats": state.batch_stats}, x, train=False)
    x = normalize(images)
    if not tta_flip:
        return apply(x)
    return (jax.nn.log_softmax(apply(x)) + jax.nn.log_softmax(apply(x[:, :, ::-1, :]))) / 2


def eval_step(state: TrainState, batch: dict[str, jnp.ndarray], *, tta_flip: bool = False) -> dict[str, jnp.ndarray]:
    """Sums over the unmasked examples of `batch`.

    Returns {"loss_sum": float32[], "correct": int32[], "count": int32[]}; add them over batches
    and divide for the means. Rows with mask False (padding of a last partial batch) add nothing.
    """
    logits = predict_logits(state, batch["image"], tta_flip)
    mask = batch.get("mask", jnp.ones(batch["label"].shape, bool))
    loss = cross_entropy(logits, batch["label"])
    return {
        "loss_sum": jnp.where(mask, loss, 0.0).sum(),
        "correct": ((logits.argmax(-1) == batch["label"]) & mask).sum(dtype=jnp.int32),
        "count": mask.sum(dtype=jnp.int32),
    }
