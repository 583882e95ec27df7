"""fashion_jax: a small JAX/Flax training library for Fashion-MNIST classifiers.

Research code imports the pure pieces and composes them with its own jit, loop or sharding:

    from fashion_jax import SeedCNN, create_train_state, train_step, eval_step
"""

from fashion_jax.config import get_config
from fashion_jax.data import CLASS_NAMES
from fashion_jax.models import SeedCNN, get_model
from fashion_jax.steps import TrainState, create_train_state, eval_step, normalize, train_step

__all__ = [
    "CLASS_NAMES",
    "SeedCNN",
    "TrainState",
    "create_train_state",
    "eval_step",
    "get_config",
    "get_model",
    "normalize",
    "train_step",
]
