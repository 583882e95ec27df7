"""On-device data augmentation: pure functions of (images, key), deterministic given the key.

All take and return float32[B, H, W, C] images in [0, 1] and draw independent randomness per
example from one key.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from fashion_jax.config import is_off


def random_crop(images: jnp.ndarray, key: jax.Array, padding: int) -> jnp.ndarray:
    """Zero-pads by `padding` pixels on each side, then crops back to the original size at a random offset."""
    if padding <= 0:
        return images
    b, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(key, (b, 2), 0, 2 * padding + 1)
    crop = lambda img, off: jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))
    return jax.vmap(crop)(padded, offsets)


def random_flip(images: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
    """Mirrors each image left-right with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
    return jnp.where(flip, images[:, :, ::-1, :], images)


def alternating_flip(
    images: jnp.ndarray, ids: jnp.ndarray, epoch: jnp.ndarray, key: jax.Array
) -> jnp.ndarray:
    """Mirrors example `ids[i]` in every other epoch: in epoch 0 a random half of the examples
    (a coin per example id from `key`), in epoch 1 the other half, and so on (airbench's
    derandomized flip: each image is seen both ways in any two consecutive epochs).
    images [B, H, W, C] (any dtype), ids int[B], epoch int scalar."""
    coin = jax.vmap(lambda i: jax.random.bernoulli(jax.random.fold_in(key, i)))(ids)
    flip = coin ^ (epoch % 2 == 1)
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def random_erasing(
    images: jnp.ndarray,
    key: jax.Array,
    probability: float,
    area: tuple[float, float] = (0.02, 0.25),
    aspect: tuple[float, float] = (0.3, 3.3),
) -> jnp.ndarray:
    """With `probability`, replaces a random rectangle of each image by uniform noise (Zhong et al. 2017).

    The rectangle covers a fraction of the image drawn from `area`, with aspect ratio (log-uniform)
    from `aspect`; it is clipped to the image.
    """
    if is_off(probability):
        return images
    b, h, w, c = images.shape
    k_apply, k_area, k_aspect, k_y, k_x, k_fill = jax.random.split(key, 6)
    frac = jax.random.uniform(k_area, (b,), minval=area[0], maxval=area[1])
    ratio = jnp.exp(
        jax.random.uniform(k_aspect, (b,), minval=jnp.log(aspect[0]), maxval=jnp.log(aspect[1]))
    )
    eh = jnp.clip(jnp.round(jnp.sqrt(frac * h * w * ratio)), 1, h)
    ew = jnp.clip(jnp.round(jnp.sqrt(frac * h * w / ratio)), 1, w)
    y0 = jnp.floor(jax.random.uniform(k_y, (b,)) * (h - eh + 1))
    x0 = jnp.floor(jax.random.uniform(k_x, (b,)) * (w - ew + 1))
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    inside = (
        (rows >= y0[:, None, None])
        & (rows < (y0 + eh)[:, None, None])
        & (cols >= x0[:, None, None])
        & (cols < (x0 + ew)[:, None, None])
    )
    apply = jax.random.bernoulli(k_apply, probability, (b, 1, 1))
    mask = (inside & apply)[..., None]
    noise = jax.random.uniform(k_fill, images.shape, images.dtype)
    return jnp.where(mask, noise, images)


# The registry: config key -> (is it on?, the augmentation given the key's value). Applied in this
# order. To add an augmentation, write its function above, add its config key (with an "off"
# default) in config.py, and add one entry here.
AUGMENTATIONS = {
    "augment_crop_padding": (lambda v: v > 0, lambda v: lambda x, k: random_crop(x, k, v)),
    "augment_flip": (bool, lambda v: random_flip),
    # A traced probability (a population member's) keeps the augmentation: p = 0 erases nothing.
    "augment_erasing": (lambda v: not is_off(v), lambda v: lambda x, k: random_erasing(x, k, v)),
}

Augmentation = Callable[[jnp.ndarray, jax.Array], jnp.ndarray]


def from_config(config) -> tuple[Augmentation, ...]:
    """The augmentations `config` turns on, in registry order: functions (images, key) -> images.
    An alternating flip (`augment_flip_alternating`) is not among them: it depends on the
    example and the epoch, so the train loop applies it (`alternating_flip`)."""
    alternating = bool(config.get("augment_flip_alternating", False))
    return tuple(
        make(config[key])
        for key, (on, make) in AUGMENTATIONS.items()
        if on(config[key]) and not (key == "augment_flip" and alternating)
    )


def apply(
    images: jnp.ndarray, key: jax.Array, augmentations: tuple[Augmentation, ...]
) -> jnp.ndarray:
    """Applies each augmentation with its own key derived from `key`. float32[B, H, W, C] -> same."""
    for i, fn in enumerate(augmentations):
        images = fn(images, jax.random.fold_in(key, i))
    return images


def augment(
    images: jnp.ndarray,
    key: jax.Array,
    crop_padding: int = 0,
    flip: bool = False,
    erasing: float = 0.0,
) -> jnp.ndarray:
    """Crop, then flip, then erase, each only when enabled. float32[B, H, W, C] -> same."""
    config = {
        "augment_crop_padding": crop_padding,
        "augment_flip": flip,
        "augment_erasing": erasing,
    }
    return apply(images, key, from_config(config))
