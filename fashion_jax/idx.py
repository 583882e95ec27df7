"""Fashion-MNIST's IDX files: where they are, reading and checking them, and the fixes to name
when they are missing or damaged. No TensorFlow needed.

The folder is `idx_dir` when given, else `$FASHION_JAX_IDX_DIR`, else
`/usr/share/datasets/fashion-mnist` (Debian's `dataset-fashion-mnist` package). It holds four
gzipped files, images and labels of the train and test splits.

The files' order is the canonical one: **index i means the i-th example of the IDX file**
everywhere in this package (`fashion_jax.data.load`, `predict --index`), as in
`keras.datasets.fashion_mnist`, so test image 0 is an Ankle boot. `read_idx` returns images
uint8[N, 28, 28, 1] and labels int32[N] in that order.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from fashion_jax.errors import DataError
from fashion_jax.splits import Split

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
IDX_NAMES = tuple(name for pair in IDX_FILES.values() for name in pair)  # All four, train first.

FIXES = (
    "Fix it in one of three ways:\n"
    "  1. install the IDX files: `apt-get install dataset-fashion-mnist` (Debian/Ubuntu);\n"
    f"  2. point to a folder holding {', '.join(IDX_NAMES)}:\n"
    f"     `--config.idx_dir=DIR` or `export {IDX_DIR_ENV}=DIR`;\n"
    "  3. allow tfds to download it (network access, `--config.download=True`), or copy a prepared\n"
    "     tfds `fashion_mnist` folder into the tfds data dir (`--config.data_dir=DIR`)."
)


def resolve_idx_dir(idx_dir: str | None) -> Path:
    """The IDX folder to use: the argument, else `$FASHION_JAX_IDX_DIR`, else Debian's."""
    return Path(idx_dir or os.environ.get(IDX_DIR_ENV) or DEFAULT_IDX_DIR).expanduser()


def has_all_files(idx_path: Path) -> bool:
    """Whether `idx_path` holds all four IDX files (present, not checked)."""
    return all((idx_path / name).is_file() for name in IDX_NAMES)


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
