"""The train loop: `train_and_evaluate(config, workdir)` trains, evaluates, checkpoints and resumes.

Read it top to bottom: set up the workdir, the data, the state (restored or fresh) and the
compiled step, then loop over epochs (`epochs.epoch_loop`: chunks of steps that end exactly at log
steps, checkpoint steps and epoch ends). Everything the loop carries besides the TrainState is a
`epochs.LoopState`, saved in every checkpoint's meta, so a resumed run continues its metrics
exactly. The epoch, the position in
it, the batch order (a permutation from (seed, epoch)) and the per-step keys (fold_in(key, step))
are all derived from the step, so a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from fashion_jax import checkpoints, fingerprints, programs, sharding
from fashion_jax import config as config_lib
from fashion_jax import data as data_lib
from fashion_jax import metrics as metrics_lib
from fashion_jax import report as report_lib
from fashion_jax import workdir as workdir_lib
from fashion_jax.epochs import LoopState, epoch_loop
from fashion_jax.errors import CheckpointError, ConfigError, NonFiniteLossError
from fashion_jax.outputs import Outputs
from fashion_jax.preemption import Preempted, StopFlag


@dataclasses.dataclass
class Run:
    """One run: its config, its device programs (`programs.Programs`) and its I/O
    (`outputs.Outputs`). The "window" is the device-side sums of the train metrics since the last
    log step (`programs.new_window`); `fetch_window` and `save` are the two places that read it.
    `stop_when(record) -> bool` is asked after each train and eval record (see
    `train_and_evaluate`)."""

    config: Any
    programs: programs.Programs
    out: Outputs
    steps_per_epoch: int
    total_steps: int
    stop_when: Callable[[dict[str, Any]], bool] | None = None
    stopped_early: bool = False

    def fetch_window(self, window, loop: LoopState, step: int) -> None:
        """Copies the device window into `loop`; raises NonFiniteLossError if a step diverged."""
        host = jax.device_get(window)
        first_bad = int(host["first_bad_step"])
        if first_bad >= 0 or not math.isfinite(float(host["loss"])):
            bad = first_bad if first_bad >= 0 else step
            good = [s for s in self.out.ckpt.steps() if s < bad]
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
        self.out.check_unmoved()
        self.fetch_window(window, loop, step)
        if not bool(jax.device_get(checkpoints.all_finite(state).addressable_data(0))):
            raise NonFiniteLossError(
                f"The train state holds NaN or inf at step {step}; it was not saved."
            )
        meta = {"loop": dataclasses.asdict(loop), "total_steps": self.total_steps}
        self.out.save(step, state, meta, best, wait)

    def restore_or_init(self):
        """(state, loop) from the newest valid checkpoint, or fresh ones at step 0."""
        restored = self.out.restore(self.programs.abstract_state)
        if restored is None:
            return self.programs.init(), LoopState()
        state, meta = restored
        step = int(state.step)
        if step > self.total_steps:
            raise CheckpointError(
                f"{self.out.workdir} holds a run trained for {step} steps ({step / self.steps_per_epoch:g} epochs), "
                f"more than num_epochs = {self.config.num_epochs} allows ({self.total_steps} steps). Ask for at "
                "least as many epochs as were trained, or pass --restart to start afresh."
            )
        print(
            f"Resuming from the checkpoint at step {step} in {self.out.ckpt.directory}.", flush=True
        )
        return state, LoopState.from_meta(meta)

    def log(self, window, loop: LoopState, step: int, images: int, since: float, bar) -> dict:
        """Closes the metric window at `step` (started at perf_counter `since`): one "train" record,
        the progress bar's numbers. Waits for the window's steps to finish first."""
        self.fetch_window(window, loop, step)
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
        self.out.write(record)
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
        for name, evaluator in self.programs.evaluators.items():
            r = evaluator(state)
            record[f"{name}_loss"], record[f"{name}_accuracy"] = r["loss"], r["accuracy"]
        self.out.write(record)
        if self.out.is_main:
            shown = ", ".join(
                f"{k} {v:.4f}" for k, v in record.items() if k.endswith(("_loss", "_accuracy"))
            )
            print(f"epoch {epoch}/{self.config.num_epochs}: {shown} ({seconds:.1f} s)", flush=True)
        loop.epoch_loss = loop.epoch_accuracy = 0.0
        loop.epoch_steps = 0
        return record


@dataclasses.dataclass
class _RunHooks:
    """`epoch_loop`'s hooks for a lone run: its loop state, progress bar and `stop_when`."""

    run: Run
    loop: LoopState
    bar: Any

    def count(self, n: int) -> None:
        self.loop.window_steps += n
        if self.bar is not None:
            self.bar.update(n)

    def log(self, window, step, images, t0):
        run, loop = self.run, self.loop
        record = run.log(window, loop, step, images, t0, self.bar)
        window = programs.new_window(run.programs.mesh, loop.window_loss, loop.window_accuracy)
        # Mid-epoch only: at an epoch's end `stop_when` is asked after the evaluation.
        mid_epoch = step % run.steps_per_epoch != 0
        run.stopped_early = mid_epoch and run.stop_when is not None and run.stop_when(record)
        return window, run.stopped_early

    def save(self, state, window, step, wait) -> None:
        self.run.save(state, window, self.loop, step, wait=wait)


def train_epoch(run: Run, state, window, loop: LoopState, epoch: int, step: int, stop: StopFlag):
    """Trains from `step` to the end of `epoch` (`epoch_loop`): logs, checkpoints and honours a
    stop request or `stop_when` at exact step boundaries. Returns (state, window, step)."""
    spe = run.steps_per_epoch
    bar = _progress(run.config, run.out.is_main, epoch, spe, step - epoch * spe)
    try:
        return epoch_loop(
            run.programs,
            run.config,
            spe,
            state,
            window,
            epoch,
            step,
            stop,
            _RunHooks(run, loop, bar),
        )
    finally:
        if bar is not None:
            bar.close()


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
    config, workdir, mesh = check_inputs(config, workdir, data)
    is_main = jax.process_index() == 0
    workdir_lib.create(workdir)
    # Signals from here on only ask for a stop (seen before training starts, or at the next
    # step boundary): Ctrl-C during the first compilation interrupts no XLA thread midway.
    with (
        workdir_lib.Lock(workdir) if is_main else contextlib.nullcontext(),
        StopFlag() as stop,
    ):
        workdir_lib.check_previous(workdir, config, restart, is_main)
        splits, info = data_lib.load_data(config, data)
        described = fingerprints.data(splits, info)
        workdir_lib.check_data(workdir, described)  # A resume on other data: refused here.
        run = _start(config, workdir, mesh, splits, info, stop_when)
        try:
            state, loop = run.restore_or_init()
            if stop.requested(sync_point=True):
                raise Preempted(stop.signum, int(state.step), saved=False)
            run.out.begin(
                config,
                info,
                int(state.step),
                abstract_state=run.programs.abstract_state,
                data=described,
            )
            state, loop, last_eval = _train(run, state, loop, stop)
        finally:
            run.out.close()
        return finish(run, state, loop, last_eval, splits, info, report)


def finish(
    run: Run, state, loop: LoopState, last_eval, splits, info, report: bool, extra=None
) -> dict:
    """Writes a run's summary.json (from `last_eval`, else the newest eval record on file: no
    epoch ended in this call; plus `extra`) and, on process 0, its report from what it holds."""
    summary = metrics_lib.summary(
        last_eval or run.out.last_eval(),
        step=int(state.step),
        steps_per_epoch=run.steps_per_epoch,
        batch_size=run.config.batch_size,
        train_seconds=loop.train_seconds,
        costs=run.programs.costs,
        devices=run.programs.mesh.devices.size,
    )
    summary.update(extra or {})
    run.out.finish(run.config, summary)
    if run.out.is_main and report and "test" in splits:
        trained = report_lib.Trained(run.config, state, splits["test"], info)
        report_safely(run.out.workdir, trained)
    elif run.out.is_main and report:
        report_safely(run.out.workdir, None)
    return summary


def check_inputs(config, workdir, data):
    """(config, workdir, mesh) after the command line's checks (keys, types, ranges, the batch
    against the devices, the workdir's path, your arrays), which Python API callers get too;
    nothing is written before them."""
    config = config_lib.validate(config_lib.check_schema(config))
    if data is not None:
        data_lib.from_arrays(data)
        config = config_lib.apply_overrides(config, {"dataset": data_lib.MEMORY})
    workdir = workdir_lib.check_path(workdir)
    mesh = sharding.make_mesh()
    sharding.check_batch_size("batch_size", config.batch_size, mesh)
    return config, workdir, mesh


def _start(config, workdir: Path, mesh, splits, info, stop_when) -> Run:
    """The run's programs, compiled for its data, and its outputs."""
    steps_per_epoch = len(splits["train"].labels) // config.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            f"batch_size = {config.batch_size} is larger than the "
            f"{len(splits['train'].labels)} training examples."
        )
    total_steps = steps_per_epoch * config.num_epochs
    progs = programs.build(config, mesh, splits, info, total_steps, search_dirs=(str(workdir),))
    out = Outputs(workdir, config)
    return Run(config, progs, out, steps_per_epoch, total_steps, stop_when)


def _train(run: Run, state, loop: LoopState, stop: StopFlag):
    """The epochs, from wherever `state` stands. Returns the final (state, loop, the last "eval"
    record, or None if no epoch ended)."""
    config, spe, progs = run.config, run.steps_per_epoch, run.programs
    step = int(state.step)
    window = programs.new_window(progs.mesh, loop.window_loss, loop.window_accuracy)
    record = None
    if run.out.is_main:
        print(headline(run), flush=True)
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
            run.out.ckpt.wait()
            raise stop.preempted(step)
        if run.stop_when is not None and run.stop_when(record):
            break
    run.out.ckpt.wait()
    return state, loop, record


def headline(run: Run) -> str:
    """The line that says what trains where."""
    config, progs, costs = run.config, run.programs, run.programs.costs
    return (
        f"Training {config.model} on {len(progs.images)} examples, {run.steps_per_epoch} steps/epoch, "
        f"{config.num_epochs} epochs, global batch {config.batch_size} over {progs.mesh.devices.size} "
        f"device(s) ({jax.devices()[0].platform}), {jax.process_count()} process(es), "
        f"{progs.steps_per_call} step(s) per call; {costs['params']:,} parameters, "
        f"{metrics_lib.mega(costs['forward_flops'])} MFLOP per image forward."
    )


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


def report_safely(workdir: Path, trained: report_lib.Trained | None) -> None:
    """Writes the report from what the run holds; a failure there is reported but does not fail
    the finished training."""
    try:
        report_lib.write_report(workdir, trained)
    except Exception as e:  # The run's results are already saved; say how to retry.
        print(
            f"WARNING: the report could not be written ({type(e).__name__}: {e}); retry with "
            f"`python -m fashion_jax.report --workdir {workdir}`.",
            file=sys.stderr,
            flush=True,
        )
