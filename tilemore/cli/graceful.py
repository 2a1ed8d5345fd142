"""SIGTERM and Ctrl-C as one orderly stop, bounded by a grace period.

Kubernetes and systemd stop a service with SIGTERM and kill it some seconds later (30 s by
default on Kubernetes). Ray's driver answers SIGTERM with a native stack dump and exit 1, so
``tilemore serve`` installs this after Ray has started: the signal only asks the main thread
to stop, and a watchdog ends the process with status 0 when the grace is spent, after saying
what it leaves behind. The stop itself (HTTP first, then the conductor, then Ray) is the
caller's; this module knows nothing of Ray, so it is tested without it.

The handler only writes the signal's number to a pipe: a handler runs in the main thread
wherever it happens to be, and taking a lock there (an Event, a print) can deadlock on one
the main thread already holds. The watchdog thread reads the pipe.

Its exit kills every process this one started first: skipping Ray's orderly stop leaves the
local cluster's agents and workers running (the agents ignore SIGTERM) once the raylet is gone.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType

_DONE, _ABANDON = 0, 255  # pipe bytes besides signal numbers


class GracefulStop:
    """``install()`` once the process is up; ``wait()`` blocks the main thread until a stop is
    asked for; ``done()`` once the orderly stop has finished. When it has not finished
    ``margin`` seconds before the grace ends, ``last_words`` runs (for at most ``margin``
    seconds) and the process exits 0 all the same: what still runs was recorded as it ran,
    and resumes on the next start. A second signal, or ``abandon()``, cuts the wait short."""

    def __init__(self, grace: float, *, last_words: Callable[[], None] = lambda: None,
                 echo: Callable[[str], None] = print,
                 signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
                 exit: Callable[[int], None] | None = None) -> None:
        self.grace = grace
        self.margin = min(2.0, grace / 4)
        self.last_words, self.echo, self.signals = last_words, echo, tuple(signals)
        self._exit = exit or hard_exit
        self.requested = threading.Event()
        self.signal: signal.Signals | None = None
        self.started_at: float | None = None
        self._read, self._write = os.pipe()
        self._previous: dict[signal.Signals, object] = {}
        self._watchdog = threading.Thread(target=self._watch, name="shutdown-watchdog",
                                          daemon=True)

    # -- the main thread's side ------------------------------------------------------------

    def install(self) -> None:
        """Take the signals over (from the main thread: Python's rule), replacing Ray's
        handlers and the default KeyboardInterrupt, and start the watchdog."""
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        self._watchdog.start()

    def uninstall(self) -> None:
        """Put the previous handlers back and stand the watchdog down (tests)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self.done()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        os.write(self._write, bytes([signum]))  # a system call, no lock: safe anywhere

    def request(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Ask for the stop as the signal would."""
        os.write(self._write, bytes([sig]))

    def wait(self, timeout: float | None = None) -> signal.Signals | None:
        """Block until a stop is asked for; the signal that asked (None on timeout)."""
        self.requested.wait(timeout)
        return self.signal

    def remaining(self, reserve: float = 0.0) -> float:
        """Seconds left of the grace, less the watchdog's margin and ``reserve``."""
        started = time.monotonic() if self.started_at is None else self.started_at
        return max(0.0, started + self.grace - self.margin - reserve - time.monotonic())

    def done(self) -> None:
        """The orderly stop finished: the watchdog stands down."""
        os.write(self._write, bytes([_DONE]))

    def abandon(self) -> None:
        """Give the orderly stop up: the watchdog says what is left and exits now."""
        os.write(self._write, bytes([_ABANDON]))
        self._watchdog.join()  # os._exit: never returns

    # -- the watchdog ----------------------------------------------------------------------

    def _next(self, timeout: float | None) -> int | None:
        ready, _, _ = select.select([self._read], [], [], timeout)
        return os.read(self._read, 1)[0] if ready else None

    def _watch(self) -> None:
        first = self._next(None)
        if first == _DONE:  # stood down (uninstalled) before any stop was asked for
            return
        self.started_at = time.monotonic()
        if first != _ABANDON:
            self.signal = signal.Signals(first)
            self.requested.set()
            if not self._grace_passes():
                return
        words = threading.Thread(target=self._last_words, name="last-words", daemon=True)
        words.start()
        words.join(self.margin)  # a hung database must not hold the exit past the grace
        self._exit(0)

    def _grace_passes(self) -> bool:
        """Wait out the grace: False when the orderly stop finished within it."""
        assert self.started_at is not None
        deadline = self.started_at + self.grace - self.margin
        while (left := deadline - time.monotonic()) > 0:
            got = self._next(left)
            if got == _DONE:
                return False
            if got == _ABANDON:
                return True
            if got is not None:
                self.echo(f"{signal.Signals(got).name} again: stopping now")
                return True
        self.echo(f"not stopped within {self.grace:g} s: exiting now")
        return True

    def _last_words(self) -> None:
        try:
            self.last_words()
        except Exception as exc:  # noqa: BLE001 - nothing may stop the exit
            self.echo(f"(could not say what is left: {exc})")


def hard_exit(code: int) -> None:
    """``os._exit``, after SIGKILLing every process this one started (a local Ray cluster)."""
    for pid in descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    os._exit(code)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc (none where there is no /proc). Listed before
    any is killed: a killed parent's children are handed to init, out of reach."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        ppid = int(text[text.rindex(")") + 2:].split()[1])  # the name may hold spaces
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found
