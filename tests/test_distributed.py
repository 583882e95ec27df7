"""Data parallelism on simulated CPU devices and real multi-process runs on localhost."""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, assert_clean_error, requires_real_data, run_module, runner_args

pytestmark = pytest.mark.slow

# The runner's command line, built by the one helper the benchmark drivers use too.
_spec = importlib.util.spec_from_file_location(
    "benchmarks_common", ROOT / "benchmarks" / "common.py"
)
_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bench)
runner_command = _bench.runner_command


def devices_env(n):
    return {"XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}


@pytest.fixture(scope="module")
def args(tiny_idx, tiny_tfds):
    return runner_args(tiny_idx, tiny_tfds)


def evals(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "eval"]


def assert_close_runs(a, b, rel=1e-4):
    ea, eb = evals(a), evals(b)
    assert [r["step"] for r in ea] == [r["step"] for r in eb]
    for ra, rb in zip(ea, eb):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=rel)
        assert ra["test_loss"] == pytest.approx(rb["test_loss"], rel=rel, abs=1e-6)
        assert ra["test_accuracy"] == rb["test_accuracy"]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory, args):
    workdir = tmp_path_factory.mktemp("one") / "w"
    run_module("fashion_jax.run", "--workdir", workdir, *args, env=devices_env(1), check=True)
    return workdir


def test_batch_that_devices_do_not_divide_is_refused(tmp_path, args):
    proc = run_module(
        "fashion_jax.run",
        "--workdir",
        tmp_path / "w",
        *args,
        "--config.batch_size=30",
        env=devices_env(8),
    )
    assert_clean_error(proc, "batch_size = 30 does not split evenly over 8 devices", "24 or 32")


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_processes(workdir, args, n=2, devices_each=2, extra=()):
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        **devices_env(devices_each),
    }
    procs = []
    for pid in range(n):
        cluster = {
            "distributed": "true",
            "coordinator_address": f"localhost:{port}",
            "num_processes": n,
            "process_id": pid,
        }
        cmd = runner_command(workdir, *args, overrides=cluster) + list(extra)
        procs.append(
            subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
            )
        )
    return procs


def test_two_processes_match_one_process(tmp_path, args, one_device):
    workdir = tmp_path / "w"
    procs = start_processes(workdir, args)
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "over 4 device(s) (cpu), 2 process(es)" in outs[0][0]
    assert (
        "test accuracy" in outs[0][0] and "test accuracy" not in outs[1][0]
    )  # Only process 0 reports.
    summary = json.loads((workdir / "summary.json").read_text())
    assert (summary["devices"], summary["processes"]) == (4, 2)
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(
        (one_device / "metrics.jsonl").read_text().splitlines()
    )  # Written once.
    assert_close_runs(workdir, one_device)


def test_a_killed_peer_stops_the_other_with_one_line_and_the_run_resumes(tmp_path, args):
    """kill -9 of process 1 mid-run: process 0 stops within the heartbeat timeout with one error
    line (JAX's coordination service would abort it with a C++ dump, exit 134), and the same
    command on both processes resumes the run from its last checkpoint."""
    workdir = tmp_path / "w"
    timeout = ["--config.distributed_timeout_seconds=15"]
    procs = start_processes(workdir, [*args, "--config.num_epochs=500"], extra=timeout)
    deadline = time.time() + 300
    while not (workdir / "checkpoints" / "10").is_dir() and time.time() < deadline:
        time.sleep(0.2)
    assert (workdir / "checkpoints" / "10").is_dir()
    # The runner trains in a child process (fashion_jax.supervisor): kill -9 process 1's trainer.
    trainer = Path(f"/proc/{procs[1].pid}/task/{procs[1].pid}/children").read_text().split()
    assert len(trainer) == 1, trainer
    os.kill(int(trainer[0]), signal.SIGKILL)
    killed_at = time.time()
    try:
        _, err = procs[0].communicate(timeout=120)
    finally:
        procs[0].kill()
    assert time.time() - killed_at < 120
    assert procs[0].returncode == 2, (procs[0].returncode, err[-3000:])
    assert err.count("error:") == 1 and "Check failure" not in err and "Traceback" not in err, err
    assert "error: the distributed run stopped" in err and "resumes from its last checkpoint" in err
    saved = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    epochs = saved // 20 + 1  # 20 steps per epoch: one epoch past the last checkpoint.
    again = start_processes(workdir, [*args, f"--config.num_epochs={epochs}"], extra=timeout)
    outs = [p.communicate(timeout=400) for p in again]
    for p, (_, e) in zip(again, outs):
        assert p.returncode == 0, e[-3000:]
    assert f"Resuming from the checkpoint at step {saved}" in outs[0][0]
    assert json.loads((workdir / "summary.json").read_text())["steps"] == epochs * 20


def test_sigterm_to_one_runner_saves_the_same_step_on_every_process(tmp_path, args):
    """A scheduler's SIGTERM to process 0's runner reaches its trainer; both processes agree,
    save one checkpoint and exit 143 with the resume line."""
    workdir = tmp_path / "w"
    procs = start_processes(workdir, [*args, "--config.num_epochs=500"])
    deadline = time.time() + 300
    while not (workdir / "checkpoints" / "10").is_dir() and time.time() < deadline:
        time.sleep(0.2)
    procs[0].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 128 + signal.SIGTERM, (p.returncode, err[-3000:])
        assert "Traceback" not in err and "Check failure" not in err, err[-3000:]
    assert "SIGTERM received: saved the checkpoint at step" in outs[0][1]


def test_a_coordinator_whose_peer_never_starts_stops_with_one_line(tmp_path, args):
    """Process 0 alone, through `run` and `sweep` (started together: each mostly waits): one
    error line after distributed_timeout_seconds, nothing written."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.time()
    procs = []
    for module, flags in (("fashion_jax.run", []), ("fashion_jax.sweep", ["--seeds=0"])):
        cluster = [
            "--config.distributed=true",
            f"--config.coordinator_address=localhost:{free_port()}",
            "--config.num_processes=2",
            "--config.process_id=0",
            "--config.distributed_timeout_seconds=5",
        ]
        workdir = tmp_path / module
        cmd = [sys.executable, "-m", module, "--workdir", str(workdir), *flags, *args, *cluster]
        procs.append(
            subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
            )
        )
    for proc, module in zip(procs, ("fashion_jax.run", "fashion_jax.sweep")):
        done = subprocess.CompletedProcess(proc.args, 0, *proc.communicate(timeout=120))
        done.returncode = proc.returncode
        assert_clean_error(done, "the distributed run stopped", "DEADLINE_EXCEEDED", "= 5")
        assert "Check failure" not in done.stderr
        assert not list((tmp_path / module).glob("**/checkpoints"))
    assert time.time() - start < 60


REALISTIC = [
    "--config.num_epochs=1",
    "--config.max_train_examples=8192",
    "--config.batch_size=128",
    "--config.progress_bar=false",
    "--config.eval_batch_size=1000",
]


@requires_real_data
def test_four_simulated_devices_at_a_realistic_length(tmp_path):
    """64 steps of all-reduces over 4 devices sharing 2 cores: this aborted with an XLA rendezvous
    timeout when many steps were in flight (tiny data, 20 steps, never showed it)."""
    proc = run_module(
        "fashion_jax.run", "--workdir", tmp_path / "w", *REALISTIC, env=devices_env(4), timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "w" / "summary.json").read_text())["steps"] == 64


@requires_real_data
def test_two_processes_of_two_devices_at_a_realistic_length(tmp_path):
    """The multi-host recipe on the same 64 steps: this hung silently with many steps in flight."""
    procs = start_processes(tmp_path / "w", REALISTIC)
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert json.loads((tmp_path / "w" / "summary.json").read_text())["steps"] == 64


def test_eight_devices_match_one_and_resume_across_device_counts(tmp_path, args, one_device):
    """8 devices train what 1 trains (the first epoch), a run resumes on another device count
    and still matches (the second), and goes back to 8."""
    workdir = tmp_path / "w"

    def train(epochs, devices):
        return run_module(
            "fashion_jax.run",
            "--workdir",
            workdir,
            *args,
            f"--config.num_epochs={epochs}",
            env=devices_env(devices),
            check=True,
        )

    proc = train(1, 8)
    assert "over 8 device(s)" in proc.stdout
    assert json.loads((workdir / "summary.json").read_text())["devices"] == 8
    proc = train(2, 1)
    assert "Resuming from the checkpoint at step 20" in proc.stdout
    assert "over 1 device(s)" in proc.stdout
    assert_close_runs(workdir, one_device)
    proc = train(3, 8)
    assert "Resuming from the checkpoint at step 40" in proc.stdout
    assert "over 8 device(s)" in proc.stdout
    assert [r["step"] for r in evals(workdir)] == [20, 40, 60]
