"""Pure training and evaluation steps. Nothing here is jitted, touches files or reads flags.

Wrap them yourself (`jax.jit(train_step, donate_argnums=0)`) or use the runner, which jits them
with shardings. A batch is a dict:

  image: uint8[B, 28, 28, 1] (or float32 in [0, 1])
  label: int32[B]
  mask:  bool[B], optional; False rows (padding) count for nothing.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from fashion_jax.models import get_model


class TrainState(train_state.TrainState):
    """Flax's TrainState (step, params, opt_state, apply_fn, tx)."""


def normalize(images: jnp.ndarray) -> jnp.ndarray:
    """uint8[..., 28, 28, 1] in 0..255 -> float32 in [0, 1]; float input passes through as float32."""
    if jnp.issubdtype(images.dtype, jnp.integer):
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


def make_optimizer(config) -> optax.GradientTransformation:
    """Adam with the config's learning rate (the tutorial's optimizer)."""
    return optax.adam(config.learning_rate)


def create_train_state(rng: jax.Array, config) -> TrainState:
    """Initializes the model named by `config.model` and its optimizer.

    rng: a PRNG key. config: needs `model`, `learning_rate`. Returns a TrainState whose step is 0.
    """
    model = get_model(config.model)
    variables = model.init(rng, jnp.zeros((1, 28, 28, 1), jnp.float32))
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=make_optimizer(config))


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Per-example softmax cross-entropy: logits float32[B, C], labels int32[B] -> float32[B]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def train_step(state: TrainState, batch: dict[str, jnp.ndarray], rng: jax.Array | None = None
               ) -> tuple[TrainState, dict[str, Any]]:
    """One optimizer step on the mean cross-entropy of `batch`.

    rng: a PRNG key for this step's randomness (the runner passes `fold_in(key, state.step)`);
    the SeedCNN recipe uses none.

    Returns the new state and metrics {"loss": float32[], "accuracy": float32[]}, both means over
    the batch, computed from the logits before the update (as Keras reports them).
    """

    del rng  # Used by recipes with augmentation or dropout.

    def loss_fn(params):
        logits = state.apply_fn({"params": params}, normalize(batch["image"]), train=True)
        return cross_entropy(logits, batch["label"]).mean(), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads)
    accuracy = (logits.argmax(-1) == batch["label"]).mean()
    return state, {"loss": loss, "accuracy": accuracy}


def eval_step(state: TrainState, batch: dict[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
    """Sums over the unmasked examples of `batch`.

    Returns {"loss_sum": float32[], "correct": int32[], "count": int32[]}; add them over batches
    and divide for the means. Rows with mask False (padding of a last partial batch) add nothing.
    """
    logits = state.apply_fn({"params": state.params}, normalize(batch["image"]), train=False)
    mask = batch.get("mask", jnp.ones(batch["label"].shape, bool))
    loss = cross_entropy(logits, batch["label"])
    return {
        "loss_sum": jnp.where(mask, loss, 0.0).sum(),
        "correct": ((logits.argmax(-1) == batch["label"]) & mask).sum(dtype=jnp.int32),
        "count": mask.sum(dtype=jnp.int32),
    }
