"""The programs the train loop compiles: the K-step train chunk, its metric window, their costs.

Pure functions of a config and a mesh that return jitted functions (nothing here touches files).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from fashion_jax import sharding, steps

DEFAULT_STEPS_PER_CALL = {"cpu": 1}  # Other platforms (gpu, tpu): ACCELERATOR_STEPS_PER_CALL.
ACCELERATOR_STEPS_PER_CALL = 100


def steps_per_call(config, platform: str) -> int:
    """Train steps per dispatch: the config's, or by platform (1 on CPU, where a step costs
    milliseconds; 100 on accelerators, where Python's per-call overhead would idle the device)."""
    return config.steps_per_call or DEFAULT_STEPS_PER_CALL.get(platform, ACCELERATOR_STEPS_PER_CALL)


def make_train_chunk(config, mesh, batch_size: int, step_key: jax.Array, k: int):
    """The compiled `(state, window, images, labels, perm, index, n) -> (state, window)`: `n` train
    steps (1 <= n <= k) from batch `index` of the epoch's permutation `perm`, each on the batch
    gathered from the device-resident `images`/`labels`. `window` accumulates the loss and
    accuracy sums and the first step whose loss is not finite, on the device."""
    repl, by_batch = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    options = steps.train_options(config)

    def one_step(index, state, window, images, labels, perm):
        idx = jax.lax.with_sharding_constraint(
            jax.lax.dynamic_slice_in_dim(perm, index * batch_size, batch_size), by_batch
        )
        batch = {"image": images[idx], "label": labels[idx]}
        new_state, m = steps.train_step(
            state, batch, jax.random.fold_in(step_key, state.step), **options
        )
        bad = (window["first_bad_step"] < 0) & ~jnp.isfinite(m["loss"])
        return new_state, {
            "loss": window["loss"] + m["loss"],
            "accuracy": window["accuracy"] + m["accuracy"],
            "first_bad_step": jnp.where(bad, state.step + 1, window["first_bad_step"]),
        }

    def chunk(state, window, images, labels, perm, index, n):
        if k == 1:  # One step per call: no loop in the program (fastest on CPU).
            return one_step(index, state, window, images, labels, perm)
        body = lambda i, carry: one_step(index + i, *carry, images, labels, perm)
        return jax.lax.fori_loop(0, n, body, (state, window))

    return jax.jit(
        chunk,
        in_shardings=(repl, repl, repl, repl, repl, None, None),
        out_shardings=(repl, repl),
        donate_argnums=(0, 1),
    )


def new_window(mesh, loop_loss: float = 0.0, loop_accuracy: float = 0.0):
    """The device-side window sums, starting from the loop's (a resumed window continues)."""
    return jax.device_put(
        {
            "loss": jnp.float32(loop_loss),
            "accuracy": jnp.float32(loop_accuracy),
            "first_bad_step": jnp.int32(-1),
        },
        sharding.replicated(mesh),
    )


def flops_of(compiled) -> float | None:
    """FLOPs of one call of a compiled program (`jax.stages.Compiled`), from XLA's cost analysis
    (a loop's body counts once); None where the backend reports none. The compiled program, not
    `Lowered.cost_analysis()`, which returns None through the CUDA plugin."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    flops = (analysis or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def model_costs(state, compiled_train_step, image, num_devices: int = 1) -> dict[str, Any]:
    """{"params": count, "forward_flops": per image (eval mode), "train_step_flops": per step of
    the global batch}, FLOPs from XLA's cost analysis of the compiled programs. `state`: the
    train state or its shapes (`jax.ShapeDtypeStruct`s); `image`: one image's shape and dtype
    ([H, W, C], uint8 or float32). The compiled step is the per-device program of a data-parallel
    step, so its FLOPs are counted `num_devices` times."""
    x = jax.ShapeDtypeStruct((1, *image.shape), image.dtype)
    forward = jax.jit(steps.predict_logits).lower(state, x).compile()
    return {
        "params": int(sum(p.size for p in jax.tree.leaves(state.params))),
        "forward_flops": flops_of(forward),
        "train_step_flops": (flops_of(compiled_train_step) or 0) * num_devices or None,
    }


def check_model(config, abstract_init, image, num_classes: int):
    """Traces the model once in eval and train mode on two images of the data's shape (nothing
    is computed) and returns `abstract_init()`, the train state's shapes.

    image: one image's jax.ShapeDtypeStruct. Raises ConfigError, in one line, when the model
    cannot be built or take images of that shape, or returns logits other than float[B, classes].
    """
    from fashion_jax.errors import ConfigError, UserError

    shape = f"{jnp.dtype(image.dtype).name}[B, {', '.join(map(str, image.shape))}]"
    batch = {
        "image": jax.ShapeDtypeStruct((2, *image.shape), image.dtype),
        "label": jax.ShapeDtypeStruct((2,), jnp.int32),
    }
    options = steps.train_options(config)
    try:
        state = abstract_init()
        logits = jax.eval_shape(steps.predict_logits, state, batch["image"])
        if logits.shape == (2, num_classes):
            jax.eval_shape(
                lambda s, b, k: steps.train_step(s, b, k, **options),
                state,
                batch,
                jax.random.key(0),
            )
    except UserError:
        raise
    except Exception as e:  # The model's own code failed on this input: say so in one line.
        message = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise ConfigError(
            f"model '{config.model}' cannot take this data's images, {shape} "
            f"({type(e).__name__}: {message})."
        ) from None
    if logits.shape != (2, num_classes) or not jnp.issubdtype(logits.dtype, jnp.floating):
        raise ConfigError(
            f"model '{config.model}' returns {jnp.dtype(logits.dtype).name}{list(logits.shape)} "
            f"for 2 images; it must return logits [B, num_classes] = [2, {num_classes}] "
            "(num_classes comes from the data)."
        )
    return state
