"""The one inference path: padded, masked batches of a fixed shape over a device-resident split.

The runner's per-epoch evaluation, `fashion_jax.report` and `fashion_jax.predict` all go through
`Evaluator`, so they agree on every prediction (flip TTA, EMA weights and batch-norm statistics
included). Each batch has the same shape (the last one padded, its padding masked out), so the
step compiles once; every example counts exactly once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fashion_jax import sharding, steps


class Evaluator:
    """Evaluates or predicts on `images` [N, H, W, C], uint8 or float32 in [0, 1] (and `labels`
    int32[N], optional).

    batch_size: examples per call, rounded up to a multiple of the mesh's devices. The state is
    expected on `state_sharding` (replicated over `mesh`).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None,
        batch_size: int,
        mesh,
        state_sharding,
        tta_flip: bool = False,
        tta_shift: int = 0,
    ):
        n_dev = mesh.devices.size
        self.n = n = len(images)
        self.batch_size = bs = -(-min(batch_size, max(n, 1)) // n_dev) * n_dev
        self.num_batches = -(-n // bs)
        images = np.asarray(images)
        dtype = np.uint8 if images.dtype == np.uint8 else np.float32  # Float images stay float.
        padded_images = np.zeros((self.num_batches * bs, *images.shape[1:]), dtype)
        padded_labels = np.zeros((self.num_batches * bs,), np.int32)
        padded_images[:n] = images
        if labels is not None:
            padded_labels[:n] = labels
        self.images = sharding.put_replicated(padded_images, mesh)
        self.labels = sharding.put_replicated(padded_labels, mesh)
        by_batch = sharding.batch_sharded(mesh)

        def eval_batch(state, images, labels, index):
            start = index * bs
            rows = lambda a: jax.lax.with_sharding_constraint(
                jax.lax.dynamic_slice_in_dim(a, start, bs), by_batch
            )
            batch = {
                "image": rows(images),
                "label": rows(labels),
                "mask": rows(jnp.arange(len(labels)) < n),
            }
            tta = {"tta_flip": tta_flip, "tta_shift": tta_shift}
            logits = steps.predict_logits(state, batch["image"], **tta)
            return logits, steps.eval_step(state, batch, **tta)

        self._fn = jax.jit(
            eval_batch,
            in_shardings=(state_sharding, None, None, None),
            out_shardings=sharding.replicated(mesh),
        )

    def __call__(self, state) -> dict[str, float]:
        """{"loss": mean cross-entropy, "accuracy": fraction correct} over the whole split."""
        totals = None
        for i in range(self.num_batches):
            _, sums = self._fn(state, self.images, self.labels, i)
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        totals = jax.device_get(totals)
        if int(totals["count"]) != self.n:
            raise AssertionError(f"evaluated {int(totals['count'])} examples of {self.n}")
        return {
            "loss": float(totals["loss_sum"]) / self.n,
            "accuracy": float(totals["correct"]) / self.n,
        }

    def logits(self, state) -> np.ndarray:
        """Logits float32[N, num_classes] for every example, in order."""
        out = [
            np.asarray(self._fn(state, self.images, self.labels, i)[0])
            for i in range(self.num_batches)
        ]
        return np.concatenate(out)[: self.n] if out else np.zeros((0, 0), np.float32)


def all_logits(state, images: np.ndarray, config=None, batch_size: int = 1000) -> np.ndarray:
    """Logits float32[N, num_classes] of a trained `state` (replicated on this process' devices)
    for `images` [N, H, W, C] (uint8, or float32 in [0, 1]) in padded batches, with the config's
    test-time augmentation: what `report` and `predict` use. (`steps.predict_logits` is the pure
    one-batch step.)"""
    mesh = sharding.make_mesh()
    tta = steps.eval_options(config) if config is not None else {}
    return Evaluator(images, None, batch_size, mesh, sharding.replicated(mesh), **tta).logits(state)
