"""Plots and a Markdown report of a workdir, and a comparison of several workdirs.

  python -m fashion_jax.report --workdir experiments/base            # WORKDIR/report.md + WORKDIR/plots/*.png
  python -m fashion_jax.report --compare experiments/a experiments/b # comparison.png + a table

`write_report` reads only the workdir's files (config.json, metrics.jsonl, summary.json, the newest
checkpoint) and the test split named by its config, so it can be rerun at any time, also after a
crash: what is missing (no summary.json, a half-written metrics.jsonl, no checkpoint yet) is skipped
and said so in report.md. The runner calls it at the end of every run (on process 0).

Files written by `write_report` (all under the workdir):

  plots/curves.png                train loss/accuracy per log step and per epoch, test (and
                                  validation) loss/accuracy per epoch
  plots/confusion_matrix.png      10x10 counts on the whole test set (rows: true class)
  plots/confusion_matrix.json     the same counts, a list of 10 lists
  plots/per_class_accuracy.png    test accuracy of each class
  plots/samples.png               the first 36 test images (IDX order), predicted and true class,
                                  mistakes in red
  report.md                       the summary numbers, a per-class table and the figures
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fashion_jax import metrics, plots
from fashion_jax import workdir as workdir_lib
from fashion_jax.errors import UserError

PLOTS_DIR = workdir_lib.PLOTS
REPORT_FILE = workdir_lib.REPORT
DEFAULT_COMPARISON = "comparison.png"
PREDICT_BATCH = 1000
NUM_SAMPLES = 36


class ReportError(UserError):
    """A workdir that cannot be reported on (missing, or holding nothing to report)."""


# ----------------------------------------------------------------------------- reading a workdir


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _check_workdir(workdir: Path) -> None:
    if not workdir.exists():
        raise ReportError(f"--workdir {workdir} does not exist. Give the folder a run wrote "
                          f"(`python -m fashion_jax.run --workdir {workdir}`).")
    if not workdir.is_dir():
        raise ReportError(f"--workdir {workdir} is a file, not a run's folder.")


def _label(workdirs: list[Path]) -> list[str]:
    names = [w.name or str(w) for w in workdirs]
    return [str(w) if names.count(n) > 1 else n for w, n in zip(workdirs, names)]


def _num(value, fmt: str = "{:.4f}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return fmt.format(value)


def predict_classes(state, images: np.ndarray, config=None, batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """Predicted classes int32[N] for uint8 `images` [N, 28, 28, 1] (the runner's inference path)."""
    from fashion_jax import evaluate

    return evaluate.predict_logits(state, images, config, batch_size).argmax(-1).astype(np.int32)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """Counts int64[num_classes, num_classes]: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
    return matrix


# ----------------------------------------------------------------------------- the report


def _summary_rows(summary: dict | None, records: list[dict[str, Any]], config: dict | None) -> list[tuple[str, str]]:
    evals = [r for r in records if r["type"] == "eval"]
    train = [r for r in records if r["type"] == "train"]
    last = evals[-1] if evals else {}
    s = summary or {}
    planned = (config or {}).get("num_epochs")
    epochs_done = last.get("epoch")
    steps_done = max((r["step"] for r in records), default=None)
    if summary is not None:
        train_seconds = s.get("train_seconds")
        ips = s.get("images_per_second")
    else:
        train_seconds = sum(r.get("epoch_seconds", 0.0) for r in evals) if evals else None
        speeds = [r["images_per_second"] for r in train if "images_per_second" in r]
        ips = float(np.median(speeds)) if speeds else None
    devices = s.get("devices")
    if devices is not None and s.get("platform"):
        kind = s.get("device_kind") or s["platform"]
        devices = f"{devices} x {kind}" + ("" if kind.lower() == s["platform"].lower() else f" ({s['platform']})")
        if s.get("processes", 1) > 1:
            devices += f", {s['processes']} processes"
    rows = [
        ("test accuracy", _num(s.get("test_accuracy", last.get("test_accuracy")))),
        ("test loss", _num(s.get("test_loss", last.get("test_loss")))),
    ]
    if "validation_accuracy" in last:
        rows.append(("validation accuracy", _num(last.get("validation_accuracy"))))
    rows += [
        ("epochs", f"{_num(epochs_done, '{}')} of {_num(s.get('epochs', planned), '{}')}"),
        ("steps", f"{_num(steps_done, '{}')} of {_num(s.get('steps'), '{}')}" if summary else _num(steps_done, "{}")),
        ("train seconds", _num(train_seconds, "{:.1f}")),
        ("images/s", _num(ips, "{:.0f}")),
        ("devices", _num(devices, "{}")),
    ]
    if config:
        rows.insert(0, ("model", str(config.get("model", "n/a"))))
    return rows


def write_report(workdir: str | Path) -> list[Path]:
    """Writes `WORKDIR/plots/*.png`, `plots/confusion_matrix.json` and `WORKDIR/report.md`.

    Reads only the workdir (config.json, metrics.jsonl, summary.json, the newest checkpoint) and the
    test split its config names. Whatever is missing is skipped and noted in report.md: the curves
    need metrics.jsonl, the test-set figures need a readable checkpoint and the dataset. Returns the
    paths written (report.md last). Raises ReportError (a UserError) when the workdir does not exist
    or holds neither metrics.jsonl nor a checkpoint, and CheckpointError when config.json is missing.
    """
    from fashion_jax import data

    workdir = Path(workdir)
    _check_workdir(workdir)
    has_metrics = (workdir / "metrics.jsonl").is_file()
    has_checkpoints = (workdir / "checkpoints").is_dir() and any((workdir / "checkpoints").iterdir())
    workdir_lib.load_config(workdir)  # The one "no run here" error, before anything is written.
    if not has_metrics and not has_checkpoints:
        raise ReportError(f"{workdir} has neither metrics.jsonl nor a checkpoint: nothing to report yet. "
                          f"Train first with `python -m fashion_jax.run --workdir {workdir}`.")
    plot_dir = workdir / PLOTS_DIR
    if plot_dir.exists() and not plot_dir.is_dir():
        raise ReportError(f"{plot_dir} is a file, but the report writes its figures into a folder there. "
                          "Move it away and rerun.")
    plot_dir.mkdir(exist_ok=True)
    config_json = _read_json(workdir / "config.json")
    summary = _read_json(workdir / "summary.json")
    records = metrics.read(workdir)
    written: list[Path] = []
    notes: list[str] = []
    if summary is None:
        notes.append("No summary.json: the run has not finished (or crashed). The numbers come from "
                     "metrics.jsonl and the newest checkpoint.")

    curves = plots.plot_curves(records, plot_dir / "curves.png")
    if curves:
        written.append(curves)
    else:
        notes.append("No curves: metrics.jsonl is missing or holds no complete record.")

    matrix = per_class = samples = None
    if _multi_process():
        notes.append("Test-set figures skipped: this is one process of a multi-process run. Rerun "
                     f"`python -m fashion_jax.report --workdir {workdir}` on one process to add them.")
    else:
        try:
            config, state = workdir_lib.load_trained(workdir)
            test = data.load(config.data_dir or None, config.idx_dir or None, config.download)["test"]
            predictions = predict_classes(state, test.images, config)
        except UserError as e:
            notes.append(f"Test-set figures skipped: {e}".split("\n")[0])
            print(f"report: test-set figures skipped: {e}", file=sys.stderr, flush=True)
        else:
            matrix = confusion_matrix(test.labels, predictions, data.NUM_CLASSES)
            json_path = plot_dir / "confusion_matrix.json"
            json_path.write_text(json.dumps(matrix.tolist()) + "\n")
            written.append(plots.plot_confusion_matrix(matrix, data.CLASS_NAMES, plot_dir / "confusion_matrix.png"))
            written.append(json_path)
            per_class = plots.plot_per_class_accuracy(matrix, data.CLASS_NAMES, plot_dir / "per_class_accuracy.png")
            written.append(per_class)
            k = min(NUM_SAMPLES, len(test.labels))
            samples = plots.plot_samples(test.images[:k], test.labels[:k], predictions[:k], data.CLASS_NAMES,
                                   plot_dir / "samples.png")
            written.append(samples)
            step = int(state.step)
            notes.append(f"Test-set figures: predictions of the checkpoint at step {step} on all "
                         f"{len(test.labels)} test images.")

    lines = [f"# Report: {workdir.resolve().name}", ""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in _summary_rows(summary, records, config_json)]
    lines.append("")
    if curves:
        lines += ["## Training curves", "", f"![curves]({PLOTS_DIR}/curves.png)", ""]
    if matrix is not None:
        CLASS_NAMES = data.CLASS_NAMES
        totals = matrix.sum(axis=1)
        lines += ["## Per class", "", "| class | test images | correct | accuracy | most confused with |",
                  "|---|---:|---:|---:|---|"]
        for i, name in enumerate(CLASS_NAMES):
            off = matrix[i].copy()
            off[i] = 0
            confused = f"{CLASS_NAMES[int(off.argmax())]} ({int(off.max())})" if off.max() else "-"
            acc = f"{matrix[i, i] / totals[i]:.2%}" if totals[i] else "n/a"
            lines.append(f"| {name} | {int(totals[i])} | {int(matrix[i, i])} | {acc} | {confused} |")
        lines += ["", "## Confusion matrix", "", f"Rows: true class; columns: predicted class "
                  f"([counts as JSON]({PLOTS_DIR}/confusion_matrix.json)).", "",
                  f"![confusion matrix]({PLOTS_DIR}/confusion_matrix.png)", "",
                  "## Per-class accuracy", "", f"![per-class accuracy]({PLOTS_DIR}/per_class_accuracy.png)", "",
                  "## Sample predictions", "", f"![samples]({PLOTS_DIR}/samples.png)", ""]
    report = workdir / REPORT_FILE
    report.write_text("\n".join(lines))
    written.append(report)
    return written


def _multi_process() -> bool:
    import jax

    return jax.process_count() > 1


# ----------------------------------------------------------------------------- comparing runs


def _run_row(workdir: Path, name: str) -> dict[str, Any]:
    records = metrics.read(workdir)
    evals = [r for r in records if r["type"] == "eval" and "test_accuracy" in r]
    summary = _read_json(workdir / "summary.json")
    if summary and summary.get("train_seconds") is not None:
        seconds = summary["train_seconds"]
    else:
        seconds = sum(r.get("epoch_seconds", 0.0) for r in evals) if evals else None
    return {
        "workdir": name,
        "epochs": evals[-1]["epoch"] if evals else 0,
        "best_test_accuracy": max((r["test_accuracy"] for r in evals), default=None),
        "final_test_accuracy": evals[-1]["test_accuracy"] if evals else None,
        "final_test_loss": evals[-1].get("test_loss") if evals else None,
        "train_seconds": seconds,
        "finished": summary is not None,
        "evals": evals,
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of `compare_rows` output (unfinished runs are marked with *)."""
    out = ["| workdir | epochs | best test acc | final test acc | final test loss | train s |",
           "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['workdir']}{'' if r['finished'] else ' *'} | {r['epochs']} | "
                   f"{_num(r['best_test_accuracy'])} | {_num(r['final_test_accuracy'])} | "
                   f"{_num(r['final_test_loss'])} | {_num(r['train_seconds'], '{:.1f}')} |")
    if not all(r["finished"] for r in rows):
        out.append("\n\\* no summary.json: the run has not finished (or crashed)")
    return "\n".join(out)


def compare_rows(workdirs) -> list[dict[str, Any]]:
    """One dict per workdir: workdir (name), epochs, best_test_accuracy, final_test_accuracy,
    final_test_loss, train_seconds, finished, evals (its eval records). Raises ReportError for a
    missing workdir or one without metrics.jsonl."""
    paths = [Path(w) for w in workdirs]
    for w in paths:
        _check_workdir(w)
        if not (w / "metrics.jsonl").is_file():
            raise ReportError(f"{w} has no metrics.jsonl: nothing to compare. Train it first with "
                              f"`python -m fashion_jax.run --workdir {w}`.")
    return [_run_row(w, name) for w, name in zip(paths, _label(paths))]


def compare(workdirs, output: str | Path = DEFAULT_COMPARISON) -> str:
    """Draws test accuracy and test loss per epoch of several workdirs into one PNG at `output`.

    The legend names each workdir by its folder name (its path where names repeat). Returns a
    Markdown table: workdir, epochs, best test accuracy, final test accuracy, final test loss,
    train seconds. Raises ReportError for no workdirs, a missing workdir or one without metrics.
    """
    if not workdirs:
        raise ReportError("--compare needs at least one workdir.")
    rows = compare_rows(workdirs)
    plots.plot_comparison(rows, output)
    return format_table(rows)


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (`--workdir W` or `--compare W1 W2 ... [--output PNG]`); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m fashion_jax.report",
        description="Write a workdir's plots and report.md, or compare the test curves of several workdirs.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--workdir", help="write WORKDIR/plots/*.png and WORKDIR/report.md")
    mode.add_argument("--compare", nargs="+", metavar="WORKDIR", help="compare these workdirs in one PNG")
    parser.add_argument("--output", default=None,
                        help=f"PNG path for --compare (default: {DEFAULT_COMPARISON} in the current folder)")
    args = parser.parse_args(argv)
    if args.output and not args.compare:
        parser.error("--output goes with --compare")
    try:
        if args.workdir:
            for path in write_report(args.workdir):
                print(path)
        else:
            output = Path(args.output or DEFAULT_COMPARISON)
            if output.suffix.lower() != ".png":
                raise ReportError(f"--output {output} must end in .png.")
            try:
                table = compare(args.compare, output)
            except OSError as e:
                raise ReportError(f"Cannot write {output} ({e.strerror or e}).") from None
            print(table)
            print(output)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
