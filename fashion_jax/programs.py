"""The programs the train loop compiles: the K-step train chunk, its metric window, their costs,
and `build`, which compiles all of one run's device programs (`Programs`).

Pure functions of a config and a mesh that return jitted functions (nothing here touches files;
`use_compilation_cache`, which the commands call, points JAX's own persistent cache at a folder).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fashion_jax import augment, sharding, steps

CACHE_MAX_BYTES = 2**30  # The default cache's size; JAX evicts the least recently used beyond.


def use_compilation_cache() -> str | None:
    """Turns on JAX's persistent compilation cache for this process, so that a command started
    again loads the executables XLA compiled before (the same programs and flags: the same bits)
    instead of compiling them again: a few seconds of every launch on CPU. The folder is
    `$JAX_COMPILATION_CACHE_DIR` when set (empty: no cache; JAX applies its own settings, no size
    limit), else `$XDG_CACHE_HOME/fashion_jax/xla` (`~/.cache/fashion_jax/xla`), kept under
    `CACHE_MAX_BYTES` by evicting the least recently used. Every program is cached, however quickly
    it compiled. Returns the folder, or None."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        folder = os.environ["JAX_COMPILATION_CACHE_DIR"] or None
    else:
        root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        folder = os.path.join(root, "fashion_jax", "xla")
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    if folder and "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder


DEFAULT_STEPS_PER_CALL = {"cpu": 1}  # Other platforms (gpu, tpu): ACCELERATOR_STEPS_PER_CALL.
ACCELERATOR_STEPS_PER_CALL = 100


def steps_per_call(config, platform: str) -> int:
    """Train steps per dispatch: the config's, or by platform (1 on CPU, where a step costs
    milliseconds; 100 on accelerators, where Python's per-call overhead would idle the device)."""
    return config.steps_per_call or DEFAULT_STEPS_PER_CALL.get(platform, ACCELERATOR_STEPS_PER_CALL)


# Folded into a run's step key for the alternating flip's coins (a step folds in its step number,
# which never reaches this value).
_FLIP_COINS = 2**32 - 1


def make_one_step(config, batch_size: int, by_batch):
    """`(index, state, window, images, labels, perm, step_key) -> (state, window)`: one train step
    (`steps.train_step` with the config's `steps.train_options`) on batch `index` of the epoch's
    permutation `perm`, gathered from the device-resident `images`/`labels`, the step's key
    `fold_in(step_key, state.step)`; `window` accumulates the loss and accuracy sums and the first
    step whose loss is not finite. With `augment_flip_alternating`, the batch's images are mirrored
    by `augment.alternating_flip` (epoch = step // steps per epoch). Un-jitted: `make_train_chunk`
    compiles it for a run, `population` vmaps it (`config` may then be a member's overlay)."""
    options = steps.train_options(config)
    alternating_flip = bool(config.get("augment_flip_alternating", False))

    def one_step(index, state, window, images, labels, perm, step_key):
        idx = jax.lax.with_sharding_constraint(
            jax.lax.dynamic_slice_in_dim(perm, index * batch_size, batch_size), by_batch
        )
        batch = {"image": images[idx], "label": labels[idx]}
        if alternating_flip:
            epoch = state.step // (perm.shape[0] // batch_size)
            coins = jax.random.fold_in(step_key, _FLIP_COINS)
            batch["image"] = augment.alternating_flip(batch["image"], idx, epoch, coins)
        new_state, m = steps.train_step(
            state, batch, jax.random.fold_in(step_key, state.step), **options
        )
        bad = (window["first_bad_step"] < 0) & ~jnp.isfinite(m["loss"])
        return new_state, {
            "loss": window["loss"] + m["loss"],
            "accuracy": window["accuracy"] + m["accuracy"],
            "first_bad_step": jnp.where(bad, state.step + 1, window["first_bad_step"]),
        }

    return one_step


def chunk_of(one_step, k: int):
    """`(state, window, *args, index, n)`: `n` calls of `one_step(index + i, state, window, *args)`
    (1 <= n <= k), as one program: no loop for k = 1 (fastest on CPU), else a `fori_loop`."""

    def chunk(state, window, *args):
        *args, index, n = args
        if k == 1:
            return one_step(index, state, window, *args)
        body = lambda i, carry: one_step(index + i, *carry, *args)
        return jax.lax.fori_loop(0, n, body, (state, window))

    return chunk


def make_train_chunk(config, mesh, batch_size: int, step_key: jax.Array, k: int):
    """The compiled `(state, window, images, labels, perm, index, n) -> (state, window)`: `n` train
    steps (1 <= n <= k) of `make_one_step` from batch `index` of the epoch's permutation `perm`."""
    repl, by_batch = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    one_step = make_one_step(config, batch_size, by_batch)
    chunk = chunk_of(
        lambda index, state, window, images, labels, perm: one_step(
            index, state, window, images, labels, perm, step_key
        ),
        k,
    )
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


def param_count(state) -> int:
    """The number of trained parameters of a train state (or of its shapes)."""
    return int(sum(p.size for p in jax.tree.leaves(state.params)))


def model_costs(state, compiled_train_step, image, num_devices: int = 1) -> dict[str, Any]:
    """{"params": count, "forward_flops": per image (eval mode), "train_step_flops": per step of
    the global batch}, FLOPs from XLA's cost analysis of the compiled programs. `state`: the
    train state or its shapes (`jax.ShapeDtypeStruct`s); `image`: one image's shape and dtype
    ([H, W, C], uint8 or float32). The compiled step is the per-device program of a data-parallel
    step, so its FLOPs are counted `num_devices` times."""
    x = jax.ShapeDtypeStruct((1, *image.shape), image.dtype)
    forward = jax.jit(steps.predict_logits).lower(state, x).compile()
    return {
        "params": param_count(state),
        "forward_flops": flops_of(forward),
        "train_step_flops": (flops_of(compiled_train_step) or 0) * num_devices or None,
    }


def costs_on_cpu(config, abstract_state, train) -> dict[str, Any]:
    """`model_costs` of the same programs compiled for one host CPU device, whatever runs them.

    XLA's GPU cost analysis counts nothing for the convolutions it hands to cuDNN (custom calls):
    on an H200 it gave a 29.3-MFLOP ConvNet 0.56 MFLOP per image. On the CPU backend every
    convolution is XLA's own, so accelerator runs report the figures a one-device CPU run
    reports: the global batch on one device, the data-parallel step's FLOPs, collectives aside.
    `train`: the training split (`data.Split`, or anything with `images` and `labels` arrays).
    Where the CPU cannot count (no CPU backend under `JAX_PLATFORMS=cuda`, a model with an
    accelerator-only op) the FLOPs are None ("n/a"), never the accelerator's undercount, and
    training goes on."""
    why = "the host CPU could not compile the step"
    try:
        try:
            cpu = jax.local_devices(backend="cpu")[:1]
        except RuntimeError:
            why = "this process has no CPU backend (JAX_PLATFORMS)"
            raise
        mesh = jax.sharding.Mesh(cpu, (sharding.DATA_AXIS,))
        repl = sharding.replicated(mesh)

        def on_cpu(x):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl)

        with jax.default_device(cpu[0]):
            state = jax.tree.map(on_cpu, abstract_state)
            window = jax.tree.map(on_cpu, new_window(mesh))
            images, labels = (on_cpu(a) for a in (train.images, train.labels))
            perm = jax.ShapeDtypeStruct(train.labels.shape, jnp.int32, sharding=repl)
            chunk = make_train_chunk(config, mesh, config.batch_size, jax.random.key(0), 1)
            chunk = chunk.lower(state, window, images, labels, perm, 0, 1).compile()
            image = jax.ShapeDtypeStruct(train.images.shape[1:], train.images.dtype)
            return model_costs(state, chunk, image, 1)
    except Exception as e:  # noqa: BLE001 - counting FLOPs must never stop a run.
        print(f"FLOPs not counted ({why}: {type(e).__name__})")
        return {
            "params": param_count(abstract_state),
            "forward_flops": None,
            "train_step_flops": None,
        }


def run_costs(platform: str, config, abstract_state, chunk, train, num_devices: int) -> dict:
    """A run's costs: XLA's cost analysis of the compiled `chunk` on the CPU, `costs_on_cpu`
    on any other platform (whose cost analysis misses cuDNN's convolutions)."""
    if platform == "cpu":
        image = jax.ShapeDtypeStruct(train.images.shape[1:], train.images.dtype)
        return model_costs(abstract_state, chunk, image, num_devices)
    return costs_on_cpu(config, abstract_state, train)


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


@dataclasses.dataclass
class Programs:
    """One run's device programs and the device-resident data they read, compiled for its config,
    mesh and data. Nothing here touches files: `outputs.Outputs` holds the run's I/O.

    init(): a fresh TrainState (replicated). abstract_state: its shapes, the restore target.
    epoch_perm(epoch): int32[N] batch order of an epoch, from (seed, epoch). train_chunk: the
    compiled `make_train_chunk`. evaluators: an `Evaluator` per held-out split. costs:
    `model_costs` of the programs that run. images/labels: the training split on the devices.
    sync_each_call: wait for each call (simulated CPU devices, whose collectives can starve).
    """

    mesh: Any
    init: Callable[[], Any]
    abstract_state: Any
    epoch_perm: Callable[[int], jax.Array]
    train_chunk: Any
    evaluators: dict[str, Any]
    costs: dict[str, Any]
    images: jax.Array
    labels: jax.Array
    steps_per_call: int
    sync_each_call: bool


def build(config, mesh, splits, info, total_steps: int, search_dirs=()) -> Programs:
    """Compiles a run's `Programs` for `splits` ({"train": data.Split, other held-out splits})
    and `info` (data.DatasetInfo). Raises ConfigError when the model cannot take the data."""
    from fashion_jax.checkpoints import abstract_like
    from fashion_jax.evaluate import Evaluator

    repl = sharding.replicated(mesh)
    platform = jax.devices()[0].platform
    k = steps_per_call(config, platform)
    init_key, step_key, data_key = jax.random.split(jax.random.key(config.seed), 3)
    init = jax.jit(
        functools.partial(
            steps.create_train_state,
            config=config,
            total_steps=total_steps,
            image_shape=info.image_shape,
            num_classes=info.num_classes,
            search_dirs=tuple(search_dirs),
        ),
        out_shardings=repl,
    )
    train = splits["train"]
    image = jax.ShapeDtypeStruct(train.images.shape[1:], train.images.dtype)
    abstract_state = check_model(
        config, lambda: abstract_like(init, init_key, repl), image, info.num_classes
    )
    n_train = len(train.labels)
    images = sharding.put_replicated(train.images, mesh)
    labels = sharding.put_replicated(train.labels, mesh)
    # Compiled ahead of time, so XLA's cost analysis of the very program that runs gives the
    # FLOPs of a train step (the loop body, for k > 1) without a second compilation.
    perm = jax.ShapeDtypeStruct((n_train,), jnp.int32, sharding=repl)
    chunk = make_train_chunk(config, mesh, config.batch_size, step_key, k)
    chunk = chunk.lower(abstract_state, new_window(mesh), images, labels, perm, 0, 1).compile()
    return Programs(
        mesh=mesh,
        init=functools.partial(init, init_key),
        abstract_state=abstract_state,
        epoch_perm=jax.jit(
            lambda epoch: jax.random.permutation(jax.random.fold_in(data_key, epoch), n_train),
            out_shardings=repl,
        ),
        train_chunk=chunk,
        evaluators={
            name: Evaluator(
                s.images, s.labels, config.eval_batch_size, mesh, repl, **steps.eval_options(config)
            )
            for name, s in splits.items()
            if name != "train"
        },
        costs=run_costs(platform, config, abstract_state, chunk, train, mesh.devices.size),
        images=images,
        labels=labels,
        steps_per_call=k,
        # Simulated CPU devices share the host's cores: with many programs in flight their
        # collectives can starve each other past XLA's rendezvous timeout.
        sync_each_call=platform == "cpu" and mesh.devices.size > 1,
    )
