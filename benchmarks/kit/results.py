"""The kit's JSON line: rewritten in place after every row, so a kill loses at most one row.

The line sits at the end of the results file (JSON lines; earlier lines are kept). `sections`
says how each section ended: "ok", "failed" (with its one-line reason; the kit goes on with the
next section) or "skipped". A SIGTERM (e.g. `timeout`) ends the running section as failed, marks
the line incomplete, writes it, and then ends the process by that same signal, so whoever sent it
sees the kit stop.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from kit.shared import one_line


class Terminated(Exception):
    """SIGTERM or SIGINT arrived: record what there is, then stop."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def _raise_terminated(signum, frame):
    del frame
    raise Terminated(signum)


def install_signal_handlers() -> None:
    """SIGTERM and SIGINT raise `Terminated` in the main thread (the train loop, while it runs,
    turns them into a clean stop, which `kit.runner` turns back into `Terminated`)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _raise_terminated)


def die_by(signum: int) -> None:
    """Ends this process by `signum` with the default action (exit status 128 + signum)."""
    signal.signal(signum, signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signum)


class Results:
    """One run's JSON object, kept as the last line of `path` (rewritten after every change)."""

    def __init__(self, path: str | os.PathLike, head: dict[str, Any]):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            if f.tell() and not self._ends_with_newline():
                f.write(b"\n")  # A line cut short by an earlier kill stays a line of its own.
            self.offset = f.tell()
        self.data: dict[str, Any] = {**head, "complete": False, "sections": {}}
        self.write()

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def write(self) -> None:
        line = (json.dumps(self.data, default=str) + "\n").encode()
        with self.path.open("r+b") as f:
            f.seek(self.offset)
            f.write(line)
            f.truncate()
            f.flush()
            os.fsync(f.fileno())

    def add(self, key: str, row: dict[str, Any]) -> None:
        """Appends `row` to the list `key` and writes."""
        self.data.setdefault(key, []).append(row)
        self.write()

    def set(self, **values) -> None:
        self.data.update(values)
        self.write()

    def section(self, name: str, status: str, seconds: float, reason: str | None = None) -> None:
        entry = {"status": status, "seconds": round(seconds, 2)}
        if reason:
            entry["reason"] = reason
        self.data["sections"][name] = entry
        self.write()


def run_section(ctx, name: str, fn) -> None:
    """Runs `fn(ctx)` as section `name`: records "ok", or "failed" with a one-line reason (the
    traceback goes to stderr) and returns; `Terminated` is recorded and raised on."""
    t = ctx.clock.elapsed()
    try:
        if name in ctx.args.fail_sections:
            raise RuntimeError(f"made to fail (--fail-sections {name})")
        fn(ctx)
    except Terminated as e:
        ctx.results.section(name, "failed", ctx.clock.elapsed() - t, str(e))
        raise
    except Exception as e:  # One section failing (out of memory, a missing module) loses no other.
        traceback.print_exc(file=sys.stderr)
        reason = one_line(e)
        ctx.results.section(name, "failed", ctx.clock.elapsed() - t, reason)
        print(f"\n## {name}: failed ({reason}); going on", flush=True)
    else:
        ctx.results.section(name, "ok", ctx.clock.elapsed() - t)
