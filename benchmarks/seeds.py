"""The accuracy frontier in compute: each recipe's seeds, recorded, summed up and drawn.

  python -m fashion_jax.sweep --workdir W --config experiments/NAME/config.py --seeds 0,1,2
  python benchmarks/seeds.py --recipe NAME --sweep W --seeds 0     # record seeds as they finish
  (--together when the seeds trained as one population; --note TEXT adds to the record's note)
  python benchmarks/seeds.py                                       # the table and the figure only

Recording appends `frontier_seed` rows (with the machine recording them, and `trained_on`, the
device each seed trained on) to results.jsonl from each seed's summary.json: test accuracy, and
training FLOPs by XLA's cost analysis (on the CPU backend for any device), which do not depend on
the machine's load. Its train seconds are kept too, but only frontier.py's runs (alternated with
Keras on a quiet machine) are speed figures. Then prints, for every recipe with a target, the mean
± std over its recorded seeds against the target, and draws docs/figures/frontier.png (test
accuracy against training TFLOP, with the targets).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

KIND = "frontier_seed"
FIGURE = common.ROOT / "docs" / "figures" / "frontier.png"
# Compute limits of the targets (TFLOP of training): half the tutorial's 15.1, the tutorial's, and
# a tenth of a 300-epoch ResNet-20's ~3.3 PFLOP.
BUDGETS = {"convnet_5ep": 7.5, "convnet_10ep": 15.1, "convnet_l_55ep": 330.0}


def _scaled(flops, unit: float) -> float | None:
    """FLOPs in `unit`s, rounded; None where the run could not count them."""
    return round(flops / unit, 2) if flops else None


def row(recipe: str, workdir: Path) -> dict:
    """One seed's row from its workdir (summary.json, config.json)."""
    summary = json.loads((workdir / "summary.json").read_text())
    config = json.loads((workdir / "config.json").read_text())
    return {
        "system": recipe,
        "seed": config["seed"],
        "test_accuracy": summary["test_accuracy"],
        "epochs": summary["epochs"],
        "train_examples": 60000 - config["validation_examples"],
        "params": summary["params"],
        "forward_mflop": _scaled(summary.get("forward_flops_per_image"), 1e6),
        "train_tflop": _scaled(summary.get("train_flops_total"), 1e12),
        "train_s": round(summary["train_seconds"], 1),
        "trained_on": summary.get("device_kind") or summary.get("platform"),
    }


def recorded(recipe: str) -> list[dict]:
    """Every recorded seed row of `recipe` (or of its former name), the newest per seed."""
    rows: dict[int, dict] = {}
    for line in common.RESULTS.read_text().splitlines():
        entry = json.loads(line)
        if entry["benchmark"] == KIND:
            for r in entry["rows"]:
                if common.RENAMED.get(r["system"], r["system"]) == recipe:
                    rows[r["seed"]] = {**r, "system": recipe}
    return [rows[s] for s in sorted(rows)]


def summarize() -> list[dict]:
    """Per recipe with a budget: seeds, mean ± std of test accuracy, TFLOP, target, met or not."""
    out = []
    for recipe, budget in BUDGETS.items():
        rows = recorded(recipe)
        if not rows:
            continue
        accs = [r["test_accuracy"] for r in rows]
        mean, std = statistics.fmean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0
        out.append(
            {
                "recipe": recipe,
                "seeds": len(rows),
                "test_acc_mean": round(mean, 4),
                "test_acc_std": round(std, 4),
                "params": rows[-1].get("params"),
                "epochs": rows[-1].get("epochs"),
                "train_examples": rows[-1].get("train_examples"),
                "train_tflop": rows[-1].get("train_tflop"),
                "target": f">= {common.TARGETS[recipe]} at <= {budget:g}",
                "met": mean >= common.TARGETS[recipe]
                and rows[-1]["train_tflop"] is not None
                and rows[-1]["train_tflop"] <= budget,
                "accuracies": accs,
            }
        )
    return out


def draw(summary: list[dict], path: Path = FIGURE) -> None:
    with common.accuracy_figure(
        path,
        "training compute, TFLOP (XLA cost analysis; log scale)",
        "Fashion-MNIST: accuracy against training compute (stars: targets)",
    ) as ax:
        for i, r in enumerate(summary):
            color, tflop, accs = f"C{i}", r["train_tflop"], r["accuracies"]
            if tflop is None:  # FLOPs not counted: no place on a compute axis.
                continue
            ax.scatter([tflop] * len(accs), accs, color=color, s=14, alpha=0.5)
            mean, std = r["test_acc_mean"], r["test_acc_std"]
            label = f"{r['recipe']}: {mean:.4f} ± {std:.4f} ({r['seeds']} seeds)"
            ax.errorbar(
                [tflop], [mean], yerr=[std], color=color, marker="D", capsize=4, label=label
            )
            budget, target = BUDGETS[r["recipe"]], common.TARGETS[r["recipe"]]
            ax.scatter([budget], [target], color=color, marker="*", s=120, edgecolor="black")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", help="the experiment's name (experiments/NAME) to record")
    parser.add_argument("--sweep", type=Path, help="the sweep's --workdir")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--figure", type=Path, default=FIGURE)
    parser.add_argument("--together", action="store_true", help="the seeds trained as a population")
    parser.add_argument("--note", default="", help="appended to the record's note")
    args = parser.parse_args()
    if args.recipe:
        if args.sweep is None:
            parser.error("--recipe needs --sweep")
        seeds = [int(s) for s in args.seeds.split(",")]
        record(args.recipe, args.sweep, seeds, args.seeds, args.together, args.note)
    summary = summarize()
    columns = ["recipe", "seeds", "test_acc_mean", "test_acc_std", "params", "epochs"]
    print(common.table(summary, [*columns, "train_examples", "train_tflop", "target", "met"]))
    draw(summary, args.figure)
    print(f"figure: {os.path.relpath(args.figure, common.ROOT)}")


def record(
    recipe: str, sweep: Path, seeds: list[int], spelled: str, together=False, note=""
) -> None:
    rows = [row(recipe, sweep / f"seed_{s}") for s in seeds]
    config = json.loads((sweep / f"seed_{seeds[0]}" / "config.json").read_text())
    common.record(
        KIND,
        rows,
        {
            "model": f"{config['model']} {config.get('model_kwargs') or ''}".strip(),
            "command": f"python -m fashion_jax.sweep --workdir W --config "
            f"experiments/{recipe}/config.py --seeds {spelled}" + (" --together" * together),
            "note": "train_tflop from summary.json (XLA cost analysis); train_s on the machine "
            "each row names (trained_on; a shared VM when cpu), not a speed figure"
            + (f"; {note}" if note else ""),
        },
    )


if __name__ == "__main__":
    main()
