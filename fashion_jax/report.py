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
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fashion_jax import exits, metrics, plots
from fashion_jax import workdir as workdir_lib
from fashion_jax.compare import DEFAULT_COMPARISON, compare
from fashion_jax.errors import ReportError, UserError
from fashion_jax.formatting import number as _num
from fashion_jax.formatting import table

PLOTS_DIR = workdir_lib.PLOTS
REPORT_FILE = workdir_lib.REPORT
PREDICT_BATCH = 1000
NUM_SAMPLES = 36

__all__ = ["DEFAULT_COMPARISON", "ReportError", "compare", "confusion_matrix", "write_report"]

_read_json = workdir_lib.read_json


def predict_classes(
    state, images: np.ndarray, config=None, batch_size: int = PREDICT_BATCH
) -> np.ndarray:
    """Predicted classes int32[N] for `images` [N, H, W, C] (the runner's inference path)."""
    from fashion_jax import evaluate

    return evaluate.all_logits(state, images, config, batch_size).argmax(-1).astype(np.int32)


def confusion_matrix(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int = 10
) -> np.ndarray:
    """Counts int64[num_classes, num_classes]: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
    return matrix


def _summary_rows(
    summary: dict | None, records: list[dict[str, Any]], config: dict | None
) -> list[tuple[str, str]]:
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
        devices = f"{devices} x {kind}" + (
            "" if kind.lower() == s["platform"].lower() else f" ({s['platform']})"
        )
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
        (
            "steps",
            f"{_num(steps_done, '{}')} of {_num(s.get('steps'), '{}')}"
            if summary
            else _num(steps_done, "{}"),
        ),
        ("train seconds", _num(train_seconds, "{:.1f}")),
        ("images/s", _num(ips, "{:.0f}")),
        ("devices", _num(devices, "{}")),
    ]
    if config:
        rows.insert(0, ("model", str(config.get("model", "n/a"))))
    return rows


class Trained(NamedTuple):
    """What a run that just ended holds in memory, handed to `write_report` so that it reads
    neither the checkpoint nor the dataset back from disk: the config, the final TrainState, the
    test split (`data.Split`, IDX order) and the dataset's `data.DatasetInfo`."""

    config: Any
    state: Any
    test: Any
    info: Any


def write_report(workdir: str | Path, trained: Trained | None = None) -> list[Path]:
    """Writes `WORKDIR/plots/*.png`, `plots/confusion_matrix.json` and `WORKDIR/report.md`.

    Reads only the workdir (config.json, metrics.jsonl, summary.json, the newest checkpoint) and the
    test split its config names, or, for the test-set figures, `trained` (the runner hands what it
    holds; runs on in-memory arrays get their figures this way). Whatever is missing is skipped and
    noted in report.md: the curves need metrics.jsonl, the test-set figures need a readable
    checkpoint and the dataset. Returns the paths written (report.md last). Raises ReportError (a
    UserError) when the workdir does not exist or holds neither metrics.jsonl nor a checkpoint, and
    CheckpointError when config.json is missing.
    """
    workdir = Path(workdir)
    plot_dir = _check_reportable(workdir)
    summary = _read_json(workdir / "summary.json")
    records = metrics.read(workdir)
    written: list[Path] = []
    notes: list[str] = []
    if summary is None:
        notes.append(
            "No summary.json: the run has not finished (or crashed). The numbers come from "
            "metrics.jsonl and the newest checkpoint."
        )
    curves = plots.plot_curves(records, plot_dir / "curves.png")
    if curves:
        written.append(curves)
    else:
        notes.append("No curves: metrics.jsonl is missing or holds no complete record.")
    matrix, names = _test_set_figures(workdir, plot_dir, written, notes, trained)
    lines = [f"# Report: {workdir.resolve().name}", ""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    rows = _summary_rows(summary, records, _read_json(workdir / "config.json"))
    lines += [table(["", ""], rows), ""]
    if curves:
        lines += ["## Training curves", "", f"![curves]({PLOTS_DIR}/curves.png)", ""]
    if matrix is not None:
        lines += _per_class_markdown(matrix, names)
    report = workdir / REPORT_FILE
    report.write_text("\n".join(lines))
    written.append(report)
    return written


def _check_reportable(workdir: Path) -> Path:
    """Raises the report's user errors before anything is written; returns the plots folder."""
    workdir_lib.check_exists(workdir)
    checkpoints = workdir / workdir_lib.CHECKPOINTS
    has_checkpoints = checkpoints.is_dir() and any(checkpoints.iterdir())
    workdir_lib.load_config(workdir)  # The one "no run here" error.
    if not (workdir / workdir_lib.METRICS).is_file() and not has_checkpoints:
        raise ReportError(
            f"{workdir} has neither metrics.jsonl nor a checkpoint: nothing to report yet. "
            f"Train first with `python -m fashion_jax.run --workdir {workdir}`."
        )
    plot_dir = workdir / PLOTS_DIR
    if plot_dir.exists() and not plot_dir.is_dir():
        raise ReportError(
            f"{plot_dir} is a file, but the report writes its figures into a folder there. "
            "Move it away and rerun."
        )
    workdir_lib.check_kinds([workdir / REPORT_FILE, *(workdir / f for f in workdir_lib.PLOT_FILES)])
    plot_dir.mkdir(exist_ok=True)
    return plot_dir


def _test_set_figures(
    workdir: Path, plot_dir: Path, written: list, notes: list, trained: Trained | None
) -> tuple:
    """Predicts the whole test set with `trained`'s state, else the newest checkpoint, and draws
    the confusion matrix, per-class accuracy and samples (appending to `written`); returns
    (matrix, class names), or (None, None) with a note when there is no checkpoint, no data, or
    several processes."""
    if _multi_process():
        notes.append(
            "Test-set figures skipped: this is one process of a multi-process run. Rerun "
            f"`python -m fashion_jax.report --workdir {workdir}` on one process to add them."
        )
        return None, None
    try:
        trained = trained or _read_trained(workdir)
        if trained is None:
            notes.append(
                "Test-set figures skipped: the run was trained on in-memory arrays, which are not "
                "saved in the workdir."
            )
            return None, None
        config, state, test, info = trained
        predictions = predict_classes(state, test.images, config)
    except UserError as e:
        notes.append(f"Test-set figures skipped: {e}".split("\n")[0])
        print(f"report: test-set figures skipped: {e}", file=sys.stderr, flush=True)
        return None, None
    names = info.class_names
    matrix = confusion_matrix(test.labels, predictions, info.num_classes)
    json_path = plot_dir / "confusion_matrix.json"
    json_path.write_text(json.dumps(matrix.tolist()) + "\n")
    written.append(plots.plot_confusion_matrix(matrix, names, plot_dir / "confusion_matrix.png"))
    written.append(json_path)
    written.append(
        plots.plot_per_class_accuracy(matrix, names, plot_dir / "per_class_accuracy.png")
    )
    k = min(NUM_SAMPLES, len(test.labels))
    written.append(
        plots.plot_samples(
            test.images[:k], test.labels[:k], predictions[:k], names, plot_dir / "samples.png"
        )
    )
    notes.append(
        f"Test-set figures: predictions of the checkpoint at step {int(state.step)} on all "
        f"{len(test.labels)} test images."
    )
    return matrix, names


def _read_trained(workdir: Path) -> Trained | None:
    """The newest checkpoint and the test split of a workdir's run, read back from disk; None
    for a run on in-memory arrays (not saved in the workdir)."""
    from fashion_jax import data
    from fashion_jax.trained import load_trained

    config, state = load_trained(workdir)
    if config.get("dataset") == data.MEMORY:
        return None
    test, info = data.load_test(config)
    return Trained(config, state, test, workdir_lib.read_dataset_info(workdir) or info)


def _per_class_markdown(matrix: np.ndarray, names) -> list[str]:
    """The per-class table and the test-set figures' section of report.md (`names`: the classes')."""
    CLASS_NAMES = names
    totals = matrix.sum(axis=1)
    rows = []
    for i, name in enumerate(CLASS_NAMES):
        off = matrix[i].copy()
        off[i] = 0
        confused = f"{CLASS_NAMES[int(off.argmax())]} ({int(off.max())})" if off.max() else "-"
        acc = f"{matrix[i, i] / totals[i]:.2%}" if totals[i] else "n/a"
        rows.append([name, int(totals[i]), int(matrix[i, i]), acc, confused])
    header = ["class", "test images", "correct", "accuracy", "most confused with"]
    lines = ["## Per class", "", table(header, rows, align="lrrrl")]
    return lines + [
        "",
        "## Confusion matrix",
        "",
        f"Rows: true class; columns: predicted class "
        f"([counts as JSON]({PLOTS_DIR}/confusion_matrix.json)).",
        "",
        f"![confusion matrix]({PLOTS_DIR}/confusion_matrix.png)",
        "",
        "## Per-class accuracy",
        "",
        f"![per-class accuracy]({PLOTS_DIR}/per_class_accuracy.png)",
        "",
        "## Sample predictions",
        "",
        f"![samples]({PLOTS_DIR}/samples.png)",
        "",
    ]


def _multi_process() -> bool:
    import jax

    return jax.process_count() > 1


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (`--workdir W` or `--compare W1 W2 ... [--output PNG]`); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m fashion_jax.report",
        description="Write a workdir's plots and report.md, or compare the test curves of several workdirs.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--workdir", help="write WORKDIR/plots/*.png and WORKDIR/report.md")
    mode.add_argument(
        "--compare", nargs="+", metavar="WORKDIR", help="compare these workdirs in one PNG"
    )
    parser.add_argument(
        "--output",
        default=None,
        help=f"PNG path for --compare (default: {DEFAULT_COMPARISON} in the current folder)",
    )
    args = parser.parse_args(argv)
    if args.output and not args.compare:
        parser.error("--output goes with --compare")

    def body() -> int:
        if args.workdir:
            for path in write_report(args.workdir):
                print(path)
            return 0
        output = Path(args.output or DEFAULT_COMPARISON)
        if output.suffix.lower() != ".png":
            raise ReportError(f"--output {output} must end in .png.")
        try:
            comparison = compare(args.compare, output)
        except OSError as e:
            raise ReportError(f"Cannot write {output} ({e.strerror or e}).") from None
        print(comparison)
        print(output)
        return 0

    command = f"python -m fashion_jax.report {' '.join(sys.argv[1:] if argv is None else argv)}"
    return exits.guarded(body, command, {"workdir": args.workdir or "."})


if __name__ == "__main__":
    sys.exit(main())
