"""benchmarks/accelerator.py --smoke: every section runs on CPU and its JSON line holds numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "accelerator.py"


def positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


@pytest.mark.slow
def test_smoke_writes_every_section(tmp_path, tiny_idx, tiny_tfds):
    results = tmp_path / "results.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--smoke",
            "--results",
            str(results),
            "--data-dir",
            str(tiny_tfds),
            "--idx-dir",
            str(tiny_idx),
            "--target",
            "fast=0.05",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
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
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["benchmark"] == "accelerator" and entry["smoke"] is True
    device = entry["device"]
    for key in ("platform", "device_kind", "device_count", "jax", "jaxlib"):
        assert device[key], key
    assert entry["machine"]["date"] and entry["machine"]["host_cpu"]

    assert {r["dtype"] for r in entry["peak"]} == {"float32", "bfloat16"}
    assert all(positive(r["used_tflops"]) and positive(r["matmul_tflops"]) for r in entry["peak"])

    rows = entry["throughput"]
    assert all("skipped" not in r for r in rows), rows
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
        if r["status"] == "skipped":
            assert r["skipped"]
        else:
            assert r["reached"] and r["epoch"] == 1, r
            assert positive(r["wall_to_target_s"]) and positive(r["train_to_target_s"])
            assert r["wall_to_target_s"] >= r["train_to_target_s"]
