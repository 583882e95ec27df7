"""What one run writes into its workdir, in one place: checkpoints, metric records, config.json,
dataset.json and summary.json (the layout is `workdir`'s docstring).

`Outputs` knows nothing of the device programs: the train loop hands it host values and pytrees.
A population of runs has one `Outputs` per member, each its own ordinary workdir. Every write
first checks that the workdir was not moved or replaced while the run held it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax

from fashion_jax import checkpoints
from fashion_jax import config as config_lib
from fashion_jax import metrics as metrics_lib
from fashion_jax import workdir as workdir_lib


class Outputs:
    """A run's writers for `workdir` under `config`; only the main process (`is_main`) writes
    files other than checkpoints (which every process takes part in)."""

    def __init__(self, workdir: Path, config, is_main: bool | None = None):
        self.workdir = Path(workdir)
        self.is_main = jax.process_index() == 0 if is_main is None else is_main
        self.ckpt = checkpoints.Checkpoints(
            workdir, config.keep_checkpoints, config_lib.state_structure(config)
        )
        self.writer = metrics_lib.Writer(workdir, self.is_main)
        self.identity = workdir_lib.identity(workdir)

    def check_unmoved(self) -> None:
        """Raises WorkdirError if the workdir was moved or replaced since the run started."""
        workdir_lib.check_unmoved(self.workdir, self.identity)

    def restore(self, abstract_state, at_most: int | None = None):
        """(state, meta) of the newest valid checkpoint (at or before step `at_most`, if given),
        restored onto `abstract_state`'s shardings, or None when there is none."""
        return self.ckpt.restore_latest(abstract_state, at_most)

    def begin(self, config, info, step: int) -> None:
        """Records what the run is (config.json, dataset.json), once the config is known to work
        with the data and the checkpoint, and opens the metric writer at `step` (records past it,
        from an interrupted run, are dropped)."""
        if self.is_main:
            (self.workdir / workdir_lib.CONFIG_JSON).write_text(config_lib.to_json(config) + "\n")
            workdir_lib.write_dataset_info(self.workdir, info)
        self.writer.start(step, config)

    def write(self, record: dict[str, Any]) -> None:
        """Appends a metric record (metrics.jsonl and TensorBoard)."""
        self.check_unmoved()
        self.writer.write(record)

    def save(self, step: int, state, meta: dict, best: dict | None = None, wait=False) -> None:
        """Checkpoints `state` with `meta` at `step` (asynchronously unless `wait`); `best`: the
        metrics that pick the best checkpoint to keep."""
        self.check_unmoved()
        self.ckpt.save(step, state, meta, metrics=best)
        if wait:
            self.ckpt.wait()

    def finish(self, config, summary: dict[str, Any]) -> None:
        """Writes summary.json and closes the metric writer."""
        self.writer.finish(config, summary)
        if self.is_main:
            (self.workdir / workdir_lib.SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")

    def last_eval(self) -> dict[str, Any] | None:
        """The newest "eval" record on file (for a call in which no epoch ended)."""
        records = metrics_lib.read(self.workdir) if self.is_main else []
        return next((r for r in reversed(records) if r["type"] == "eval"), None)

    def close(self) -> None:
        """Waits for the checkpoints in flight and releases the checkpointer."""
        self.ckpt.close()
