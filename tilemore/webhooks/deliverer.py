"""The deliverer: sends due deliveries from the outbox, at least once, with exponential
backoff, until ``webhook_retry_seconds`` after the event; then gives the delivery up.

Every conductor runs one, on a thread of its own (the conductors are the processes that
already run everywhere the service does, with the registry open). Any number may run: each
claims rows for one attempt under a lease (:meth:`WebhookStore.claim_deliveries`), so two
never send the same attempt, and one that dies mid-attempt leaves the row to be claimed
again when the lease runs out — the receiver may then get it twice (at least once: receivers
dedupe on the event's ``id``). Every minute a deliverer also sweeps for thread ends that no
outbox row names (:meth:`Deliverer.sweep`).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tilemore.errors import TilemoreError
from tilemore.settings_parts import WebhookSettings
from tilemore.store.webhooks import Claimed, Outgoing
from tilemore.webhooks import sender
from tilemore.webhooks.addresses import Resolver, check, networks, system_resolver
from tilemore.webhooks.listener import thread_event

log = logging.getLogger("tilemore.webhooks")

SWEEP_SECONDS = 60.0  # how often a deliverer looks for thread ends no outbox row names
SWEEP_LOOKBACK = 3600.0  # …that ended within this long (at start; then since the last sweep)
SWEEP_MARGIN = 30.0  # …and not in the last seconds (their listener may be writing them)
SWEEP_OVERLAP = 10.0  # each sweep goes this far back into the one before


def backoff(attempt: int, base: float, most: float, jitter: float = 0.2) -> float:
    """The pause after failed attempt ``attempt`` (1, 2, …): ``base`` doubled each time, up
    to ``most``, ± ``jitter`` of it so that a receiver back after an outage is not hit by
    every delivery at once."""
    pause = min(most, base * 2 ** min(attempt - 1, 40))
    return pause * (1 + random.uniform(-jitter, jitter))


class Deliverer:
    def __init__(self, store: Any, settings: WebhookSettings, name: str = "deliverer",
                 resolve: Resolver = system_resolver,
                 send: Callable[..., sender.Outcome] = sender.send) -> None:
        self.store, self.settings, self.name = store, settings, name
        self.resolve, self._send = resolve, send
        self.allow = networks(settings.webhook_allowed_networks)
        self._swept_until = 0.0  # the end of the last sweep's window (0: none yet)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(settings.webhook_concurrency,
                                        thread_name_prefix="webhook")

    @property
    def lease_seconds(self) -> float:
        # Longer than one attempt can take (connect + answer + the capped read).
        return 4 * self.settings.webhook_timeout_seconds + 30

    def run_once(self, now: float | None = None) -> int:
        """Claim what is due and send it; return how many attempts were made."""
        claimed = self.store.claim_deliveries(self.name, self.settings.webhook_concurrency * 4,
                                              self.lease_seconds, now)
        list(self._pool.map(self.attempt, claimed))
        return len(claimed)

    def sweep(self, now: float | None = None) -> int:
        """Write the thread events a conductor that died between recording a thread's end
        and writing its outbox row left out; return how many deliveries were written. Any
        number of deliverers may sweep at once: the events' ids are the listener's, and an
        event written twice is one delivery."""
        now = time.time() if now is None else now
        until = now - SWEEP_MARGIN
        since = max(now - SWEEP_LOOKBACK, min(self._swept_until, until) - SWEEP_OVERLAP)
        missing: dict[str, list[str]] = {}
        for thread_id, endpoint_id in self.store.unsent_thread_ends(since, until):
            missing.setdefault(thread_id, []).append(endpoint_id)
        written = 0
        for thread_id, endpoints in missing.items():
            rec = self.store.get_thread(thread_id)
            if rec is None:
                continue
            event_id, payload = thread_event(rec, self.settings.base_url)
            written += self.store.enqueue([Outgoing(e, rec.domain, event_id,
                                                    f"thread.{rec.status}", payload, rec.id)
                                           for e in endpoints])
        self._swept_until = until
        if written:
            log.warning("webhooks: %d thread events written by the sweep (a conductor died "
                        "before writing them)", written)
        return written

    def attempt(self, claimed: Claimed) -> None:
        s = self.settings
        at = time.time()
        try:  # checked again at every attempt: the name may point elsewhere now
            target = check(claimed.endpoint.url, self.allow, self.resolve)
        except TilemoreError as exc:
            outcome = sender.Outcome(None, f"{exc.code}: {exc.message}", 0.0)
        else:
            outcome = self._send(target, claimed.payload, claimed.endpoint.secrets(at), {
                "Tilemore-Event": claimed.event, "Tilemore-Event-Id": claimed.event_id,
                "Tilemore-Delivery": claimed.id, "Tilemore-Attempt": str(claimed.attempt)},
                s.webhook_timeout_seconds)
        done = time.time()
        if outcome.delivered:
            state, next_at = "delivered", None
        else:
            next_at = done + backoff(claimed.attempt, s.webhook_backoff_seconds,
                                     s.webhook_backoff_max_seconds)
            window_end = claimed.window_start + s.webhook_retry_seconds
            state = "given_up" if next_at > window_end else "pending"
            if state == "given_up":
                log.warning("webhook delivery %s (%s) given up after %d attempts: %s",
                            claimed.id, claimed.event, claimed.attempt, outcome.error)
        if not self.store.record_attempt(claimed, at, outcome.status_code, outcome.error,
                                         outcome.seconds, state, next_at):
            log.info("webhook delivery %s moved on during its attempt (resent by hand)",
                     claimed.id)

    def start(self) -> None:
        def loop() -> None:
            swept = 0.0
            while not self._stop.is_set():
                if time.monotonic() - swept >= SWEEP_SECONDS:
                    swept = time.monotonic()
                    try:
                        self.sweep()
                    except Exception as exc:  # noqa: BLE001 - the next sweep tries again
                        log.warning("webhook sweep: %s", exc)
                try:
                    busy = self.run_once()
                except Exception as exc:  # noqa: BLE001 - the registry down: next time
                    log.warning("webhook deliverer: %s", exc)
                    busy = 0
                if not busy:  # a full batch: straight to the next one
                    self._stop.wait(self.settings.webhook_poll_seconds)

        self._thread = threading.Thread(target=loop, name=f"webhooks-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
