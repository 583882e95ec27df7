"""Figures of a run, drawn with matplotlib's Agg canvas (no pyplot, no global backend change).

Pure functions of numbers in, a PNG path out: training curves, confusion matrix, per-class
accuracy, sample predictions, and a comparison of several runs' test curves.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


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
            ax.plot(
                *zip(*pts), color="tab:blue", alpha=0.45, linewidth=1, label="train (per log step)"
            )
        for split, color, marker in (
            ("train", "tab:blue", "o"),
            ("test", "tab:red", "s"),
            ("validation", "tab:green", "^"),
        ):
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
    ax.set_title(
        f"Confusion matrix: {correct}/{total} correct"
        + (f" ({correct / total:.2%})" if total else "")
    )
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(
                j,
                i,
                str(int(count)),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if count > threshold else "black",
            )
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
        ax.axhline(
            overall, color="tab:red", linestyle="--", linewidth=1, label=f"overall {overall:.2%}"
        )
        ax.legend(fontsize=8, loc="lower right")
    for bar, acc, n in zip(bars, accuracy, totals):
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            bar.get_height() + 0.01,
            f"{acc:.1%}" if n else "n/a",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set_title("Per-class test accuracy")
    return _save(fig, Path(path))


def plot_samples(
    images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, class_names, path: str | Path
) -> Path:
    """Draws `images` uint8[N, H, W, 1] in a grid titled "predicted / true"; mistakes in red.

    One axes over a mosaic of the images, not one axes per image: 36 subplots and their layout
    took most of a report's time (about 1.5 s of a tiny run's 4.4 s)."""
    from matplotlib.patches import Rectangle

    n = len(images)
    cols = min(6, max(n, 1))
    rows = max(1, -(-n // cols))
    h, w = (images.shape[1], images.shape[2]) if n else (28, 28)
    gap_x, gap_y = max(2, w // 7), max(8, h // 2)  # Between tiles; above each, its title.
    cell_w, cell_h = w + gap_x, h + gap_y
    mosaic = np.full((rows * cell_h + gap_x // 2, cols * cell_w), np.nan)
    inch = 1.9 / cell_w  # Inches per mosaic pixel: 1.9 in per column, as before.
    title = 0.35  # Inches above the mosaic for the figure's title.
    height = mosaic.shape[0] * inch
    fig = _figure(cols * cell_w * inch, height + title)
    ax = fig.add_axes((0.0, 0.0, 1.0, height / (height + title)))
    ax.axis("off")
    for i, (image, true, pred) in enumerate(zip(images, labels, predictions)):
        top, left = (i // cols) * cell_h + gap_y, (i % cols) * cell_w + gap_x // 2
        mosaic[top : top + h, left : left + w] = image[..., 0]
        wrong = int(pred) != int(true)
        ax.text(
            left + w / 2,
            top - 1.5,
            f"{class_names[int(pred)]}\n({class_names[int(true)]})",
            ha="center",
            va="bottom",
            fontsize=7,
            color="red" if wrong else "black",
        )
        if wrong:
            ax.add_patch(
                Rectangle((left - 1, top - 1), w + 1, h + 1, fill=False, edgecolor="red", lw=2)
            )
    cmap = _gray_with_white_background()
    ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=255, interpolation="nearest", aspect="auto")
    fig.suptitle(
        "First test images (IDX order): predicted (true); mistakes in red",
        fontsize=9,
        y=1 - 0.1 / (height + title),
        va="top",
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _gray_with_white_background():
    """The gray colour map, drawing NaN (the mosaic's gaps) white."""
    from matplotlib import colormaps

    return colormaps["gray"].with_extremes(bad="white")


def plot_comparison(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Test accuracy (left) and test loss (right) per epoch of several runs: `rows` items have
    "workdir" (a label) and "evals" (their eval records)."""
    fig = _figure(11, 4.2)
    axes = fig.subplots(1, 2)
    for row in rows:
        epochs = [r["epoch"] for r in row["evals"]]
        axes[0].plot(
            epochs, [r["test_accuracy"] for r in row["evals"]], marker="o", label=row["workdir"]
        )
        axes[1].plot(
            epochs,
            [r.get("test_loss", float("nan")) for r in row["evals"]],
            marker="o",
            label=row["workdir"],
        )
    for ax, title in zip(axes, ("Test accuracy", "Test loss")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, Path(path))
