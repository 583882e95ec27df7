"""A population's loop: `population.train_population` hands it the stacked state and one
`train.Run` per member (its config, the shared programs, its own `outputs.Outputs`). Its epochs are
a lone run's `epochs.epoch_loop` with member hooks, and its loop over them mirrors
`train._train`: each member is logged, evaluated and checkpointed through its own Run, so a
member's files are a lone run's."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp

from fashion_jax import checkpoints, epochs, sharding
from fashion_jax import train as train_lib
from fashion_jax.errors import CheckpointError, NonFiniteLossError
from fashion_jax.preemption import StopFlag


def member(tree, i: int):
    """Member `i`'s slice of a stacked pytree (TrainState, window)."""
    return jax.tree.map(lambda x: x[i], tree)


def stack(trees):
    """The members' pytrees stacked on a new leading axis (replicated)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def restore_or_init(runs, pop):
    """(stacked state, [LoopState]) from each member's newest checkpoint at the newest step that
    all members hold, or fresh ones at step 0."""
    repl = sharding.replicated(pop.programs.mesh)
    one = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype, sharding=repl),
        pop.programs.abstract_state,
    )
    restored = [run.out.restore(one) for run in runs]
    if any(r is None for r in restored):
        return pop.programs.init(), [epochs.LoopState() for _ in runs]
    common = min(int(r[0].step) for r in restored)
    restored = [
        r if int(r[0].step) == common else run.out.restore(one, at_most=common)
        for r, run in zip(restored, runs)
    ]
    if any(r is None or int(r[0].step) != common for r in restored):
        return pop.programs.init(), [epochs.LoopState() for _ in runs]
    if common > runs[0].total_steps:
        raise CheckpointError(
            f"the population's workdirs hold runs trained for {common} steps, more than "
            f"num_epochs = {runs[0].config.num_epochs} allows ({runs[0].total_steps} steps). Ask "
            "for at least as many epochs as were trained, or use another --workdir."
        )
    print(f"Resuming the population of {len(runs)} from step {common}.", flush=True)
    stacked = jax.jit(stack, out_shardings=repl)([r[0] for r in restored])
    return stacked, [epochs.LoopState.from_meta(r[1]) for r in restored]


def train(runs, pop, state, loops, stop: StopFlag):
    """The epochs for all members at once. Returns (state, loops, last eval record per member,
    {member: reason} for the members stopped by a non-finite loss)."""
    config, spe, progs = runs[0].config, runs[0].steps_per_epoch, pop.programs
    step = int(state.step[0])
    records: list[dict | None] = [None] * len(runs)
    stopped: dict[int, str] = {}
    window = new_windows(loops, progs.mesh)
    if runs[0].out.is_main:
        print(
            f"Training a population of {len(runs)} {config.model} members as one program "
            f"({', '.join(pop.values) or 'seeds only'} per member, {pop.layout}); "
            + train_lib.headline(runs[0]).removeprefix("Training "),
            flush=True,
        )
    for epoch in range(step // spe, config.num_epochs):
        t_epoch = time.perf_counter()
        state, window, step = train_epoch(
            runs, pop, state, window, loops, epoch, step, stop, stopped
        )
        seconds = time.perf_counter() - t_epoch
        for i, run in enumerate(runs):
            if i in stopped:
                continue
            s = member(state, i)
            records[i] = run.evaluate(s, loops[i], step, epoch + 1, seconds)
            best = records[i].get("validation_accuracy")
            _save(run, i, s, member(window, i), loops[i], step, stopped, best)
        if stop.requested(sync_point=True):
            for run in runs:
                run.out.ckpt.wait()
            raise stop.preempted(step)
    for run in runs:
        run.out.ckpt.wait()
    return state, loops, records, stopped


def train_epoch(runs, pop, state, window, loops, epoch, step, stop, stopped):
    """`epochs.epoch_loop` for the stacked members: logs, checkpoints and stops at a lone run's
    exact step boundaries, each member into its own workdir."""
    hooks = _MemberHooks(runs, loops, stopped, pop.programs.mesh)
    config, spe = runs[0].config, runs[0].steps_per_epoch
    return epochs.epoch_loop(pop.programs, config, spe, state, window, epoch, step, stop, hooks)


@dataclasses.dataclass
class _MemberHooks:
    """`epochs.epoch_loop`'s hooks for a population: each member's slice goes to its own Run; a
    member whose loss became non-finite stops, the others go on."""

    runs: list
    loops: list
    stopped: dict
    mesh: Any

    def count(self, n: int) -> None:
        for loop in self.loops:
            loop.window_steps += n

    def log(self, window, step, images, t0):
        for i, run in enumerate(self.runs):
            if i not in self.stopped:
                try:
                    run.log(member(window, i), self.loops[i], step, images, t0, None)
                except NonFiniteLossError as e:
                    _stop_member(run, i, e, self.stopped)
        return new_windows(self.loops, self.mesh), False

    def save(self, state, window, step, wait) -> None:
        for i, run in enumerate(self.runs):
            s, w = member(state, i), member(window, i)
            _save(run, i, s, w, self.loops[i], step, self.stopped, wait=wait)


def new_windows(loops, mesh):
    """The members' device-side metric windows, each starting from its loop's sums."""
    return jax.device_put(
        stack(
            [
                {
                    "loss": jnp.float32(loop.window_loss),
                    "accuracy": jnp.float32(loop.window_accuracy),
                    "first_bad_step": jnp.int32(-1),
                }
                for loop in loops
            ]
        ),
        sharding.replicated(mesh),
    )


def _save(run, i, state, window, loop, step, stopped, best=None, wait=False) -> None:
    """Saves member `i` as its run alone would, unless it stopped; a non-finite loss stops it.
    A step the member already holds is not saved again: a population resumed behind one of its
    members (killed while only some had saved) retraces that member's steps bit for bit."""
    if i in stopped or step in run.out.ckpt.steps():
        return
    try:
        metric = None if best is None else {checkpoints.VALIDATION_METRIC: best}
        # Several processes: one member's save at a time (Orbax's cross-process barriers of
        # different managers must not interleave).
        run.save(state, window, loop, step, metric, wait or jax.process_count() > 1)
    except NonFiniteLossError as e:
        _stop_member(run, i, e, stopped)


def _stop_member(run, i: int, error: NonFiniteLossError, stopped: dict) -> None:
    stopped[i] = str(error)
    print(f"member {i} ({run.out.workdir}) stopped: {error}", flush=True)


def finish(run, state, loop, record, stopped, splits, info, report) -> dict[str, Any]:
    """A member's summary.json (and report), as its run alone would write them; a stopped
    member's summary says why, and it gets no report."""
    extra = None if stopped is None else {"stopped": stopped}
    report = report and stopped is None
    return train_lib.finish(run, state, loop, record, splits, info, report, extra)
