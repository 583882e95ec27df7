"""Shared benchmark helpers: machine description, the runner's and Keras' command lines, launching
timed subprocesses, recording results, Markdown tables.

Importing this module does not import fashion_jax (whose import sets XLA_FLAGS for its process and
children): the drivers start the runner and Keras as fresh processes.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.jsonl"
KERAS_PEER = ROOT / "benchmarks" / "keras_peer.py"

# Test accuracy each recipe (experiments/NAME/config.py) is expected to reach: frontier.py's
# targets column and accelerator.py's time-to-accuracy runs.
# Recipes recorded in results.jsonl under their former names (named for their targets then).
RENAMED = {"frontier_093": "convnet_5ep", "frontier_094": "convnet_10ep", "best": "convnet_l_20ep"}

TARGETS = {
    "base": 0.90,
    "fast": 0.90,
    "convnet_5ep": 0.93,
    "convnet_10ep": 0.94,
    "convnet_l_20ep": 0.95,
}


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import importlib.metadata as md

    versions = {}
    for name in ("jax", "jaxlib", "flax", "optax", "tensorflow-cpu", "tensorflow", "keras"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host_cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def record(kind: str, rows: list[dict], extra: dict | None = None) -> None:
    """Appends one result object to benchmarks/results.jsonl."""
    entry = {"benchmark": kind, "machine": machine(), "rows": rows, **(extra or {})}
    with RESULTS.open("a") as f:
        f.write(json.dumps(entry) + "\n")
    print(f"recorded in {os.path.relpath(RESULTS, ROOT)}")


def run_timed(cmd: list[str], metrics_file: Path | None = None, env: dict | None = None):
    """Runs `cmd`; returns (records, peak_rss_mb, wall_seconds, returncode).

    records: JSON objects the process reported, each with "t" = seconds since launch when it was
    seen: lines of `metrics_file` with type "eval" when given, else JSON lines of its stdout.
    """
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env, cwd=ROOT
    )
    lines: queue.Queue = queue.Queue()
    log: list[str] = []

    def reader():
        for line in proc.stdout:
            lines.put((time.perf_counter() - t0, line))

    threading.Thread(target=reader, daemon=True).start()
    records, seen = [], 0
    rusage = None
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        now = time.perf_counter() - t0
        while not lines.empty():
            t, line = lines.get()
            log.append(line)
            if metrics_file is None and line.startswith("{"):
                records.append({**json.loads(line), "t": t})
        if metrics_file is not None and metrics_file.exists():
            content = metrics_file.read_text().splitlines()
            for line in content[seen:]:
                if line.endswith("}"):
                    r = json.loads(line)
                    if r.get("type") == "eval":
                        records.append({**r, "t": now})
                    seen += 1
        if pid:
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    time.sleep(0.1)
    while not lines.empty():
        log.append(lines.get()[1])
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.stderr.write("".join(log[-40:]))
    return records, rusage.ru_maxrss / 1024, wall, code


def runner_command(
    workdir: str | Path,
    *flags: str,
    config: str | Path | None = None,
    overrides: dict | None = None,
    python: str = sys.executable,
) -> list[str]:
    """argv of `python -m fashion_jax.run --workdir W [--config FILE] [flags...] [--config.KEY=VALUE
    ...]` (override values are written with `str`: give booleans as "false"/"true")."""
    argv = [python, "-m", "fashion_jax.run", "--workdir", str(workdir)]
    if config is not None:
        argv += ["--config", str(config)]
    argv += [str(f) for f in flags]
    return argv + [f"--config.{key}={value}" for key, value in (overrides or {}).items()]


def run_keras(epochs: int = 10) -> tuple[list[dict], float, float]:
    """Runs the tutorial's Keras code (keras_peer.py) for `epochs`; returns (its per-epoch records
    with "t", peak RSS in MB, wall seconds). Exits the driver when the Keras run fails."""
    records, rss, wall, code = run_timed([sys.executable, str(KERAS_PEER), "--epochs", str(epochs)])
    if code != 0:
        raise SystemExit(f"the Keras run failed (exit {code})")
    return records, rss, wall


def first_time_reaching(records: list[dict], threshold: float) -> float | None:
    """The "t" of the first record whose test_accuracy reaches `threshold`, or None."""
    for r in records:
        if r["test_accuracy"] >= threshold:
            return r["t"]
    return None


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if v < 1 else f"{v:.1f}"
    return str(v)


def table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of `rows` restricted to `columns` (None as "-"; floats below 1 with four
    decimals, others with one)."""
    return _formatting().table(columns, [[_cell(r.get(c)) for c in columns] for r in rows])


def _formatting():
    """fashion_jax/formatting.py (the package's one table formatter), loaded from its file: it
    imports nothing, while `import fashion_jax.formatting` would run the package's __init__."""
    import importlib.util

    if "_fashion_jax_formatting" not in sys.modules:
        path = ROOT / "fashion_jax" / "formatting.py"
        spec = importlib.util.spec_from_file_location("_fashion_jax_formatting", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["_fashion_jax_formatting"] = module
    return sys.modules["_fashion_jax_formatting"]


@contextlib.contextmanager
def accuracy_figure(path: Path, xlabel: str, title: str):
    """`with accuracy_figure(path, xlabel, title) as ax:` draw test accuracy against a log-scale x;
    on leaving, the axes are labelled, the legend placed and the PNG written to `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    yield ax
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
