"""The train loop: `train_and_evaluate(config, workdir)` trains, evaluates, checkpoints and resumes.

Read it top to bottom: set up the workdir, the data, the state (restored or fresh) and the
compiled step, then loop over epochs in chunks of steps that end exactly at log steps, checkpoint
steps and epoch ends. Everything the loop carries besides the TrainState is a `LoopState`, saved in
every checkpoint's meta, so a resumed run continues its metrics exactly. The epoch, the position in
it, the batch order (a permutation from (seed, epoch)) and the per-step keys (fold_in(key, step))
are all derived from the step, so a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from fashion_jax import checkpoints, programs, sharding, steps
from fashion_jax import config as config_lib
from fashion_jax import data as data_lib
from fashion_jax import metrics as metrics_lib
from fashion_jax import workdir as workdir_lib
from fashion_jax.errors import CheckpointError, ConfigError, NonFiniteLossError
from fashion_jax.evaluate import Evaluator
from fashion_jax.preemption import Preempted, StopFlag


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


class Run:
    """One run's fixed parts: config, mesh, data on the devices, compiled functions, checkpointer,
    metric writer. The "window" is the device-side sums of the train metrics since the last log
    step (`programs.new_window`); `fetch_window` and `save` are the two places that read it.
    `steps_per_call`: train steps per device dispatch (`programs.steps_per_call`)."""

    def __init__(
        self, config, workdir: Path, mesh, splits, info: data_lib.DatasetInfo, total_steps: int
    ):
        self.config, self.workdir, self.mesh = config, workdir, mesh
        self.is_main = jax.process_index() == 0
        self.steps_per_epoch = len(splits["train"].labels) // config.batch_size
        self.total_steps = total_steps
        self.info = info
        self.steps_per_call = programs.steps_per_call(config, jax.devices()[0].platform)
        # Simulated CPU devices share the host's cores: with many programs in flight their
        # collectives can starve each other past XLA's rendezvous timeout. Wait for each call there.
        self.sync_each_call = jax.devices()[0].platform == "cpu" and mesh.devices.size > 1
        repl = sharding.replicated(mesh)
        init_key, self.step_key, data_key = jax.random.split(jax.random.key(config.seed), 3)
        init = jax.jit(
            functools.partial(
                steps.create_train_state,
                config=config,
                total_steps=total_steps,
                image_shape=info.image_shape,
                num_classes=info.num_classes,
                search_dirs=(str(workdir),),
            ),
            out_shardings=repl,
        )
        self.init = functools.partial(init, init_key)
        image = jax.ShapeDtypeStruct(splits["train"].images.shape[1:], splits["train"].images.dtype)
        self.abstract_state = programs.check_model(
            config, lambda: checkpoints.abstract_like(init, init_key, repl), image, info.num_classes
        )
        n_train = len(splits["train"].labels)
        self.epoch_perm = jax.jit(
            lambda epoch: jax.random.permutation(jax.random.fold_in(data_key, epoch), n_train),
            out_shardings=repl,
        )
        self.images = sharding.put_replicated(splits["train"].images, mesh)
        self.labels = sharding.put_replicated(splits["train"].labels, mesh)
        # Compiled ahead of time, so XLA's cost analysis of the very program that runs gives the
        # FLOPs of a train step (the loop body, for k > 1) without a second compilation.
        self.train_chunk = (
            programs.make_train_chunk(
                config, mesh, config.batch_size, self.step_key, self.steps_per_call
            )
            .lower(
                self.abstract_state,
                programs.new_window(mesh),
                self.images,
                self.labels,
                jax.ShapeDtypeStruct((n_train,), jnp.int32, sharding=repl),
                0,
                1,
            )
            .compile()
        )
        self.costs = programs.model_costs(
            self.abstract_state, self.train_chunk, image, mesh.devices.size
        )
        self.evaluators = {
            name: Evaluator(
                s.images, s.labels, config.eval_batch_size, mesh, repl, **steps.eval_options(config)
            )
            for name, s in splits.items()
            if name != "train"
        }
        self.ckpt = checkpoints.Checkpoints(
            workdir, config.keep_checkpoints, config_lib.state_structure(config)
        )
        self.writer = metrics_lib.Writer(workdir, self.is_main)
        self.workdir_identity = workdir_lib.identity(workdir)
        # `stop_when(record) -> bool`, asked after each train and eval record (see train_and_evaluate).
        self.stop_when, self.stopped_early = None, False

    def fetch_window(self, window, loop: LoopState, step: int) -> None:
        """Copies the device window into `loop`; raises NonFiniteLossError if a step diverged."""
        host = jax.device_get(window)
        first_bad = int(host["first_bad_step"])
        if first_bad >= 0 or not math.isfinite(float(host["loss"])):
            bad = first_bad if first_bad >= 0 else step
            good = [s for s in self.ckpt.steps() if s < bad]
            raise NonFiniteLossError(
                f"The training loss became non-finite (NaN or inf) at step {bad}; the run stopped. "
                f"The last finite checkpoint is at step {good[-1] if good else 'none'}. Lower the "
                "learning rate or check the data, then rerun with --restart (or resume as is)."
            )
        loop.window_loss, loop.window_accuracy = float(host["loss"]), float(host["accuracy"])

    def save(
        self, state, window, loop: LoopState, step: int, best: dict | None = None, wait=False
    ) -> None:
        """Saves `state` and the loop at `step` (asynchronously unless `wait`)."""
        workdir_lib.check_unmoved(self.workdir, self.workdir_identity)
        self.fetch_window(window, loop, step)
        if not bool(jax.device_get(checkpoints.all_finite(state).addressable_data(0))):
            raise NonFiniteLossError(
                f"The train state holds NaN or inf at step {step}; it was not saved."
            )
        meta = {"loop": dataclasses.asdict(loop), "total_steps": self.total_steps}
        self.ckpt.save(step, state, meta, metrics=best)
        if wait:
            self.ckpt.wait()

    def restore_or_init(self):
        """(state, loop) from the newest valid checkpoint, or fresh ones at step 0."""
        restored = self.ckpt.restore_latest(self.abstract_state)
        if restored is None:
            return self.init(), LoopState()
        state, meta = restored
        step = int(state.step)
        if step > self.total_steps:
            raise CheckpointError(
                f"{self.workdir} holds a run trained for {step} steps ({step / self.steps_per_epoch:g} epochs), "
                f"more than num_epochs = {self.config.num_epochs} allows ({self.total_steps} steps). Ask for at "
                "least as many epochs as were trained, or pass --restart to start afresh."
            )
        print(f"Resuming from the checkpoint at step {step} in {self.ckpt.directory}.", flush=True)
        return state, LoopState.from_meta(meta)

    def log(self, window, loop: LoopState, step: int, images: int, since: float, bar) -> dict:
        """Closes the metric window at `step` (started at perf_counter `since`): one "train" record,
        the progress bar's numbers. Waits for the window's steps to finish first."""
        self.fetch_window(window, loop, step)
        workdir_lib.check_unmoved(self.workdir, self.workdir_identity)
        seconds = time.perf_counter() - since
        loss, accuracy = loop.close_window()
        ips = images / max(seconds, 1e-9)
        loop.train_seconds += seconds
        record = {
            "type": "train",
            "step": step,
            "epoch": step / self.steps_per_epoch,
            "loss": loss,
            "accuracy": accuracy,
            "images_per_second": ips,
        }
        self.writer.write(record)
        if bar is not None:
            bar.set_postfix(
                loss=f"{loop.epoch_loss / loop.epoch_steps:.4f}",
                acc=f"{loop.epoch_accuracy / loop.epoch_steps:.4f}",
                img_s=f"{ips:.0f}",
            )
        return record

    def evaluate(
        self, state, loop: LoopState, step: int, epoch: int, seconds: float
    ) -> dict[str, Any]:
        """Evaluates every held-out split, writes the "eval" record, resets the epoch sums."""
        record = {
            "type": "eval",
            "step": step,
            "epoch": epoch,
            "train_loss": loop.epoch_loss / max(loop.epoch_steps, 1),
            "train_accuracy": loop.epoch_accuracy / max(loop.epoch_steps, 1),
            "epoch_seconds": seconds,
        }
        for name, evaluator in self.evaluators.items():
            r = evaluator(state)
            record[f"{name}_loss"], record[f"{name}_accuracy"] = r["loss"], r["accuracy"]
        self.writer.write(record)
        if self.is_main:
            shown = ", ".join(
                f"{k} {v:.4f}" for k, v in record.items() if k.endswith(("_loss", "_accuracy"))
            )
            print(f"epoch {epoch}/{self.config.num_epochs}: {shown} ({seconds:.1f} s)", flush=True)
        loop.epoch_loss = loop.epoch_accuracy = 0.0
        loop.epoch_steps = 0
        return record


def train_epoch(run: Run, state, window, loop: LoopState, epoch: int, step: int, stop: StopFlag):
    """Trains from `step` to the end of `epoch` in chunks; logs, checkpoints and honours a stop
    request at exact step boundaries. Returns (state, window, step)."""
    config, spe = run.config, run.steps_per_epoch
    epoch_end = (epoch + 1) * spe
    perm = run.epoch_perm(epoch)
    bar = _progress(config, run.is_main, epoch, spe, step - epoch * spe)
    t_window, images_window = time.perf_counter(), 0
    while step < epoch_end:
        n = chunk_length(step, epoch_end, config, run.steps_per_call)
        state, window = run.train_chunk(
            state, window, run.images, run.labels, perm, step - epoch * spe, n
        )
        if run.sync_each_call:
            jax.block_until_ready(window)
        step += n
        loop.window_steps += n
        images_window += n * config.batch_size
        if step % config.log_every_steps == 0 or step == epoch_end:
            record = run.log(window, loop, step, images_window, t_window, bar)
            window = programs.new_window(run.mesh, loop.window_loss, loop.window_accuracy)
            t_window, images_window = time.perf_counter(), 0
            if step < epoch_end and run.stop_when is not None and run.stop_when(record):
                run.save(state, window, loop, step, wait=True)
                run.stopped_early = True
                break
        if bar is not None:
            bar.update(n)
        if step < epoch_end:
            if stop.requested(sync_point=step % config.log_every_steps == 0):
                run.save(state, window, loop, step, wait=True)
                raise stop.preempted(step)
            if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
                run.save(state, window, loop, step)
    if bar is not None:
        bar.close()
    return state, window, step


def train_and_evaluate(
    config,
    workdir: str | Path,
    restart: bool = False,
    *,
    data: dict | None = None,
    stop_when: Callable[[dict[str, Any]], bool] | None = None,
    report: bool = True,
) -> dict[str, Any]:
    """Trains `config` in `workdir`, resuming from its newest valid checkpoint. Returns the summary.

    data: your own splits instead of `config.dataset`, {"train": (images, labels), "test": (images,
      labels)} (optional "validation", "class_names"); images uint8 or float32 in [0, 1]
      [N, H, W, C], labels integers [N] (see `data.from_arrays`). The run's config.json then says
      dataset "memory".
    stop_when: asked with the records the loop writes (the "train" record of each log step inside
      an epoch, the "eval" record of each epoch end); when it returns True the run ends there:
      a checkpoint at that step, summary.json for the state trained so far (mid-epoch: the last
      evaluated epoch's accuracy). E.g. a time budget or a target accuracy. Single process only.
    report: write report.md and the plots at the end (False: only metrics and summary).

    Raises UserError subclasses for bad input (NonFiniteLossError for a diverged run) and
    preemption.Preempted after a clean save when SIGTERM/SIGINT arrived.
    """
    # Callers of the Python API get the command line's checks: keys, types, ranges.
    config = config_lib.validate(config_lib.check_schema(config))
    if data is not None:
        data_lib.from_arrays(data)  # Bad arrays are refused before anything is written.
        config = config_lib.apply_overrides(config, {"dataset": data_lib.MEMORY})
    workdir = workdir_lib.check_path(workdir)
    mesh = sharding.make_mesh()
    is_main = jax.process_index() == 0
    sharding.check_batch_size("batch_size", config.batch_size, mesh)
    workdir_lib.create(workdir)
    # Signals from here on only ask for a stop (seen before training starts, or at the next
    # step boundary): Ctrl-C during the first compilation interrupts no XLA thread midway.
    with (
        workdir_lib.Lock(workdir) if is_main else contextlib.nullcontext(),
        StopFlag() as early_stop,
    ):
        workdir_lib.check_previous(workdir, config, restart, is_main)
        splits, info = data_lib.load_data(config, data)
        steps_per_epoch = len(splits["train"].labels) // config.batch_size
        if steps_per_epoch == 0:
            raise ConfigError(
                f"batch_size = {config.batch_size} is larger than the "
                f"{len(splits['train'].labels)} training examples."
            )
        run = Run(config, workdir, mesh, splits, info, steps_per_epoch * config.num_epochs)
        run.stop_when = stop_when
        try:
            state, loop = run.restore_or_init()
            if early_stop.requested(sync_point=True):
                raise Preempted(early_stop.signum, int(state.step), saved=False)
            if is_main:  # Only once the config is known to work with the data and the checkpoint.
                (workdir / workdir_lib.CONFIG_JSON).write_text(config_lib.to_json(config) + "\n")
                workdir_lib.write_dataset_info(workdir, info)
            state, loop, last_eval = _train(run, state, loop, early_stop)
        finally:
            run.ckpt.close()
        if last_eval is None and is_main:  # No epoch ended in this call: the newest on record.
            last_eval = next(
                (r for r in reversed(metrics_lib.read(workdir)) if r["type"] == "eval"), None
            )
        summary = metrics_lib.summary(
            last_eval,
            step=int(state.step),
            steps_per_epoch=run.steps_per_epoch,
            batch_size=config.batch_size,
            train_seconds=loop.train_seconds,
            costs=run.costs,
            devices=run.mesh.devices.size,
        )
        run.writer.finish(config, summary)
        if is_main:
            (workdir / workdir_lib.SUMMARY).write_text(_json(summary))
            if report:
                _write_report(workdir)
    return summary


def _train(run: Run, state, loop: LoopState, stop: StopFlag | None = None):
    """The epochs, from wherever `state` stands. Returns the final (state, loop, the last "eval"
    record, or None if no epoch ended)."""
    config, spe = run.config, run.steps_per_epoch
    step = int(state.step)
    run.writer.start(step, config)
    window = programs.new_window(run.mesh, loop.window_loss, loop.window_accuracy)
    record = None
    if run.is_main:
        print(
            f"Training {config.model} on {len(run.images)} examples, {spe} steps/epoch, {config.num_epochs} "
            f"epochs, global batch {config.batch_size} over {run.mesh.devices.size} device(s) "
            f"({jax.devices()[0].platform}), {jax.process_count()} process(es), {run.steps_per_call} step(s) per call; "
            f"{run.costs['params']:,} parameters, {metrics_lib.mega(run.costs['forward_flops'])} MFLOP per image forward.",
            flush=True,
        )
    with contextlib.nullcontext(stop) if stop is not None else StopFlag() as stop:
        for epoch in range(step // spe, config.num_epochs):
            t_epoch = time.perf_counter()
            state, window, step = train_epoch(run, state, window, loop, epoch, step, stop)
            if run.stopped_early:
                break
            record = run.evaluate(state, loop, step, epoch + 1, time.perf_counter() - t_epoch)
            best = (
                {checkpoints.VALIDATION_METRIC: record["validation_accuracy"]}
                if "validation_accuracy" in record
                else None
            )
            run.save(state, window, loop, step, best)
            if stop.requested(sync_point=True):
                run.ckpt.wait()
                raise stop.preempted(step)
            if run.stop_when is not None and run.stop_when(record):
                break
    run.ckpt.wait()
    return state, loop, record


def _json(value) -> str:
    import json

    return json.dumps(value, indent=2) + "\n"


def _progress(config, is_main, epoch, total, initial):
    if not (config.progress_bar and is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=f"epoch {epoch + 1}/{config.num_epochs}",
        unit="step",
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
    )


def _write_report(workdir: Path) -> None:
    """Writes the report; a failure there is reported but does not fail the finished training."""
    from fashion_jax import report

    try:
        report.write_report(workdir)
    except Exception as e:  # The run's results are already saved; say how to retry.
        print(
            f"WARNING: the report could not be written ({type(e).__name__}: {e}); retry with "
            f"`python -m fashion_jax.report --workdir {workdir}`.",
            file=sys.stderr,
            flush=True,
        )
