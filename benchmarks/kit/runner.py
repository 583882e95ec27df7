"""One run of the real runner, `train.train_and_evaluate`, in a temporary workdir, with a budget.

The run stops through the loop's own `stop_when` hook: at the first eval record reaching the
target (when asked) or at the first log step or epoch end past the time budget. No report is
written (plots are not training). A SIGTERM during the run ends it with a clean save
(`preemption.Preempted`), raised on as `Terminated`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from fashion_jax import metrics as metrics_lib
from fashion_jax import preemption, train
from kit.results import Terminated


def run_runner(
    config, target: float | None, limit_s: float, stop_at_target: bool
) -> dict[str, Any]:
    """Trains `config` from scratch; returns {"records": metrics.jsonl's, "wall_s": the call,
    "hit_s": seconds from the call to the eval record first reaching `target` (or None),
    "status": "finished" | "stopped (target)" | "stopped (budget)", "summary"}."""
    t0 = time.perf_counter()
    seen: dict[str, Any] = {"hit_s": None, "reason": None}

    def stop_when(record) -> bool:
        now = time.perf_counter() - t0
        if (
            target is not None
            and seen["hit_s"] is None
            and record["type"] == "eval"
            and record.get("test_accuracy", -1.0) >= target
        ):
            seen["hit_s"] = now
            if stop_at_target:
                seen["reason"] = "target"
                return True
        if now > limit_s:
            seen["reason"] = "budget"
            return True
        return False

    with tempfile.TemporaryDirectory(prefix="fashion_jax_bench_") as tmp:
        workdir = Path(tmp) / "w"
        try:
            summary = train.train_and_evaluate(config, workdir, stop_when=stop_when, report=False)
        except preemption.Preempted as e:
            raise Terminated(e.signum) from None
        wall = time.perf_counter() - t0
        records = metrics_lib.read(workdir)
    status = f"stopped ({seen['reason']})" if seen["reason"] else "finished"
    return {
        "records": records,
        "wall_s": wall,
        "hit_s": seen["hit_s"],
        "status": status,
        "summary": summary,
    }


def window_step_s(records, batch: int) -> list[float]:
    """Seconds per step of each train window after the first (which includes compilation). The
    runner times a window up to its last dispatch: the wait for the device at the log step is in
    no window, so with few calls per window these read low (see epoch_step_s)."""
    return [
        batch / r["images_per_second"]
        for r in records
        if r["type"] == "train" and r.get("images_per_second")
    ][1:]


def steps_per_epoch(records) -> int | None:
    first = next((r for r in records if r["type"] == "eval"), None)
    return first["step"] // first["epoch"] if first else None


def epoch_step_s(records) -> list[float]:
    """Seconds per step of each epoch after the first, from epoch_seconds (the whole epoch's
    training: every dispatch, log step, checkpoint and the wait for the device; no evaluation)."""
    spe = steps_per_epoch(records)
    return [r["epoch_seconds"] / spe for r in records if r["type"] == "eval"][1:]
