"""What one run writes into its workdir, in one place: checkpoints, metric records, config.json,
dataset.json, model.json and summary.json (the layout is `workdir`'s docstring).

`Outputs` knows nothing of the device programs: the train loop hands it host values and pytrees.
A population of runs has one `Outputs` per member, each its own ordinary workdir. Every write
first checks that the workdir was not moved or replaced while the run held it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax

from fashion_jax import checkpoints, fingerprints
from fashion_jax import config as config_lib
from fashion_jax import metrics as metrics_lib
from fashion_jax import workdir as workdir_lib
from fashion_jax.errors import CheckpointError

STICKY = ("continue_with_changed_code",)  # Once true in a run's config.json, kept true there.


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
        restored onto `abstract_state`'s shardings, or None when there is none. Raises
        CheckpointError, before reading any checkpoint, when model.json records other parameters
        than `abstract_state`'s model has (the model's code or the data's classes changed)."""
        recorded = (workdir_lib.read_model_info(self.workdir) or {}).get("params")
        if isinstance(recorded, dict) and isinstance(recorded.get("shapes"), dict):
            now = fingerprints.params(abstract_state)["shapes"]
            differences = fingerprints.shape_differences(recorded["shapes"], now)
            if differences and self.ckpt.steps():
                raise CheckpointError(
                    f"the run in {self.workdir} trained a model with other parameters than this "
                    f"config builds ({'; '.join(differences)}): its checkpoints cannot be restored "
                    "into it. Use another --workdir, or pass --restart to start afresh (the old "
                    "outputs are moved to a backup folder, not deleted)."
                )
        return self.ckpt.restore_latest(abstract_state, at_most)

    def begin(
        self, config, info, step: int, *, abstract_state=None, data: dict | None = None
    ) -> None:
        """Records what the run is (config.json; dataset.json with `data`, a `fingerprints.data`
        record; model.json with the model's code and `abstract_state`'s parameter structure),
        once the config is known to work with the data and the checkpoint, and opens the metric
        writer at `step` (records past it, from an interrupted run, are dropped)."""
        if self.is_main:
            saved = json.loads(config_lib.to_json(config))
            previous = workdir_lib.read_json(self.workdir / workdir_lib.CONFIG_JSON) or {}
            saved.update({k: True for k in STICKY if previous.get(k) is True})
            (self.workdir / workdir_lib.CONFIG_JSON).write_text(
                json.dumps(saved, indent=2, sort_keys=True) + "\n"
            )
            workdir_lib.write_dataset_info(self.workdir, info, data)
            if abstract_state is not None:
                code = fingerprints.code(config, (str(self.workdir),))
                params = fingerprints.params(abstract_state)
                workdir_lib.write_model_info(self.workdir, config, code, params, step)
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
