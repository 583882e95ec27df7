"""How every command ends: one `error:` line for what a user can fix, never a stack trace.

Each command line (`run`, `sweep`, `predict`, `export`, `report`) hands its work to `guarded`:

- a user error (`errors.UserError`: bad config, data, workdir, checkpoint, NaN loss) prints
  `error: <message>` and returns 2;
- a preemption (SIGTERM/SIGINT, `preemption.Preempted`) prints what was saved and how to resume,
  and returns 128 + signal;
- a full disk, a quota, a read-only or forbidden folder (an `OSError` however deeply Orbax or
  TensorStore wrapped it) prints one line naming the path and returns 2;
- in a watched distributed child (`supervisor`), a collective that failed because a peer died
  prints the marker line its parent folds into the run's one line, and returns 2.

Storage threads (Orbax, TensorStore, TensorBoard) report their own failures a second time,
outside the caller's `try`: as log records, uncaught thread exceptions, unraisable exceptions or
tracebacks printed by native code through `sys.excepthook`. `_Quiet` drops exactly those that the
command's own line already covers, and only while the work runs; after a full disk was reported
it stays until the process exits, since the last echoes come from flushes at exit.
"""

from __future__ import annotations

import errno
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Callable

from fashion_jax import supervisor
from fashion_jax.errors import UserError
from fashion_jax.preemption import Preempted

_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


def guarded(body: Callable[[], int], command: str, where: dict[str, str]) -> int:
    """Runs `body()` (which returns the exit status) and ends it the way every command ends (see
    the module docstring). `command` is the command line that resumes; `body` puts the workdir it
    writes into `where["workdir"]` as soon as it knows it."""
    quiet = _Quiet()
    with quiet:
        try:
            return body()
        except Preempted as p:
            name = signal.Signals(p.signum).name
            done = (
                f"saved the checkpoint at step {p.step} in {where.get('workdir', 'WORKDIR')}/checkpoints"
                if p.saved
                else f"stopped before training (at step {p.step}), nothing new to save"
            )
            _say(f"\n{name} received: {done}. Resume with the same command: {command}")
            return 128 + p.signum
        except KeyboardInterrupt:  # Ctrl-C before the run's own handler was installed.
            _say(f"\nSIGINT received before training started. Start again with: {command}")
            return 128 + signal.SIGINT
        except UserError as e:
            _say(f"error: {e}")
            return 2
        except Exception as e:
            if _peer_lost(e):
                return 2
            disk = disk_error(e)
            if disk is None:
                raise
            quiet.full_disk = True
            _say(
                f"error: cannot write ({disk.strerror}: {disk.filename or where.get('workdir')}). "
                "Free some space or fix the permissions, then rerun the same command: it resumes "
                "from the last complete checkpoint."
            )
            return 2


def disk_error(error: BaseException | None) -> OSError | None:
    """The full-disk / quota / read-only / permission OSError behind `error` (Orbax and TensorStore
    wrap them), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _DISK_ERRNOS:
            return error
        if _full_disk_text(str(error)):  # TensorStore: ValueError RESOURCE_EXHAUSTED ... OCDBT.
            return OSError(errno.ENOSPC, "No space left on device")
        error = error.__cause__ or error.__context__
    return None


def _is_full_disk(exc: BaseException | None) -> bool:
    return (
        exc is not None
        and (d := disk_error(exc)) is not None
        and d.errno in (errno.ENOSPC, errno.EDQUOT)
    )


def _full_disk_text(text: str) -> bool:
    return "RESOURCE_EXHAUSTED" in text or "No space left on device" in text


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _peer_lost(exc: BaseException) -> bool:
    """In a watched distributed child, prints the line its parent turns into the run's one error
    line when `exc` is a failed collective (`supervisor.collective_failed`); else False."""
    line = supervisor.collective_failed(exc)
    if line is not None:
        _say(line)
    return line is not None


class _Quiet(logging.Filter):
    """While active: drops storage threads' second reports of a failure the command reports itself,
    on every channel they use (absl log records, `sys.excepthook`, `sys.unraisablehook`,
    `threading.excepthook`), and reports a collective that failed in a storage thread as `guarded`
    does; everything else passes through unchanged. Restores the previous hooks on exit, unless a
    full disk was reported (`full_disk`): then they stay for the flushes at exit."""

    def __init__(self):
        super().__init__()
        self.full_disk = False

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (_is_full_disk(exc) or _full_disk_text(record.getMessage()))

    def leftover(self, exc, tb) -> bool:
        """A report the command's own message already covers: TensorStore resolving a write's
        asyncio future after Orbax closed that event loop (a failed save leaves writes in flight:
        `RuntimeError: Event loop is closed` from `call_soon_threadsafe`, printed by native code),
        and, after a full disk was reported, its echoes and TensorBoard's flushes."""
        frames = traceback.extract_tb(tb) if tb is not None else []
        if (
            isinstance(exc, RuntimeError)
            and str(exc) == "Event loop is closed"
            and any(f.name == "call_soon_threadsafe" and "asyncio" in f.filename for f in frames)
        ):
            return True
        return self.full_disk and (
            _is_full_disk(exc)
            or (isinstance(exc, OSError) and any("tensorboardX" in f.filename for f in frames))
        )

    def _handled(self, exc, tb) -> bool:
        return self.leftover(exc, tb) or _peer_lost(exc)  # Orbax's barriers are collectives too.

    def __enter__(self):
        self._previous = sys.excepthook, sys.unraisablehook, threading.excepthook
        before_except, before_unraisable, before_thread = self._previous
        logging.getLogger("absl").addFilter(self)
        sys.excepthook = lambda kind, value, tb: (
            None if self._handled(value, tb) else before_except(kind, value, tb)
        )
        sys.unraisablehook = lambda u: (
            None if self._handled(u.exc_value, u.exc_traceback) else before_unraisable(u)
        )
        threading.excepthook = lambda a: (
            None if self._handled(a.exc_value, a.exc_traceback) else before_thread(a)
        )
        return self

    def __exit__(self, *exc) -> None:
        if self.full_disk:
            return  # The storage threads' last echoes come at exit.
        logging.getLogger("absl").removeFilter(self)
        sys.excepthook, sys.unraisablehook, threading.excepthook = self._previous


def _from_storage_threads(exc: BaseException | None, tb) -> bool:
    """Whether an exception comes from Orbax/TensorStore/asyncio machinery (a failed read's
    leftovers, or its callbacks hitting an event loop Orbax already closed)."""
    if isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc):
        return True
    frames = traceback.extract_tb(tb) if tb is not None else []
    return any(
        ("orbax" in f.filename or "tensorstore" in f.filename or "asyncio" in f.filename)
        for f in frames
    )


def quiet_storage_leftovers() -> None:
    """After a damaged checkpoint was found (and reported in one line), stops the storage
    threads' leftover exceptions from printing tracebacks, for the rest of the process (a failed
    read's callbacks arrive at any later time); other background errors still print."""
    previous_unraisable, previous_thread = sys.unraisablehook, threading.excepthook
    if getattr(previous_unraisable, "fashion_jax_quiet", False):
        return

    def unraisable(u):
        if not _from_storage_threads(u.exc_value, u.exc_traceback):
            previous_unraisable(u)

    def thread(args):
        if not _from_storage_threads(args.exc_value, args.exc_traceback):
            previous_thread(args)

    unraisable.fashion_jax_quiet = True
    sys.unraisablehook, threading.excepthook = unraisable, thread
