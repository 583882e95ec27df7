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

from fashion_jax.errors import UserError

PLOTS_DIR = "plots"
REPORT_FILE = "report.md"
DEFAULT_COMPARISON = "comparison.png"
PREDICT_BATCH = 1000
NUM_SAMPLES = 36


class ReportError(UserError):
    """A workdir that cannot be reported on (missing, or holding nothing to report)."""


# ----------------------------------------------------------------------------- reading a workdir


def read_metrics(workdir: str | Path) -> list[dict[str, Any]]:
    """The records of `WORKDIR/metrics.jsonl` ([] if absent), skipping lines cut short by a kill.

    A record repeated for the same (type, step) keeps its last copy; records are sorted by step.
    """
    path = Path(workdir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records: dict[tuple[str, int], dict[str, Any]] = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("type") in ("train", "eval") and "step" in record:
            records[(record["type"], int(record["step"]))] = record
    return sorted(records.values(), key=lambda r: (r["step"], r["type"] == "eval"))


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


# ----------------------------------------------------------------------------- figures


def _figure(width: float, height: float):
    """A matplotlib Figure drawn with the Agg canvas (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_curves(records: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Draws loss (left) and accuracy (right) against the epoch into `path`; None if no records.

    Train per log step (thin line), train per epoch, test and, when present, validation per epoch.
    """
    train = [r for r in records if r["type"] == "train"]
    evals = [r for r in records if r["type"] == "eval"]
    if not train and not evals:
        return None
    fig = _figure(11, 4.2)
    axes = fig.subplots(1, 2)
    for ax, metric, title in ((axes[0], "loss", "Loss"), (axes[1], "accuracy", "Accuracy")):
        pts = [(r["epoch"], r[metric]) for r in train if metric in r]
        if pts:
            ax.plot(*zip(*pts), color="tab:blue", alpha=0.45, linewidth=1, label="train (per log step)")
        for split, color, marker in (("train", "tab:blue", "o"), ("test", "tab:red", "s"),
                                     ("validation", "tab:green", "^")):
            pts = [(r["epoch"], r[f"{split}_{metric}"]) for r in evals if f"{split}_{metric}" in r]
            if pts:
                ax.plot(*zip(*pts), color=color, marker=marker, label=f"{split} (per epoch)")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, Path(path))


def plot_confusion_matrix(matrix: np.ndarray, class_names, path: str | Path) -> Path:
    """Draws the counts `matrix[true, predicted]` with class names into `path`."""
    matrix = np.asarray(matrix)
    fig = _figure(8, 7)
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = int(matrix.sum())
    correct = int(np.trace(matrix))
    ax.set_title(f"Confusion matrix: {correct}/{total} correct" + (f" ({correct / total:.2%})" if total else ""))
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(j, i, str(int(count)), ha="center", va="center", fontsize=7,
                    color="white" if count > threshold else "black")
    return _save(fig, Path(path))


def plot_per_class_accuracy(matrix: np.ndarray, class_names, path: str | Path) -> Path:
    """Draws each class's test accuracy (diagonal / row sum of `matrix`) as bars into `path`."""
    matrix = np.asarray(matrix)
    totals = matrix.sum(axis=1)
    accuracy = np.divide(np.diag(matrix), totals, out=np.zeros(len(totals)), where=totals > 0)
    fig = _figure(9, 4.5)
    ax = fig.subplots()
    bars = ax.bar(np.arange(len(class_names)), accuracy, color="tab:blue")
    ax.set_xticks(np.arange(len(class_names)), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("test accuracy")
    overall = np.trace(matrix) / matrix.sum() if matrix.sum() else float("nan")
    if math.isfinite(overall):
        ax.axhline(overall, color="tab:red", linestyle="--", linewidth=1, label=f"overall {overall:.2%}")
        ax.legend(fontsize=8, loc="lower right")
    for bar, acc, n in zip(bars, accuracy, totals):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01,
                f"{acc:.1%}" if n else "n/a", ha="center", va="bottom", fontsize=7)
    ax.set_title("Per-class test accuracy")
    return _save(fig, Path(path))


def plot_samples(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, class_names,
                 path: str | Path) -> Path:
    """Draws `images` uint8[N, 28, 28, 1] in a grid titled "predicted / true"; mistakes in red."""
    n = len(images)
    cols = min(6, max(n, 1))
    rows = max(1, -(-n // cols))
    fig = _figure(1.9 * cols, 2.0 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, true, pred in zip(axes, images, labels, predictions):
        wrong = int(pred) != int(true)
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{class_names[int(pred)]}\n({class_names[int(true)]})", fontsize=7,
                     color="red" if wrong else "black")
        if wrong:
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_edgecolor("red")
                spine.set_linewidth(2)
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("First test images (IDX order): predicted (true); mistakes in red", fontsize=9)
    return _save(fig, Path(path))


# ----------------------------------------------------------------------------- predictions


def predict_classes(state, images: np.ndarray, config=None, batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """Predicted classes int32[N] for uint8 `images` [N, 28, 28, 1], in padded batches of `batch_size`.

    One jitted function of a fixed batch shape, so it compiles once; uses the config's flip TTA
    like the runner's evaluation.
    """
    import jax

    from fashion_jax import steps

    n = len(images)
    if n == 0:
        return np.zeros((0,), np.int32)
    bs = min(batch_size, n)
    tta = bool(config is not None and config.get("tta_flip", False))
    fn = jax.jit(lambda s, x: steps.predict_logits(s, x, tta).argmax(-1))
    out = np.empty((n,), np.int32)
    for start in range(0, n, bs):
        chunk = images[start: start + bs]
        if len(chunk) < bs:
            chunk = np.concatenate([chunk, np.zeros((bs - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        out[start: start + bs] = np.asarray(fn(state, chunk))[: min(bs, n - start)]
    return out


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
    if not (workdir / "config.json").is_file():
        from fashion_jax.errors import CheckpointError

        raise CheckpointError(f"{workdir} has no config.json: it holds no run. Train first with "
                              f"`python -m fashion_jax.run --workdir {workdir}`.")
    if not has_metrics and not has_checkpoints:
        raise ReportError(f"{workdir} has neither metrics.jsonl nor a checkpoint: nothing to report yet. "
                          f"Train first with `python -m fashion_jax.run --workdir {workdir}`.")
    plots = workdir / PLOTS_DIR
    plots.mkdir(exist_ok=True)
    config_json = _read_json(workdir / "config.json")
    summary = _read_json(workdir / "summary.json")
    records = read_metrics(workdir)
    written: list[Path] = []
    notes: list[str] = []
    if summary is None:
        notes.append("No summary.json: the run has not finished (or crashed). The numbers come from "
                     "metrics.jsonl and the newest checkpoint.")

    curves = plot_curves(records, plots / "curves.png")
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
            from fashion_jax import predict

            config, state = predict.load_trained(workdir)
            test = data.load(config.data_dir or None, config.idx_dir or None, config.download)["test"]
            predictions = predict_classes(state, test.images, config)
        except UserError as e:
            notes.append(f"Test-set figures skipped: {e}".split("\n")[0])
            print(f"report: test-set figures skipped: {e}", file=sys.stderr, flush=True)
        else:
            matrix = confusion_matrix(test.labels, predictions, data.NUM_CLASSES)
            json_path = plots / "confusion_matrix.json"
            json_path.write_text(json.dumps(matrix.tolist()) + "\n")
            written.append(plot_confusion_matrix(matrix, data.CLASS_NAMES, plots / "confusion_matrix.png"))
            written.append(json_path)
            per_class = plot_per_class_accuracy(matrix, data.CLASS_NAMES, plots / "per_class_accuracy.png")
            written.append(per_class)
            k = min(NUM_SAMPLES, len(test.labels))
            samples = plot_samples(test.images[:k], test.labels[:k], predictions[:k], data.CLASS_NAMES,
                                   plots / "samples.png")
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
    records = read_metrics(workdir)
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
    fig = _figure(11, 4.2)
    axes = fig.subplots(1, 2)
    for row in rows:
        epochs = [r["epoch"] for r in row["evals"]]
        axes[0].plot(epochs, [r["test_accuracy"] for r in row["evals"]], marker="o", label=row["workdir"])
        axes[1].plot(epochs, [r.get("test_loss", float("nan")) for r in row["evals"]], marker="o",
                     label=row["workdir"])
    for ax, title in zip(axes, ("Test accuracy", "Test loss")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, Path(output))
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
