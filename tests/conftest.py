"""Shared fixtures: tiny generated IDX datasets, prepared tfds dirs, and a runner in a subprocess."""

from __future__ import annotations

import atexit
import gzip
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# One persistent XLA compilation cache per test session, for this process and the runners it
# starts: they compile the same tiny programs again and again (about a third of a short run's
# time). A hit loads the executable XLA compiled for the same program and flags, so results are
# unchanged. Set JAX_COMPILATION_CACHE_DIR to keep a cache of your own between sessions.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="fashion_jax-test-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
# Programs that compile in under 0.1 s are not kept: tests that run a network eagerly compile
# hundreds of single operations (~10 ms each), and with a size limit every write to JAX's cache
# reads the whole folder under its lock (2 files per entry), so hundreds of tiny entries made the
# writes slow and kept the other worker waiting on the lock (measured, two workers, three pairs
# run back to back: 866 -> 755 s, 895 -> 806 s, 759 -> 631 s; test_convnet_plain.py alone writes
# 20 entries instead of 326).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
# A size limit makes JAX take its file lock around every read and write: the suite's workers and
# the processes they start share the cache, and none reads an entry another is still writing.
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 * 2**30))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
REAL_IDX_DIR = Path("/usr/share/datasets/fashion-mnist")

requires_real_data = pytest.mark.skipif(
    not (REAL_IDX_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8[N, 28, 28] images a small CNN can learn: a bright band whose row depends on the label."""
    images = rng.integers(0, 60, size=(len(labels), 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 * k + 3 : 2 * k + 7, 4:24] = 200 + rng.integers(0, 55)
    return images


def write_idx(folder: Path, train_n: int = 640, test_n: int = 200, seed: int = 0) -> Path:
    """Writes the four Fashion-MNIST IDX .gz files of a small learnable dataset into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", train_n), ("t10k", test_n)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = make_images(labels, rng)
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + labels.tobytes())
    return folder


@pytest.fixture(scope="session")
def tiny_idx(tmp_path_factory) -> Path:
    return write_idx(tmp_path_factory.mktemp("idx"))


@pytest.fixture(scope="session")
def tiny_tfds(tmp_path_factory, tiny_idx) -> Path:
    """A tfds data dir with `fashion_mnist` prepared from the tiny IDX files (built once)."""
    from fashion_jax import data

    data_dir = tmp_path_factory.mktemp("tfds")
    data.prepare(str(data_dir), str(tiny_idx), download=False)
    return data_dir


# A short run on the tiny dataset (20 steps per epoch): the runner flags and the in-process config.
TINY_RUN = {
    "download": "false",
    "num_epochs": 2,
    "batch_size": 32,
    "log_every_steps": 5,
    "checkpoint_every_steps": 10,
    "eval_batch_size": 100,
    "progress_bar": "false",
}


def runner_args(idx_dir, tfds_dir, **overrides) -> list[str]:
    """`--config.KEY=VALUE` flags for a short run on the tiny dataset (20 steps per epoch)."""
    values = {"data_dir": tfds_dir, "idx_dir": idx_dir, **TINY_RUN, **overrides}
    return [f"--config.{key}={value}" for key, value in values.items()]


def tiny_config(idx_dir, tfds_dir, **overrides):
    """The validated config of `runner_args`'s run, for calling the library in process."""
    from fashion_jax import config as config_lib

    values = {"data_dir": tfds_dir, "idx_dir": idx_dir, **TINY_RUN, **overrides}
    values = {k: str(v) for k, v in values.items()}
    return config_lib.validate(config_lib.apply_overrides(config_lib.get_config(), values))


@pytest.fixture
def tiny_args(tiny_idx, tiny_tfds):
    """Runner overrides that point at the tiny dataset and keep runs short."""
    return runner_args(tiny_idx, tiny_tfds)


def assert_clean_error(proc, *fragments):
    """A user error: exit status 2, one `error: ...` message with `fragments`, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: ") or "\nerror: " in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, (fragment, proc.stderr)


def run_module(
    module: str, *args, env: dict | None = None, timeout: float = 600, check: bool = False
):
    """Runs `python -m module args` in a subprocess; returns the CompletedProcess (text). `env`
    adds variables; a None value removes one."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}
    proc = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=ROOT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def run_here(module: str, *args, check: bool = False) -> subprocess.CompletedProcess:
    """`module.main(args)` in this process, with its stdout and stderr captured: `run_module`'s
    result without a new interpreter (use it where a separate process proves nothing more)."""
    import contextlib
    import importlib
    import io

    out, err = io.StringIO(), io.StringIO()
    argv = [str(a) for a in args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = importlib.import_module(module).main(argv)
    proc = subprocess.CompletedProcess([module, *argv], status, out.getvalue(), err.getvalue())
    if check and status != 0:
        raise AssertionError(f"exit {status}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def start(workdir, run_args):
    """`python -m fashion_jax.run --workdir WORKDIR RUN_ARGS` started in the background."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(
        [sys.executable, "-m", "fashion_jax.run", "--workdir", str(workdir), *run_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def last_step(workdir):
    """The newest step metrics.jsonl records (0 before the first record; a half-written last line is skipped)."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [
        json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")
    ]
    return max(steps, default=0)


def fingerprint(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` but the lock: equal before and after means nothing
    was written, moved or deleted."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }
