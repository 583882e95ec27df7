"""The decoded-array cache of Fashion-MNIST: both splits saved beside the prepared tfds dataset,
so that later loads read them in a fraction of a second without importing TensorFlow.

The file is `fashion_jax_arrays.npz` in the dataset's folder (`<data_dir>/fashion_mnist/3.0.1/`),
an uncompressed `np.savez` with `fingerprint` (the SHA-256 of that folder's `dataset_info.json`,
which ties the cache to the dataset it was decoded from) and `train_images`, `train_labels`,
`test_images`, `test_labels` (uint8[N, 28, 28, 1], int32[N], in IDX order). A cache that is
missing, damaged or belongs to another dataset is ignored; one that cannot be written is skipped.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from fashion_jax.idx import IMAGE_SHAPE
from fashion_jax.splits import Split

CACHE_NAME = "fashion_jax_arrays.npz"


def builder_dir(data_dir: str | None) -> Path:
    """Where tfds keeps the prepared `fashion_mnist` (same rule as tfds: arg, $TFDS_DATA_DIR, default)."""
    root = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return Path(root).expanduser() / "fashion_mnist" / "3.0.1"


def fingerprint(folder: Path) -> str:
    """The SHA-256 (hex) of `folder`'s `dataset_info.json`, or "" when there is none."""
    info = folder / "dataset_info.json"
    return hashlib.sha256(info.read_bytes()).hexdigest() if info.is_file() else ""


def read(folder: Path) -> dict[str, Split] | None:
    """The decoded arrays saved beside the prepared dataset in `folder`, if they belong to it.

    Returns {"train": Split, "test": Split} (images uint8[N, 28, 28, 1], labels int32[N]), or None
    when the cache is missing, damaged or was decoded from another dataset.
    """
    path = folder / CACHE_NAME
    expected = fingerprint(folder)
    if not (expected and path.is_file()):
        return None
    try:
        with np.load(path) as z:
            if str(z["fingerprint"]) != expected:
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


def write(folder: Path, splits: dict[str, Split]) -> None:
    """Saves `splits` ({"train", "test"}: images uint8[N, 28, 28, 1], labels int32[N]) beside the
    prepared dataset in `folder`, atomically; a read-only data dir is silently skipped."""
    tmp = folder / f".{CACHE_NAME}.{os.getpid()}.tmp.npz"
    try:
        np.savez(
            tmp,
            fingerprint=fingerprint(folder),
            **{
                f"{s}_{k}": getattr(sp, k) for s, sp in splits.items() for k in ("images", "labels")
            },
        )
        tmp.replace(folder / CACHE_NAME)
    except OSError:  # A read-only data dir: no cache, no harm.
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # A read-only mount refuses even the unlink of a missing file.
            pass
