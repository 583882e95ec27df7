"""benchmarks/seeds.py: a sweep's seeds become results rows; the newest row per seed is read back,
rows recorded under a recipe's former name included."""

from __future__ import annotations

import json
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import common  # noqa: E402
import seeds  # noqa: E402


def seed_dir(sweep, seed, accuracy):
    w = sweep / f"seed_{seed}"
    w.mkdir(parents=True)
    (w / "config.json").write_text(
        json.dumps({"seed": seed, "validation_examples": 5000, "model": "convnet_l"})
    )
    summary = {
        "test_accuracy": accuracy,
        "epochs": 20,
        "params": 542554,
        "forward_flops_per_image": 31.1e6,
        "train_flops_total": 111.6e12,
        "train_seconds": 2000.0,
    }
    (w / "summary.json").write_text(json.dumps(summary))


def test_seeds_are_recorded_and_read_back_newest_first(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results.jsonl"
    old = {
        "benchmark": "frontier_seed",
        "rows": [{"system": "best", "seed": s, "test_accuracy": 0.5} for s in (0, 2)],
    }
    results.write_text(json.dumps(old) + "\n")
    monkeypatch.setattr(common, "RESULTS", results)
    sweep = tmp_path / "sweep"
    seed_dir(sweep, 0, 0.94)
    seed_dir(sweep, 1, 0.92)
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "seeds.py",
            "--recipe",
            "convnet_l_20ep",
            "--sweep",
            str(sweep),
            "--seeds",
            "0,1",
            "--figure",
            str(tmp_path / "f.png"),
        ],
    )
    seeds.main()
    entry = json.loads(results.read_text().splitlines()[-1])
    assert entry["machine"]["cpus"] >= 1
    assert [(r["seed"], r["train_examples"], r["train_tflop"]) for r in entry["rows"]] == [
        (0, 55000, 111.6),
        (1, 55000, 111.6),
    ]
    got = seeds.recorded("convnet_l_20ep")
    assert [(r["seed"], r["test_accuracy"]) for r in got] == [(0, 0.94), (1, 0.92), (2, 0.5)]
    out = capsys.readouterr().out
    assert "| convnet_l_20ep | 3 | 0.7867 | 0.2485 |" in out, out
    assert (tmp_path / "f.png").stat().st_size > 10_000
