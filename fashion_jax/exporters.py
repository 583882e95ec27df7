"""The format writers of `fashion_jax.export`: each writes a jitted function uint8[N, H, W, C]
-> float32[N, K] in one format and returns a numpy function that runs the written file with that
format's own runtime (onnxruntime, TensorFlow, jax.export), which `export` checks against predict.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fashion_jax.errors import UserError

INSTALL_HINT = 'pip install -e ".[export]"'
ONNX_OPSET = 21  # onnxruntime >= 1.20 runs it.
# Platforms a StableHLO or SavedModel export can run on (jax.export lowers for each).
PLATFORMS = ("cpu", "cuda", "tpu")


def missing_extra(what: str) -> UserError:
    return UserError(f"exporting {what} needs the export extra: {INSTALL_HINT}")


def check_available(formats: Sequence[str]) -> None:
    """Raises UserError naming the extra when a runtime or exporter of `formats` is not installed."""
    needs = {"onnx": ("jax2onnx", "onnx", "onnxruntime"), "saved_model": ("tensorflow",)}
    for fmt in formats:
        for module in needs.get(fmt, ()):
            try:
                with quiet_loggers("jax2onnx", "onnx_ir"):
                    __import__(module)
            except ImportError:
                raise missing_extra(f"{fmt} ({module} is not installed)") from None


@contextlib.contextmanager
def quiet_loggers(*names: str):
    """Raises the level of the loggers `names` to ERROR for the duration of the block."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_onnx(fn: Callable, shape: tuple[int, ...], path: Path) -> Callable:
    """Writes `fn` (uint8[N, *shape] -> float32[N, K]) as ONNX to `path` with jax2onnx.

    Input "image" uint8[N, *shape] (N dynamic), output "logits". Returns a numpy function that
    runs the file with onnxruntime.
    """
    import onnxruntime as ort

    spec = jax.ShapeDtypeStruct(("N", *shape), jnp.uint8)
    # jax2onnx prints debug lines for nn.Conv and logs its plugins that do not load (dm_pix's).
    with contextlib.redirect_stdout(io.StringIO()), quiet_loggers("jax2onnx", "onnx_ir"):
        from jax2onnx import to_onnx

        _accept_positional_pooling_arguments()
        proto = to_onnx(
            fn,
            [spec],
            model_name="fashion_jax",
            opset=ONNX_OPSET,
            input_names=["image"],
            output_names=["logits"],
        )
    path.write_bytes(proto.SerializeToString())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda images: session.run(["logits"], {"image": images})[0]


def _accept_positional_pooling_arguments() -> None:
    """Lets models call `nnx.max_pool(x, (2, 2), (2, 2))` positionally under jax2onnx.

    While it traces, jax2onnx (0.13) swaps `flax.nnx.max_pool` for a stand-in that takes
    `window_shape`, `strides` and `padding` by keyword only, so the common positional call of a
    user's NNX model fails with a TypeError. The stand-in is wrapped once to take both forms.
    """
    try:
        from jax2onnx.plugins.flax.nnx.max_pool import MaxPoolPlugin
    except ImportError:  # Another jax2onnx layout: nothing to adapt.
        return
    make_patch = MaxPoolPlugin.__dict__.get("_make_patch")
    if make_patch is None or getattr(make_patch, "fashion_jax_positional", False):
        return
    original = make_patch.__func__

    def patched_make_patch(cls, orig):
        keyword_only = original(cls, orig)

        def max_pool(x, window_shape, strides=None, padding="VALID"):
            return keyword_only(x, window_shape=window_shape, strides=strides, padding=padding)

        return max_pool

    patched_make_patch.fashion_jax_positional = True
    MaxPoolPlugin._make_patch = classmethod(patched_make_patch)


def export_saved_model(fn: Callable, shape: tuple[int, ...], path: Path) -> Callable:
    """Writes `fn` as a TF SavedModel (jax2tf) to the folder `path`.

    Signature "serving_default": image uint8[None, *shape] -> {"logits": float32[None, K]}.
    Returns a numpy function that runs the folder as `tf.saved_model.load` reads it.
    """
    import tensorflow as tf
    from jax.experimental import jax2tf

    tf.config.set_visible_devices([], "GPU")
    dims = ", ".join(str(d) for d in shape)
    converted = jax2tf.convert(
        fn,
        polymorphic_shapes=[f"(n, {dims})"],
        with_gradient=False,
        native_serialization_platforms=PLATFORMS,
    )
    module = tf.Module()

    @tf.function(
        autograph=False, input_signature=[tf.TensorSpec([None, *shape], tf.uint8, name="image")]
    )
    def serve(image):
        return {"logits": converted(image)}

    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    return lambda images: signature(image=tf.constant(images))["logits"].numpy()


def export_stablehlo(fn: Callable, shape: tuple[int, ...], path: Path) -> Callable:
    """Writes `fn` as a serialized `jax.export.Exported` (StableHLO) to `path`.

    Load it with `jax.export.deserialize(bytearray(path.read_bytes())).call(images)`; it runs on
    `PLATFORMS`. Returns a numpy function that runs the file so.
    """
    dims = ", ".join(str(d) for d in shape)
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"n, {dims}"), jnp.uint8)
    exported = jax.export.export(jax.jit(fn), platforms=PLATFORMS)(spec)
    path.write_bytes(exported.serialize())
    loaded = jax.export.deserialize(bytearray(path.read_bytes()))
    call = jax.jit(loaded.call)
    return lambda images: np.asarray(call(images))


EXPORTERS = {
    "onnx": export_onnx,
    "saved_model": export_saved_model,
    "stablehlo": export_stablehlo,
}


# --- Verification ----------------------------------------------------------------------------
