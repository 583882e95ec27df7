"""Shared benchmark helpers: machine description, the runner's and Keras' command lines, launching
timed subprocesses, recording results (with the command that reruns them from a clone), our/Keras
ratios measured within each recorded run, Markdown tables.

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
import shlex
import statistics
import subprocess
import sys
import tempfile
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
    "convnet_l_55ep": 0.95,
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


def command_line(argv: list[str] | None = None) -> str:
    """`argv` (default sys.argv) as a command that runs from the repository's root in any clone:
    `python benchmarks/NAME.py ARGS`, paths inside the repository relative to it, and every other
    absolute path replaced by a placeholder (W, then W2, W3, ... for further distinct ones)."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0])
    if (ROOT / "benchmarks" / script.name).is_file():
        name = f"benchmarks/{script.name}"
    else:
        name = _portable_path(argv[0], {})
    folders: dict[str, str] = {}
    args = []
    for arg in argv[1:]:
        flag, eq, value = arg.partition("=") if arg.startswith("-") else ("", "", arg)
        args.append(
            flag + eq + _portable_path(value, folders) if eq else _portable_path(arg, folders)
        )
    return shlex.join(["python", name, *args])


def _portable_path(arg: str, folders: dict[str, str]) -> str:
    if not os.path.isabs(arg):
        return arg
    path = Path(os.path.normpath(arg))
    if path.is_relative_to(ROOT):
        return path.relative_to(ROOT).as_posix() or "."
    return folders.setdefault(str(path), "W" if not folders else f"W{len(folders) + 1}")


def record(kind: str, rows: list[dict], extra: dict | None = None) -> None:
    """Appends one result object to benchmarks/results.jsonl, with the command that produced it
    (`extra["command"]` when given, else this process's, as `command_line` writes it)."""
    entry = {"benchmark": kind, "machine": machine(), "rows": rows, **(extra or {})}
    entry.setdefault("command", command_line())
    with RESULTS.open("a") as f:
        f.write(json.dumps(entry) + "\n")
    print(f"recorded in {os.path.relpath(RESULTS, ROOT)}")


def run_timed(cmd: list[str], metrics_file: Path | None = None, env: dict | None = None):
    """Runs `cmd`; returns (records, peak_rss_mb, wall_seconds, returncode).

    records: JSON objects the process reported, each with "t" = seconds since launch when it was
    seen: lines of `metrics_file` with type "eval" when given, else JSON lines of its stdout.
    Each launch is a first launch: unless `env` names a JAX_COMPILATION_CACHE_DIR, the process
    gets an empty XLA compilation cache of its own (the runner would otherwise load the user's,
    ~/.cache/fashion_jax/xla, and time a relaunch).
    """
    with tempfile.TemporaryDirectory() as cache:
        return _run_timed(cmd, metrics_file, {"JAX_COMPILATION_CACHE_DIR": cache, **(env or {})})


def _run_timed(cmd: list[str], metrics_file: Path | None, env: dict):
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **env}
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


# What each benchmark measures of Keras and of ours in one run (row column -> words): the ratios
# `keras_ratios` computes, in MEASURES' order. Lower is better in all of them.
KERAS_MEASURES = {
    "vs_keras": {
        "epoch_s": "epoch time",
        "to_0.90_s": "launch to 0.90 accuracy",
        "to_0.92_s": "launch to 0.92 accuracy",
        "peak_rss_mb": "peak memory",
    },
    "frontier": {"wall_s": "launch to exit", "peak_rss_mb": "peak memory"},
}
MEASURES = [
    "epoch time",
    "launch to 0.90 accuracy",
    "launch to 0.92 accuracy",
    "launch to exit",
    "peak memory",
]


# Config keys that say where and how a run happens, not what it trains: left out of a row's
# "config" (`training_config`), so that two runs of one recipe on two machines compare equal.
OPERATIONAL_KEYS = frozenset(
    "checkpoint_every_steps continue_with_changed_code coordinator_address data_dir distributed "
    "distributed_timeout_seconds download eval_batch_size idx_dir keep_checkpoints "
    "log_every_steps model_dir num_processes process_id progress_bar seed steps_per_call".split()
)


def training_config(workdir: Path) -> dict:
    """What a run trained (its config.json less `OPERATIONAL_KEYS`): recorded with a timed row,
    so that `keras_ratio_table` tells a recipe's former configs apart from its current one."""
    saved = json.loads((Path(workdir) / "config.json").read_text())
    return {k: v for k, v in sorted(saved.items()) if k not in OPERATIONAL_KEYS}


def config_differences(old: dict | None, new: dict | None, limit: int = 3) -> str:
    """ "label_smoothing 0.1, optimizer sgd": `old`'s values of the keys both configs hold and
    that differ (a key added since `old` was recorded is not a difference); "" when none."""
    if not old or not new:
        return ""
    keys = [k for k in old if k in new and old[k] != new[k]]
    shown = [f"{k} {json.dumps(old[k]) if not isinstance(old[k], str) else old[k]}" for k in keys]
    return ", ".join(shown[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def _recipe(system: str) -> str:
    """A recorded system's recipe name: "fashion_jax base" -> "base", former names renamed."""
    name = system.removeprefix("fashion_jax ")
    return RENAMED.get(name, name)


def keras_ratios(path: Path | None = None) -> list[dict]:
    """ours / Keras, each computed within one recorded run (one line of results.jsonl holding Keras'
    rows and ours, alternated), never across runs.

    One dict per run, recipe and measure: "run" (the run's recorded start), "date", "benchmark",
    "system" (the recipe's current name), "params", "tflop" (its training TFLOP) and "config"
    (`training_config`; each None when not recorded), "measure" (words of KERAS_MEASURES) and
    "ratio": the median of the recipe's rows in that run over the median of Keras' rows in that run.
    """
    out = []
    for line in (path or RESULTS).read_text().splitlines():
        entry = json.loads(line)
        measures = KERAS_MEASURES.get(entry.get("benchmark"), {})
        keras = [r for r in entry.get("rows", []) if r.get("system", "").startswith("keras")]
        if not measures or not keras:
            continue
        ours: dict[tuple, list[dict]] = {}
        for r in entry["rows"]:
            if r not in keras:
                tflop = round(r["train_pflop"] * 1000, 2) if r.get("train_pflop") else None
                config = json.dumps(r.get("config"), sort_keys=True)  # hashable, to group by
                key = (_recipe(r["system"]), r.get("params"), tflop, config)
                ours.setdefault(key, []).append(r)
        for (system, params, tflop, _), rows in ours.items():
            for column, measure in measures.items():
                mine = [r[column] for r in rows if r.get(column) is not None]
                theirs = [r[column] for r in keras if r.get(column) is not None]
                if mine and theirs:
                    ratio = statistics.median(mine) / statistics.median(theirs)
                    out.append(
                        {
                            "run": entry["machine"]["date"],
                            "date": entry["machine"]["date"][:10],
                            "benchmark": entry["benchmark"],
                            "system": system,
                            "params": params,
                            "tflop": tflop,
                            "config": rows[0].get("config"),  # the group's one config
                            "measure": measure,
                            "ratio": ratio,
                        }
                    )
    return out


def keras_ratio_table(ratios: list[dict]) -> str:
    """`keras_ratios`' ratios as a Markdown table: one row per recipe, one column per measure, each
    cell the median (min-max, number of runs) over the recorded runs; last, the runs behind the row.

    Ratios of a recipe recorded with another parameter count than its newest run's (a former
    network under the same or a former name; "at X TFLOP" where that network was timed in several
    recipes), or with the same count but another config (a former recipe, named by its differing
    values) get a row of their own. Rows recorded before configs were (no "config") are told apart
    by their training FLOPs only ("former recipe at X TFLOP").
    """

    def newest(field: str) -> dict[str, dict]:
        """{system: its newest ratio that recorded `field`}."""
        out: dict[str, dict] = {}
        for r in ratios:
            if r.get(field) is not None and r["run"] >= out.get(r["system"], {"run": ""})["run"]:
                out[r["system"]] = r
        return out

    by_params, by_config = newest("params"), newest("config")
    tflops: dict[tuple, set] = {}  # {(system, params): the TFLOP figures it was timed at}
    for r in ratios:
        if r.get("tflop") is not None:
            tflops.setdefault((r["system"], r["params"]), set()).add(r["tflop"])
    groups: dict[str, dict[str, list[dict]]] = {}
    for r in ratios:
        recipe, _, how = r["system"].partition(", ")  # "fast, cached": the recipe, then how.
        label = f"`{recipe}`" + (f", {how}" if how else "")
        now = by_params.get(r["system"], {})
        changed = config_differences(r.get("config"), by_config.get(r["system"], {}).get("config"))
        if r["params"] is not None and r["params"] != now["params"]:
            label += f", former {r['params']:,}-parameter network"
            if r.get("tflop") is not None and len(tflops[r["system"], r["params"]]) > 1:
                label += f" at {r['tflop']:g} TFLOP"
        elif changed:
            label += f", former recipe ({changed})"
        elif None not in (r.get("tflop"), now.get("tflop")) and r["tflop"] != now["tflop"]:
            label += f", former recipe at {r['tflop']:g} TFLOP"
        groups.setdefault(label, {}).setdefault(r["measure"], []).append(r)
    labels = sorted(groups, key=lambda label: ("former" in label, list(groups).index(label)))
    measures = [m for m in MEASURES if any(m in g for g in groups.values())]
    body = []
    for label in labels:
        cells = []
        for measure in measures:
            values = [r["ratio"] for r in groups[label].get(measure, [])]
            if len(values) > 1:
                low, high, n = min(values), max(values), len(values)
                cells.append(f"{statistics.median(values):.2f} ({low:.2f}-{high:.2f}, {n} runs)")
            else:
                cells.append(f"{values[0]:.2f} (1 run)" if values else "-")
        body.append([label, *cells, _runs(groups[label])])
    header = ["ours / Keras, same run: median (min-max, runs)", *measures, "runs (benchmark, date)"]
    return _formatting().table(header, body)


def _runs(by_measure: dict[str, list[dict]]) -> str:
    """The recorded runs behind a table row: "vs_keras 2026-11-28 (2), frontier 2026-12-02"."""
    runs: dict[tuple[str, str], set[str]] = {}
    for rs in by_measure.values():
        for r in rs:
            runs.setdefault((r["benchmark"], r["date"]), set()).add(r["run"])
    return ", ".join(
        f"{benchmark} {date}" + (f" ({len(ids)})" if len(ids) > 1 else "")
        for (benchmark, date), ids in runs.items()
    )


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
