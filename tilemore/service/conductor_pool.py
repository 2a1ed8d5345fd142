"""How many conductors run: as many as the backlog needs, between a floor and a ceiling.

The first conductor (slot 0) runs the pool. Every few seconds it reads the backlog (the
unfinished threads) and asks for ``ceil(backlog / concurrency)`` conductors, at least
``minimum`` and at most ``maximum``. More are started at once; fewer only once the backlog
has stayed low for ``downscale_seconds`` (a burst that ends does not make conductors come and
go). A conductor leaving is drained first: it takes no new thread, finishes those it runs,
and is stopped once it runs none — no lease is lost, no thread waits for one to run out.

Conductors are reached through three callables (start a slot, drain one and say how many
threads it still runs, stop one), so the policy runs the same on Ray actors and on
in-process conductors in tests.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger("tilemore.conductor")

C = TypeVar("C")  # a conductor as its runner sees it: a Ray actor handle, a Conductor


@dataclass(frozen=True)
class PoolPolicy:
    minimum: int
    maximum: int
    concurrency: int  # threads one conductor runs at once
    downscale_seconds: float = 60.0

    def wanted(self, backlog: int) -> int:
        return max(self.minimum, min(self.maximum, math.ceil(backlog / self.concurrency)))


class ConductorPool(Generic[C]):
    def __init__(self, policy: PoolPolicy, backlog: Callable[[], int],
                 start: Callable[[int], C], drain: Callable[[C], int],
                 stop: Callable[[C], None], clock: Callable[[], float] = time.monotonic
                 ) -> None:
        """Slot 0 is the caller itself: the pool starts and stops slots 1 and up."""
        self.policy, self._backlog, self._clock = policy, backlog, clock
        self._start, self._drain, self._stop = start, drain, stop
        self.running: dict[int, C] = {}  # slot → conductor (slot 0 excluded)
        self.draining: dict[int, C] = {}
        self._low_since: float | None = None

    @property
    def size(self) -> int:
        """Conductors taking threads, slot 0 included."""
        return 1 + len(self.running)

    def step(self) -> int:
        """One look at the backlog: start, drain or stop conductors; the pool's size."""
        self._finish_draining()
        wanted = self.policy.wanted(self._backlog())
        now = self._clock()
        if wanted >= self.size:
            self._low_since = None
            for slot in range(1, wanted):
                if slot not in self.running:
                    if slot in self.draining:  # wanted again before it stopped: keep it
                        self._stop_then_restart(slot)
                    else:
                        self.running[slot] = self._start(slot)
                        log.info("conductor %d started (backlog asks for %d)", slot, wanted)
            return self.size
        if self._low_since is None:
            self._low_since = now
        if now - self._low_since >= self.policy.downscale_seconds:
            for slot in sorted(self.running, reverse=True)[:self.size - wanted]:
                self.draining[slot] = self.running.pop(slot)
                log.info("conductor %d drains (backlog asks for %d)", slot, wanted)
            self._finish_draining()
            self._low_since = now
        return self.size

    def _finish_draining(self) -> None:
        for slot, conductor in list(self.draining.items()):
            try:
                left = self._drain(conductor)
            except Exception as exc:  # noqa: BLE001 - gone already: nothing left to wait for
                log.warning("conductor %d did not answer its drain (%s); stopping it", slot, exc)
                left = 0
            if left == 0:
                self._stop(self.draining.pop(slot))
                log.info("conductor %d stopped", slot)

    def _stop_then_restart(self, slot: int) -> None:
        # A drained conductor takes no threads again; a new one under its name does.
        conductor = self.draining.pop(slot)
        if self._drain(conductor) == 0:
            self._stop(conductor)
            self.running[slot] = self._start(slot)
        else:  # still finishing its threads: it stays draining, the slot waits a step
            self.draining[slot] = conductor
