"""Preemption: SIGTERM/SIGINT become a request to save and stop, agreed on by every process.

The signal handler only records the signal. The train loop asks `StopFlag.requested(sync_point)`
between dispatches; with several processes the flags are compared with an allgather at sync
points only (log steps and epoch ends, which every process reaches in the same order), so all
processes save the same step together and exit with 128 + the signal number.
"""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np


class Preempted(Exception):
    """Raised by the loop after a clean save at `step` because of signal `signum`."""

    def __init__(self, signum: int, step: int, saved: bool = True):
        super().__init__(f"signal {signum} at step {step}")
        self.signum, self.step, self.saved = signum, step, saved


class StopFlag:
    """`with StopFlag() as stop:` installs SIGTERM/SIGINT handlers that only set `stop.signum`."""

    def __init__(self):
        self.signum = 0
        self._previous = {}

    def __enter__(self) -> StopFlag:
        # Python lets only the main thread install handlers; elsewhere (a notebook's or a
        # service's worker thread) signals keep their default meaning.
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def requested(self, sync_point: bool) -> bool:
        """Whether to save and stop now. One process: whenever a signal arrived. Several: only at
        `sync_point`s, and then if any process got a signal (an allgather every process joins)."""
        if jax.process_count() == 1:
            return bool(self.signum)
        if not sync_point:
            return False
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.int32(self.signum))
        if not self.signum and np.any(flags):
            self.signum = int(np.max(flags))
        return bool(np.any(flags))

    def preempted(self, step: int) -> Preempted:
        """The exception to raise after saving at `step` because a stop was requested."""
        return Preempted(self.signum or signal.SIGTERM, step)
