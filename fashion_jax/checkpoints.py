"""Orbax checkpoints: save asynchronously, keep the latest K and the best, restore the newest valid.

Layout: `WORKDIR/checkpoints/<step>/{state,meta}`. `state` is the whole TrainState pytree (params,
optimizer state, batch-norm statistics, EMA, step); `meta` is JSON: the loop's own state (metric
sums, training seconds), the config keys that fix the state's structure, and a digest of every
array of `state`. Everything else a resumed run needs (the epoch, the position in it, the
per-step keys, the batch order) is derived from the step and the config.

Integrity: the digest (two position-weighted 32-bit sums per array, computed on the device at save
time) is checked after every restore, and the restored state must be finite. A checkpoint that
fails that check or cannot be read at all (truncated, flipped, deleted or garbage files, a save
killed midway) is reported, moved aside to `WORKDIR/checkpoints_invalid/` (never deleted), and the
next older one is tried.

Incompatible is not damaged: a checkpoint whose arrays (paths, shapes, dtypes, from its own
metadata) differ from the state the run builds was made by another model or for other data, and
its restore is refused in one line that says what differs; so is a restore that fails for want of
memory or permission. Only unreadable bytes or a digest mismatch set a checkpoint aside.
"""

from __future__ import annotations

import errno
import gc
import logging
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from orbax.checkpoint import checkpoint_managers as ocm

from fashion_jax import exits, fingerprints
from fashion_jax.errors import CheckpointError

VALIDATION_METRIC = "validation_accuracy"


@jax.jit
def digest(tree) -> jax.Array:
    """uint32[leaves, 2]: per array, the wrapping sums of its 32-bit words w_i and of w_i * m_i,
    with m_i a per-position odd multiplier, so any changed word (a flipped bit) or a swap of two
    words changes the digest. Arrays of other widths are first cast to float32."""
    out = []
    for x in jax.tree.leaves(tree):
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        if x.dtype.itemsize != 4:
            x = x.astype(jnp.float32)
        w = jax.lax.bitcast_convert_type(x, jnp.uint32).ravel()
        m = jnp.arange(w.size, dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(1)
        out.append(jnp.stack([w.sum(dtype=jnp.uint32), (w * m).sum(dtype=jnp.uint32)]))
    return jnp.stack(out) if out else jnp.zeros((0, 2), jnp.uint32)


def _host(x: jax.Array) -> np.ndarray:
    """This process' copy of a replicated array (works on several processes too)."""
    return np.asarray(x.addressable_data(0))


@jax.jit
def all_finite(tree) -> jax.Array:
    """bool[]: whether every floating-point array in `tree` holds only finite values."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.floating)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def abstract_like(init_fn, key, sharding) -> Any:
    """Shapes and dtypes of `init_fn(key)` (nothing computed), placed on `sharding`: a restore target."""
    shapes = jax.eval_shape(init_fn, key)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)


class Checkpoints:
    """A thin wrapper of `ocp.CheckpointManager` with our retention, validity and meta rules."""

    def __init__(
        self, workdir: str | Path, keep: int, structure: dict[str, Any], read_only: bool = False
    ):
        """read_only: for readers beside a possibly running trainer (predict, report): creates,
        cleans up and moves nothing; unreadable checkpoints are only skipped."""
        self.workdir = Path(workdir).absolute()
        self.read_only = read_only
        self.directory = self.workdir / "checkpoints"
        self.structure = structure
        policy = ocm.AnyPreservationPolicy(
            [
                ocm.LatestN(n=keep),  # Resume needs the latest: keep it whatever the metrics say.
                ocm.BestN(
                    get_metric_fn=lambda m: m[VALIDATION_METRIC],
                    reverse=False,
                    n=1,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        )
        verbosity = absl_logging.get_verbosity()
        if read_only:  # Orbax warns about what read-only mode disables; that is the point here.
            absl_logging.set_verbosity(absl_logging.ERROR)
        try:
            self.manager = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(
                    preservation_policy=policy,
                    enable_async_checkpointing=True,
                    create=not read_only,
                    cleanup_tmp_directories=not read_only,
                    read_only=read_only,
                ),
            )
        finally:
            absl_logging.set_verbosity(verbosity)

    def save(
        self, step: int, state, meta: dict[str, Any], metrics: dict[str, float] | None = None
    ) -> None:
        """Starts an asynchronous save of `state` at `step` (collective on every process)."""
        meta = {**meta, "structure": self.structure, "digest": _host(digest(state)).tolist()}
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            metrics=metrics,
            force=True,
        )

    def wait(self) -> None:
        """Blocks until every started save is committed to disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    @staticmethod
    def _quiet_failed_restore() -> None:
        # A failed restore leaves Orbax's other concurrent reads as futures whose exceptions nobody
        # retrieves; asyncio would print each one's traceback whenever it is garbage-collected.
        # The failure is reported by the caller, once, in one line.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        exits.quiet_storage_leftovers()
        gc.collect()

    def _refuse_if_not_damaged(self, step: int, abstract_state, error: Exception) -> None:
        """Raises CheckpointError when the failed restore of `step` (`error`) is not damage: the
        checkpoint's arrays differ from `abstract_state`'s (another model or other data), or
        memory or permission ran out. Returns for damage (the caller sets the checkpoint aside)."""
        where = f"the checkpoint at step {step} in {self.directory}"
        differences = self._differences(step, abstract_state)
        problem = None
        if differences:
            fix = (
                "The workdir's config.json and dataset.json describe another state: retrain it "
                "with --restart."
                if self.read_only
                else "Use another --workdir, or pass --restart to start afresh (the old outputs "
                "are moved to a backup folder, not deleted)."
            )
            problem = (
                f"{where} holds other arrays than this run's state ({'; '.join(differences)}): it "
                f"was made by another model or for other data, and is left as it is. {fix}"
            )
        elif _out_of_memory(error):
            problem = (
                f"{where} could not be restored: the device ran out of memory "
                f"({str(error).splitlines()[0][:160]}). Free memory or use a larger device; "
                "nothing was set aside."
            )
        elif (denied := _permission_error(error)) is not None:
            problem = (
                f"{where} could not be read ({denied.strerror}: {denied.filename or where}). Fix "
                "the permissions and rerun; nothing was set aside."
            )
        if problem is not None:
            self._quiet_failed_restore()
            raise CheckpointError(problem) from None

    def _differences(self, step: int, abstract_state) -> list[str]:
        """What differs between the arrays checkpoint `step` holds (from its metadata) and
        `abstract_state`'s; [] when they agree or the metadata itself cannot be read (damage)."""
        try:
            metadata = ocp.StandardCheckpointHandler().metadata(
                self.directory / str(step) / "state"
            )
            stored = fingerprints.tree_shapes(getattr(metadata, "tree", metadata))
        except Exception:  # Damaged or missing metadata: damage, not another run.
            return []
        if not stored:
            return []
        return fingerprints.shape_differences(stored, fingerprints.tree_shapes(abstract_state))

    def _set_aside(self, step: int, reason: str) -> None:
        self._quiet_failed_restore()
        if self.read_only:
            if (self.directory / str(step)).exists():  # Else the trainer's retention removed it.
                print(
                    f"WARNING: checkpoint at step {step} is unreadable ({reason}); skipping it.",
                    flush=True,
                )
            return
        src = self.directory / str(step)
        dst_root = self.workdir / "checkpoints_invalid"
        dst_root.mkdir(exist_ok=True)
        dst = dst_root / str(step)
        n = 1
        while dst.exists():
            dst, n = dst_root / f"{step}.{n}", n + 1
        if jax.process_index() == 0 and src.exists():
            shutil.move(str(src), str(dst))
        self.manager.reload()
        logging.warning(
            "Checkpoint at step %d is unreadable (%s); moved it to %s.", step, reason, dst
        )
        print(
            f"WARNING: checkpoint at step {step} is unreadable ({reason}); moved it to {dst} "
            "and trying the previous one.",
            flush=True,
        )

    def restore_latest(
        self, abstract_state, at_most: int | None = None
    ) -> tuple[Any, dict[str, Any]] | None:
        """Restores the newest readable checkpoint onto `abstract_state`'s shapes and shardings
        (the newest at or before step `at_most`, if given: a population's common step).

        Returns (state, meta), or None when there is no readable checkpoint. Raises
        CheckpointError when a checkpoint is readable but was made for a different state structure.
        A reader (read_only) beside a running trainer lists the steps again when the ones it
        listed were removed meanwhile (retention), and tries the newer ones.
        """
        tried: set[int] = set()
        for _ in range(5 if self.read_only else 1):
            restored = self._restore_newest(abstract_state, tried, at_most)
            if restored is not None or not self.read_only:
                return restored
            self.manager.reload()
            if not set(self.steps()) - tried:
                return None
        return None

    def _restore_newest(self, abstract_state, tried: set[int], at_most: int | None = None):
        """`restore_latest`'s one pass over the listed steps not in `tried` (which it extends)."""
        for step in reversed(self.steps()):
            if step in tried or (at_most is not None and step > at_most):
                continue
            tried.add(step)
            try:
                meta = self.manager.restore(
                    step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
                )["meta"]
            except Exception as e:  # Orbax/TensorStore raise many types for damaged files.
                if (denied := _permission_error(e)) is not None:
                    raise CheckpointError(
                        f"the checkpoint at step {step} in {self.directory} could not be read "
                        f"({denied.strerror}: {denied.filename or self.directory}). Fix the "
                        "permissions and rerun; nothing was set aside."
                    ) from None
                self._set_aside(step, f"meta: {type(e).__name__}")
                continue
            if meta.get("structure") != self.structure:
                raise CheckpointError(
                    f"The checkpoint at step {step} in {self.directory} was made for {meta.get('structure')}, "
                    f"but this config asks for {self.structure}. Use another --workdir, or pass --restart "
                    "to start this workdir afresh (its old outputs are moved to a backup folder, not deleted)."
                )
            try:
                restored = self.manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
                )
                state = restored["state"]
                if int(state.step) != step:
                    raise ValueError(f"state.step is {int(state.step)}")
                if "digest" in meta and _host(digest(state)).tolist() != meta["digest"]:
                    raise ValueError(
                        "its arrays do not match the digest written with them (damaged files)"
                    )
                if not bool(_host(all_finite(state))):
                    raise ValueError("it holds NaN or inf")
            except Exception as e:
                self._refuse_if_not_damaged(step, abstract_state, e)
                self._set_aside(
                    step,
                    f"state: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}",
                )
                continue
            return state, meta
        return None


def _causes(error: BaseException | None):
    """`error` and the exceptions it was raised from or during, outermost first."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _out_of_memory(error: BaseException) -> bool:
    """Whether a failed restore ran out of host or device memory (not damage)."""
    return any(isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in str(e) for e in _causes(error))


def _permission_error(error: BaseException) -> OSError | None:
    """The permission error behind a failed read, if that is what it was (not damage)."""
    return next(
        (
            e
            for e in _causes(error)
            if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM)
        ),
        None,
    )
