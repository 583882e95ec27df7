"""fashion_jax against the tutorial's Keras code, side by side on this machine, in one run.

Alternates the runs (Keras, ours, Keras, ours, ...), each in a fresh process, and reports per system:
steady epoch time at batch 64 (median of epochs 2..N, training only), images/s, wall seconds from
launch (imports, data, compilation included) until the test accuracy first reaches 0.90 and 0.92,
final test accuracy and peak resident memory; then our/Keras ratios (our median over Keras' median
in this run). Appends to results.jsonl.

Our runs start with an empty XLA compilation cache of their own (a first launch: every program
compiled); with --cached each recipe is then launched again on that cache ("fashion_jax R, cached":
a relaunch, as the runner's default cache in ~/.cache/fashion_jax/xla makes every launch after
the first).

--table runs nothing: it prints, per recipe and measure, the ratios ours / Keras over every recorded
run (this script's and benchmarks/frontier.py's), each computed within its run, as median
(min-max, runs), with the runs' dates.

  python benchmarks/vs_keras.py                 # base and fast recipes vs Keras, 10 epochs each
  python benchmarks/vs_keras.py --epochs 3 --recipes base
  python benchmarks/vs_keras.py --recipes fast --cached --rounds 2
  python benchmarks/vs_keras.py --table         # the recorded same-run ratios
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ROOT,
    first_time_reaching,
    keras_ratio_table,
    keras_ratios,
    record,
    run_keras,
    run_timed,
    runner_command,
    table,
    training_config,
)

COLUMNS = [
    "system",
    "epochs",
    "epoch_s",
    "images_per_s",
    "to_0.90_s",
    "to_0.92_s",
    "final_test_accuracy",
    "peak_rss_mb",
]


def summarize(name, records, rss, batch, n_train=60000):
    epoch_times = [r["epoch_seconds"] for r in records[1:]] or [r["epoch_seconds"] for r in records]
    epoch_s = statistics.median(epoch_times) if epoch_times else None
    steps = n_train // batch if name.startswith("fashion_jax") else -(-n_train // batch)
    return {
        "system": name,
        "epochs": len(records),
        "epoch_s": epoch_s,
        "images_per_s": steps * batch / epoch_s if epoch_s else None,
        "to_0.90_s": first_time_reaching(records, 0.90),
        "to_0.92_s": first_time_reaching(records, 0.92),
        "final_test_accuracy": records[-1]["test_accuracy"] if records else None,
        "peak_rss_mb": rss,
    }


def keras_row(epochs):
    records, rss, _ = run_keras(epochs)
    return summarize("keras (tutorial)", records, rss, 64)


def run_ours(recipe, epochs, cache: Path, label=""):
    """A fresh run of experiments/`recipe` with `cache` as its XLA compilation cache."""
    config = ROOT / "experiments" / recipe / "config.py"
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / recipe
        overrides = {"progress_bar": "false", **({"num_epochs": epochs} if epochs else {})}
        cmd = runner_command(workdir, config=config, overrides=overrides)
        env = {"JAX_COMPILATION_CACHE_DIR": str(cache)}
        records, rss, _, code = run_timed(cmd, metrics_file=workdir / "metrics.jsonl", env=env)
        assert code == 0, f"fashion_jax {recipe} failed"
        config = training_config(workdir)
    return {
        **summarize(f"fashion_jax {recipe}{label}", records, rss, config["batch_size"]),
        "config": config,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--epochs", type=int, default=10, help="epochs for Keras and the base recipe"
    )
    parser.add_argument("--recipes", default="base,fast")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--cached", action="store_true", help="relaunch each recipe on its compilation cache"
    )
    parser.add_argument(
        "--table", action="store_true", help="print the recorded same-run ratios; run nothing"
    )
    args = parser.parse_args()
    if args.table:
        print(keras_ratio_table(keras_ratios()))
        return
    rows = []
    for _ in range(args.rounds):
        rows.append(keras_row(args.epochs))
        print(table(rows[-1:], COLUMNS), flush=True)
        for recipe in args.recipes.split(","):
            epochs = args.epochs if recipe == "base" else 0
            with tempfile.TemporaryDirectory() as cache:
                for label in ["", ", cached"] if args.cached else [""]:
                    rows.append(run_ours(recipe, epochs, Path(cache), label))
                    print(table(rows[-1:], COLUMNS), flush=True)
    keras = [r for r in rows if r["system"].startswith("keras")]
    ratios = []
    for r in rows:
        if r in keras:
            continue
        ratio = {"system": r["system"] + " / keras"}
        for col in ("epoch_s", "to_0.90_s", "to_0.92_s", "peak_rss_mb"):
            theirs = [k[col] for k in keras if k.get(col)]
            ratio[col] = r[col] / statistics.median(theirs) if r.get(col) and theirs else None
        ratios.append(ratio)
    print("\n" + table(rows, COLUMNS))
    print("\nratios (ours / keras; < 1 means ours is faster or smaller):")
    print(table(ratios, ["system", "epoch_s", "to_0.90_s", "to_0.92_s", "peak_rss_mb"]))
    record("vs_keras", rows, {"ratios": ratios, "args": vars(args)})


if __name__ == "__main__":
    main()
