"""SeedCNN training throughput as the runner runs it (data on device, update, metrics), after warm-up.

For each batch size, runs `python -m fashion_jax.run` for 2 epochs on all 60,000 training images in
a fresh workdir and reports epoch 2 (compilation happens in epoch 1): seconds per epoch, images/s and
test accuracy. Appends to results.jsonl.

  python benchmarks/throughput.py [--batch_sizes 64,256,1024] [--epochs 2]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record, run_timed, runner_command, table  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch_sizes", default="64,256,1024")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--model", default="seed_cnn")
    args = parser.parse_args()
    rows = []
    for batch in map(int, args.batch_sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp) / "w"
            lr = 1e-3 * (batch / 64) ** 0.5  # Square-root scaling; accuracy is not the point here.
            cmd = runner_command(
                workdir,
                overrides={
                    "model": args.model,
                    "batch_size": batch,
                    "learning_rate": lr,
                    "num_epochs": args.epochs,
                    "progress_bar": "false",
                },
            )
            records, rss, wall, code = run_timed(cmd, metrics_file=workdir / "metrics.jsonl")
            assert code == 0
            summary = json.loads((workdir / "summary.json").read_text())
        steady = records[-1]
        steps = 60000 // batch
        rows.append(
            {
                "model": args.model,
                "batch": batch,
                "devices": summary["devices"],
                "platform": summary["platform"],
                "epoch1_s": records[0]["epoch_seconds"],
                "epoch_s": steady["epoch_seconds"],
                "images_per_s": steps * batch / steady["epoch_seconds"],
                "test_accuracy": steady["test_accuracy"],
                "peak_rss_mb": rss,
                "wall_s": wall,
            }
        )
        print(table(rows[-1:], list(rows[-1])), flush=True)
    print("\n" + table(rows, list(rows[0])))
    record("throughput", rows, {"args": vars(args)})


if __name__ == "__main__":
    main()
