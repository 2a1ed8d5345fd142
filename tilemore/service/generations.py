"""Rolling upgrades: each deploy of the service runs conductors of its own generation.

A deploy (``serve run``, ``serve deploy``, ``tilemore serve``) draws a new generation, an id
that sorts by the time it was drawn, and names its conductors and its billing actor with it
(``tilemore-conductor@<generation>``, ``tilemore-billing@<generation>``): each deploy's code
talks to its own. Its first conductor retires every conductor of an older generation: a
retired conductor takes no new thread (the ingress's hand-offs to it are refused, and the
new generation's sweep claims them), finishes the threads it runs on the code and the
pipeline versions they started with, renewing their leases, and is stopped once it runs
none; once all are, and the older ingress replicas had time to go, the older billing actors
are stopped too. No lease runs out and no task runs twice. A conductor of an older generation
that Ray restarts after the new one started finds the newer one and retires itself.

The policy is here; reaching conductors (Ray actors, or in-process ones in tests) is the
caller's, through callables.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

log = logging.getLogger("tilemore.conductor")

C = TypeVar("C")
SEPARATOR = "@"
RETIRE_POLL_SECONDS = 1.0
RETIRE_MOST_SECONDS = 6 * 3600.0  # a thread of a 100 MP batch item is minutes, not hours


def new_generation(clock: Callable[[], int] = time.time_ns) -> str:
    """A deploy's id: hex nanoseconds, fixed width, so a later deploy sorts after."""
    return f"{clock():016x}"


def named(base: str, generation: str) -> str:
    return f"{base}{SEPARATOR}{generation}" if generation else base


def generation_of(name: str) -> str:
    """The generation in a conductor's name; "" for a name from before generations (which
    every generation is newer than)."""
    return name.rpartition(SEPARATOR)[2] if SEPARATOR in name else ""


def older(names: Iterable[str], generation: str) -> list[str]:
    """The names of conductors of generations before ``generation``."""
    return sorted(n for n in names if generation_of(n) < generation)


def superseded(names: Iterable[str], generation: str) -> bool:
    """Whether a conductor of a later generation than ``generation`` exists."""
    return any(generation_of(n) > generation for n in names)


class Retirement(Generic[C]):
    """Conductors being retired: each drained (``drain`` returns how many threads it still
    runs), then stopped once it runs none, or after ``most_seconds`` whatever it runs (its
    threads' leases then run out and the new generation takes them)."""

    def __init__(self, drain: Callable[[C], int], stop: Callable[[C], None],
                 most_seconds: float = RETIRE_MOST_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._drain, self._stop, self._most, self._clock = drain, stop, most_seconds, clock
        self.left: dict[str, tuple[C, float]] = {}  # name → (conductor, when retired)

    def add(self, name: str, conductor: C) -> None:
        self.left.setdefault(name, (conductor, self._clock()))

    def step(self) -> int:
        """Drain each again (a drain is idempotent), stop those done; how many are left."""
        for name, (conductor, since) in list(self.left.items()):
            try:
                running = self._drain(conductor)
            except Exception as exc:  # noqa: BLE001 - gone already: nothing to wait for
                log.info("conductor %s did not answer its drain (%s): stopping it", name, exc)
                running = 0
            overdue = self._clock() - since >= self._most
            if running == 0 or overdue:
                if overdue:
                    log.warning("conductor %s still runs %d threads after %.0f s: stopping it;"
                                " their leases run out and the new generation takes them",
                                name, running, self._most)
                self._stop(conductor)
                del self.left[name]
                log.info("conductor %s retired", name)
        return len(self.left)

    def run_in_background(self, poll_seconds: float = RETIRE_POLL_SECONDS,
                          then: Callable[[], None] | None = None) -> threading.Thread:
        """Step until every conductor is stopped, then call ``then`` (what the retired
        conductors used, stopped after them)."""
        def loop() -> None:
            while self.left:
                try:
                    self.step()
                except Exception:  # noqa: BLE001 - the next step tries again
                    log.exception("retiring conductors")
                time.sleep(poll_seconds)
            if then is not None:
                try:
                    then()
                except Exception:  # noqa: BLE001 - what is left over only costs memory
                    log.exception("after retiring conductors")

        thread = threading.Thread(target=loop, name="retire-conductors", daemon=True)
        thread.start()
        return thread
