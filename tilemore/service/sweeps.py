"""A conductor's background sweeps: claiming free threads and renewing leases, and giving back
credit holds that no running work owns.

Each runs on a thread of its own, so that a billing actor restarting never holds up the
threads' sweep, and neither ever runs on the conductor's event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from tilemore.billing.service import Billing

log = logging.getLogger("tilemore.conductor")

HOLD_BATCH = 500  # holds one sweep statement gives back
HOLD_BATCHES = 4  # statements per sweep, at most: a backlog drains over a few sweeps


class Sweeps:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self.started = False

    def start(self, claim: Callable[[bool], object], renew: Callable[[], object], *,
              claim_seconds: float, renew_seconds: float,
              holds: Callable[[], object] | None = None, hold_seconds: float = 15.0) -> None:
        """Every ``claim_seconds``: ``renew()`` when ``renew_seconds`` have passed, then
        ``claim(own)``, ``own`` true only the first time (a previous life's threads, at
        start-up). Every ``hold_seconds``: ``holds()``."""
        def threads() -> None:
            own, renewed = True, time.monotonic()
            while not self._stop.is_set():
                try:
                    if time.monotonic() - renewed >= renew_seconds:
                        renewed = time.monotonic()
                        renew()
                    claim(own)
                    own = False
                except Exception:  # noqa: BLE001 - the registry may be briefly unreachable
                    log.exception("sweep failed")
                self._stop.wait(claim_seconds)

        def hold_loop(sweep: Callable[[], object]) -> None:
            while not self._stop.is_set():
                try:
                    sweep()
                except Exception as exc:  # noqa: BLE001 - the next sweep tries again
                    log.warning("hold sweep failed: %s", exc)
                self._stop.wait(hold_seconds)

        self.started = True
        threading.Thread(target=threads, name="sweeper", daemon=True).start()
        if holds is not None:
            threading.Thread(target=hold_loop, args=(holds,), name="hold-sweeper",
                             daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


def sweep_holds(billing: Billing, grace: float, batch_grace: float) -> int:
    """Give back holds no work owns any more, a few batches at most; how many: those of ended
    threads at once, those no thread was recorded for after ``grace``, a batch's after
    ``batch_grace``."""
    released = 0
    for _ in range(HOLD_BATCHES):
        n = billing.sweep_holds(grace, batch_grace, HOLD_BATCH)
        released += n
        if n < HOLD_BATCH:
            break
    if released:
        log.info("gave back %d credit holds no running work owned", released)
    return released
