"""Metric records of a run: written as JSON lines and TensorBoard events, read back in one place.

`metrics.jsonl` holds one record per line: {"type": "train", "step", "epoch", "loss", "accuracy",
"images_per_second"} at log steps and {"type": "eval", "step", "epoch", "train_loss",
"train_accuracy", "<split>_loss", "<split>_accuracy", "epoch_seconds"} at epoch ends. It is the
source of truth (reports and plots read it); TensorBoard events mirror it, written with whichever
writer is installed: tensorboardX, else `tensorboard`'s own event writer (neither needs
TensorFlow), else none (one line says so; metrics.jsonl is written all the same).

We keep this small writer rather than `clu.metric_writers`: a resumed run must first drop the
records past its checkpoint (from both the JSON lines and TensorBoard, via `purge_step`) so every
step appears once, and clu writes no JSON lines.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from fashion_jax import config as config_lib
from fashion_jax.workdir import METRICS, TENSORBOARD


def read(workdir: str | Path) -> list[dict[str, Any]]:
    """The records of `WORKDIR/metrics.jsonl` ([] if absent), sorted by step (train before eval).

    Lines cut short by a kill, or not records, are skipped; a record repeated for the same
    (type, step) keeps its last copy.
    """
    path = Path(workdir) / METRICS
    if not path.is_file():
        return []
    records: dict[tuple[str, int], dict[str, Any]] = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(record, dict)
            and record.get("type") in ("train", "eval")
            and isinstance(record.get("step"), int)
        ):
            records[(record["type"], record["step"])] = record
    return sorted(records.values(), key=lambda r: (r["step"], r["type"] == "eval"))


class Writer:
    """Writes records on the main process only (`enabled`): JSON lines and TensorBoard events."""

    def __init__(self, workdir: Path, enabled: bool):
        self.path, self.enabled = Path(workdir) / METRICS, enabled
        self.tb_dir = Path(workdir) / TENSORBOARD
        self.tb = None

    def start(self, step: int, config) -> None:
        """Drops the records past `step` (the checkpoint a run resumes from) and opens TensorBoard."""
        if not self.enabled:
            return
        if self.path.exists():
            kept = [json.dumps(r) + "\n" for r in read(self.path.parent) if r["step"] <= step]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(kept))
            tmp.replace(self.path)
        try:
            self.tb = event_writer(self.tb_dir, purge_step=step + 1 if step else None)
            reason = "neither tensorboardX nor tensorboard is installed"
        except Exception as e:  # A broken install must not stop training.
            self.tb, reason = None, f"tensorboard fails ({type(e).__name__}: {str(e)[:200]})"
        if self.tb is None:
            print(
                f"TensorBoard events are not written: {reason} (metrics are in {self.path}).",
                file=sys.stderr,
                flush=True,
            )
        elif not step:
            self.tb.add_text("config", "```\n" + config_lib.to_json(config) + "\n```", 0)

    def write(self, record: dict[str, Any]) -> None:
        """Appends `record` (with "type" and "step") to both outputs."""
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if key not in ("type", "step", "epoch") and isinstance(value, (int, float)):
                    self.tb.add_scalar(f"{record['type']}/{key}", value, record["step"])

    def finish(self, config, summary: dict[str, Any]) -> None:
        """Records the hyper-parameters with the final test numbers, then closes."""
        if self.tb is None:
            return
        hparams = {
            k: v for k, v in config.to_dict().items() if isinstance(v, (bool, int, float, str))
        }
        final = {
            f"hparam/{k}": summary[k]
            for k in ("test_accuracy", "test_loss")
            if summary.get(k) is not None
        }
        self.tb.add_hparams(hparams, final, name="hparams")
        self.close()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def event_writer(logdir: Path, purge_step: int | None = None):
    """A TensorBoard event writer for `logdir` with `add_scalar(tag, value, step)`,
    `add_text(tag, text, step)`, `add_hparams(hparams, metrics, name)` and `close()`: tensorboardX's
    `SummaryWriter` if installed, else `_EventFileWriter` over `tensorboard`'s own event file
    writer, else None. `purge_step`: events at this step and later, left by an earlier run, are
    hidden by TensorBoard (a resumed run rewrites them)."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        pass
    else:
        return SummaryWriter(str(logdir), purge_step=purge_step, flush_secs=30)
    try:
        return _EventFileWriter(logdir, purge_step)
    except ImportError:
        return None


class _EventFileWriter:
    """The part of tensorboardX's `SummaryWriter` the loop uses, over `tensorboard`'s event writer
    (the one `torch.utils.tensorboard` uses; no TensorFlow needed)."""

    def __init__(self, logdir: Path, purge_step: int | None):
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary = event_pb2, summary_pb2
        self._writer = EventFileWriter(str(logdir), flush_secs=30)
        if purge_step is not None:  # As tensorboardX: a session start at purge_step.
            self._writer.add_event(
                event_pb2.Event(
                    step=purge_step,
                    session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START),
                )
            )

    def _add(self, summary, step: int) -> None:
        self._writer.add_event(self._event.Event(step=int(step), summary=summary))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        value = self._summary.Summary.Value(tag=tag, simple_value=float(value))
        self._add(self._summary.Summary(value=[value]), step)

    def add_text(self, tag: str, text: str, step: int) -> None:
        from tensorboard.plugins.text.summary_v2 import text_pb

        self._add(text_pb(tag, text), step)

    def add_hparams(self, hparams: dict, metrics: dict, name: str = "hparams") -> None:
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb

        del name
        self._add(hparams_pb(hparams), 0)
        for tag, value in metrics.items():
            self.add_scalar(tag, value, 0)

    def close(self) -> None:
        self._writer.close()


def summary(
    last_eval: dict | None,
    *,
    step: int,
    steps_per_epoch: int,
    batch_size: int,
    train_seconds: float,
    costs: dict[str, Any],
    devices: int,
) -> dict[str, Any]:
    """summary.json: the final numbers (`last_eval`, the newest "eval" record, or None) of the
    state trained to `step` (not the config's plan), its costs (`programs.costs`: params, forward
    and train-step FLOPs) and the machine."""
    import jax

    last = last_eval or {}
    flops = costs["train_step_flops"]
    return {
        "test_accuracy": last.get("test_accuracy"),
        "test_loss": last.get("test_loss"),
        "validation_accuracy": last.get("validation_accuracy"),
        "epochs": step // steps_per_epoch
        if step % steps_per_epoch == 0
        else step / steps_per_epoch,
        "steps": step,
        "train_seconds": train_seconds,
        "images_per_second": step * batch_size / train_seconds if train_seconds else None,
        "params": costs["params"],
        "forward_flops_per_image": costs["forward_flops"],
        "train_flops_per_step": flops,
        "train_flops_total": flops * step if flops else None,
        "devices": devices,
        "processes": jax.process_count(),
        "platform": jax.devices()[0].platform,
        "device_kind": jax.devices()[0].device_kind,
        "versions": versions(),
    }


def mega(flops: float | None) -> str:
    return f"{flops / 1e6:.1f}" if flops else "n/a"


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    out["python"] = sys.version.split()[0]
    return out
