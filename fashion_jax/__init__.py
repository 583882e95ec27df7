"""fashion_jax: a small JAX/Flax training library for Fashion-MNIST classifiers.

Research code imports the pure pieces and composes them with its own jit, loop or sharding:

    from fashion_jax import SeedCNN, create_train_state, train_step, eval_step

Your own model (Linen or NNX, `config.model = "net:Name"`) and data (`train_and_evaluate(config,
workdir, data=...)`): docs/your-model.md. `split_nnx` turns an NNX module into the
(apply_fn, params, batch_stats) a `TrainState` holds.

Importing the package may add one XLA:CPU option to `XLA_FLAGS` (with jaxlib 0.10.x only, if not
set already, not with `FASHION_JAX_KEEP_XLA_FLAGS=1`; CPU devices only): `XLA_FLAGS_ADDED` says
what was added ("" if nothing). It is done on import, not by a call to remember, because it must
happen before JAX starts its backend and is what makes the library's CPU speed (README "Speed").
"""

import os as _os

XLA_CPU_FLAG = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"


def _set_cpu_xla_flags() -> str:
    """Route XLA:CPU convolutions to Eigen, keeping YNNPACK for dots: a SeedCNN train step at batch
    64 takes 21.9 ms instead of 36.4 (1.7x; `benchmarks/step_speed.py`, in benchmarks/results.jsonl).

    jaxlib 0.10 sends convolutions, reductions and elementwise ops to YNNPACK by default, which is
    much slower for this network (benchmarks/NOTES.md). Only set for the jaxlib versions where it
    was measured (an unknown flag aborts XLA), only if the user has not chosen a value, and only
    effective when fashion_jax is imported before JAX starts its backend. Opt out with
    FASHION_JAX_KEEP_XLA_FLAGS=1. Affects CPU devices only. Returns the flag added, or "".
    """
    flags = _os.environ.get("XLA_FLAGS", "")
    if (
        _os.environ.get("FASHION_JAX_KEEP_XLA_FLAGS")
        or "xla_cpu_experimental_ynn_fusion_type" in flags
    ):
        return ""
    try:
        from importlib.metadata import version

        if not version("jaxlib").startswith("0.10."):
            return ""
    except Exception:
        return ""
    _os.environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_FLAG}".strip()
    return XLA_CPU_FLAG


XLA_FLAGS_ADDED = _set_cpu_xla_flags()

from fashion_jax.config import get_config  # noqa: E402
from fashion_jax.data import CLASS_NAMES, DatasetInfo  # noqa: E402
from fashion_jax.models import SeedCNN, get_model  # noqa: E402
from fashion_jax.nnx_models import split as split_nnx  # noqa: E402
from fashion_jax.steps import (  # noqa: E402
    TrainState,
    create_train_state,
    eval_step,
    normalize,
    predict_logits,
    train_step,
)
from fashion_jax.trained import load_trained  # noqa: E402


def __getattr__(name: str):
    """`fashion_jax.train_and_evaluate`, imported on first use (it pulls in Orbax)."""
    if name == "train_and_evaluate":
        from fashion_jax.train import train_and_evaluate

        return train_and_evaluate
    raise AttributeError(f"module 'fashion_jax' has no attribute {name!r}")


__all__ = [
    "CLASS_NAMES",
    "DatasetInfo",
    "XLA_FLAGS_ADDED",
    "SeedCNN",
    "TrainState",
    "create_train_state",
    "eval_step",
    "get_config",
    "get_model",
    "load_trained",
    "normalize",
    "predict_logits",
    "split_nnx",
    "train_and_evaluate",
    "train_step",
]
