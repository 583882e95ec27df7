"""Accuracy against wall-clock time: the Keras tutorial and fashion_jax's recipes, side by side.

Runs the tutorial's Keras code (10 epochs) and each recipe over several seeds, alternated
(Keras, recipe A seed 0, recipe B seed 0, Keras, recipe A seed 1, ...), each in a fresh process,
timed from launch to exit (imports, data, compilation, training and every evaluation included).
Prints mean ± std of test accuracy, parameters, FLOPs (XLA's cost analysis x steps), epochs and
wall time per recipe with its ratio to the tutorial's median wall time; appends everything to
results.jsonl and draws docs/figures/frontier_wall.png (test accuracy against wall minutes; the
compute figure, docs/figures/frontier.png, is benchmarks/seeds.py's). `python benchmarks/vs_keras.py
--table` sums up the ratios to Keras of every recorded run, each taken within its run.

  python benchmarks/frontier.py                                  # all recipes, seeds 0,1,2
  python benchmarks/frontier.py --recipes convnet_5ep --seeds 0 --keras-runs 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ROOT,
    TARGETS,
    accuracy_figure,
    record,
    run_keras,
    run_timed,
    runner_command,
    table,
    training_config,
)

FIGURE = ROOT / "docs" / "figures" / "frontier_wall.png"


def keras_row(epochs: int = 10) -> dict:
    records, rss, wall = run_keras(epochs)
    return {
        "system": "keras tutorial",
        "seed": None,
        "test_accuracy": records[-1]["test_accuracy"],
        "epochs": len(records),
        "wall_s": wall,
        "peak_rss_mb": rss,
    }


def run_recipe(recipe: str, seed: int) -> dict:
    config = ROOT / "experiments" / recipe / "config.py"
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / recipe
        cmd = runner_command(
            workdir, config=config, overrides={"seed": seed, "progress_bar": "false"}
        )
        _, rss, wall, code = run_timed(cmd, metrics_file=workdir / "metrics.jsonl")
        if code != 0:
            raise SystemExit(f"fashion_jax {recipe} (seed {seed}) failed")
        s = json.loads((workdir / "summary.json").read_text())
        config = training_config(workdir)
    return {
        "system": recipe,
        "seed": seed,
        "test_accuracy": s["test_accuracy"],
        "validation_accuracy": s.get("validation_accuracy"),
        "epochs": s["epochs"],
        "wall_s": wall,
        "train_s": s["train_seconds"],
        "params": s.get("params"),
        "forward_mflop": (s.get("forward_flops_per_image") or 0) / 1e6 or None,
        "train_pflop": (s.get("train_flops_total") or 0) / 1e15 or None,
        "peak_rss_mb": rss,
        "config": config,
    }


def summarize(rows: list[dict]) -> list[dict]:
    """One row per system: mean ± std of accuracy, median (min-max) of wall time, ratio to Keras."""
    keras_wall = statistics.median(r["wall_s"] for r in rows if r["system"] == "keras tutorial")
    out = []
    for system in dict.fromkeys(r["system"] for r in rows):
        rs = [r for r in rows if r["system"] == system]
        accs, walls = [r["test_accuracy"] for r in rs], [r["wall_s"] for r in rs]
        out.append(
            {
                "system": system,
                "runs": len(rs),
                "target": TARGETS.get(system),
                "test_acc_mean": statistics.fmean(accs),
                "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "params": rs[0].get("params"),
                "forward_mflop": rs[0].get("forward_mflop"),
                "train_pflop": rs[0].get("train_pflop"),
                "epochs": rs[0]["epochs"],
                "wall_s_median": statistics.median(walls),
                "wall_s_min": min(walls),
                "wall_s_max": max(walls),
                "wall_vs_keras": statistics.median(walls) / keras_wall,
            }
        )
    return out


def draw(rows: list[dict], path: Path = FIGURE) -> None:
    with accuracy_figure(
        path,
        "wall-clock minutes on this machine (launch to exit; log scale)",
        "Fashion-MNIST: accuracy against CPU time (dots: seeds; diamonds: mean)",
    ) as ax:
        for i, system in enumerate(dict.fromkeys(r["system"] for r in rows)):
            rs = [r for r in rows if r["system"] == system]
            color = "black" if system.startswith("keras") else f"C{i}"
            ax.scatter(
                [r["wall_s"] / 60 for r in rs],
                [r["test_accuracy"] for r in rs],
                color=color,
                alpha=0.5,
                s=18,
            )
            mx = statistics.median(r["wall_s"] for r in rs) / 60
            my = statistics.fmean(r["test_accuracy"] for r in rs)
            label = f"{system} ({my:.4f}, {mx:.1f} min)"
            ax.scatter([mx], [my], color=color, marker="D", s=50, label=label)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default="convnet_5ep,convnet_10ep,convnet_l_20ep")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--keras-runs", type=int, default=None, help="default: one per seed")
    args = parser.parse_args()
    recipes, seeds = args.recipes.split(","), [int(s) for s in args.seeds.split(",")]
    keras_runs = args.keras_runs if args.keras_runs is not None else len(seeds)
    rows = []
    for i, seed in enumerate(seeds):
        if i < keras_runs:
            rows.append(keras_row())
            print(table(rows[-1:], ["system", "test_accuracy", "wall_s"]), flush=True)
        for recipe in recipes:
            rows.append(run_recipe(recipe, seed))
            print(
                table(rows[-1:], ["system", "seed", "test_accuracy", "wall_s", "train_pflop"]),
                flush=True,
            )
    for _ in range(len(seeds), keras_runs):
        rows.append(keras_row())
    summary = summarize(rows)
    columns = [
        "system",
        "runs",
        "test_acc_mean",
        "test_acc_std",
        "params",
        "forward_mflop",
        "train_pflop",
        "epochs",
        "wall_s_median",
        "wall_s_min",
        "wall_s_max",
        "wall_vs_keras",
    ]
    print("\n" + table(summary, columns))
    draw(rows)
    print(f"figure: {FIGURE.relative_to(ROOT)}")
    record("frontier", rows, {"summary": summary, "args": vars(args)})


if __name__ == "__main__":
    main()
