"""Records the finished seeds of a sweep as `frontier_seed` rows of results.jsonl, with the machine.

  python -m fashion_jax.sweep --workdir W --config experiments/NAME/config.py --seeds 0,1,2
  python benchmarks/seeds.py --recipe NAME --sweep W --seeds 0        # as each seed finishes

Accuracy and compute come from each seed's summary.json (test split; training FLOPs by XLA's cost
analysis); its train seconds are recorded too, but only runs timed by frontier.py on a quiet
machine are speed figures. Prints every recorded seed of the recipe and their mean ± std.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

KIND = "frontier_seed"


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
        "forward_mflop": round(summary["forward_flops_per_image"] / 1e6, 2),
        "train_tflop": round(summary["train_flops_total"] / 1e12, 2),
        "train_s": round(summary["train_seconds"], 1),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True, help="the experiment's name (experiments/NAME)")
    parser.add_argument("--sweep", required=True, type=Path, help="the sweep's --workdir")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [row(args.recipe, args.sweep / f"seed_{s}") for s in seeds]
    config = json.loads((args.sweep / f"seed_{seeds[0]}" / "config.json").read_text())
    common.record(
        KIND,
        rows,
        {
            "model": f"{config['model']} {config.get('model_kwargs') or ''}".strip(),
            "command": f"python -m fashion_jax.sweep --workdir W --config "
            f"experiments/{args.recipe}/config.py --seeds {args.seeds}",
            "note": "train_tflop from summary.json (XLA cost analysis); train_s on a shared "
            "2-core VM, not a speed figure",
        },
    )
    every = recorded(args.recipe)
    print(common.table(every, ["system", "seed", "test_accuracy", "epochs", "train_tflop"]))
    accs = [r["test_accuracy"] for r in every]
    spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f"\n{args.recipe}: {statistics.fmean(accs):.4f} ± {spread:.4f} over {len(accs)} seed(s)")


if __name__ == "__main__":
    main()
