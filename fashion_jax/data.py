"""Datasets, the public face: Fashion-MNIST through tensorflow-datasets (with an offline build from
IDX files), any other tfds image-classification dataset by name (`config.dataset`), or your own
in-memory arrays; `load_data(config, data=None)` picks the source for a run.

Image shape, channel count, number of classes and class names always come from the data
(`describe`, `DatasetInfo`): tfds' features, or the arrays you pass.

Where each source lives:

- `fashion_jax.fashion_mnist`: `load` and `prepare`, Fashion-MNIST's sources in the order tried (a
  dataset prepared in the tfds data dir, the four IDX `.gz` files in `idx_dir`, default
  `/usr/share/datasets/fashion-mnist` or `$FASHION_JAX_IDX_DIR`, tfds' own download) and the
  undoing of tfds' stored order;
- `fashion_jax.idx`: reading and checking the IDX files (`read_idx`), the class names;
- `fashion_jax.data_cache`: the decoded arrays saved beside the prepared dataset;
- `fashion_jax.tfds_datasets`: any other tfds dataset, in tfds' stored order;
- `from_arrays` here: your own arrays, in the order you pass them.

Order of Fashion-MNIST's examples: **index i always means the i-th example of the IDX file** (the
order of `keras.datasets.fashion_mnist` and of `predict --index` too), so test image 0 is an Ankle
boot, whichever source prepared the dataset.

Fashion-MNIST comes back on the host: images `uint8[N, 28, 28, 1]`, labels `int32[N]`. Scaling to
float32 / 255 happens on the device (`steps.normalize`).

The names callers use from those modules (`load`, `prepare`, `read_idx`, `CLASS_NAMES`, ...) are
importable from here too.
"""

from __future__ import annotations

import numpy as np

from fashion_jax import data_cache, fashion_mnist, tfds_datasets
from fashion_jax.data_cache import CACHE_NAME
from fashion_jax.errors import ConfigError, DataError
from fashion_jax.fashion_mnist import load, prepare
from fashion_jax.idx import (
    CLASS_NAMES,
    DEFAULT_IDX_DIR,
    IDX_DIR_ENV,
    IDX_FILES,
    IMAGE_SHAPE,
    NUM_CLASSES,
    read_idx,
    resolve_idx_dir,
)
from fashion_jax.splits import DatasetInfo, Split

__all__ = [
    "CACHE_NAME",
    "CLASS_NAMES",
    "DEFAULT_IDX_DIR",
    "FASHION_MNIST",
    "IDX_DIR_ENV",
    "IDX_FILES",
    "IMAGE_SHAPE",
    "MEMORY",
    "NUM_CLASSES",
    "DatasetInfo",
    "Split",
    "describe",
    "from_arrays",
    "load",
    "load_data",
    "load_splits",
    "load_test",
    "prepare",
    "read_idx",
    "resolve_idx_dir",
]

FASHION_MNIST = "fashion_mnist"
MEMORY = "memory"  # config.dataset of a run trained on arrays passed to train_and_evaluate.
_FASHION_MNIST_INFO = DatasetInfo(IMAGE_SHAPE, NUM_CLASSES, CLASS_NAMES)

# The cache's helpers under their former names (benchmarks/offline_bundle.py writes a cache).
_builder_dir = data_cache.builder_dir
_fingerprint = data_cache.fingerprint


def load_splits(config) -> dict[str, Split]:
    """{"train", "test"[, "validation"]} of `config.dataset` (see `load_data`)."""
    return load_data(config)[0]


def load_data(config, data: dict | None = None) -> tuple[dict[str, Split], DatasetInfo]:
    """({"train", "test"[, "validation"]}, DatasetInfo): the splits a run trains and evaluates on.

    data: in-memory splits (`from_arrays`), else `config.dataset` through tfds. `validation_examples`
    are held out from the end of the training split (unless `data` has a "validation" split), then
    the first `max_train_examples` of the rest are kept. One process prepares a tfds dataset while
    the others wait. Images uint8 or float32 [N, H, W, C] (Fashion-MNIST: uint8[N, 28, 28, 1] in
    IDX order), labels int32[N].
    """
    if data is not None:
        splits, info = from_arrays(data)
    elif config.get("dataset", FASHION_MNIST) != FASHION_MNIST:
        info, splits = describe(config), tfds_datasets.load(config)
    else:
        splits, info = fashion_mnist.load_for_run(config), _FASHION_MNIST_INFO
    for name, sp in splits.items():
        if len(sp.labels) and (sp.labels.min() < 0 or sp.labels.max() >= info.num_classes):
            raise DataError(f"the {name} split holds labels outside 0..{info.num_classes - 1}.")
    return _hold_out(splits, config), info


def _hold_out(splits: dict[str, Split], config) -> dict[str, Split]:
    """The run's splits: `validation_examples` cut from the end of "train" (unless `splits` has a
    "validation" split), then the first `max_train_examples` of the rest kept."""
    train, v = splits["train"], config.validation_examples
    if "validation" in splits:
        v = 0
    if v >= len(train.labels):
        raise ConfigError(
            f"validation_examples = {v} leaves no training data ({len(train.labels)} examples)."
        )
    cut = len(train.labels) - v
    out = {
        "train": Split(
            train.images[:cut][: config.max_train_examples or None],
            train.labels[:cut][: config.max_train_examples or None],
        ),
        "test": splits["test"],
    }
    if v:
        out["validation"] = Split(train.images[cut:], train.labels[cut:])
    elif "validation" in splits:
        out["validation"] = splits["validation"]
    return out


def load_test(config) -> tuple[Split, DatasetInfo]:
    """The test split of `config.dataset` and its DatasetInfo (what predict and report read).

    Images [N, H, W, C] (Fashion-MNIST: uint8[N, 28, 28, 1] in IDX order), labels int32[N]."""
    if config.get("dataset", FASHION_MNIST) == FASHION_MNIST:
        test = load(config.data_dir or None, config.idx_dir or None, config.download)["test"]
        return test, _FASHION_MNIST_INFO
    return tfds_datasets.load(config)["test"], describe(config)


def describe(config) -> DatasetInfo:
    """The DatasetInfo of `config.dataset`, from tfds' features (nothing downloaded or decoded):
    image_shape (H, W, C), num_classes, class_names. Fashion-MNIST's is ((28, 28, 1), 10, its
    class names)."""
    if config.get("dataset", FASHION_MNIST) == FASHION_MNIST:
        return _FASHION_MNIST_INFO
    if config.dataset == MEMORY:
        raise DataError(
            "this run was trained on in-memory arrays: pass them again "
            "(train_and_evaluate(config, workdir, data=...)) or use their DatasetInfo."
        )
    return tfds_datasets.info(config)


# ----------------------------------------------------------------------------- your own arrays


def from_arrays(data: dict) -> tuple[dict[str, Split], DatasetInfo]:
    """Checks in-memory splits and returns them with their DatasetInfo.

    data: {"train": (images, labels), "test": (images, labels)}, optionally "validation" and
    "class_names" (a sequence of names; default "0", "1", ... up to the largest label). images:
    uint8 (0..255) or float32 (in [0, 1]) [N, H, W, C]; labels: integers [N]. Raises DataError for
    a missing split, images and labels of different lengths, shapes that differ between splits,
    or labels out of range.

    Returns ({"train", "test"[, "validation"]}, DatasetInfo): images uint8 or float32
    [N, H, W, C] (other float dtypes become float32), labels int32[N], in the order given.
    """
    _check_entries(data)
    splits = {
        name: _split_of(name, data[name])
        for name in ("train", "validation", "test")
        if name in data
    }
    shapes = {name: sp.images.shape[1:] for name, sp in splits.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"the splits' images differ in shape: {shapes}.")
    names = _class_names(data, splits)
    _check_label_range(splits, names)
    return splits, DatasetInfo(tuple(shapes["train"]), len(names), names)


def _check_entries(data) -> None:
    """DataError unless `data` is a dict with "train" and "test" and nothing unknown."""
    if not isinstance(data, dict) or not {"train", "test"} <= set(data):
        raise DataError('data must be a dict with "train" and "test": (images, labels) pairs.')
    unknown = set(data) - {"train", "test", "validation", "class_names"}
    if unknown:
        raise DataError(f"data has unknown entries {sorted(unknown)}.")


def _split_of(name: str, pair) -> Split:
    """data[name], an (images, labels) pair, checked: images uint8 or float32 [N, H, W, C] (other
    float dtypes become float32), labels int32[N]."""
    try:
        images, labels = pair
    except (TypeError, ValueError):
        raise DataError(f'data["{name}"] must be an (images, labels) pair.') from None
    images, labels = np.asarray(images), np.asarray(labels)
    _check_images(name, images)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f'data["{name}"] labels are {labels.dtype}{list(labels.shape)}; give integers [N].'
        )
    if len(images) != len(labels):
        raise DataError(f'data["{name}"] has {len(images)} images but {len(labels)} labels.')
    if np.issubdtype(images.dtype, np.floating):
        images = images.astype(np.float32)
    return Split(images, labels.astype(np.int32))


def _check_images(name: str, images: np.ndarray) -> None:
    """DataError unless `images` is uint8 or floating [N, H, W, C]."""
    if images.ndim == 3:
        raise DataError(
            f'data["{name}"] images have shape {images.shape}; give [N, H, W, C] '
            "(add a channel axis: images[..., None])."
        )
    if images.ndim != 4 or not (
        images.dtype == np.uint8 or np.issubdtype(images.dtype, np.floating)
    ):
        raise DataError(
            f'data["{name}"] images are {images.dtype}{list(images.shape)}; give uint8 or '
            "float32 [N, H, W, C]."
        )


def _class_names(data: dict, splits: dict[str, Split]) -> tuple[str, ...]:
    """data["class_names"] as strings, else "0", "1", ... up to the largest label."""
    top = max(int(sp.labels.max()) for sp in splits.values() if len(sp.labels))
    names = data.get("class_names")
    return tuple(str(n) for n in names) if names is not None else tuple(map(str, range(top + 1)))


def _check_label_range(splits: dict[str, Split], names: tuple[str, ...]) -> None:
    """DataError for a split holding a label outside 0..len(names) - 1."""
    for name, sp in splits.items():
        if len(sp.labels) and (sp.labels.min() < 0 or sp.labels.max() >= len(names)):
            raise DataError(
                f'data["{name}"] holds label {int(sp.labels.min() if sp.labels.min() < 0 else sp.labels.max())}; '
                f"labels must be in 0..{len(names) - 1} ({len(names)} classes)."
            )
