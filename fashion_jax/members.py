"""The members of a sweep: which seeds, whether a member's run has finished, training one, and
the table of their results (mean ± std over seeds). `python -m fashion_jax.sweep` is the command
line over these.

A member trains in its own ordinary workdir, exactly like `python -m fashion_jax.run` with its
overrides, so `predict`, `report` and `export` work on it.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from pathlib import Path

from fashion_jax import config as config_lib
from fashion_jax import formatting
from fashion_jax import workdir as workdir_lib
from fashion_jax.errors import UserError

SWEEP_FILE = "sweep.json"
GRID_FILE = "grid.json"  # The sweep's grid, so a rerun in the same folder is the same sweep.
# Keys a grid may not vary: they change the data, the shapes or the length (compare runs of
# different models or data as separate sweeps), or where things live; seeds come from --seeds.
NOT_IN_GRID = (
    "model", "model_kwargs", "model_dir", "batch_size", "num_epochs", "dataset", "data_dir",
    "idx_dir", "download", "max_train_examples", "validation_examples", "eval_batch_size", "seed",
    "distributed", "coordinator_address", "num_processes", "process_id",
    "distributed_timeout_seconds",
)  # fmt: skip


def parse_grid(items: list[str], base) -> dict[str, list[str]]:
    """["KEY=V1,V2", ...] -> {KEY: [V1, V2]}, each value checked against `base`'s schema (type,
    range). Raises UserError, in one line, for a malformed item, an unknown key, a key the grid
    may not vary (`NOT_IN_GRID`) or a bad value."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not sep or not key or not values:
            raise UserError(
                f"--grid {item!r}: write KEY=V1,V2,..., e.g. learning_rate=0.001,0.003."
            )
        if key in grid:
            raise UserError(f"--grid names {key} twice; give all its values in one --grid.")
        if key in NOT_IN_GRID:
            why = (
                "--seeds sets it"
                if key == "seed"
                else "it changes the data, the shapes or the length of the program"
            )
            raise UserError(
                f"--grid {key}: a grid cannot vary {key} ({why}); run one sweep per {key} instead."
            )
        for value in values:
            try:
                config_lib.validate(config_lib.apply_overrides(base, {key: value}))
            except UserError as e:
                raise UserError(f"--grid {key}={value}: {e}") from None
        grid[key] = list(dict.fromkeys(values))
    return grid


def plan(
    base, seeds: list[int], grid: dict[str, list[str]], root: Path
) -> list[tuple[dict, Path, object]]:
    """The members: (grid point {key: value text}, workdir, config) for every grid point x seed,
    in that order. Without a grid a member's folder is `seed_S`, else e.g.
    `learning_rate=0.003-seed_1`."""
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    members = []
    for point in points:
        for seed in seeds:
            config = config_lib.validate(
                config_lib.apply_overrides(base, {**point, "seed": str(seed)})
            )
            name = "-".join([*(f"{k}={v}" for k, v in point.items()), f"seed_{seed}"])
            members.append((point, root / name, config))
    return members


def check_grid(root: Path, grid: dict[str, list[str]]) -> None:
    """Refuses a sweep folder that holds a sweep over another grid (nothing written)."""
    path = root / GRID_FILE
    workdir_lib.check_kinds([path, root / SWEEP_FILE])
    old = workdir_lib.read_json(path)
    if old is not None and old != grid:
        raise UserError(
            f"{root} holds a sweep over another grid ({old or 'seeds only'}); this one is "
            f"{grid or 'seeds only'}. Use another --workdir (more seeds of the same grid may be added)."
        )


def record_grid(root: Path, grid: dict[str, list[str]]) -> None:
    """Records the sweep's grid in its folder (`check_grid` reads it on a rerun)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / GRID_FILE).write_text(json.dumps(grid) + "\n")


def run_together(members, ready=None, data=None, layout=None) -> list[dict]:
    """Trains the unfinished `plan` members as one population (`population.train_population`);
    returns every member's row, the wall time shared out equally between the members trained."""
    import jax

    from fashion_jax import population

    todo = [(w, c) for _, w, c in members if finished(w, c) is None]
    start = time.perf_counter()
    results = {}
    if todo:
        summaries = population.train_population(
            [c for _, c in todo], [w for w, _ in todo], data=data, ready=ready, layout=layout
        )
        share = (time.perf_counter() - start) / len(todo)
        for (workdir, _), summary in zip(todo, summaries):
            summary["wall_seconds"] = share
            results[workdir] = summary
            if jax.process_index() == 0:
                (workdir / workdir_lib.SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return [row(point, c, results.get(w) or finished(w, c) or {}) for point, w, c in members]


def row(point: dict, config, summary: dict) -> dict:
    """A member's row of the sweep table: its grid point, seed and results."""
    return {
        **point,
        "seed": config.seed,
        "test_accuracy": summary.get("test_accuracy"),
        "validation_accuracy": summary.get("validation_accuracy"),
        "train_seconds": summary.get("train_seconds"),
        "wall_seconds": summary.get("wall_seconds"),
        "train_flops_total": summary.get("train_flops_total"),
        **({"stopped": summary["stopped"]} if "stopped" in summary else {}),
    }


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
    """The summary of a finished run of `config` in `workdir`, else None (also when the run was
    made by other model code: training it then refuses in one line, as `run` does)."""
    try:
        summary = json.loads((workdir / workdir_lib.SUMMARY).read_text())
        # The keys that define the training must match; the others (RESUMABLE_KEYS: logging,
        # checkpoints, data location, ...) may differ without making the run another run.
        config_lib.check_resume(workdir_lib.load_config(workdir), config, workdir)
        workdir_lib.check_code(workdir, config)  # Edited model code: not this member's run.
    except (OSError, ValueError, UserError):
        return None
    return summary if summary.get("epochs") == config.num_epochs else None


def run_one(point: dict, workdir: Path, config) -> dict:
    """Trains (or resumes) one member alone; returns its row with the wall time of this call."""
    from fashion_jax.train import train_and_evaluate

    summary = finished(workdir, config)
    start = time.perf_counter()
    if summary is None:
        summary = train_and_evaluate(config, workdir)
        summary["wall_seconds"] = time.perf_counter() - start
        (workdir / workdir_lib.SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return row(point, config, summary)


def mean_std(values) -> tuple[float | None, float | None]:
    """(mean, sample std) of the values that are not None; (None, None) if there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(rows: list[dict], grid: dict | None = None) -> str:
    """One line per member (its grid values, seed and results), the mean ± std over seeds of each
    grid point, then over all members."""
    n, keys = formatting.number, list(grid or {})
    lines = [
        formatting.table(
            [*keys, "seed", "test acc", "val acc", "train s", "wall s"],
            [
                [
                    *(r[k] for k in keys),
                    r["seed"],
                    n(r["test_accuracy"]) if "stopped" not in r else "stopped",
                    n(r["validation_accuracy"]),
                    n(r["train_seconds"], "{:.1f}"),
                    n(r["wall_seconds"], "{:.1f}"),
                ]
                for r in rows
            ],
            align="r" * (len(keys) + 5),
        )
    ]
    if keys:
        lines += [
            "",
            formatting.table(
                [*keys, "seeds", "test acc mean ± std"],
                [
                    [
                        *(p[k] for k in keys),
                        p["seeds"],
                        f"{n(p['test_accuracy_mean'])} ± {n(p['test_accuracy_std'])}",
                    ]
                    for p in point_stats(rows, keys)
                ],
                align="r" * (len(keys) + 2),
            ),
        ]
    for key, f in (
        ("test_accuracy", "{:.4f}"),
        ("wall_seconds", "{:.1f}"),
        ("train_seconds", "{:.1f}"),
    ):
        m, s = mean_std(r[key] for r in rows)
        lines.append(f"\n{key}: {n(m, f)} ± {n(s, f)} over {len(rows)} member(s)")
    return "\n".join(lines)


def point_stats(rows: list[dict], keys: list[str]) -> list[dict]:
    """Per grid point: its values, its seed count and its test accuracy's mean and std."""
    points: dict[tuple, list[dict]] = {}
    for r in rows:
        points.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for point, members in points.items():
        m, s = mean_std(r["test_accuracy"] for r in members)
        out.append(
            {
                **dict(zip(keys, point)),
                "seeds": len(members),
                "test_accuracy_mean": m,
                "test_accuracy_std": s,
            }
        )
    return out


def sweep_json(rows: list[dict], grid: dict | None = None, together: bool = False) -> str:
    """The sweep.json text: the rows (key "seeds", one per member), the grid, the mean ± std per
    grid point and of all members' test accuracy and wall time."""
    m, s = mean_std(r["test_accuracy"] for r in rows)
    wm, ws = mean_std(r["wall_seconds"] for r in rows)
    keys = list(grid or {})
    result = {
        "seeds": rows,
        "grid": grid or {},
        "together": together,
        "points": point_stats(rows, keys),
        "test_accuracy_mean": m,
        "test_accuracy_std": s,
        "wall_seconds_mean": wm,
        "wall_seconds_std": ws,
    }
    return json.dumps(result, indent=2) + "\n"
