"""Time to accuracy: the real runner on each recipe with a target test accuracy (common.TARGETS).

In a temporary workdir: the first epoch reaching the target, the wall time to it from the call
(data, compilation, evaluation included) and the training time (sum of epoch_seconds; and
steady-state, without compilation). A run stops once it reaches its target (--full-runs: train
every epoch) or when the budget is spent; what does not fit is reported as skipped.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from common import TARGETS, table
from fashion_jax import programs
from fashion_jax.errors import UserError
from kit.runner import epoch_step_s, run_runner, window_step_s
from kit.shared import N_TRAIN, data_overrides, one_line, override

COLUMNS = [
    "recipe",
    "model",
    "batch",
    "dtype",
    "k",
    "target",
    "status",
    "reached",
    "epoch",
    "wall_to_target_s",
    "train_to_target_s",
    "steady_to_target_s",
    "best_test_accuracy",
    "epochs_run",
    "est_full_s",
]


def train_examples(config) -> int:
    """Training examples the runner uses (validation held out, then the first max_train_examples)."""
    n = N_TRAIN - config.validation_examples
    return min(n, config.max_train_examples) if config.max_train_examples else n


def estimate_s(config, throughput_rows, platform) -> float | None:
    """Full-run training seconds from the closest throughput row (same model, dtype, platform k)."""
    k = programs.steps_per_call(config, platform)
    rows = [
        r
        for r in throughput_rows
        if "images_per_s" in r
        and r["model"] == config.model
        and r["dtype"] == config.compute_dtype
        and r["k"] == k
    ]
    if not rows:
        return None
    r = min(rows, key=lambda r: abs(math.log(r["batch"] / config.batch_size)))
    steps = config.num_epochs * (train_examples(config) // config.batch_size)
    return steps * config.batch_size / r["images_per_s"] + r["compile_s"]


def targets(args) -> dict[str, float]:
    out = dict(TARGETS)
    for item in args.target:
        name, _, value = item.partition("=")
        out[name] = float(value)
    return out


def plan(ctx) -> list[tuple[dict, Any, str | None]]:
    """[(row, config or None, reason it is skipped)]: `fast` first, then the cheapest estimates."""
    args = ctx.args
    goal = targets(args)
    wanted = args.recipes.split(",") if args.recipes else None
    throughput_rows = ctx.results.data.get("throughput", [])
    out = []
    for name, config in ctx.recipes:
        if wanted is not None and name not in wanted:
            continue
        row = {
            "recipe": name,
            "model": config.model,
            "batch": config.batch_size,
            "dtype": config.compute_dtype,
            "target": goal.get(name),
        }
        if name not in goal:
            out.append((row, None, "no target for this recipe (TARGETS or --target NAME=ACC)"))
            continue
        extra = {"progress_bar": "false", **data_overrides(args)}
        if args.time_to_acc_model != "recipe":
            extra["model"] = row["model"] = args.time_to_acc_model
        if args.smoke:
            extra.update(
                num_epochs=1,
                max_train_examples=args.smoke_examples,
                warmup_epochs=min(config.warmup_epochs, 1.0),
            )
        try:
            config = override(config, **extra)
        except UserError as e:
            out.append((row, None, str(e)))
            continue
        row.update(
            epochs=config.num_epochs,
            k=programs.steps_per_call(config, ctx.platform),
            est_full_s=estimate_s(config, throughput_rows, ctx.platform),
        )
        out.append((row, config, None))
    out.sort(
        key=lambda p: (
            p[0]["recipe"] != "fast",
            p[0].get("est_full_s") is None,
            p[0].get("est_full_s") or 0,
        )
    )
    return out


def time_to_acc_section(ctx) -> None:
    """Rows "time_to_accuracy": one per recipe (run, skipped or failed, with the reason)."""
    args, clock = ctx.args, ctx.clock
    budget_end = clock.elapsed() + min(args.budget_s, max(clock.left(), 0))
    print(f"\n## Time to accuracy (budget {budget_end - clock.elapsed():.0f} s)\n", flush=True)
    for row, config, reason in plan(ctx):
        left = budget_end - clock.elapsed()
        if reason is None and left < args.min_run_s:
            reason = f"budget spent ({left:.0f} s left)"
        est = row.get("est_full_s")
        if reason is None and est is not None and est / row["epochs"] > left:
            reason = f"one epoch is estimated at {est / row['epochs']:.0f} s, {left:.0f} s left"
        if reason is not None:
            ctx.results.add("time_to_accuracy", {**row, "status": "skipped", "skipped": reason})
            print(f"  {row['recipe']}: skipped ({reason})", flush=True)
            continue
        try:
            out = run_runner(config, row["target"], left, not args.full_runs)
        except UserError as e:  # E.g. no dataset here: this recipe fails, the next may not.
            ctx.results.add("time_to_accuracy", {**row, "status": "failed", "failed": one_line(e)})
            print(f"  {row['recipe']}: failed ({one_line(e)})", flush=True)
            continue
        r = {**row, **summarize(out, config, row["target"])}
        ctx.results.add("time_to_accuracy", r)
        print(
            f"  {row['recipe']}: {r['status']}, target {row['target']} "
            f"{'reached at epoch ' + str(r['epoch']) if r['reached'] else 'not reached'}, "
            f"best test accuracy {r['best_test_accuracy']}, wall {out['wall_s']:.1f} s",
            flush=True,
        )
    print(
        "\n### Time to accuracy (s; wall: from the call, data + compilation + evaluation included;"
        " train: sum of epoch_seconds; steady: without compilation)\n"
    )
    print(table(ctx.results.data.get("time_to_accuracy", []), COLUMNS), flush=True)


def summarize(out, config, target) -> dict[str, Any]:
    """The row of one run: status, whether and when it reached `target`, and its timings."""
    evals = [r for r in out["records"] if r["type"] == "eval"]
    hit = next((r for r in evals if r["test_accuracy"] >= target), None)
    per_epoch = epoch_step_s(out["records"])
    per_window = window_step_s(out["records"], config.batch_size)
    step_s = statistics.median(per_epoch or per_window) if per_epoch or per_window else None
    result = {
        "status": out["status"],
        "reached": hit is not None,
        "epochs_run": len(evals),
        "best_test_accuracy": max((r["test_accuracy"] for r in evals), default=None),
        "final_test_accuracy": evals[-1]["test_accuracy"] if evals else None,
        "run_wall_s": out["wall_s"],
        "steady_step_ms": step_s * 1e3 if step_s else None,
    }
    if hit is not None:
        train_s = sum(r["epoch_seconds"] for r in evals if r["step"] <= hit["step"])
        result.update(
            epoch=hit["epoch"],
            wall_to_target_s=out["hit_s"],
            train_to_target_s=train_s,
            steady_to_target_s=hit["step"] * step_s if step_s else None,
            other_to_target_s=out["hit_s"] - train_s if out["hit_s"] is not None else None,
        )
    return result
