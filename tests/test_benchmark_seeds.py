"""benchmarks/seeds.py: a sweep's seeds become results rows; the newest row per seed is read back,
rows recorded under a recipe's former name included. benchmarks/results.jsonl: every record names a
command that runs from a clone, and the ours/Keras ratios are computed within one recorded run."""

from __future__ import annotations

import json
import re
import shlex
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
        "platform": "gpu",
        "device_kind": "NVIDIA H200",
    }
    (w / "summary.json").write_text(json.dumps(summary))


def test_seeds_are_recorded_and_read_back_newest_first(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results.jsonl"
    old = {
        "benchmark": "frontier_seed",
        "rows": [{"system": "frontier_094", "seed": s, "test_accuracy": 0.5} for s in (0, 2)],
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
            "convnet_10ep",
            "--sweep",
            str(sweep),
            "--seeds",
            "0,1",
            "--together",
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
    assert {r["trained_on"] for r in entry["rows"]} == {"NVIDIA H200"}
    assert entry["command"].endswith("--seeds 0,1 --together"), entry["command"]
    got = seeds.recorded("convnet_10ep")
    assert [(r["seed"], r["test_accuracy"]) for r in got] == [(0, 0.94), (1, 0.92), (2, 0.5)]
    out = capsys.readouterr().out
    assert "| convnet_10ep | 3 | 0.7867 | 0.2485 |" in out, out
    assert (tmp_path / "f.png").stat().st_size > 10_000


def test_every_recorded_command_runs_from_a_clone():
    """Each record of results.jsonl names its command: `python benchmarks/X.py ...` or `python -m
    fashion_jax.M ...`, with files that exist in the repository and no absolute folder."""
    lines = common.RESULTS.read_text().splitlines()
    assert lines
    for number, line in enumerate(lines, 1):
        command = json.loads(line).get("command")
        assert command, f"results.jsonl line {number} names no command"
        words = shlex.split(command)
        assert words[0] == "python", (number, command)
        assert not [w for w in words if re.match(r"(--[\w.-]+=)?[/~]", w)], (number, command)
        if words[1] == "-m":
            assert (ROOT / (words[2].replace(".", "/") + ".py")).is_file(), (number, command)
        else:
            assert words[1].startswith("benchmarks/"), (number, command)
            assert (ROOT / words[1]).is_file(), (number, command)
        if "--config" in words:
            assert (ROOT / words[words.index("--config") + 1]).is_file(), (number, command)


def test_recorded_command_is_relative_to_the_repository(tmp_path, monkeypatch):
    results = tmp_path / "results.jsonl"
    monkeypatch.setattr(common, "RESULTS", results)
    argv = [
        str(ROOT / "benchmarks" / "frontier.py"),
        "--sweep",
        str(tmp_path / "sweep"),
        f"--figure={ROOT / 'docs' / 'figures' / 'f.png'}",
        f"--other={tmp_path / 'elsewhere'}",
        str(tmp_path / "sweep"),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    common.record("frontier", [])
    common.record("frontier_seed", [], {"command": "python -m fashion_jax.sweep --workdir W"})
    first, second = (json.loads(line) for line in results.read_text().splitlines())
    assert first["command"] == (
        "python benchmarks/frontier.py --sweep W --figure=docs/figures/f.png --other=W2 W"
    )
    assert second["command"] == "python -m fashion_jax.sweep --workdir W"


def keras_record(date, benchmark, rows):
    return json.dumps({"benchmark": benchmark, "machine": {"date": date}, "rows": rows})


def test_a_former_network_timed_in_two_recipes_gets_a_row_per_recipe(tmp_path):
    """A network replaced after two recipes ran on it: each of its recipes keeps its own row, named
    by its training FLOPs, instead of one row mixing both."""
    results = tmp_path / "results.jsonl"
    runs = [(160, 0.0130, 100.0), (160, 0.0148, 150.0), (170, 0.0144, 120.0)]
    results.write_text(
        "".join(
            keras_record(f"2026-12-0{day}T10:00:00+00:00", "frontier", [
                {"system": "keras tutorial", "wall_s": 200.0},
                {"system": "convnet_10ep", "seed": 0, "wall_s": wall, "params": params,
                 "train_pflop": pflop},
            ]) + "\n"
            for day, (params, pflop, wall) in enumerate(runs, start=1)
        )
    )  # fmt: skip
    lines = common.keras_ratio_table(common.keras_ratios(results)).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| `convnet_10ep`",
        "| `convnet_10ep`, former 160-parameter network at 13 TFLOP",
        "| `convnet_10ep`, former 160-parameter network at 14.8 TFLOP",
    ]
    assert [line.split(" | ")[1] for line in lines[2:]] == [
        "0.60 (1 run)",
        "0.50 (1 run)",
        "0.75 (1 run)",
    ]


def test_keras_ratios_are_taken_within_one_run(tmp_path):
    """Each ratio divides our median by Keras' median of the same record, never another record's."""
    results = tmp_path / "results.jsonl"
    slow_day = [
        {"system": "keras (tutorial)", "epoch_s": 40.0, "to_0.90_s": 200.0, "peak_rss_mb": 1600.0},
        {"system": "fashion_jax base", "epoch_s": 20.0, "to_0.90_s": 100.0, "peak_rss_mb": 800.0},
    ]
    quiet_day = [
        {"system": "keras (tutorial)", "epoch_s": 10.0, "to_0.90_s": None, "peak_rss_mb": 1600.0},
        {"system": "fashion_jax base", "epoch_s": 11.0, "to_0.90_s": 60.0, "peak_rss_mb": 960.0},
    ]
    frontier = [
        {"system": "keras tutorial", "wall_s": 300.0},
        {"system": "frontier_093", "seed": 0, "wall_s": 90.0, "params": 50},
        {"system": "keras tutorial", "wall_s": 500.0},
        {"system": "convnet_5ep", "seed": 0, "wall_s": 100.0, "params": 160, "train_pflop": 0.0065},
        {"system": "convnet_5ep", "seed": 1, "wall_s": 140.0, "params": 160, "train_pflop": 0.0065},
    ]
    # The same network, another recipe (more training FLOPs), timed on a later day; then a
    # change that keeps parameters and FLOPs (a smoothing), told apart by the recorded configs
    # (a key added since the older row, "tta_shift", is no difference).
    config = {"optimizer": "muon", "label_smoothing": 0.1}
    new_recipe = [
        {"system": "keras tutorial", "wall_s": 400.0},
        {"system": "convnet_5ep", "seed": 0, "wall_s": 160.0, "params": 160, "train_pflop": 0.0074},
    ]
    smoothed = [
        {"system": "keras tutorial", "wall_s": 400.0},
        {**new_recipe[1], "wall_s": 180.0, "config": config},
        {"system": "keras tutorial", "wall_s": 100.0},
        {**new_recipe[1], "wall_s": 50.0, "config": {**config, "label_smoothing": 0.2}},
    ]
    added_key = [
        {"system": "keras tutorial", "wall_s": 100.0},
        {**smoothed[3], "wall_s": 70.0, "config": {**smoothed[3]["config"], "tta_shift": 0}},
    ]
    results.write_text(
        "\n".join(
            [
                keras_record("2026-11-28T10:00:00+00:00", "vs_keras", slow_day),
                keras_record("2026-11-28T11:00:00+00:00", "step_speed", [{"model": "seed_cnn"}]),
                keras_record("2026-12-01T10:00:00+00:00", "vs_keras", quiet_day),
                keras_record("2026-12-02T10:00:00+00:00", "vs_keras", slow_day[1:]),
                keras_record("2026-12-03T10:00:00+00:00", "frontier", frontier),
                keras_record("2026-12-04T10:00:00+00:00", "frontier", new_recipe),
                keras_record("2026-12-05T10:00:00+00:00", "frontier", smoothed),
                keras_record("2026-12-06T10:00:00+00:00", "frontier", added_key),
            ]
        )
        + "\n"
    )
    ratios = common.keras_ratios(results)
    got = {(r["date"], r["system"], r["params"], r["measure"]): r["ratio"] for r in ratios}
    on_the_5th = [r["ratio"] for r in ratios if r["date"] == "2026-12-05"]
    assert on_the_5th == [180 / 250, 50 / 250]  # One ratio per config, not one median of both.
    del got[("2026-12-05", "convnet_5ep", 160, "launch to exit")]
    assert got == {
        ("2026-11-28", "base", None, "epoch time"): 0.5,
        ("2026-11-28", "base", None, "launch to 0.90 accuracy"): 0.5,
        ("2026-11-28", "base", None, "peak memory"): 0.5,
        ("2026-12-01", "base", None, "epoch time"): 1.1,
        ("2026-12-01", "base", None, "peak memory"): 0.6,
        ("2026-12-03", "convnet_5ep", 50, "launch to exit"): 0.225,
        ("2026-12-03", "convnet_5ep", 160, "launch to exit"): 0.3,
        ("2026-12-04", "convnet_5ep", 160, "launch to exit"): 0.4,
        ("2026-12-06", "convnet_5ep", 160, "launch to exit"): 0.7,
    }
    lines = common.keras_ratio_table(ratios).splitlines()
    assert lines[0] == (
        "| ours / Keras, same run: median (min-max, runs) | epoch time | launch to 0.90 accuracy"
        " | launch to exit | peak memory | runs (benchmark, date) |"
    )
    assert lines[2:] == [
        "| `base` | 0.80 (0.50-1.10, 2 runs) | 0.50 (1 run) | - | 0.55 (0.50-0.60, 2 runs) "
        "| vs_keras 2026-11-28, vs_keras 2026-12-01 |",
        # The run of the 4th recorded no config: it cannot be told from the current recipe.
        "| `convnet_5ep` | - | - | 0.40 (0.20-0.70, 3 runs) | - "
        "| frontier 2026-12-04, frontier 2026-12-05, frontier 2026-12-06 |",
        "| `convnet_5ep`, former 50-parameter network | - | - | 0.23 (1 run) | - "
        "| frontier 2026-12-03 |",
        "| `convnet_5ep`, former recipe at 6.5 TFLOP | - | - | 0.30 (1 run) | - "
        "| frontier 2026-12-03 |",
        "| `convnet_5ep`, former recipe (label_smoothing 0.1) | - | - | 0.72 (1 run) | - "
        "| frontier 2026-12-05 |",
    ]
