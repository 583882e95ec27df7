"""Numbers and Markdown tables as text: the one formatter of reports, comparisons and benchmarks.

Pure: values in, strings out. `table(["a", "b"], [[1, 2]], align="lr")` is

    | a | b |
    |---|---:|
    | 1 | 2 |
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

MISSING = "n/a"


def number(value, fmt: str = "{:.4f}", missing: str = MISSING) -> str:
    """`value` formatted with `fmt` (a `str.format` pattern); `missing` for None, NaN or inf."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return fmt.format(value)


def table(header: Sequence[str], rows: Iterable[Sequence], align: str | None = None) -> str:
    """A Markdown table: `header` cells, then one line per row of cells (each passed through `str`).

    `align` has one letter per column, `l` (left) or `r` (right); default: all left. Raises
    ValueError when a row or `align` has another number of cells than the header.
    """
    align = align or "l" * len(header)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align {align!r} needs one of 'l'/'r' per column ({len(header)})")
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "".join("---:|" if a == "r" else "---|" for a in align),
    ]
    for row in rows:
        cells = [str(c) for c in row]
        if len(cells) != len(header):
            raise ValueError(f"row {cells} has {len(cells)} cells, the header {len(header)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
