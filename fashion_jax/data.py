"""Datasets: Fashion-MNIST through tensorflow-datasets (with an offline build from IDX files), any
other tfds image-classification dataset by name (`config.dataset`), or your own in-memory arrays.

Image shape, channel count, number of classes and class names always come from the data
(`describe`, `DatasetInfo`): tfds' features, or the arrays you pass.

Fashion-MNIST sources, tried in this order by `load`:

1. a `fashion_mnist` dataset already prepared in the tfds data dir (`data_dir`);
2. the four IDX `.gz` files in `idx_dir` (default `/usr/share/datasets/fashion-mnist`, Debian's
   `dataset-fashion-mnist` package, or `$FASHION_JAX_IDX_DIR`): a tfds builder that subclasses the
   stock `FashionMNIST` prepares the same dataset (same name, version, features, class names and
   keys) from them, with no network;
3. tfds' own download, when allowed and the network answers within a few seconds.

Order of examples: tfds stores examples shuffled by a hash of their key. Both the stock builder and
ours key each example by its index in the IDX file, so the stored order is the same for every
source, and `load` undoes it: **index i always means the i-th example of the IDX file** (the order
of `keras.datasets.fashion_mnist` too), so test image 0 is an Ankle boot.

Arrays come back on the host: images `uint8[N, 28, 28, 1]`, labels `int32[N]`. Scaling to
float32 / 255 happens on the device (`steps.normalize`).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fashion_jax.errors import ConfigError, DataError

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SHAPE = (28, 28, 1)
DEFAULT_IDX_DIR = "/usr/share/datasets/fashion-mnist"
IDX_DIR_ENV = "FASHION_JAX_IDX_DIR"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CACHE_NAME = "fashion_jax_arrays.npz"
DOWNLOAD_HOST = ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80)

FIXES = (
    "Fix it in one of three ways:\n"
    "  1. install the IDX files: `apt-get install dataset-fashion-mnist` (Debian/Ubuntu);\n"
    f"  2. point to a folder holding {', '.join(IDX_FILES['train'] + IDX_FILES['test'])}:\n"
    f"     `--config.idx_dir=DIR` or `export {IDX_DIR_ENV}=DIR`;\n"
    "  3. allow tfds to download it (network access, `--config.download=True`), or copy a prepared\n"
    "     tfds `fashion_mnist` folder into the tfds data dir (`--config.data_dir=DIR`)."
)


class Split(NamedTuple):
    """One split on the host: images uint8 or float32 [N, H, W, C], labels int32[N].

    Fashion-MNIST's splits are uint8[N, 28, 28, 1] in IDX order."""

    images: np.ndarray
    labels: np.ndarray


class DatasetInfo(NamedTuple):
    """What a model needs to know of its data: image_shape (H, W, C), num_classes, class_names."""

    image_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...]


FASHION_MNIST = "fashion_mnist"
MEMORY = "memory"  # config.dataset of a run trained on arrays passed to train_and_evaluate.


def resolve_idx_dir(idx_dir: str | None) -> Path:
    """The IDX folder to use: the argument, else `$FASHION_JAX_IDX_DIR`, else Debian's."""
    return Path(idx_dir or os.environ.get(IDX_DIR_ENV) or DEFAULT_IDX_DIR).expanduser()


def _read_idx_file(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """Reads one gzipped IDX file into a uint8 array of shape (n, *item_shape)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(
            f"{path} is not a readable gzip file ({e}); it is corrupt or truncated.\n{FIXES}"
        ) from None
    header_len = 4 * (1 + len(item_shape) + 1)
    if len(raw) < header_len:
        raise DataError(
            f"{path} is truncated: {len(raw)} bytes, shorter than an IDX header.\n{FIXES}"
        )
    found_magic, count, *dims = struct.unpack(f">{2 + len(item_shape)}I", raw[:header_len])
    if found_magic != magic or tuple(dims) != item_shape:
        raise DataError(
            f"{path} is not a Fashion-MNIST IDX file (magic {found_magic}, item shape {tuple(dims)}; "
            f"expected magic {magic}, item shape {item_shape}).\n{FIXES}"
        )
    expected = count * int(np.prod(item_shape, dtype=np.int64))
    body = raw[header_len:]
    if len(body) != expected:
        raise DataError(
            f"{path} is truncated or padded: header says {count} items ({expected} bytes), "
            f"file holds {len(body)} bytes.\n{FIXES}"
        )
    if count == 0:
        raise DataError(f"{path} holds no examples (its header says 0 items).\n{FIXES}")
    return np.frombuffer(body, np.uint8).reshape(count, *item_shape)


def read_idx(idx_dir: str | os.PathLike, split: str) -> Split:
    """Reads one split ("train" or "test") straight from the IDX `.gz` files in `idx_dir`.

    Returns images uint8[N, 28, 28, 1] and labels int32[N] in file order. Raises `DataError` for a
    missing, corrupt or truncated file, or labels out of range.
    """
    idx_dir = Path(idx_dir)
    images_name, labels_name = IDX_FILES[split]
    for name in (images_name, labels_name):
        if not (idx_dir / name).is_file():
            raise DataError(f"Fashion-MNIST file {idx_dir / name} is missing.\n{FIXES}")
    images = _read_idx_file(idx_dir / images_name, 2051, (28, 28))[..., None]
    labels = _read_idx_file(idx_dir / labels_name, 2049, ())
    if len(images) != len(labels):
        raise DataError(
            f"{idx_dir}: {len(images)} {split} images but {len(labels)} labels.\n{FIXES}"
        )
    if len(labels) and labels.max() >= NUM_CLASSES:
        raise DataError(
            f"{idx_dir / labels_name} holds label {labels.max()}; labels are 0..9.\n{FIXES}"
        )
    return Split(images, labels.astype(np.int32))


def _tfds():
    """Imports tensorflow-datasets with TensorFlow kept off any GPU (JAX owns the accelerators)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tensorflow_datasets as tfds

    tf.config.set_visible_devices([], "GPU")
    return tfds


def _tfds_installed() -> bool:
    """Whether tensorflow-datasets and TensorFlow can be imported (without importing them)."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(m) for m in ("tensorflow", "tensorflow_datasets"))
    except (ImportError, ValueError):
        return False


def _load_idx(idx_dir: str | None) -> dict[str, Split]:
    """Both splits straight from the IDX files: the source when tfds and TensorFlow are absent."""
    idx_path = resolve_idx_dir(idx_dir)
    names = [name for pair in IDX_FILES.values() for name in pair]
    if not all((idx_path / name).is_file() for name in names):
        raise DataError(
            f"No Fashion-MNIST data: no decoded {CACHE_NAME} beside a prepared dataset in the tfds "
            f"data dir, no IDX files in {idx_path}, and tensorflow-datasets/TensorFlow (which "
            f"prepare or download it) are not installed.\n{FIXES}"
        )
    return {split: read_idx(idx_path, split) for split in IDX_FILES}


def _local_builder_cls():
    from tensorflow_datasets.image_classification.mnist import FashionMNIST

    class LocalFashionMNIST(FashionMNIST, skip_registration=True):
        """The stock tfds `fashion_mnist` builder, reading local IDX files instead of downloading.

        Same name, version, features and example keys (the IDX index), so it prepares the very
        dataset `tfds.load("fashion_mnist")` downloads, stored in the same order.
        """

        name = "fashion_mnist"

        def __init__(self, *, idx_dir: Path, **kwargs):
            self._idx_dir = idx_dir
            super().__init__(**kwargs)

        def _split_generators(self, dl_manager):
            del dl_manager
            return {split: self._generate_from_idx(split) for split in IDX_FILES}

        def _generate_from_idx(self, split):
            images, labels = read_idx(self._idx_dir, split)
            for index in range(len(labels)):
                yield index, {"image": images[index], "label": int(labels[index])}

    return LocalFashionMNIST


def _network_answers(timeout: float = 5.0) -> bool:
    try:
        socket.create_connection(DOWNLOAD_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def _idx_order(split: str, n: int) -> np.ndarray:
    """Position in tfds' stored order -> IDX index, for a split keyed by IDX index."""
    from tensorflow_datasets.core import hashing

    hasher = hashing.Hasher(split)
    return np.array(sorted(range(n), key=hasher.hash_key), dtype=np.int64)


def prepare(data_dir: str | None, idx_dir: str | None = None, download: bool = True):
    """Makes sure `fashion_mnist` is prepared in the tfds `data_dir`; returns the tfds builder.

    Raises `DataError` with the three possible fixes when no source works.
    """
    tfds = _tfds()
    try:
        builder = tfds.builder("fashion_mnist", data_dir=data_dir)
        prepared = builder.is_prepared()
    except Exception as e:  # tfds raises many types for a damaged dataset_info.json.
        raise DataError(
            f"The prepared dataset in {_builder_dir(data_dir)} cannot be read ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''}). Move that folder away (or delete "
            f"it) to rebuild it.\n{FIXES}"
        ) from None
    if prepared:
        return builder
    idx_path = resolve_idx_dir(idx_dir)
    if all((idx_path / name).is_file() for pair in IDX_FILES.values() for name in pair):
        for split in IDX_FILES:  # Validate before tfds writes anything.
            read_idx(idx_path, split)
        local = _local_builder_cls()(idx_dir=idx_path, data_dir=data_dir)
        local.download_and_prepare()
        return tfds.builder("fashion_mnist", data_dir=data_dir)
    if idx_dir is not None or os.environ.get(IDX_DIR_ENV):
        raise DataError(
            f"Fashion-MNIST IDX folder {idx_path} does not hold all four files "
            f"({', '.join(n for p in IDX_FILES.values() for n in p)}).\n{FIXES}"
        )
    if download and _network_answers():
        builder.download_and_prepare()
        return builder
    reason = "downloading is disabled" if not download else "the download server cannot be reached"
    raise DataError(
        f"No Fashion-MNIST data: nothing prepared in the tfds data dir "
        f"({builder.data_dir}), no IDX files in {idx_path}, and {reason}.\n{FIXES}"
    )


def _builder_dir(data_dir: str | None) -> Path:
    """Where tfds keeps the prepared `fashion_mnist` (same rule as tfds: arg, $TFDS_DATA_DIR, default)."""
    root = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return Path(root).expanduser() / "fashion_mnist" / "3.0.1"


def _fingerprint(builder_dir: Path) -> str:
    info = builder_dir / "dataset_info.json"
    return hashlib.sha256(info.read_bytes()).hexdigest() if info.is_file() else ""


def _read_cache(builder_dir: Path) -> dict[str, Split] | None:
    """The decoded arrays saved beside a prepared dataset, if they belong to it (else None)."""
    path = builder_dir / CACHE_NAME
    fingerprint = _fingerprint(builder_dir)
    if not (fingerprint and path.is_file()):
        return None
    try:
        with np.load(path) as z:
            if str(z["fingerprint"]) != fingerprint:
                return None
            splits = {s: Split(z[f"{s}_images"], z[f"{s}_labels"]) for s in ("train", "test")}
    except Exception:  # A damaged cache is only a missed shortcut: read the dataset instead.
        return None
    if any(
        sp.images.shape[1:] != IMAGE_SHAPE or len(sp.images) != len(sp.labels)
        for sp in splits.values()
    ):
        return None
    return splits


def _write_cache(builder_dir: Path, splits: dict[str, Split]) -> None:
    tmp = builder_dir / f".{CACHE_NAME}.{os.getpid()}.tmp.npz"
    try:
        np.savez(
            tmp,
            fingerprint=_fingerprint(builder_dir),
            **{
                f"{s}_{k}": getattr(sp, k) for s, sp in splits.items() for k in ("images", "labels")
            },
        )
        tmp.replace(builder_dir / CACHE_NAME)
    except OSError:  # A read-only data dir: no cache, no harm.
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # A read-only mount refuses even the unlink of a missing file.
            pass


def load(
    data_dir: str | None = None, idx_dir: str | None = None, download: bool = True
) -> dict[str, Split]:
    """Loads the train and test splits of tfds `fashion_mnist` onto the host, in IDX order.

    Args:
      data_dir: the tfds data dir (None: `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`).
      idx_dir: folder of the four IDX `.gz` files used to prepare the dataset offline (None:
        `$FASHION_JAX_IDX_DIR`, else `/usr/share/datasets/fashion-mnist`).
      download: whether tfds may download when no local source exists.

    Returns:
      {"train": Split, "test": Split}; images uint8[N, 28, 28, 1], labels int32[N].

    The first load decodes the prepared tfds dataset (seconds, with TensorFlow) and saves the
    decoded arrays beside it (`fashion_jax_arrays.npz`, tied to that dataset's `dataset_info.json`);
    later loads read that file in a fraction of a second without importing TensorFlow. Without
    tensorflow-datasets and TensorFlow installed, the sources are that file and the IDX files.
    """
    root = Path(data_dir).expanduser() if data_dir else None
    if root is not None and root.exists() and not root.is_dir():
        raise DataError(
            f"data_dir {data_dir} is a file, not a folder: give the tfds data dir (a folder), or "
            "leave data_dir empty for ~/tensorflow_datasets."
        )
    cached = _read_cache(_builder_dir(data_dir))
    if cached is not None:
        return cached
    if not _tfds_installed():
        return _load_idx(idx_dir)
    builder = prepare(data_dir, idx_dir, download)
    tfds = _tfds()
    splits = {}
    for split in ("train", "test"):
        try:
            ds = builder.as_dataset(split=split, batch_size=-1, shuffle_files=False)
            batch = tfds.as_numpy(ds)
        except Exception as e:  # tfds/TF raise many types for damaged record files.
            raise DataError(
                f"The prepared dataset in {builder.data_dir} cannot be read ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200]}). Delete that folder to rebuild it.\n{FIXES}"
            ) from None
        images, labels = batch["image"], batch["label"].astype(np.int32)
        order = _idx_order(split, len(labels))
        in_idx_order = Split(np.empty_like(images), np.empty_like(labels))
        in_idx_order.images[order] = images
        in_idx_order.labels[order] = labels
        splits[split] = in_idx_order
    if Path(builder.data_dir) == _builder_dir(data_dir):
        _write_cache(_builder_dir(data_dir), splits)
    return splits


def load_splits(config) -> dict[str, Split]:
    """{"train", "test"[, "validation"]} of `config.dataset` (see `load_data`)."""
    return load_data(config)[0]


def load_data(config, data: dict | None = None) -> tuple[dict[str, Split], DatasetInfo]:
    """({"train", "test"[, "validation"]}, DatasetInfo): the splits a run trains and evaluates on.

    data: in-memory splits (`from_arrays`), else `config.dataset` through tfds. `validation_examples`
    are held out from the end of the training split (unless `data` has a "validation" split), then
    the first `max_train_examples` of the rest are kept. One process prepares a tfds dataset while
    the others wait.
    """
    if data is not None:
        splits, info = from_arrays(data)
    elif config.get("dataset", FASHION_MNIST) != FASHION_MNIST:
        info, splits = describe(config), _load_tfds(config)
    else:
        splits, info = (
            _load_fashion_mnist(config),
            DatasetInfo(IMAGE_SHAPE, NUM_CLASSES, CLASS_NAMES),
        )
    for name, sp in splits.items():
        if len(sp.labels) and (sp.labels.min() < 0 or sp.labels.max() >= info.num_classes):
            raise DataError(f"the {name} split holds labels outside 0..{info.num_classes - 1}.")
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
    return out, info


def _load_fashion_mnist(config) -> dict[str, Split]:
    source = (config.data_dir or None, config.idx_dir or None, config.download)
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        cached = _read_cache(_builder_dir(source[0])) is not None
        if jax.process_index() == 0 and not cached and _tfds_installed():
            prepare(*source)
        multihost_utils.sync_global_devices("fashion_jax: dataset prepared")
    return load(*source)


def load_test(config) -> tuple[Split, DatasetInfo]:
    """The test split of `config.dataset` and its DatasetInfo (what predict and report read)."""
    if config.get("dataset", FASHION_MNIST) == FASHION_MNIST:
        test = load(config.data_dir or None, config.idx_dir or None, config.download)["test"]
        return test, DatasetInfo(IMAGE_SHAPE, NUM_CLASSES, CLASS_NAMES)
    return _load_tfds(config)["test"], describe(config)


# ----------------------------------------------------------------------------- any tfds dataset


def _tfds_builder(config):
    """The tfds builder of `config.dataset` (DataError for a name tfds does not know)."""
    tfds = _tfds()
    try:
        return tfds.builder(config.dataset, data_dir=config.data_dir or None)
    except Exception as e:  # DatasetNotFoundError and friends.
        raise DataError(
            f"dataset '{config.dataset}' is not a tfds dataset here ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160]}). Name one tfds knows (fashion_mnist, mnist, kmnist, "
            "cifar10, ...) or pass your arrays to train_and_evaluate(config, workdir, data=...)."
        ) from None


def _keys(info) -> tuple[str, str]:
    image, label = info.supervised_keys or ("image", "label")
    return image, label


def describe(config) -> DatasetInfo:
    """The DatasetInfo of `config.dataset`, from tfds' features (nothing downloaded or decoded)."""
    if config.get("dataset", FASHION_MNIST) == FASHION_MNIST:
        return DatasetInfo(IMAGE_SHAPE, NUM_CLASSES, CLASS_NAMES)
    if config.dataset == MEMORY:
        raise DataError(
            "this run was trained on in-memory arrays: pass them again "
            "(train_and_evaluate(config, workdir, data=...)) or use their DatasetInfo."
        )
    info = _tfds_builder(config).info
    image_key, label_key = _keys(info)
    try:
        shape = tuple(info.features[image_key].shape)
        label = info.features[label_key]
        names = tuple(label.names)
    except (KeyError, AttributeError, TypeError):
        raise DataError(
            f"dataset '{config.dataset}' is not an image-classification dataset (no image and "
            "class-label features)."
        ) from None
    if len(shape) != 3 or None in shape:
        raise DataError(
            f"dataset '{config.dataset}' has images of shape {shape}; a fixed (H, W, C) is needed."
        )
    return DatasetInfo(shape, len(names), names)


def _load_tfds(config) -> dict[str, Split]:
    """{"train", "test"} of a tfds dataset other than fashion_mnist, in tfds' stored order."""
    builder = _tfds_builder(config)
    describe(config)
    if not builder.is_prepared():
        if not config.download:
            raise DataError(
                f"dataset '{config.dataset}' is not prepared in {builder.data_dir} and downloading "
                "is disabled (--config.download=false)."
            )
        try:
            builder.download_and_prepare()
        except Exception as e:
            raise DataError(
                f"dataset '{config.dataset}' could not be downloaded or prepared "
                f"({type(e).__name__}: {str(e).splitlines()[0][:200]})."
            ) from None
    tfds = _tfds()
    image_key, label_key = _keys(builder.info)
    splits = {}
    for split in ("train", "test"):
        if builder.info.splits and split not in builder.info.splits:
            raise DataError(
                f"dataset '{config.dataset}' has no '{split}' split ({list(builder.info.splits)})."
            )
        try:
            ds = builder.as_dataset(split=split, shuffle_files=False).batch(4096)
            batches = list(tfds.as_numpy(ds))
        except Exception as e:
            raise DataError(
                f"dataset '{config.dataset}' cannot be read ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200]})."
            ) from None
        if not batches:
            raise DataError(f"dataset '{config.dataset}' has an empty '{split}' split.")
        splits[split] = Split(
            np.concatenate([b[image_key] for b in batches]),
            np.concatenate([b[label_key] for b in batches]).astype(np.int32),
        )
    return splits


# ----------------------------------------------------------------------------- your own arrays


def from_arrays(data: dict) -> tuple[dict[str, Split], DatasetInfo]:
    """Checks in-memory splits and returns them with their DatasetInfo.

    data: {"train": (images, labels), "test": (images, labels)}, optionally "validation" and
    "class_names" (a sequence of names; default "0", "1", ... up to the largest label). images:
    uint8 (0..255) or float32 (in [0, 1]) [N, H, W, C]; labels: integers [N]. Raises DataError for
    a missing split, images and labels of different lengths, shapes that differ between splits,
    or labels out of range.
    """
    if not isinstance(data, dict) or not {"train", "test"} <= set(data):
        raise DataError('data must be a dict with "train" and "test": (images, labels) pairs.')
    unknown = set(data) - {"train", "test", "validation", "class_names"}
    if unknown:
        raise DataError(f"data has unknown entries {sorted(unknown)}.")
    splits = {}
    for name in ("train", "validation", "test"):
        if name not in data:
            continue
        try:
            images, labels = data[name]
        except (TypeError, ValueError):
            raise DataError(f'data["{name}"] must be an (images, labels) pair.') from None
        images, labels = np.asarray(images), np.asarray(labels)
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
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f'data["{name}"] labels are {labels.dtype}{list(labels.shape)}; give integers [N].'
            )
        if len(images) != len(labels):
            raise DataError(f'data["{name}"] has {len(images)} images but {len(labels)} labels.')
        if np.issubdtype(images.dtype, np.floating):
            images = images.astype(np.float32)
        splits[name] = Split(images, labels.astype(np.int32))
    shapes = {name: sp.images.shape[1:] for name, sp in splits.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"the splits' images differ in shape: {shapes}.")
    top = max(int(sp.labels.max()) for sp in splits.values() if len(sp.labels))
    names = data.get("class_names")
    names = tuple(str(n) for n in names) if names is not None else tuple(map(str, range(top + 1)))
    for name, sp in splits.items():
        if len(sp.labels) and (sp.labels.min() < 0 or sp.labels.max() >= len(names)):
            raise DataError(
                f'data["{name}"] holds label {int(sp.labels.min() if sp.labels.min() < 0 else sp.labels.max())}; '
                f"labels must be in 0..{len(names) - 1} ({len(names)} classes)."
            )
    return splits, DatasetInfo(tuple(shapes["train"]), len(names), names)
