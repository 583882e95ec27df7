"""A distributed run's trainer, watched by its parent: one `error:` line where JAX would abort.

JAX's coordination service ends a process with a C++ check failure (SIGABRT and a stack dump,
exit 134) when a peer does not join within `distributed_timeout_seconds`, or stops answering
after joining. No Python code in that process can catch it. A collective that was running when
the peer died may fail first, in Python (`JaxRuntimeError: ... Gloo all-reduce failed ...
Connection reset by peer`): the child then prints one `PEER_LOST` line (`collective_failed`)
instead of a traceback, and the parent treats it as the same stop. So with `distributed = true` the
runner (`python -m fashion_jax.run`, `python -m fashion_jax.sweep`) starts its own command again
as a child and passes its output through; if the child ends with such a failure, the dump is
left out and one line says what happened and how to resume (exit 2). Any other end is the
child's own: its exit status, its output. SIGTERM and SIGINT are passed on to the child (which
saves and stops, see `preemption`), and on Linux the child is stopped with SIGTERM if its parent
dies, so a killed runner leaves no trainer behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable

CHILD = "FASHION_JAX_WATCHED"  # Set in the child's environment: it trains itself.

# glog's fatal lines: "F1202 01:02:00.612916   18239 client.h:80] message".
_FATAL = re.compile(rb"^F\d{4} [\d:.]+ +\d+ [^\]]*\] ?(.*)$")
# The child's line for a collective that failed in Python (see `collective_failed`).
PEER_LOST = "fashion_jax.supervisor: a collective failed: "


def collective_failed(exc: BaseException) -> str | None:
    """In a watched child, the line to print for `exc` when it is JAX's runtime error (a
    collective whose peer died, most often), else None: the caller handles `exc` as before."""
    if not os.environ.get(CHILD) or "jax" not in sys.modules:
        return None
    import jax

    if not isinstance(exc, jax.errors.JaxRuntimeError):
        return None
    return PEER_LOST + " ".join(str(exc).split())


def distributed_config(resolve: Callable[[], object]):
    """The config `resolve()` returns when it asks for a distributed run this process should
    watch rather than train, else None (also when `resolve` fails: the command then reports that
    itself, in process). `resolve`'s printed notes are discarded (the child prints them)."""
    if os.environ.get(CHILD):
        return None
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            config = resolve()
    except (Exception, SystemExit):
        return None
    return config if getattr(config, "distributed", False) else None


def _stop_with_parent() -> None:  # pragma: no cover (runs in the child before exec)
    """Linux: SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG); elsewhere nothing."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


class _Filter:
    """Passes the child's stderr through; holds back `PEER_LOST` lines, glog fatal lines and all
    that follows a fatal line."""

    def __init__(self, out):
        self.out, self.pending, self.fatal, self.glog, self.dump = out, b"", [], False, False

    def feed(self, chunk: bytes) -> None:
        self.pending += chunk
        # Complete segments end in \n or \r (progress bars redraw with \r).
        while self.pending:
            cut = min(
                (i for i in (self.pending.find(b"\n"), self.pending.find(b"\r")) if i >= 0),
                default=-1,
            )
            if cut < 0:
                # A partial segment goes out now unless it could start a line held back.
                if self.glog or self.pending[:1] in (b"F", PEER_LOST[:1].encode()):
                    return
                self._write(self.pending)
                self.pending = b""
                return
            segment, self.pending = self.pending[: cut + 1], self.pending[cut + 1 :]
            self._line(segment)

    def _line(self, segment: bytes) -> None:
        line = segment.rstrip(b"\r\n")
        match = _FATAL.match(line)
        if line.startswith(PEER_LOST.encode()):
            self.fatal.append(line[len(PEER_LOST) :])
        elif match:
            self.glog = True
            self.fatal.append(match.group(1))
        elif not self.glog:
            self._write(segment)
        elif segment.startswith(b"*** Check failure"):
            self.dump = True  # The stack trace follows: dropped.
        elif not self.dump and segment.strip():
            self.fatal[-1] += b" " + segment.strip()

    def close(self) -> None:
        if self.pending:
            self._line(self.pending)
            self.pending = b""

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.out.flush()

    def reason(self) -> str:
        """The first failure reported: later ones (a failed shutdown barrier) follow from it."""
        text = self.fatal[0].decode(errors="replace").strip()
        status = text.split("absl::Status:", 1)[-1].strip()
        return status or text


def run_watched(argv: list[str], module: str, config, command: str) -> int:
    """Runs `python -m module argv` as a watched child (see the module docstring) and returns the
    exit status this process should end with."""
    env = {**os.environ, CHILD: "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *argv],
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=_stop_with_parent if sys.platform.startswith("linux") else None,
    )
    forward = lambda signum, frame: proc.send_signal(signum)
    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    stream = _Filter(sys.stderr.buffer)
    try:
        while chunk := os.read(proc.stderr.fileno(), 1 << 16):
            stream.feed(chunk)
        stream.close()
        status = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stream.fatal:
        print(
            f"error: the distributed run stopped: JAX reported {stream.reason()!r}. All {config.num_processes or 'the'} processes must start with "
            f"the same command within distributed_timeout_seconds = "
            f"{config.distributed_timeout_seconds}, and one that dies or stops answering ends the "
            f"others. Start every process again with the same command ({command}): the run "
            "resumes from its last checkpoint.",
            file=sys.stderr,
            flush=True,
        )
        return 2
    return status if status >= 0 else 128 - status
