"""Which conductor the ingress hands a new thread to.

Every conductor of the ingress's deploy takes a share: the thread's id (random hex) picks one
of those running, from a list read again every few seconds, as conductors come and go with
the backlog (:mod:`tilemore.service.conductor_pool`). A hand-off only spares the thread the
wait for the next claim: a conductor that is full or draining declines it, and the first
conductor is then asked; one that declines too, or is gone, leaves the thread to the claims
that every conductor makes each second. Nothing is lost either way.

The Ray side (listing the named actors, their handles, the calls) is given to it, so that
the choice is tested without Ray.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

H = TypeVar("H")  # a conductor's handle
REFRESH_SECONDS = 5.0


class HandOffs(Generic[H]):
    def __init__(self, first: str, names: Callable[[], list[str]], handle: Callable[[str], H],
                 refresh_seconds: float = REFRESH_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 first_handle: H | None = None) -> None:
        """``first``: the first conductor's name, always among the choices (its handle, when
        the caller has it); ``names``: the running conductors of this deploy; ``handle``: a
        conductor's handle, by name."""
        self.first = first
        self._names, self._handle = names, handle
        self._refresh_seconds, self._clock = refresh_seconds, clock
        self._lock = threading.Lock()
        self._handles: dict[str, H] = {} if first_handle is None else {first: first_handle}
        self._chosen: list[str] = [first]
        self._read_at: float | None = None

    def choose(self, thread_id: str) -> tuple[str, H]:
        """The conductor (name, handle) for a new thread."""
        names = self._current()
        name = names[int(thread_id[:8], 16) % len(names)] if len(names) > 1 else names[0]
        return name, self.handle(name)

    def hand_off(self, thread_id: str, submit: Callable[[H, str], Future[bool]]) -> None:
        """Hand the thread to its conductor (``submit`` asks one to take it, and does not
        wait); if that one declines or is gone, to the first. Never waits, never raises."""
        name, handle = self.choose(thread_id)
        taken = submit(handle, thread_id)
        if name == self.first:
            return

        def declined(done: Future[bool]) -> None:
            if done.exception() is None and done.result():
                return
            try:
                submit(self.handle(self.first), thread_id)
            except Exception:  # noqa: BLE001 - the claims take the thread within a second
                pass

        taken.add_done_callback(declined)

    def handle(self, name: str) -> H:
        with self._lock:
            found = self._handles.get(name)
        if found is None:
            found = self._handle(name)
            with self._lock:
                self._handles[name] = found
        return found

    def _current(self) -> list[str]:
        now = self._clock()
        with self._lock:
            fresh = self._read_at is not None and now - self._read_at < self._refresh_seconds
            if fresh:
                return self._chosen
            self._read_at = now  # one reader; the others use the list they have meanwhile
        try:
            names = sorted({self.first, *self._names()})
        except Exception:  # noqa: BLE001 - Ray's control plane briefly away: the first only
            names = [self.first]
        with self._lock:
            self._chosen = names
            gone = set(self._handles) - set(names) - {self.first}
            for name in gone:  # a conductor the pool stopped: its handle goes too
                del self._handles[name]
        return names
