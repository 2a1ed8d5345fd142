"""The deliverer: sends due deliveries from the outbox, at least once, with exponential
backoff, until ``webhook_retry_seconds`` after the event; then gives the delivery up.

Every conductor runs one, on a thread of its own (the conductors are the processes that
already run everywhere the service does, with the registry open). Any number may run: each
claims rows for one attempt under a lease (:meth:`WebhookStore.claim_deliveries`), so two
never send the same attempt, and one that dies mid-attempt leaves the row to be claimed
again when the lease runs out — the receiver may then get it twice (at least once: receivers
dedupe on the event's ``id``).
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
from tilemore.settings import Settings
from tilemore.store.webhooks import Claimed
from tilemore.webhooks import sender
from tilemore.webhooks.addresses import Resolver, check, networks, system_resolver

log = logging.getLogger("tilemore.webhooks")


def backoff(attempt: int, base: float, most: float, jitter: float = 0.2) -> float:
    """The pause after failed attempt ``attempt`` (1, 2, …): ``base`` doubled each time, up
    to ``most``, ± ``jitter`` of it so that a receiver back after an outage is not hit by
    every delivery at once."""
    pause = min(most, base * 2 ** min(attempt - 1, 40))
    return pause * (1 + random.uniform(-jitter, jitter))


class Deliverer:
    def __init__(self, store: Any, settings: Settings, name: str = "deliverer",
                 resolve: Resolver = system_resolver,
                 send: Callable[..., sender.Outcome] = sender.send) -> None:
        self.store, self.settings, self.name = store, settings, name
        self.resolve, self._send = resolve, send
        self.allow = networks(settings.webhook_allowed_networks)
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
            while not self._stop.is_set():
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
