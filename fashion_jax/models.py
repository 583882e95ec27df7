"""Flax Linen classifiers, the MODELS registry, and resolving a config's model.

Inputs are NHWC float32 in [0, 1]; outputs are logits float32[B, num_classes]. Every model takes
`num_classes` and `dtype`, the dtype its convolutions and matmuls compute in (bfloat16 for mixed
precision on accelerators); parameters are float32 and logits come back as float32.

`SeedCNN` is the tutorial's Keras network layer for layer (140,682 parameters on 28x28x1). The
stronger models are selected by name through `get_model(name)`; `config.model` may also name your
own class by import path (`resolve`, `build`): a Linen `nn.Module` or an `nnx.Module`.

`SeedCNN` and `ConvNet` are each written once, in layers of `cpu_ops.conv_pool`, whose
implementation their `formulation` field chooses: "fast" (the default, what training runs, several
times faster on XLA:CPU) or "plain" (standard ops: what `export` writes out). Both formulations
have the same parameters and compute the same logits (tests/test_cpu_ops.py compares them).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fashion_jax.cpu_ops import conv_pool
from fashion_jax.errors import ConfigError


class Conv3x3(nn.Module):
    """`nn.Conv(features, (3, 3), padding)` (kernel [3, 3, Cin, features], bias), optionally
    followed by ReLU and a 2x2 max pool, computed by `cpu_ops.conv_pool` in `formulation`."""

    features: int
    padding: str = "VALID"
    relu: bool = False
    pool: bool = False
    formulation: str = "fast"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features)
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        x, kernel, bias = (t.astype(self.dtype) for t in (x, kernel, bias))
        return conv_pool(
            x,
            kernel,
            bias,
            padding=self.padding,
            relu=self.relu,
            pool=self.pool,
            formulation=self.formulation,
        )


class SeedCNN(nn.Module):
    """The tutorial's network: Conv64-ReLU-Pool, Conv64-ReLU-Pool, Dense64 (linear), Dense10.

    The "fast" formulation makes a train step 3.4x faster on CPU than the "plain" one (21.9
    against 74.9 ms at batch 64, `benchmarks/step_speed.py`; benchmarks/NOTES.md): it pools before
    the bias and ReLU, and the second convolution only computes the 10x10 outputs that its pooling
    keeps. Same parameters and logits as the Keras-like Linen version (tests check it).
    """

    num_classes: int = 10
    features: tuple[int, int] = (64, 64)  # The two convolutions' widths.
    hidden: int = 64  # Width of the first Dense layer.
    hidden_relu: bool = False  # The tutorial has no activation there.
    dtype: Any = jnp.float32
    formulation: str = "fast"  # Or "plain" (see above).

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """x: float32[B, 28, 28, 1] in [0, 1] -> logits float32[B, num_classes]."""
        del train  # No dropout or batch norm: kept for a uniform model signature.
        conv = functools.partial(
            Conv3x3, relu=True, pool=True, formulation=self.formulation, dtype=self.dtype
        )
        x = conv(self.features[0], name="Conv_0")(x)  # Conv2D + MaxPooling2D: [B, 13, 13, C1]
        x = conv(self.features[1], name="Conv_1")(x)  # Conv2D + MaxPooling2D: [B, 5, 5, C2]
        x = x.reshape(x.shape[0], -1)  # Flatten.
        x = nn.Dense(self.hidden, dtype=self.dtype, name="Dense_0")(x)
        if self.hidden_relu:
            x = nn.relu(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="Dense_1")(x).astype(jnp.float32)


class ResidualBlock(nn.Module):
    """Pre-activation basic block: (BN-ReLU-Conv3x3) x 2 plus a (1x1 projected) shortcut."""

    features: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
        y = nn.relu(norm()(x))
        shortcut = x
        if self.strides != 1 or x.shape[-1] != self.features:
            shortcut = conv(self.features, (1, 1), self.strides)(y)
        y = conv(self.features, (3, 3), self.strides, padding="SAME")(y)
        y = nn.relu(norm()(y))
        y = conv(self.features, (3, 3), padding="SAME")(y)
        return y + shortcut


class ResNetSmall(nn.Module):
    """A pre-activation ResNet for 28x28 inputs: 3 stages (28, 14, 7 px), batch norm, global pooling.

    With the default widths (32, 64, 128) and 2 blocks per stage: 695,658 parameters (under 1M, a
    test asserts it) and about 146 MFLOP per forward pass of one image (SeedCNN: 10 MFLOP). Written
    in standard Linen layers only (no fast formulation).
    """

    num_classes: int = 10
    widths: tuple[int, ...] = (32, 64, 128)
    blocks_per_stage: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """x: float32[B, 28, 28, 1] in [0, 1] -> logits float32[B, num_classes]."""
        x = nn.Conv(self.widths[0], (3, 3), padding="SAME", use_bias=False, dtype=self.dtype)(
            x - 0.286
        )
        for stage, width in enumerate(self.widths):
            for block in range(self.blocks_per_stage):
                strides = 2 if stage > 0 and block == 0 else 1
                x = ResidualBlock(width, strides, dtype=self.dtype)(x, train)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x))
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


def dirac_first(base: Any) -> Any:
    """An initializer for HWIO kernels: `base`, with its first min(Cin, Cout) output filters
    replaced by identities (1 at the centre tap from input channel i to output channel i, 0
    elsewhere), so each block starts by passing its input channels through (airbench's
    `dirac_` init)."""

    def init(key, shape, dtype=jnp.float32):
        kernel = base(key, shape, dtype)
        h, w, cin, cout = shape
        n = min(cin, cout)
        eye = jnp.zeros((h, w, cin, n), dtype).at[h // 2, w // 2].set(jnp.eye(cin, n, dtype=dtype))
        return kernel.at[..., :n].set(eye)

    return init


ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu}


def whitening_kernel(x: jnp.ndarray, size: int = 2, eps: float = 5e-4) -> jnp.ndarray:
    """airbench's patch-whitening filters, fitted on images x: float[B, H, W, C].

    The (uncentred) covariance of all size x size patches, eigendecomposed; each eigenvector
    divided by sqrt(its eigenvalue + eps) is a filter, and so is its negative: returns
    float32[size, size, C, 2 * size * size * C] (HWIO), so the filtered patches have ~unit
    variance in every direction (the eps keeps near-empty directions from being blown up)."""
    x = x.astype(jnp.float32)
    b, h, w, c = x.shape
    oh, ow = h - size + 1, w - size + 1
    patches = jnp.concatenate(
        [x[:, i : i + oh, j : j + ow, :] for i in range(size) for j in range(size)], axis=-1
    ).reshape(-1, size * size * c)
    eigenvalues, eigenvectors = jnp.linalg.eigh(patches.T @ patches / patches.shape[0])
    filters = eigenvectors / jnp.sqrt(eigenvalues + eps)  # columns: (i, j, c) -> one filter
    kernel = filters.reshape(size, size, c, size * size * c)
    return jnp.concatenate([kernel, -kernel], axis=-1)


class PatchWhiten(nn.Module):
    """airbench's frozen first layer: a 2x2 VALID convolution whose filters whiten the image's
    2x2 patches (`whitening_kernel`), plus a learned bias. H x W -> (H - 1) x (W - 1), C ->
    8C channels.

    The filters are data, not parameters: they live in "batch_stats" (beside batch norm's
    statistics, so checkpoints, export and population members carry them) and are fitted, in the
    train step, on the first training batch the module sees ("fitted" turns 1); every later call
    uses them unchanged. Before that first training batch they are zero."""

    size: int = 2
    dtype: Any = jnp.float32
    formulation: str = "fast"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        c = x.shape[-1]
        shape = (self.size, self.size, c, 2 * self.size * self.size * c)
        kernel = self.variable("batch_stats", "kernel", jnp.zeros, shape, jnp.float32)
        fitted = self.variable("batch_stats", "fitted", jnp.zeros, (), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (shape[-1],))
        if train:
            k = jnp.where(fitted.value > 0, kernel.value, whitening_kernel(x, self.size))
            if not self.is_initializing():
                kernel.value, fitted.value = k, jnp.ones((), jnp.float32)
        else:
            k = kernel.value
        x, k = x.astype(self.dtype), k.astype(self.dtype)
        return conv_pool(x, k, bias.astype(self.dtype), formulation=self.formulation)


class ConvBlock(nn.Module):
    """3x3 SAME convolution (no bias) -> (2x2 max pool) -> batch norm -> activation, the airbench
    block order: the normalization and activation run on the pooled, 4x smaller tensor.

    The parameters are those of `nn.Conv(features, (3, 3), use_bias=False)` ("kernel", directly in
    the block) and `nn.BatchNorm` ("BatchNorm_0"); `formulation` as in `SeedCNN`; the other
    fields as in `ConvNet`.
    """

    features: int
    pool: bool = False
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    bn_scale: bool = True
    activation: str = "relu"
    dirac_init: bool = False
    dtype: Any = jnp.float32
    formulation: str = "fast"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """x: float[B, H, W, Cin] -> float[B, H, W, features] (H // 2, W // 2 with `pool`)."""
        init = nn.initializers.lecun_normal()
        init = dirac_first(init) if self.dirac_init else init
        kernel = self.param("kernel", init, (3, 3, x.shape[-1], self.features))
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        y = conv_pool(x, kernel, padding="SAME", pool=self.pool, formulation=self.formulation)
        y = nn.BatchNorm(
            use_running_average=not train,
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            use_scale=self.bn_scale,
            dtype=self.dtype,
        )(y)
        return ACTIVATIONS[self.activation](y)


class ConvNet(nn.Module):
    """A plain network of `ConvBlock`s for accuracy per FLOP at 28x28: every block but `extra`
    ones pools (28 -> 14 -> 7 -> 3 px), so most FLOPs are spent at low resolution; then a global
    max pool and one Dense layer.

    widths: the channels of the pooling blocks; extra: (after_block, width) pairs of non-pooling
    blocks inserted after the given pooling block (0-based); formulation: as in `SeedCNN`.
    airbench's network options, all off by default: activation "gelu" (tanh approximation)
    instead of "relu"; dirac_init, each kernel's first min(Cin, Cout) filters initialised as
    identities (`dirac_first`); bn_scale=False, batch norm without its learned scale (held at 1).
    bn_momentum is flax's (the running statistics' weight on their old value: PyTorch's 0.6 is
    0.4 here); bn_epsilon is added to the batch variance (airbench: 1e-12). whiten: airbench's
    frozen 2x2 patch-whitening layer first (`PatchWhiten`, fitted on the first training batch),
    then the activation; the image shrinks by one pixel (28 -> 27 -> 13 -> 6 -> 3 px).
    """

    num_classes: int = 10
    widths: tuple[int, ...] = (24, 48, 96)
    extra: tuple[tuple[int, int], ...] = ()
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    bn_scale: bool = True
    activation: str = "relu"
    dirac_init: bool = False
    whiten: bool = False
    dtype: Any = jnp.float32
    formulation: str = "fast"

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"ConvNet activation {self.activation!r} is not one of {sorted(ACTIVATIONS)}"
            )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """x: float32[B, 28, 28, 1] in [0, 1] -> logits float32[B, num_classes]."""
        block = functools.partial(
            ConvBlock,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
            bn_scale=self.bn_scale,
            activation=self.activation,
            dirac_init=self.dirac_init,
            dtype=self.dtype,
            formulation=self.formulation,
        )
        x = x - 0.286  # The training set's mean pixel.
        if self.whiten:  # 28 -> 27 px, 8 channels per input channel, then the activation.
            whiten = PatchWhiten(dtype=self.dtype, formulation=self.formulation)
            x = ACTIVATIONS[self.activation](whiten(x, train))
        n = 0  # Blocks are named ConvBlock_0, ConvBlock_1, ... in order.
        for i, width in enumerate(self.widths):
            x = block(width, pool=True, name=f"ConvBlock_{n}")(x, train)
            n += 1
            for after, extra_width in self.extra:
                if after == i:
                    x = block(extra_width, pool=False, name=f"ConvBlock_{n}")(x, train)
                    n += 1
        x = x.max(axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="Dense_0")(x).astype(jnp.float32)


MODELS = {
    "seed_cnn": SeedCNN,
    # SeedCNN at a third of its FLOPs (conv widths 32/32) with a ReLU, wider hidden layer: the
    # time-to-accuracy model of experiments/fast.
    "fast_cnn": functools.partial(SeedCNN, features=(32, 32), hidden=128, hidden_relu=True),
    # The same two in standard ops (the baseline of benchmarks/step_speed.py).
    "plain_seed_cnn": functools.partial(SeedCNN, formulation="plain"),
    "plain_fast_cnn": functools.partial(
        SeedCNN, features=(32, 32), hidden=128, hidden_relu=True, formulation="plain"
    ),
    "resnet_small": ResNetSmall,
    # Accuracy per CPU-minute (benchmarks/NOTES.md, "Frontier"): ~7, ~12 and ~33 MFLOP per image.
    "convnet_s": functools.partial(ConvNet, widths=(24, 48, 96)),
    "convnet_m": functools.partial(ConvNet, widths=(32, 64, 128)),
    "convnet_l": functools.partial(ConvNet, widths=(48, 96, 192), extra=((2, 192),)),
}


def get_model(name: str, num_classes: int = 10, dtype: Any = jnp.float32) -> nn.Module:
    """The Linen module registered under `name` (see `MODELS`), computing in `dtype`."""
    return MODELS[name](num_classes=num_classes, dtype=dtype)


# ----------------------------------------------------------------------------- your own model


def _load_file(path: Path):
    """Imports the Python file `path` once per process (same module object on every call)."""
    path = path.resolve()
    name = f"fashion_jax_user_model_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        del sys.modules[name]
        if isinstance(e, SyntaxError):
            raise ConfigError(f"{path}, line {e.lineno}: {e.msg} (a SyntaxError).") from None
        if not isinstance(e, Exception):
            raise
        tb = traceback.extract_tb(e.__traceback__)
        line = next((f", line {f.lineno}" for f in reversed(tb) if Path(f.filename) == path), "")
        raise ConfigError(f"{path}{line}: {type(e).__name__}: {e}") from None
    return module


def resolve(model: str, search_dirs=()) -> Any:
    """The class (or registered constructor) that `config.model` names.

    model: a name in `MODELS`, or an import path "module:Name". `module` ("net", or dotted
    "pkg.net") is first looked for as a file `module.py` in each of `search_dirs` (the runner
    passes the config's `model_dir`, then the workdir), then imported from `sys.path`. Raises
    ConfigError when the module or the name does not exist.
    """
    if ":" not in model:
        if model not in MODELS:
            raise ConfigError(f"model '{model}' is unknown; choose one of {sorted(MODELS)}.")
        return MODELS[model]
    module_name, _, attr = model.partition(":")
    relative = Path(*module_name.split(".")).with_suffix(".py")
    dirs = [Path(d) for d in search_dirs if d]
    found = next((d / relative for d in dirs if (d / relative).is_file()), None)
    if found is not None:
        module = _load_file(found)
        where = str(found)
    else:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and module_name.startswith(e.name):
                looked = ", ".join(str(d / relative) for d in dirs) or "no folder"
                raise ConfigError(
                    f"model '{model}': no module '{module_name}' (looked for {looked}, then on "
                    "sys.path). Put the file beside the experiment's config.py, or fix the name."
                ) from None
            raise ConfigError(f"model '{model}': importing it failed: {e}") from None
        except Exception as e:
            raise ConfigError(
                f"model '{model}': importing it failed: {type(e).__name__}: {e}"
            ) from None
        where = module_name
    if not hasattr(module, attr):
        public = sorted(n for n in vars(module) if not n.startswith("_"))
        raise ConfigError(
            f"model '{model}': {where} defines no '{attr}' (it defines {', '.join(public) or 'nothing'})."
        )
    return getattr(module, attr)


def _tuples(value):
    """Lists (from JSON or a config) to tuples, recursively: Linen module fields must be hashable."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _signature(cls) -> inspect.Signature | None:
    """The constructor's signature (an NNX class's `__init__`, whose metaclass hides it)."""
    from fashion_jax.nnx_models import is_nnx_class

    try:
        if is_nnx_class(cls) and isinstance(cls, type):
            sig = inspect.signature(cls.__init__)
            return sig.replace(parameters=list(sig.parameters.values())[1:])
        return inspect.signature(cls)
    except (TypeError, ValueError):
        return None


def _accepts(sig: inspect.Signature | None, name: str) -> bool:
    if sig is None:
        return False
    params = sig.parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def build(config, num_classes: int, search_dirs=(), rngs=None):
    """Constructs the model `config.model` names with `config.model_kwargs`.

    Returns ("linen", module) or ("nnx", module). The class is called as
    `Name(num_classes=num_classes, **model_kwargs)`, plus `dtype` (config.compute_dtype) when it
    takes one, plus `rngs` (an `nnx.Rngs`, required for NNX classes). Raises ConfigError for a
    name that is not a Linen or NNX module class, or model_kwargs the class does not accept.
    """
    from flax import nnx

    from fashion_jax.nnx_models import is_nnx_class

    cls = resolve(config.model, search_dirs)
    target = getattr(cls, "func", cls)
    is_linen = isinstance(target, type) and issubclass(target, nn.Module)
    is_nnx = is_nnx_class(cls)
    if not (is_linen or is_nnx):
        raise ConfigError(
            f"model '{config.model}' is {type(cls).__name__} {getattr(cls, '__name__', cls)!r}, not a "
            "flax.linen.Module or flax.nnx.Module class."
        )
    kwargs = {"num_classes": num_classes, **_tuples(dict(config.get("model_kwargs") or {}))}
    sig = _signature(cls)
    if _accepts(sig, "dtype") and "dtype" not in kwargs:
        kwargs["dtype"] = jnp.dtype(config.get("compute_dtype", "float32"))
    if is_nnx:
        kwargs["rngs"] = rngs if rngs is not None else nnx.Rngs(0)
    try:
        if sig is not None:
            sig.bind(**kwargs)
    except TypeError as e:
        shown = {k: v for k, v in kwargs.items() if k not in ("rngs", "dtype")}
        raise ConfigError(
            f"model '{config.model}' does not accept {shown} ({e}). Its constructor must take "
            "num_classes=... and the keys of model_kwargs."
        ) from None
    try:
        module = cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"model '{config.model}' could not be built: TypeError: {e}") from None
    return ("nnx" if is_nnx else "linen"), module
