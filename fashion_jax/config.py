"""The config schema, its defaults, loading from an experiment file, overrides and validation.

A config is an `ml_collections.ConfigDict`, locked and type-safe: an experiment file
(`experiments/NAME/config.py`, a `get_config()` that starts from `fashion_jax.config.get_config()`)
changes values; it cannot add keys. Command-line overrides `--config.KEY=VALUE` are parsed to the
type of the default. `validate` checks every value's range. All mistakes raise `ConfigError`.
"""

from __future__ import annotations

import difflib
import importlib.machinery
import importlib.util
import json
import math
import re
import traceback
from pathlib import Path

import ml_collections

from fashion_jax.errors import ConfigError


def is_off(value) -> bool:
    """Whether a numeric setting turns its feature off (0, 0.0, False). A traced value (a
    population member's own, `population`) is never off: the program keeps the feature and the
    member's value decides, so members with different values share one program."""
    return isinstance(value, (bool, int, float)) and not value


def get_config() -> ml_collections.ConfigDict:
    """The defaults: the tutorial's recipe (SeedCNN, Adam 1e-3, batch 64, 10 epochs, seed 0)."""
    c = ml_collections.ConfigDict()
    # Model and optimization.
    c.model = "seed_cnn"  # A name in fashion_jax.models.MODELS, or an import path "module:Name".
    c.model_kwargs = {}  # The model's own settings: Name(num_classes=..., **model_kwargs).
    # Where "module" of "module:Name" is looked up first (module.py there), before the workdir and
    # sys.path; the runner sets it to the experiment file's folder (see models.resolve).
    c.model_dir = ""
    # Resume a run whose model code (your module:Name file, or fashion_jax's version for a built-in
    # model) changed since it was trained: the trained weights go on with the edited code. Off,
    # such a resume is refused (see workdir.check_code); once used, config.json keeps it true.
    c.continue_with_changed_code = False
    c.num_epochs = 10
    c.batch_size = 64  # Global batch, split over all devices.
    c.learning_rate = 1e-3  # Peak learning rate when a schedule is used.
    # "adam", "adamw" (decoupled weight decay), "sgd", or "muon" (Muon on the convolution
    # kernels, sgd on the rest; see optimizers.py).
    c.optimizer = "adam"
    c.weight_decay = 0.0  # AdamW and Muon's kernels: decoupled; SGD: L2 added to the gradient.
    c.momentum = 0.9  # SGD and Muon (0: plain SGD).
    c.nesterov = True  # SGD and Muon.
    c.muon_scale = 1.0  # Muon: the kernels' learning rate as a multiple of learning_rate.
    c.muon_ns_steps = 5  # Muon: Newton-Schulz iterations per step (each ~3 kernel-size matmuls).
    # Muon: rescale each kernel to Frobenius norm sqrt(output channels) before its step, so the
    # steps keep one size relative to the kernel (airbench94_muon); off, kernel norms grow.
    c.muon_renormalize = False
    c.schedule = "constant"  # "constant", "cosine", "onecycle" or "triangular" (see optimizers.py).
    c.warmup_epochs = 0.0
    c.label_smoothing = 0.0
    c.ema_decay = 0.0  # > 0: evaluate an exponential moving average of the parameters.
    # On-device augmentation of training batches.
    c.augment_crop_padding = 0  # Random crop after zero-padding this many pixels (0: off).
    c.augment_flip = False  # Random horizontal flip.
    c.augment_flip_alternating = False  # With augment_flip: each image every other epoch.
    c.augment_erasing = 0.0  # Probability of random erasing (0: off).
    c.tta_flip = False  # Evaluate on each image and its mirror image, averaged.
    c.tta_shift = 0  # Also on each view moved by this many pixels up, down, left, right (0: off).
    c.seed = 0
    c.compute_dtype = "float32"  # "bfloat16": mixed precision (params and optimizer stay float32).
    # Data.
    c.dataset = (
        "fashion_mnist"  # A tfds image-classification dataset (mnist, kmnist, cifar10, ...).
    )
    c.data_dir = ""  # tfds data dir; "" means tfds' default (~/tensorflow_datasets).
    c.idx_dir = (
        ""  # IDX .gz folder for the offline build; "" means $FASHION_JAX_IDX_DIR or Debian's.
    )
    c.download = True  # Let tfds download when no local source exists.
    c.max_train_examples = 0  # 0 means all; the first N training examples (IDX order).
    c.validation_examples = 0  # Held out from the end of the training split; 0 means none.
    c.eval_batch_size = 1000
    # Loop, logging and checkpoints.
    c.log_every_steps = 100
    c.checkpoint_every_steps = 500  # Also saved at every epoch end.
    c.keep_checkpoints = 3  # The latest K are kept, and the best by validation accuracy.
    c.progress_bar = True
    c.steps_per_call = 0  # Train steps per device dispatch; 0: 1 on CPU, 100 on GPU/TPU.
    # Several hosts (jax.distributed). Empty/negative values mean auto-detect (TPU, SLURM).
    c.distributed = False
    c.coordinator_address = ""
    c.num_processes = 0
    c.process_id = -1
    c.distributed_timeout_seconds = 300
    c.lock()  # A misspelt key (c.lerning_rate = ...) raises instead of adding a key nobody reads.
    return c


# Keys that may differ when a run is continued: they change how the run is watched, saved, fed or
# evaluated, not what is trained. Every other key is part of the run's identity (see check_resume).
RESUMABLE_KEYS = frozenset(
    {
        "num_epochs",
        "log_every_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
        "progress_bar",
        "eval_batch_size",
        "data_dir",
        "idx_dir",
        "download",
        "distributed",
        "coordinator_address",
        "num_processes",
        "process_id",
        "distributed_timeout_seconds",
        "steps_per_call",
        "model_dir",  # Where the model's code is found, not what it is (model, model_kwargs are).
        "continue_with_changed_code",  # Asked for one resume; the run's records keep it.
    }
)


_DISTRIBUTED = ("coordinator", "num_processes", "process_id", "distributed")


def check_resume(previous, config, workdir="the workdir") -> None:
    """Raises CheckpointError unless `config` may continue a run started with `previous`.

    Only RESUMABLE_KEYS may change (e.g. more epochs, another log interval); a change to anything
    that defines the training (model, optimizer, data, seed, augmentation, ...) is refused with
    the keys named, since the checkpoint would silently mix two recipes.
    """
    from fashion_jax.errors import CheckpointError

    changed = [
        f"{k}: {_plain(previous[k])!r} -> {_plain(config[k])!r}"
        for k in sorted(config.keys())
        if k not in RESUMABLE_KEYS and k in previous and not _same(k, previous[k], config[k])
    ]
    if changed:
        raise CheckpointError(
            f"{workdir} holds a run started with other values of {'; '.join(changed)}: its checkpoints "
            "cannot be resumed with this config, since those keys define the training (only "
            f"{', '.join(sorted(k for k in RESUMABLE_KEYS if not k.startswith(_DISTRIBUTED)))} may change). "
            "Use another --workdir, or pass --restart to start afresh (the old outputs are moved to a "
            "backup folder, not deleted)."
        )


def _same(key, old, new) -> bool:
    """Whether a key's recorded value and its new one mean the same training."""
    old, new = _plain(old), _plain(new)
    if key == "schedule":  # A deprecated schedule name is the schedule it was renamed to.
        old, new = SCHEDULE_ALIASES.get(old, old), SCHEDULE_ALIASES.get(new, new)
    return old == new


def _plain(value):
    """A config value as plain JSON data (nested ConfigDicts to dicts, tuples to lists)."""
    if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    return json.loads(json.dumps(value))


def state_structure(config) -> dict:
    """What fixes the train state's structure: a checkpoint made under one of these cannot be
    restored under another (other keys, like num_epochs or learning_rate, may change on resume)."""
    structure = {
        "model": config.model,
        "optimizer": config.optimizer,
        "schedule": config.schedule != "constant",
        "ema": config.ema_decay > 0,
    }
    if config.get("model_kwargs"):  # Only when set, so checkpoints made before the key still match.
        structure["model_kwargs"] = _plain(config.model_kwargs)
    return structure


# Old schedule names still accepted, each mapped to the schedule it always meant.
SCHEDULE_ALIASES = {"linear": "triangular"}

_CHOICES = {
    "optimizer": ("adam", "adamw", "sgd", "muon"),
    # "linear": the deprecated name of "triangular" (SCHEDULE_ALIASES).
    "schedule": ("constant", "cosine", "onecycle", "triangular", "linear"),
    "compute_dtype": ("float32", "bfloat16"),
}

_RANGES = {
    # key: (predicate, description)
    "learning_rate": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    "max_train_examples": (lambda v: v >= 0, "an integer >= 0 (0 means all)"),
    "validation_examples": (lambda v: v >= 0, "an integer >= 0 (0 means none)"),
    "eval_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "log_every_steps": (lambda v: v >= 1, "an integer >= 1"),
    "checkpoint_every_steps": (lambda v: v >= 0, "an integer >= 0 (0: only at epoch ends)"),
    "keep_checkpoints": (lambda v: v >= 1, "an integer >= 1"),
    "weight_decay": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "warmup_epochs": (lambda v: 0 <= v, "a number >= 0"),
    "label_smoothing": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "ema_decay": (lambda v: 0 <= v < 1, "a number in [0, 1) (0: off)"),
    "augment_crop_padding": (lambda v: 0 <= v <= 14, "an integer in 0..14"),
    "tta_shift": (lambda v: 0 <= v <= 14, "an integer in 0..14 (0: off)"),
    "augment_erasing": (lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    "num_processes": (lambda v: v >= 0, "an integer >= 0 (0: auto-detect)"),
    "process_id": (lambda v: v >= -1, "an integer >= -1 (-1: auto-detect)"),
    "distributed_timeout_seconds": (lambda v: v >= 1, "an integer >= 1"),
    "momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "muon_scale": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    "muon_ns_steps": (lambda v: 1 <= v <= 20, "an integer in 1..20"),
    "steps_per_call": (lambda v: 0 <= v <= 100_000, "an integer in 0..100000 (0: by platform)"),
    "seed": (lambda v: 0 <= v < 2**32, "an integer in 0..2**32-1"),
    "batch_size": (lambda v: 1 <= v <= 1 << 20, "an integer in 1..1048576"),
    "num_epochs": (lambda v: 1 <= v <= 100_000, "an integer in 1..100000"),
}


def _unknown_key(key: str, config: ml_collections.ConfigDict) -> ConfigError:
    close = difflib.get_close_matches(key, list(config.keys()), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ConfigError(
        f"Unknown config key '{key}'.{hint} Known keys: {', '.join(sorted(config.keys()))}."
    )


def _parse_value(key: str, text: str, default):
    """Parses an override string to the type of the key's default."""
    try:
        if isinstance(default, bool):
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, ml_collections.ConfigDict):  # model_kwargs: a JSON object.
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError
            return value
        return text
    except ValueError:
        raise ConfigError(
            f"--config.{key}={text!r}: expected "
            + (
                "a JSON object, like '{\"width\": 64}'"
                if isinstance(default, ml_collections.ConfigDict)
                else f"{type(default).__name__}, like the default {default!r}"
            )
            + "."
        ) from None


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: dict[str, str]
) -> ml_collections.ConfigDict:
    """Returns a copy of `config` with `{key: text}` overrides parsed and applied."""
    config = ml_collections.ConfigDict(config.to_dict(), type_safe=True)
    for key, text in overrides.items():
        if key not in config:
            raise _unknown_key(key, config)
        config[key] = _parse_value(key, text, config[key])
    config.lock()
    return config


def load_experiment(path: str | Path) -> ml_collections.ConfigDict:
    """Runs `get_config()` from an experiment file and checks it kept to the schema's keys and types.

    Any failure of the file itself (syntax error, a failed import, an exception in get_config, a
    result that is not a config) is a ConfigError naming the file and the line, not a traceback.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    name = f"fashion_jax_experiment_{path.parent.name}"
    # An explicit source loader: a config file runs as Python whatever its name ends in.
    spec = importlib.util.spec_from_file_location(
        name, path, loader=importlib.machinery.SourceFileLoader(name, str(path))
    )
    module = importlib.util.module_from_spec(spec)
    hint = (
        "An experiment's get_config() starts from fashion_jax.config.get_config() and only "
        "changes its values."
    )
    try:
        spec.loader.exec_module(module)
        if not callable(getattr(module, "get_config", None)):
            raise ConfigError(f"{path} defines no get_config(). {hint}")
        loaded = module.get_config()
    except ConfigError:
        raise
    except AttributeError as e:
        locked = re.match(r"""['"]?Key "(.+?)" does not exist and cannot be added""", str(e))
        if not locked:
            tb = traceback.extract_tb(e.__traceback__)
            line = next(
                (f", line {f.lineno}" for f in reversed(tb) if Path(f.filename) == path), ""
            )
            raise ConfigError(f"{path}{line}: {type(e).__name__}: {e}. {hint}") from None
        raise ConfigError(f"{path}: {_unknown_key(locked.group(1), get_config())}") from None
    except SyntaxError as e:
        raise ConfigError(
            f"{path}, line {e.lineno}: {e.msg} (a SyntaxError in the experiment file)."
        ) from None
    except Exception as e:  # The user's code: report where it failed, in one line.
        tb = traceback.extract_tb(e.__traceback__)
        line = next((f", line {f.lineno}" for f in reversed(tb) if Path(f.filename) == path), "")
        raise ConfigError(f"{path}{line}: {type(e).__name__}: {e}. {hint}") from None
    if not isinstance(loaded, (ml_collections.ConfigDict, dict)):
        raise ConfigError(
            f"{path}: get_config() returned {type(loaded).__name__}, not a config. {hint}"
        )
    config = check_schema(
        ml_collections.ConfigDict(loaded) if isinstance(loaded, dict) else loaded, source=str(path)
    )
    return with_model_dir(config, path.parent)


def with_model_dir(config: ml_collections.ConfigDict, folder) -> ml_collections.ConfigDict:
    """Sets `model_dir` to `folder` (absolute) when the model is a "module:Name" import path and
    no model_dir is set, so a new process (predict, report, a resume) finds `module.py` there."""
    if ":" in config.model and not config.model_dir:
        config.model_dir = str(Path(folder).absolute())
    return config


def check_schema(
    loaded: ml_collections.ConfigDict, source: str = "config"
) -> ml_collections.ConfigDict:
    """Copies `loaded` onto the defaults, refusing unknown keys and values of the wrong type."""
    config = get_config()
    for key, value in loaded.items():
        if key not in config:
            err = _unknown_key(key, config)
            raise ConfigError(f"{source}: {err}")
        default = config[key]
        if isinstance(default, ml_collections.ConfigDict):  # model_kwargs: a mapping of str keys.
            if not isinstance(value, (dict, ml_collections.ConfigDict)) or not all(
                isinstance(k, str) for k in value
            ):
                raise ConfigError(
                    f"{source}: '{key}' = {value!r} should be a dict with string keys."
                )
            config[key] = dict(value)
            continue
        if isinstance(default, bool) != isinstance(value, bool) or (
            not isinstance(value, type(default))
            and not (isinstance(default, float) and isinstance(value, int))
        ):
            raise ConfigError(
                f"{source}: '{key}' = {value!r} should be a {type(default).__name__}."
            )
        config[key] = type(default)(value)
    config.lock()
    return config


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks every value's range; returns the config unchanged or raises ConfigError."""
    from fashion_jax.models import MODELS

    module, colon, name = config.model.partition(":")
    if not colon and config.model not in MODELS:
        raise ConfigError(
            f"model '{config.model}' is unknown; choose one of {sorted(MODELS)}, or give the import "
            "path of your own class, 'module:Name' (module.py beside the experiment's config.py, or "
            "an importable module)."
        )
    if colon and not (module and name.isidentifier()):
        raise ConfigError(
            f"model '{config.model}' is not an import path 'module:Name' (e.g. 'net:Net')."
        )
    if not config.dataset.strip():
        raise ConfigError("dataset is empty; name a tfds dataset, e.g. fashion_mnist or mnist.")
    for key, choices in _CHOICES.items():
        if config[key] not in choices:
            raise ConfigError(f"{key} = {config[key]!r} is unknown; choose one of {list(choices)}.")
    for key, (ok, wanted) in _RANGES.items():
        if not ok(config[key]):
            raise ConfigError(f"{key} = {config[key]!r} is out of range; it must be {wanted}.")
    if config.num_processes and config.process_id >= config.num_processes:
        raise ConfigError(
            f"process_id = {config.process_id} must be below num_processes = {config.num_processes} "
            "(processes are numbered 0..num_processes-1)."
        )
    address = config.coordinator_address
    if address and not (
        address.rpartition(":")[0]
        and address.rpartition(":")[2].isdigit()
        and 0 < int(address.rpartition(":")[2]) < 65536
    ):
        raise ConfigError(
            f"coordinator_address = {address!r} must be HOST:PORT, e.g. 10.0.0.1:1234."
        )
    if config.augment_flip_alternating and not config.augment_flip:
        raise ConfigError("augment_flip_alternating = true needs augment_flip = true.")
    if config.warmup_epochs > config.num_epochs:
        raise ConfigError(
            f"warmup_epochs = {config.warmup_epochs} is longer than num_epochs = {config.num_epochs}."
        )
    if config.schedule in DECAYING_AFTER_WARMUP and config.warmup_epochs >= config.num_epochs:
        raise ConfigError(WARMUP_FILLS_RUN.format(config=config))
    return config


# Schedules that warm up, then decay: the warm-up must leave at least one step of decay.
DECAYING_AFTER_WARMUP = ("cosine", "onecycle")
WARMUP_FILLS_RUN = (
    "warmup_epochs = {config.warmup_epochs} fills the whole run (num_epochs = {config.num_epochs}): "
    "schedule '{config.schedule}' decays after its warm-up. Use a shorter warm-up, more epochs, "
    "or schedule 'linear'."
)


def to_json(config: ml_collections.ConfigDict) -> str:
    """The config as sorted, indented JSON (what the runner writes to `config.json`)."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)
