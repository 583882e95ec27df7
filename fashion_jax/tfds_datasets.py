"""Any tfds image-classification dataset by name (`config.dataset`: mnist, kmnist, cifar10, ...),
and importing tensorflow-datasets with TensorFlow kept off the accelerators.

A dataset's `DatasetInfo` comes from tfds' features (`info`: nothing downloaded or decoded); its
train and test splits (`load`) come back on the host in tfds' stored order, images as tfds stores
them [N, H, W, C], labels int32[N]. Fashion-MNIST has its own path (`fashion_jax.fashion_mnist`),
which also restores the IDX order.
"""

from __future__ import annotations

import os

import numpy as np

from fashion_jax.errors import DataError
from fashion_jax.splits import DatasetInfo, Split


def import_tfds():
    """Imports tensorflow-datasets with TensorFlow kept off any GPU (JAX owns the accelerators)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tensorflow_datasets as tfds

    tf.config.set_visible_devices([], "GPU")
    return tfds


def installed() -> bool:
    """Whether tensorflow-datasets and TensorFlow can be imported (without importing them)."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(m) for m in ("tensorflow", "tensorflow_datasets"))
    except (ImportError, ValueError):
        return False


def builder(config):
    """The tfds builder of `config.dataset` (DataError for a name tfds does not know)."""
    tfds = import_tfds()
    try:
        return tfds.builder(config.dataset, data_dir=config.data_dir or None)
    except Exception as e:  # DatasetNotFoundError and friends.
        raise DataError(
            f"dataset '{config.dataset}' is not a tfds dataset here ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160]}). Name one tfds knows (fashion_mnist, mnist, kmnist, "
            "cifar10, ...) or pass your arrays to train_and_evaluate(config, workdir, data=...)."
        ) from None


def _keys(tfds_info) -> tuple[str, str]:
    """The (image, label) feature names: the supervised keys, else "image" and "label"."""
    image, label = tfds_info.supervised_keys or ("image", "label")
    return image, label


def _info_of(tfds_info, dataset: str) -> DatasetInfo:
    """The DatasetInfo in tfds' `tfds_info` of `dataset` (DataError unless it is image classes)."""
    image_key, label_key = _keys(tfds_info)
    try:
        shape = tuple(tfds_info.features[image_key].shape)
        label = tfds_info.features[label_key]
        names = tuple(label.names)
    except (KeyError, AttributeError, TypeError):
        raise DataError(
            f"dataset '{dataset}' is not an image-classification dataset (no image and "
            "class-label features)."
        ) from None
    if len(shape) != 3 or None in shape:
        raise DataError(
            f"dataset '{dataset}' has images of shape {shape}; a fixed (H, W, C) is needed."
        )
    return DatasetInfo(shape, len(names), names)


def info(config) -> DatasetInfo:
    """The DatasetInfo of tfds dataset `config.dataset`: image_shape (H, W, C), num_classes and
    class_names, from tfds' features (nothing downloaded or decoded)."""
    return _info_of(builder(config).info, config.dataset)


def _prepare(tfds_builder, config) -> None:
    """Downloads and prepares `config.dataset` unless it is prepared (DataError when it cannot)."""
    if tfds_builder.is_prepared():
        return
    if not config.download:
        raise DataError(
            f"dataset '{config.dataset}' is not prepared in {tfds_builder.data_dir} and downloading "
            "is disabled (--config.download=false)."
        )
    try:
        tfds_builder.download_and_prepare()
    except Exception as e:
        raise DataError(
            f"dataset '{config.dataset}' could not be downloaded or prepared "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]})."
        ) from None


def _read_split(tfds, tfds_builder, config, split: str) -> Split:
    """One prepared split on the host, in tfds' stored order: images [N, H, W, C], labels int32[N]."""
    image_key, label_key = _keys(tfds_builder.info)
    if tfds_builder.info.splits and split not in tfds_builder.info.splits:
        raise DataError(
            f"dataset '{config.dataset}' has no '{split}' split ({list(tfds_builder.info.splits)})."
        )
    try:
        ds = tfds_builder.as_dataset(split=split, shuffle_files=False).batch(4096)
        batches = list(tfds.as_numpy(ds))
    except Exception as e:
        raise DataError(
            f"dataset '{config.dataset}' cannot be read ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]})."
        ) from None
    if not batches:
        raise DataError(f"dataset '{config.dataset}' has an empty '{split}' split.")
    return Split(
        np.concatenate([b[image_key] for b in batches]),
        np.concatenate([b[label_key] for b in batches]).astype(np.int32),
    )


def load(config) -> dict[str, Split]:
    """{"train", "test"} of tfds dataset `config.dataset` (prepared first, downloading when
    `config.download`), in tfds' stored order: images [N, H, W, C] as tfds stores them, labels
    int32[N]. Raises DataError for an unknown, non-image-classification or unreadable dataset."""
    tfds_builder = builder(config)
    info(config)  # Checks it is an image-classification dataset before anything is downloaded.
    _prepare(tfds_builder, config)
    tfds = import_tfds()
    return {split: _read_split(tfds, tfds_builder, config, split) for split in ("train", "test")}
