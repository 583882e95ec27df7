"""benchmarks/accelerator.py: --smoke runs every section on CPU and its JSON line holds numbers; the
default (non-smoke) code paths run at tiny sizes; a failed section or a SIGTERM loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "accelerator.py"
sys.path.insert(0, str(ROOT / "benchmarks"))


def positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


def kit(tmp_path, *args, **kwargs) -> subprocess.Popen | subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, str(SCRIPT), *map(str, args)]
    if kwargs.pop("background", False):
        return subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path
        )
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)


def last_line(path) -> dict:
    return json.loads(path.read_text().splitlines()[-1])


@pytest.mark.slow
def test_smoke_writes_every_section(tmp_path, tiny_idx, tiny_tfds):
    results = tmp_path / "results.jsonl"
    results.write_text(
        '{"benchmark": "earlier run"}\n{"cut short'
    )  # Kept; the cut line stays its own.
    proc = kit(
        tmp_path,
        "--smoke",
        "--results",
        results,
        "--data-dir",
        tiny_tfds,
        "--idx-dir",
        tiny_idx,
        "--target",
        "fast=0.05",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for heading in (
        "## Peak",
        "### Host overhead",
        "### Throughput",
        "### Compile time",
        "### Model FLOP utilization",
        "### Time to accuracy",
    ):
        assert heading in proc.stdout, heading

    lines = results.read_text().splitlines()
    assert len(lines) == 3 and lines[:2] == ['{"benchmark": "earlier run"}', '{"cut short']
    entry = json.loads(lines[2])
    assert entry["benchmark"] == "accelerator" and entry["smoke"] is True and entry["complete"]
    assert {k: v["status"] for k, v in entry["sections"].items()} == {
        "peak": "ok",
        "overhead": "ok",
        "throughput": "ok",
        "time_to_accuracy": "ok",
        "population": "ok",
    }
    (pop,) = entry["population"]
    assert (pop["model"], pop["members"]) == ("seed_cnn", 2)
    assert positive(pop["together_img_s"]) and positive(pop["one_by_one_img_s"]), pop
    device = entry["device"]
    for key in ("platform", "device_kind", "device_count", "jax", "jaxlib"):
        assert device[key], key
    assert entry["machine"]["date"] and entry["machine"]["host_cpu"]

    assert {r["dtype"] for r in entry["peak"]} == {"float32", "bfloat16"}
    assert all(positive(r["used_tflops"]) and positive(r["matmul_tflops"]) for r in entry["peak"])

    rows = entry["throughput"]
    assert all("skipped" not in r and "failed" not in r for r in rows), rows
    assert {(r["dtype"], r["k"]) for r in rows} == {
        ("float32", 1),
        ("float32", 3),
        ("bfloat16", 1),
        ("bfloat16", 3),
    }
    assert any(r["platform_default_k"] for r in rows)
    for r in rows:
        for key in (
            "images_per_s",
            "epoch_s",
            "us_per_step",
            "compile_s",
            "flops_per_step",
            "achieved_tflops",
            "peak_tflops",
            "mfu_pct",
        ):
            assert positive(r[key]), (key, r)
    assert len(entry["compile"]) == len(rows)
    assert all(positive(r["compile_s"]) and positive(r["lower_s"]) for r in entry["compile"])

    overhead = {(r["path"][:3], r["k"]): r for r in entry["overhead"]}
    assert set(overhead) == {("(a)", 1), ("(b)", 1), ("(c)", 100), ("(d)", 1), ("(d)", 100)}
    assert all(positive(r["us_per_step"]) for r in overhead.values()), overhead

    tta = entry["time_to_accuracy"]
    assert [r["recipe"] for r in tta] == ["fast"]
    for r in tta:
        assert r["status"] == "stopped (target)" and r["reached"] and r["epoch"] == 1, r
        assert positive(r["wall_to_target_s"]) and positive(r["train_to_target_s"])
        assert r["wall_to_target_s"] >= r["train_to_target_s"]


@pytest.mark.slow
def test_default_paths_at_tiny_sizes_and_a_failed_section_is_recorded(
    tmp_path, tiny_idx, tiny_tfds
):
    """The first plan's code (not --smoke) on CPU: throughput at the platform's k and at 2, the
    recipe `fast` with its own model to a low target; the overhead section made to fail."""
    results = tmp_path / "r.jsonl"
    proc = kit(
        tmp_path,
        "--sections=overhead,throughput,time_to_accuracy",
        "--fail-sections=overhead",
        "--models=seed_cnn",
        "--batches=8",
        "--steps-per-call=1,2",
        "--synthetic-examples=256",
        "--window-s=0.01",
        "--windows=3",
        "--target=fast=0.3",
        f"--results={results}",
        f"--data-dir={tiny_tfds}",
        f"--idx-dir={tiny_idx}",
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    entry = last_line(results)
    assert entry["plan"] == "first" and entry["complete"] and not entry["smoke"]
    sections = entry["sections"]
    assert sections["overhead"]["status"] == "failed"
    assert sections["overhead"]["reason"] == "RuntimeError: made to fail (--fail-sections overhead)"
    assert sections["throughput"]["status"] == sections["time_to_accuracy"]["status"] == "ok"
    rows = {(r["dtype"], r["k"]): r for r in entry["throughput"]}
    assert set(rows) == {(d, k) for d in ("float32", "bfloat16") for k in (1, 2)}
    assert [r["k"] for r in entry["throughput"]][:2] == [1, 1]  # The platform's default first.
    for r in rows.values():
        assert r["model"] == "seed_cnn" and positive(r["images_per_s"]), r
        assert r["flops_per_step"] > 1e8, r  # Batch 8 of seed_cnn: ~0.2 GFLOP per step.
    # A k-step program's cost analysis counts its loop body once: the same FLOPs per step.
    for dtype in ("float32", "bfloat16"):
        one, two = rows[(dtype, 1)]["flops_per_step"], rows[(dtype, 2)]["flops_per_step"]
        assert abs(two - one) / one < 0.01, (dtype, one, two)
    (tta,) = entry["time_to_accuracy"]
    assert tta["recipe"] == "fast" and tta["model"] == "fast_cnn" and tta["target"] == 0.3
    assert tta["reached"] and tta["status"] == "stopped (target)" and tta["epochs_run"] == 1, tta
    assert tta["est_full_s"] is None  # fast_cnn's throughput was not measured in this run.


@pytest.mark.slow
def test_sigterm_records_what_there_is_and_ends_the_kit_by_that_signal(
    tmp_path, tiny_idx, tiny_tfds
):
    results = tmp_path / "r.jsonl"
    proc = kit(
        tmp_path,
        "--smoke",
        "--sections=peak,overhead",
        "--overhead-steps=100000",  # Path (a) would take minutes: the signal lands inside it.
        f"--results={results}",
        background=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if results.is_file() and '"peak": {"status": "ok"' in results.read_text():
                break
            time.sleep(0.5)
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGTERM, out[-3000:]
    entry = last_line(results)
    assert not entry["complete"] and entry["stopped"] == "terminated by SIGTERM"
    assert entry["sections"]["peak"]["status"] == "ok" and len(entry["peak"]) == 2
    assert entry["sections"]["overhead"] == {
        "status": "failed",
        "seconds": entry["sections"]["overhead"]["seconds"],
        "reason": "terminated by SIGTERM",
    }


def test_the_peak_table_tells_h200_from_h200_nvl():
    from kit.device import table_peak

    assert table_peak("NVIDIA H200")["bfloat16"] == 989.4
    assert table_peak("NVIDIA GH200 480GB")["bfloat16"] == 989.4
    assert table_peak("NVIDIA H200 NVL")["bfloat16"] == 835.5
    assert table_peak("NVIDIA H100 NVL")["bfloat16"] == 835.5
    assert table_peak("NVIDIA H100 80GB HBM3")["float32"] == 494.7
    assert table_peak("cpu") is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sections", "peak,nope"], "unknown section 'nope'"),
        (["--target", "fast=high"], "expected NAME=ACC"),
        (["--plan", "quick"], "invalid choice: 'quick'"),
    ],
)
def test_bad_arguments_are_one_error_line_and_write_nothing(tmp_path, args, message):
    results = tmp_path / "r.jsonl"
    proc = kit(tmp_path, "--results", results, *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not results.exists()


@pytest.mark.parametrize(
    "value, platform, expected",
    [
        ("default", "cpu", [(1, True)]),
        ("default", "gpu", [(100, True)]),
        ("sweep", "cpu", [(1, True), (100, False)]),
        ("sweep", "gpu", [(100, True), (1, False)]),
        ("3,1", "cpu", [(1, True), (3, False)]),
    ],
)
def test_steps_per_call_values_put_the_platform_default_first(value, platform, expected):
    import argparse

    from kit.throughput import steps_per_call_values

    assert steps_per_call_values(argparse.Namespace(steps_per_call=value), platform) == expected


@pytest.mark.parametrize("platform, calls", [("gpu", 2), ("cpu", 3)])
def test_step_flops_are_recounted_on_the_host_once_per_configuration_off_the_cpu(
    monkeypatch, platform, calls
):
    import types

    from kit import throughput

    counted = []

    def run_costs(platform_, config, state, compiled, split, n):
        counted.append((platform_, config))
        return {"train_step_flops": 1e9 * len(counted)}

    monkeypatch.setattr(throughput.programs, "run_costs", run_costs)
    device = types.SimpleNamespace(platform=platform)
    mesh = types.SimpleNamespace(devices=types.SimpleNamespace(flat=[device], size=1))
    ctx = types.SimpleNamespace(mesh=mesh, step_flops={})
    rows = [
        {"model": "seed_cnn", "config": "seed", "batch": 64, "dtype": "float32", "k": k}
        for k in (1, 8)
    ] + [{"model": "seed_cnn", "config": "seed", "batch": 64, "dtype": "bfloat16", "k": 1}]
    got = [throughput.step_flops(ctx, r, f"k={r['k']}", None, None, None) for r in rows]
    assert len(counted) == calls and all(p == platform for p, _ in counted)
    if platform == "gpu":  # k=8 reuses k=1's recount; another dtype is counted anew.
        assert got == [1e9, 1e9, 2e9]
    else:  # On the CPU each row's own compiled program is read.
        assert got == [1e9, 2e9, 3e9]
