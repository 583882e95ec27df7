"""One epoch of the train loop, in chunks of steps that end exactly at log steps, checkpoint steps
and the epoch's end (`chunk_length`, `epoch_loop`), and the `LoopState` the loop carries between
steps besides the TrainState (saved in every checkpoint's meta). A lone run (`train`) and a
population (`population_loop`) drive the same `epoch_loop` with their own hooks."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax


@dataclasses.dataclass
class LoopState:
    """The loop's own state between steps, saved in each checkpoint's meta.

    window_*: metric sums over the steps since the last log step (on the device while training;
    these host copies are what a checkpoint holds). epoch_*: sums over the closed windows of the
    current epoch. train_seconds: training wall time so far (evaluation excluded).
    """

    window_loss: float = 0.0
    window_accuracy: float = 0.0
    window_steps: int = 0
    epoch_loss: float = 0.0
    epoch_accuracy: float = 0.0
    epoch_steps: int = 0
    train_seconds: float = 0.0

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> LoopState:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in meta.get("loop", {}).items() if k in fields})

    def close_window(self) -> tuple[float, float]:
        """Adds the window to the epoch sums, empties it; returns the window's mean loss, accuracy."""
        n = max(self.window_steps, 1)
        means = self.window_loss / n, self.window_accuracy / n
        self.epoch_loss += self.window_loss
        self.epoch_accuracy += self.window_accuracy
        self.epoch_steps += self.window_steps
        self.window_loss = self.window_accuracy = 0.0
        self.window_steps = 0
        return means


def chunk_length(step: int, epoch_end: int, config, k: int) -> int:
    """Steps until the next boundary: the epoch's end, a log step or a checkpoint step, at most
    k (the run's steps per device call)."""
    nxt = [epoch_end, step + k, (step // config.log_every_steps + 1) * config.log_every_steps]
    if config.checkpoint_every_steps:
        nxt.append((step // config.checkpoint_every_steps + 1) * config.checkpoint_every_steps)
    return min(nxt) - step


def epoch_loop(progs, config, spe: int, state, window, epoch: int, step: int, stop, hooks):
    """Trains from `step` to the end of `epoch` in chunks that end at exact boundaries
    (`chunk_length`), handing each boundary to `hooks`: `count(n)` after every chunk of n steps;
    `log(window, step, images, t0) -> (window, stop_early)` at log steps and the epoch's end
    (images trained since t0); `save(state, window, step, wait)` at checkpoint steps, and waited
    for before a stop request (then `Preempted`) or an early stop ends the epoch. A lone run
    (`train_epoch`) and a population (`population_loop`) share it, so both log, save and stop at
    the same steps. Returns (state, window, step)."""
    epoch_end = (epoch + 1) * spe
    perm = progs.epoch_perm(epoch)
    t_window, images_window = time.perf_counter(), 0
    while step < epoch_end:
        n = chunk_length(step, epoch_end, config, progs.steps_per_call)
        state, window = progs.train_chunk(
            state, window, progs.images, progs.labels, perm, step - epoch * spe, n
        )
        if progs.sync_each_call:
            jax.block_until_ready(window)
        step += n
        images_window += n * config.batch_size
        hooks.count(n)
        if step % config.log_every_steps == 0 or step == epoch_end:
            window, stop_early = hooks.log(window, step, images_window, t_window)
            t_window, images_window = time.perf_counter(), 0
            if stop_early and step < epoch_end:
                hooks.save(state, window, step, True)
                break
        if step < epoch_end:
            if stop.requested(sync_point=step % config.log_every_steps == 0):
                hooks.save(state, window, step, True)
                raise stop.preempted(step)
            if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
                hooks.save(state, window, step, False)
    return state, window, step
