"""What every data source hands back: `Split`, one split's arrays on the host, and `DatasetInfo`,
what a model needs to know of its data.

Shared by the sources (`idx`, `fashion_mnist`, `tfds_datasets`, `data.from_arrays`); import them
from `fashion_jax.data`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


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
