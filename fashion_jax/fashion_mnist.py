"""Fashion-MNIST through tensorflow-datasets, with an offline build from the IDX files.

Sources, tried in this order by `load` when the decoded arrays cached beside a prepared dataset
(`fashion_jax.data_cache`, read without TensorFlow) are missing:

1. a `fashion_mnist` dataset already prepared in the tfds data dir (`data_dir`);
2. the four IDX `.gz` files in `idx_dir` (default `/usr/share/datasets/fashion-mnist`, Debian's
   `dataset-fashion-mnist` package, or `$FASHION_JAX_IDX_DIR`): a tfds builder that subclasses the
   stock `FashionMNIST` prepares the same dataset (same name, version, features, class names and
   keys) from them, with no network;
3. tfds' own download, when allowed and the network answers within a few seconds.

Without tensorflow-datasets and TensorFlow installed, the sources are the cache and the IDX files
(read directly, `fashion_jax.idx`).

Order of examples: tfds stores examples shuffled by a hash of their key. Both the stock builder and
ours key each example by its index in the IDX file, so the stored order is the same for every
source, and `load` undoes it: **index i always means the i-th example of the IDX file** (the order
of `keras.datasets.fashion_mnist` and of `predict --index` too), so test image 0 is an Ankle boot.

Arrays come back on the host: images `uint8[N, 28, 28, 1]`, labels `int32[N]`.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import numpy as np

from fashion_jax import data_cache, tfds_datasets
from fashion_jax.data_cache import CACHE_NAME
from fashion_jax.errors import DataError
from fashion_jax.idx import (
    FIXES,
    IDX_DIR_ENV,
    IDX_FILES,
    IDX_NAMES,
    has_all_files,
    read_idx,
    resolve_idx_dir,
)
from fashion_jax.splits import Split

DOWNLOAD_HOST = ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80)


def _local_builder_cls():
    """The tfds builder class that prepares `fashion_mnist` from local IDX files."""
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
    """Whether the download server accepts a connection within `timeout` seconds."""
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


def _stock_builder(tfds, data_dir: str | None):
    """(the stock `fashion_mnist` builder, whether it is prepared); DataError when unreadable."""
    try:
        builder = tfds.builder("fashion_mnist", data_dir=data_dir)
        return builder, builder.is_prepared()
    except Exception as e:  # tfds raises many types for a damaged dataset_info.json.
        raise DataError(
            f"The prepared dataset in {data_cache.builder_dir(data_dir)} cannot be read "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}). Move that "
            f"folder away (or delete it) to rebuild it.\n{FIXES}"
        ) from None


def prepare(data_dir: str | None, idx_dir: str | None = None, download: bool = True):
    """Makes sure `fashion_mnist` is prepared in the tfds `data_dir`; returns the tfds builder.

    Tries the prepared dataset, then the IDX files (validated before tfds writes anything), then
    tfds' download. Raises `DataError` with the three possible fixes when no source works.
    """
    tfds = tfds_datasets.import_tfds()
    builder, prepared = _stock_builder(tfds, data_dir)
    if prepared:
        return builder
    with preparing(data_dir):
        builder, prepared = _stock_builder(tfds, data_dir)  # Another process may have finished.
        return builder if prepared else _prepare(tfds, builder, data_dir, idx_dir, download)


@contextlib.contextmanager
def preparing(data_dir: str | None):
    """Holds the data dir's preparation lock (`.fashion_mnist.lock` in it): processes preparing
    the same dataset at once (two runs on a new machine, the workers of a test suite) take turns,
    and the later ones find it prepared. Without a lock file to take (a read-only data dir, no
    `fcntl`), it does nothing."""
    root = data_cache.builder_dir(data_dir).parents[1]
    try:
        import fcntl

        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / ".fashion_mnist.lock", "a")  # noqa: SIM115 (held until the end)
    except (ImportError, OSError):
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _prepare(tfds, builder, data_dir, idx_dir, download):
    idx_path = resolve_idx_dir(idx_dir)
    if has_all_files(idx_path):
        for split in IDX_FILES:  # Validate before tfds writes anything.
            read_idx(idx_path, split)
        local = _local_builder_cls()(idx_dir=idx_path, data_dir=data_dir)
        local.download_and_prepare()
        return tfds.builder("fashion_mnist", data_dir=data_dir)
    if idx_dir is not None or os.environ.get(IDX_DIR_ENV):
        raise DataError(
            f"Fashion-MNIST IDX folder {idx_path} does not hold all four files "
            f"({', '.join(IDX_NAMES)}).\n{FIXES}"
        )
    if download and _network_answers():
        builder.download_and_prepare()
        return builder
    reason = "downloading is disabled" if not download else "the download server cannot be reached"
    raise DataError(
        f"No Fashion-MNIST data: nothing prepared in the tfds data dir "
        f"({builder.data_dir}), no IDX files in {idx_path}, and {reason}.\n{FIXES}"
    )


def _load_idx(idx_dir: str | None) -> dict[str, Split]:
    """Both splits straight from the IDX files: the source when tfds and TensorFlow are absent."""
    idx_path = resolve_idx_dir(idx_dir)
    if not has_all_files(idx_path):
        raise DataError(
            f"No Fashion-MNIST data: no decoded {CACHE_NAME} beside a prepared dataset in the tfds "
            f"data dir, no IDX files in {idx_path}, and tensorflow-datasets/TensorFlow (which "
            f"prepare or download it) are not installed.\n{FIXES}"
        )
    return {split: read_idx(idx_path, split) for split in IDX_FILES}


def _read_prepared(tfds, builder, split: str) -> Split:
    """One split of the prepared dataset, decoded and put back into IDX order."""
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
    return in_idx_order


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
    cached = data_cache.read(data_cache.builder_dir(data_dir))
    if cached is not None:
        return cached
    if not tfds_datasets.installed():
        return _load_idx(idx_dir)
    builder = prepare(data_dir, idx_dir, download)
    tfds = tfds_datasets.import_tfds()
    splits = {split: _read_prepared(tfds, builder, split) for split in ("train", "test")}
    if Path(builder.data_dir) == data_cache.builder_dir(data_dir):
        data_cache.write(data_cache.builder_dir(data_dir), splits)
    return splits


def load_for_run(config) -> dict[str, Split]:
    """`load` with `config`'s data_dir, idx_dir and download: {"train", "test"}, images
    uint8[N, 28, 28, 1], labels int32[N], IDX order. In a multi-process run, process 0 prepares
    the dataset while the others wait."""
    source = (config.data_dir or None, config.idx_dir or None, config.download)
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        cached = data_cache.read(data_cache.builder_dir(source[0])) is not None
        if jax.process_index() == 0 and not cached and tfds_datasets.installed():
            prepare(*source)
        multihost_utils.sync_global_devices("fashion_jax: dataset prepared")
    return load(*source)
