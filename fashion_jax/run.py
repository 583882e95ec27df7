"""The experiment runner: `python -m fashion_jax.run --workdir experiments/base [--config.KEY=VALUE ...]`.

Loads `WORKDIR/config.py` (or `--config FILE`, or the defaults), applies overrides, validates, then
trains data-parallel over every device, evaluates on the whole test set after each epoch, writes
`config.json`, `metrics.jsonl`, Orbax checkpoints, `summary.json` and plots into the workdir, and
resumes from the newest valid checkpoint when started again with the same command.

This is the only module that does I/O and orchestration; models and steps stay pure.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fashion_jax import checkpoints, config as config_lib, data, sharding, steps
from fashion_jax.errors import CheckpointError, ConfigError, NonFiniteLossError, UserError

OUTPUTS = ("config.json", "metrics.jsonl", "summary.json", "checkpoints", "checkpoints_invalid",
           "plots", "report.md", "tensorboard")


# ----------------------------------------------------------------------------- command line


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    """Splits argv into known flags and `--config.KEY=VALUE` overrides."""
    parser = argparse.ArgumentParser(
        prog="python -m fashion_jax.run",
        description="Train and evaluate a Fashion-MNIST classifier in WORKDIR (resumes if it holds a run).",
        epilog="Override any config value with --config.KEY=VALUE, e.g. --config.num_epochs=2.")
    parser.add_argument("--workdir", required=True, help="output folder; WORKDIR/config.py is the config if present")
    parser.add_argument("--config", default=None, help="experiment config file (default: WORKDIR/config.py)")
    parser.add_argument("--restart", action="store_true",
                        help="start afresh: move the workdir's previous outputs into a backup folder first")
    overrides: dict[str, str] = {}
    rest = []
    args_iter = iter(argv)
    for arg in args_iter:
        if arg.startswith("--config."):
            key, sep, value = arg[len("--config."):].partition("=")
            if not sep:
                value = next(args_iter, None)
                if value is None:
                    raise ConfigError(f"{arg} needs a value: --config.{key}=VALUE.")
            overrides[key] = value
        else:
            rest.append(arg)
    args = parser.parse_args(rest)
    return args, overrides


def resolve_config(workdir: str, config_file: str | None, overrides: dict[str, str]):
    """The experiment config (file, else WORKDIR/config.py, else defaults) with overrides, validated."""
    path = Path(config_file) if config_file else Path(workdir) / "config.py"
    if config_file or path.is_file():
        cfg = config_lib.load_experiment(path)
    else:
        cfg = config_lib.get_config()
    return config_lib.validate(config_lib.apply_overrides(cfg, overrides))


# ----------------------------------------------------------------------------- workdir


def prepare_workdir(workdir: Path, config, restart: bool, is_main: bool) -> None:
    """Creates the workdir, refuses a foreign or incompatible one, and honours --restart."""
    if workdir.exists() and not workdir.is_dir():
        raise UserError(f"--workdir {workdir} is a file, not a folder. Choose a folder path.")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"Cannot write to --workdir {workdir} ({e.strerror or e}). "
                        "Choose a folder you can write to, or fix its permissions.") from None
    saved = workdir / "config.json"
    present = [name for name in OUTPUTS if (workdir / name).exists()]
    if restart and present:
        if is_main:
            backup = workdir / time.strftime("backup-%Y%m%d-%H%M%S")
            backup.mkdir()
            for name in present:
                shutil.move(str(workdir / name), str(backup / name))
            print(f"--restart: moved {', '.join(present)} to {backup}", flush=True)
        return
    if not present:
        return
    if not saved.is_file():
        raise CheckpointError(
            f"{workdir} holds {', '.join(present)} but no config.json: it was not written by this runner "
            "or is incomplete. Use another --workdir, or --restart to move those files aside.")
    try:
        previous = json.loads(saved.read_text())
        previous_structure = config_lib.state_structure(config_lib.check_schema(
            ml_collections.ConfigDict(previous), source=str(saved)))
    except (ValueError, KeyError, TypeError, AttributeError, ConfigError):
        raise CheckpointError(f"{saved} is not a fashion_jax config. Use another --workdir, "
                              "or --restart to move the old files aside.") from None
    structure = config_lib.state_structure(config)
    if previous_structure != structure:
        raise CheckpointError(
            f"{workdir} holds a run with {previous_structure}, but this config asks for {structure}; "
            "its checkpoints cannot be resumed with it. Use another --workdir, or pass --restart to "
            "start afresh (the old outputs are moved to a backup folder, not deleted).")


class MetricsWriter:
    """Writes metrics on process 0: JSON lines in `metrics.jsonl` and TensorBoard events in `tensorboard/`.

    `start(step)` drops records past `step` (a resumed run's checkpoint) from both, so a killed and
    resumed run has each step once.
    """

    def __init__(self, workdir: Path, enabled: bool):
        self.path, self.enabled = workdir / "metrics.jsonl", enabled
        self.tb_dir = workdir / "tensorboard"
        self.tb = None

    def start(self, step: int, config) -> None:
        if not self.enabled:
            return
        if self.path.exists():
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # A line cut short by a kill.
                if record.get("step", 0) <= step:
                    kept.append(json.dumps(record))
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(k + "\n" for k in kept))
            tmp.replace(self.path)
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(str(self.tb_dir), purge_step=step + 1 if step else None, flush_secs=30)
        if not step:
            self.tb.add_text("config", "```\n" + config_lib.to_json(config) + "\n```", 0)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if key not in ("type", "step", "epoch") and isinstance(value, (int, float)):
                    self.tb.add_scalar(f"{record['type']}/{key}", value, record["step"])

    def finish(self, config, summary: dict[str, Any]) -> None:
        if self.tb is None:
            return
        hparams = {k: v for k, v in config.to_dict().items() if isinstance(v, (bool, int, float, str))}
        final = {f"hparam/{k}": summary[k] for k in ("test_accuracy", "test_loss") if summary.get(k) is not None}
        self.tb.add_hparams(hparams, final, name="hparams")
        self.close()

    def flush(self) -> None:
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


class StopFlag:
    """SIGTERM/SIGINT set a flag (nothing else happens in the handler); the loop saves and exits."""

    def __init__(self):
        self.signum = 0
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Preempted(Exception):
    def __init__(self, signum: int, step: int):
        super().__init__(f"signal {signum} at step {step}")
        self.signum, self.step = signum, step


# ----------------------------------------------------------------------------- the loop


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    names = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets")
    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    out["python"] = sys.version.split()[0]
    return out


def split_data(splits: dict[str, data.Split], config) -> dict[str, data.Split]:
    """train (after holding out validation and truncating), validation (maybe empty), test."""
    train = splits["train"]
    v = config.validation_examples
    if v >= len(train.labels):
        raise ConfigError(f"validation_examples = {v} leaves no training data ({len(train.labels)} examples).")
    validation = data.Split(train.images[len(train.labels) - v:], train.labels[len(train.labels) - v:])
    train = data.Split(train.images[: len(train.labels) - v], train.labels[: len(train.labels) - v])
    if config.max_train_examples:
        train = data.Split(train.images[: config.max_train_examples], train.labels[: config.max_train_examples])
    out = {"train": train, "test": splits["test"]}
    if v:
        out["validation"] = validation
    return out


class Evaluator:
    """Whole-split evaluation in fixed-size padded batches; every example counts exactly once."""

    def __init__(self, split: data.Split, batch_size: int, mesh, state_sharding, tta_flip: bool = False):
        n_dev = mesh.devices.size
        n = len(split.labels)
        # Rounded up to a multiple of the device count; the padding is masked out.
        self.batch_size = -(-min(batch_size, n) // n_dev) * n_dev
        self.num_batches = -(-n // self.batch_size)
        padded = self.num_batches * self.batch_size
        images = np.zeros((padded, *data.IMAGE_SHAPE), np.uint8)
        labels = np.zeros((padded,), np.int32)
        images[:n], labels[:n] = split.images, split.labels
        self.n = n
        self.images = sharding.put_replicated(images, mesh)
        self.labels = sharding.put_replicated(labels, mesh)
        batch_sharding = sharding.batch_sharded(mesh)
        bs = self.batch_size

        def eval_batch(state, images, labels, index):
            start = index * bs
            batch = {
                "image": jax.lax.with_sharding_constraint(
                    jax.lax.dynamic_slice_in_dim(images, start, bs), batch_sharding),
                "label": jax.lax.with_sharding_constraint(
                    jax.lax.dynamic_slice_in_dim(labels, start, bs), batch_sharding),
                "mask": jax.lax.with_sharding_constraint(start + jnp.arange(bs) < n, batch_sharding),
            }
            return steps.eval_step(state, batch, tta_flip=tta_flip)

        self._fn = jax.jit(eval_batch, in_shardings=(state_sharding, None, None, None),
                           out_shardings=sharding.replicated(mesh))

    def __call__(self, state) -> dict[str, float]:
        totals = None
        for i in range(self.num_batches):
            out = self._fn(state, self.images, self.labels, i)
            totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
        totals = jax.device_get(totals)
        assert int(totals["count"]) == self.n, (int(totals["count"]), self.n)
        return {"loss": float(totals["loss_sum"]) / self.n, "accuracy": float(totals["correct"]) / self.n}


def train_and_evaluate(config, workdir: str | Path, restart: bool = False) -> dict[str, Any]:
    """Trains `config` in `workdir`, resuming from its newest valid checkpoint. Returns the summary.

    Raises UserError subclasses for bad input, NonFiniteLossError for a diverged run, and
    Preempted after a clean save when SIGTERM/SIGINT arrived.
    """
    workdir = Path(workdir)
    mesh = sharding.make_mesh()
    is_main = jax.process_index() == 0
    sharding.check_batch_size("batch_size", config.batch_size, mesh)
    prepare_workdir(workdir, config, restart, is_main)
    if is_main:
        (workdir / "config.json").write_text(config_lib.to_json(config) + "\n")

    source = (config.data_dir or None, config.idx_dir or None, config.download)
    if jax.process_count() > 1:  # One process prepares the tfds dataset; the others wait, then read it.
        from jax.experimental import multihost_utils

        if is_main:
            data.prepare(*source)
        multihost_utils.sync_global_devices("fashion_jax: dataset prepared")
    splits = split_data(data.load(*source), config)
    train = splits["train"]
    batch_size = config.batch_size
    steps_per_epoch = len(train.labels) // batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"batch_size = {batch_size} is larger than the {len(train.labels)} training examples.")
    total_steps = steps_per_epoch * config.num_epochs

    repl = sharding.replicated(mesh)
    batch_sharding = sharding.batch_sharded(mesh)
    root = jax.random.key(config.seed)
    init_key, step_key, data_key = jax.random.split(root, 3)
    init = jax.jit(functools.partial(steps.create_train_state, config=config, total_steps=total_steps),
                   out_shardings=repl)
    abstract_state = checkpoints.abstract_like(init, init_key, repl)

    structure = config_lib.state_structure(config)
    ckpt = checkpoints.Checkpoints(workdir, config.keep_checkpoints, structure)
    metrics = MetricsWriter(workdir, is_main)
    try:
        restored = ckpt.restore_latest(abstract_state)
        if restored is None:
            state, meta = init(init_key), {}
        else:
            state, meta = restored
            print(f"Resuming from the checkpoint at step {int(state.step)} in {ckpt.directory}.", flush=True)
        start_step = int(state.step)
        metrics.start(start_step, config)

        images = sharding.put_replicated(train.images, mesh)
        labels = sharding.put_replicated(train.labels, mesh)
        evaluators = {name: Evaluator(split, config.eval_batch_size, mesh, repl, config.tta_flip)
                      for name, split in splits.items() if name != "train"}

        epoch_perm = jax.jit(lambda epoch: jax.random.permutation(
            jax.random.fold_in(data_key, epoch), len(train.labels)), out_shardings=repl)

        def train_fn(state, window, images, labels, perm, index):
            idx = jax.lax.with_sharding_constraint(
                jax.lax.dynamic_slice_in_dim(perm, index * batch_size, batch_size), batch_sharding)
            batch = {"image": images[idx], "label": labels[idx]}
            rng = jax.random.fold_in(step_key, state.step)
            new_state, m = steps.train_step(state, batch, rng, **steps.train_options(config))
            bad = (window["first_bad_step"] < 0) & ~jnp.isfinite(m["loss"])
            window = {
                "loss": window["loss"] + m["loss"],
                "accuracy": window["accuracy"] + m["accuracy"],
                "first_bad_step": jnp.where(bad, state.step + 1, window["first_bad_step"]),
            }
            return new_state, window

        train_fn = jax.jit(train_fn, in_shardings=(repl, repl, repl, repl, repl, None),
                           out_shardings=(repl, repl), donate_argnums=(0, 1))
        all_finite = jax.jit(lambda tree: jnp.all(jnp.stack(
            [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)])))

        def new_window(loss=0.0, accuracy=0.0):
            return jax.device_put({"loss": jnp.float32(loss), "accuracy": jnp.float32(accuracy),
                                   "first_bad_step": jnp.int32(-1)}, repl)

        w = meta.get("window", {"loss": 0.0, "accuracy": 0.0, "steps": 0})
        window, window_steps = new_window(w["loss"], w["accuracy"]), w["steps"]
        e = meta.get("epoch_sums", {"loss": 0.0, "accuracy": 0.0, "steps": 0})
        epoch_sums = dict(e)
        train_seconds = float(meta.get("train_seconds", 0.0))

        def fetch_window(step):
            """Host copy of the window sums; raises NonFiniteLossError if any step diverged."""
            host = jax.device_get(window)
            if int(host["first_bad_step"]) >= 0 or not math.isfinite(float(host["loss"])):
                bad_step = int(host["first_bad_step"]) if int(host["first_bad_step"]) >= 0 else step
                good = [s for s in ckpt.steps() if s < bad_step]
                raise NonFiniteLossError(
                    f"The training loss became non-finite (NaN or inf) at step {bad_step}; the run stopped. "
                    f"The last finite checkpoint is at step {good[-1] if good else 'none'}. Lower the "
                    "learning rate or check the data, then rerun with --restart (or resume as is).")
            return float(host["loss"]), float(host["accuracy"])

        def save(step, epoch, extra_metrics=None):
            loss, acc = fetch_window(step)
            if not bool(all_finite(state)):
                raise NonFiniteLossError(f"The train state holds NaN or inf at step {step}; it was not saved.")
            ckpt.save(step, state, {
                "epoch": epoch, "window": {"loss": loss, "accuracy": acc, "steps": window_steps},
                "epoch_sums": epoch_sums, "train_seconds": train_seconds,
            }, metrics=extra_metrics)

        if is_main:
            print(f"Training {config.model} on {len(train.labels)} examples, {steps_per_epoch} steps/epoch, "
                  f"{config.num_epochs} epochs, global batch {batch_size} over {mesh.devices.size} "
                  f"device(s) ({jax.devices()[0].platform}), {jax.process_count()} process(es).", flush=True)
        with StopFlag() as stop:

            def stop_requested(sync_point: bool) -> bool:
                """Whether to save and exit now. Several processes must agree (they save together),
                so they compare their flags at sync points (log steps, epoch ends) only."""
                if jax.process_count() == 1:
                    return bool(stop.signum)
                if not sync_point:
                    return False
                from jax.experimental import multihost_utils

                return bool(np.any(multihost_utils.process_allgather(np.int32(stop.signum))))

            step = start_step
            for epoch in range(start_step // steps_per_epoch, config.num_epochs):
                perm = epoch_perm(epoch)
                first = step - epoch * steps_per_epoch
                bar = _progress(config, is_main, epoch, steps_per_epoch, first)
                t_epoch = time.perf_counter()
                t_window, images_window = t_epoch, 0
                for index in range(first, steps_per_epoch):
                    state, window = train_fn(state, window, images, labels, perm, index)
                    step += 1
                    window_steps += 1
                    images_window += batch_size
                    end_of_epoch = index == steps_per_epoch - 1
                    if step % config.log_every_steps == 0 or end_of_epoch:
                        loss_sum, acc_sum = fetch_window(step)
                        now = time.perf_counter()
                        ips = images_window / max(now - t_window, 1e-9)
                        metrics.write({"type": "train", "step": step, "epoch": step / steps_per_epoch,
                                       "loss": loss_sum / window_steps, "accuracy": acc_sum / window_steps,
                                       "images_per_second": ips})
                        epoch_sums = {"loss": epoch_sums["loss"] + loss_sum,
                                      "accuracy": epoch_sums["accuracy"] + acc_sum,
                                      "steps": epoch_sums["steps"] + window_steps}
                        window, window_steps = new_window(), 0
                        train_seconds += now - t_window
                        if bar is not None:
                            bar.set_postfix(loss=f"{epoch_sums['loss'] / epoch_sums['steps']:.4f}",
                                            acc=f"{epoch_sums['accuracy'] / epoch_sums['steps']:.4f}",
                                            img_s=f"{ips:.0f}")
                        t_window, images_window = time.perf_counter(), 0
                    if bar is not None:
                        bar.update(1)
                    if not end_of_epoch and stop_requested(step % config.log_every_steps == 0):
                        save(step, epoch)
                        ckpt.wait()
                        raise Preempted(stop.signum or signal.SIGTERM, step)
                    if (not end_of_epoch and config.checkpoint_every_steps
                            and step % config.checkpoint_every_steps == 0):
                        save(step, epoch)
                if bar is not None:
                    bar.close()
                epoch_seconds = time.perf_counter() - t_epoch
                results = {name: ev(state) for name, ev in evaluators.items()}
                record = {"type": "eval", "step": step, "epoch": epoch + 1,
                          "train_loss": epoch_sums["loss"] / epoch_sums["steps"],
                          "train_accuracy": epoch_sums["accuracy"] / epoch_sums["steps"],
                          "epoch_seconds": epoch_seconds}
                for name, r in results.items():
                    record[f"{name}_loss"], record[f"{name}_accuracy"] = r["loss"], r["accuracy"]
                metrics.write(record)
                if is_main:
                    shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items()
                                      if k.endswith(("_loss", "_accuracy")))
                    print(f"epoch {epoch + 1}/{config.num_epochs}: {shown} ({epoch_seconds:.1f} s)", flush=True)
                epoch_sums = {"loss": 0.0, "accuracy": 0.0, "steps": 0}
                best = ({checkpoints.VALIDATION_METRIC: results["validation"]["accuracy"]}
                        if "validation" in results else None)
                save(step, epoch + 1, best)
                if stop_requested(True):
                    ckpt.wait()
                    raise Preempted(stop.signum or signal.SIGTERM, step)
        ckpt.wait()
    finally:
        ckpt.close()
        metrics.flush()

    history = [r for r in metrics.read() if r.get("type") == "eval"] if is_main else []
    last = history[-1] if history else {}
    summary = {
        "test_accuracy": last.get("test_accuracy"),
        "test_loss": last.get("test_loss"),
        "validation_accuracy": last.get("validation_accuracy"),
        "epochs": config.num_epochs,
        "steps": total_steps,
        "train_seconds": train_seconds,
        "images_per_second": total_steps * batch_size / train_seconds if train_seconds else None,
        "devices": mesh.devices.size,
        "processes": jax.process_count(),
        "platform": jax.devices()[0].platform,
        "device_kind": jax.devices()[0].device_kind,
        "versions": _versions(),
    }
    metrics.finish(config, summary)
    if is_main:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        _write_plots(workdir)
    return summary


def _progress(config, is_main, epoch, total, initial):
    if not (config.progress_bar and is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{config.num_epochs}",
                unit="step", leave=False, dynamic_ncols=True, mininterval=0.5, file=sys.stderr,
                disable=not sys.stderr.isatty())


def _write_plots(workdir: Path) -> None:
    """Writes the report; a failure there is reported but does not fail the finished training."""
    from fashion_jax import report

    try:
        report.write_report(workdir)
    except Exception as e:  # The run's results are already saved; say how to retry.
        print(f"WARNING: the report could not be written ({type(e).__name__}: {e}); retry with "
              f"`python -m fashion_jax.report --workdir {workdir}`.", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, overrides = parse_args(argv)
        config = resolve_config(args.workdir, args.config, overrides)
        sharding.initialize_distributed(config)
        summary = train_and_evaluate(config, args.workdir, restart=args.restart)
    except Preempted as p:
        name = signal.Signals(p.signum).name
        print(f"\n{name} received: saved the checkpoint at step {p.step} in {args.workdir}/checkpoints. "
              f"Resume with the same command: python -m fashion_jax.run {' '.join(argv)}",
              file=sys.stderr, flush=True)
        return 128 + p.signum
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    if jax.process_index() == 0:
        print(f"test loss {summary['test_loss']:.4f}, test accuracy {summary['test_accuracy']:.4f} "
              f"({summary['train_seconds']:.1f} s training) -> {Path(args.workdir) / 'summary.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
