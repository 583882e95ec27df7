"""The members of a sweep: which seeds, whether a member's run has finished, training one, and
the table of their results (mean ± std over seeds). `python -m fashion_jax.sweep` is the command
line over these.

A member trains in its own ordinary workdir, exactly like `python -m fashion_jax.run` with its
overrides, so `predict`, `report` and `export` work on it.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from fashion_jax import config as config_lib
from fashion_jax import formatting
from fashion_jax import workdir as workdir_lib
from fashion_jax.errors import UserError

SWEEP_FILE = "sweep.json"


def parse_seeds(text: str) -> list[int]:
    """ "0,1,2" or "0-4" -> [0, 1, 2] / [0, 1, 2, 3, 4]."""
    try:
        if "-" in text:
            lo, hi = text.split("-")
            seeds = list(range(int(lo), int(hi) + 1))
        else:
            seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"--seeds {text!r}: give distinct seeds >= 0, like 0,1,2 or 0-4.")
    return seeds


def finished(workdir: Path, config) -> dict | None:
    """The summary of a finished run of `config` in `workdir`, else None."""
    try:
        summary = json.loads((workdir / workdir_lib.SUMMARY).read_text())
        # The keys that define the training must match; the others (RESUMABLE_KEYS: logging,
        # checkpoints, data location, ...) may differ without making the run another run.
        config_lib.check_resume(workdir_lib.load_config(workdir), config, workdir)
    except (OSError, ValueError, UserError):
        return None
    return summary if summary.get("epochs") == config.num_epochs else None


def run_seed(config, workdir: Path) -> dict:
    """Trains (or resumes) one seed; returns its row with the wall time of this call."""
    from fashion_jax.train import train_and_evaluate

    summary = finished(workdir, config)
    start = time.perf_counter()
    if summary is None:
        summary = train_and_evaluate(config, workdir)
        summary["wall_seconds"] = time.perf_counter() - start
        (workdir / workdir_lib.SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return {
        "seed": config.seed,
        "test_accuracy": summary["test_accuracy"],
        "validation_accuracy": summary.get("validation_accuracy"),
        "train_seconds": summary["train_seconds"],
        "wall_seconds": summary.get("wall_seconds"),
        "train_flops_total": summary.get("train_flops_total"),
    }


def mean_std(values) -> tuple[float | None, float | None]:
    """(mean, sample std) of the values that are not None; (None, None) if there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(rows: list[dict]) -> str:
    """One line per seed, then the mean ± std of test accuracy and times."""
    lines = [
        formatting.table(
            ["seed", "test acc", "val acc", "train s", "wall s"],
            [
                [
                    r["seed"],
                    formatting.number(r["test_accuracy"]),
                    formatting.number(r["validation_accuracy"]),
                    formatting.number(r["train_seconds"], "{:.1f}"),
                    formatting.number(r["wall_seconds"], "{:.1f}"),
                ]
                for r in rows
            ],
            align="rrrrr",
        )
    ]
    for key, f in (
        ("test_accuracy", "{:.4f}"),
        ("wall_seconds", "{:.1f}"),
        ("train_seconds", "{:.1f}"),
    ):
        m, s = mean_std(r[key] for r in rows)
        n = formatting.number
        lines.append(f"\n{key}: {n(m, f)} ± {n(s, f)} over {len(rows)} seed(s)")
    return "\n".join(lines)


def sweep_json(rows: list[dict]) -> str:
    """The sweep.json text: the rows and the mean ± std of test accuracy and wall time."""
    m, s = mean_std(r["test_accuracy"] for r in rows)
    wm, ws = mean_std(r["wall_seconds"] for r in rows)
    result = {
        "seeds": rows,
        "test_accuracy_mean": m,
        "test_accuracy_std": s,
        "wall_seconds_mean": wm,
        "wall_seconds_std": ws,
    }
    return json.dumps(result, indent=2) + "\n"
