"""Several runs side by side: a table and one figure of their test curves (`report --compare`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fashion_jax import metrics, plots
from fashion_jax import workdir as workdir_lib
from fashion_jax.errors import ReportError
from fashion_jax.formatting import number, table

DEFAULT_COMPARISON = "comparison.png"


def _label(workdirs: list[Path]) -> list[str]:
    names = [w.name or str(w) for w in workdirs]
    return [str(w) if names.count(n) > 1 else n for w, n in zip(workdirs, names)]


def _run_row(workdir: Path, name: str) -> dict[str, Any]:
    records = metrics.read(workdir)
    evals = [r for r in records if r["type"] == "eval" and "test_accuracy" in r]
    summary = workdir_lib.read_json(workdir / workdir_lib.SUMMARY)
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
    header = ["workdir", "epochs", "best test acc", "final test acc", "final test loss", "train s"]
    out = [
        table(
            header,
            [
                [
                    f"{r['workdir']}{'' if r['finished'] else ' *'}",
                    r["epochs"],
                    number(r["best_test_accuracy"]),
                    number(r["final_test_accuracy"]),
                    number(r["final_test_loss"]),
                    number(r["train_seconds"], "{:.1f}"),
                ]
                for r in rows
            ],
            align="lrrrrr",
        )
    ]
    if not all(r["finished"] for r in rows):
        out.append("\n\\* no summary.json: the run has not finished (or crashed)")
    return "\n".join(out)


def compare_rows(workdirs) -> list[dict[str, Any]]:
    """One dict per workdir: workdir (name), epochs, best_test_accuracy, final_test_accuracy,
    final_test_loss, train_seconds, finished, evals (its eval records). Raises ReportError for a
    missing workdir or one without metrics.jsonl."""
    paths = [Path(w) for w in workdirs]
    for w in paths:
        workdir_lib.check_exists(w)
        if not (w / "metrics.jsonl").is_file():
            raise ReportError(
                f"{w} has no metrics.jsonl: nothing to compare. Train it first with "
                f"`python -m fashion_jax.run --workdir {w}`."
            )
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
