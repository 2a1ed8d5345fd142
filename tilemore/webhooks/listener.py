"""The conductor's webhook listener: writes each event a domain's endpoints asked for to the
outbox (:mod:`tilemore.store.webhooks`); a deliverer sends it (:mod:`.deliverer`).

Best effort, not *required*: the event is sent after the thread's end is recorded, and a
required listener's exception would only make the conductor retry a thread that has already
ended (it would not be emitted again). So the write is retried here a few times on a busy
database, and what still fails is logged as an error. A conductor process dying between
recording a thread's end and writing its outbox row (a few milliseconds) leaves the event to
the deliverers' sweep, which writes the thread ends no outbox row names
(:meth:`~tilemore.webhooks.deliverer.Deliverer.sweep`); from the row on, nothing is lost to
a crash.

``billing.low_balance`` is checked when a thread ends (its tasks are charged together as it
ends, :class:`~tilemore.service.events.Charger`), and only for domains with an endpoint
that asks for it: an account's balance (credits, holds aside) below the endpoint's
``low_balance_threshold`` sends one event when it goes below, and the next one only after
the balance was seen at or above the threshold again (a top-up) and then went below again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from tilemore.api.views import iso, thread_body
from tilemore.billing.money import fmt
from tilemore.errors import ServiceUnavailable
from tilemore.service.events import Listener, ThreadEnded
from tilemore.store import ThreadRecord
from tilemore.store.webhooks import Endpoint, Outgoing

log = logging.getLogger("tilemore.webhooks")

THREAD_EVENTS = ("thread.done", "thread.failed", "thread.canceled")
LOW_BALANCE = "billing.low_balance"
EVENTS = (*THREAD_EVENTS, LOW_BALANCE)
WRITE_TRIES = 3


def event_body(event_id: str, name: str, domain: str, data: dict[str, Any],
               at: float | None = None) -> bytes:
    """What a delivery's body is: the same bytes on every attempt (receivers dedupe on
    ``id``)."""
    return json.dumps({"id": event_id, "type": name, "created": iso(at or time.time()),
                       "domain": domain, "data": data}, separators=(",", ":")).encode()


def thread_event(rec: ThreadRecord, base_url: str) -> tuple[str, bytes]:
    """A thread's end as an event: (its id, the body). One id per end of a thread, the same
    whoever builds it (the listener, or the deliverer's sweep after a crash): written twice,
    it is one delivery. A thread run again (POST /threads/{id}/retry) that ends again is a
    new event."""
    name = f"thread.{rec.status}"
    end = rec.finished_at or rec.updated_at
    event_id = "evt_" + hashlib.sha256(f"{name}:{rec.id}:{end!r}".encode()).hexdigest()[:32]
    return event_id, event_body(event_id, name, rec.domain, thread_body(rec, base_url), end)


class WebhookListener(Listener):
    required = False  # see the module's docstring

    def __init__(self, store: Any, billing: Any, base_url: str,
                 cache_seconds: float = 5.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.store, self.billing, self.base_url = store, billing, base_url
        self.cache_seconds, self.clock = cache_seconds, clock
        self._cache: dict[str, tuple[float, list[Endpoint]]] = {}
        self._lock = threading.Lock()
        # (endpoint, account) → below its threshold, as last written here: a charge that
        # changes nothing costs no write (another conductor's write is seen at the next
        # change, and the database keeps it once per crossing)
        self._below: dict[tuple[str, str], bool] = {}

    def endpoints(self, domain: str) -> list[Endpoint]:
        """The domain's endpoints, read at most every ``cache_seconds`` (an endpoint
        registered now gets the events of threads that end after that)."""
        now = self.clock()
        with self._lock:
            hit = self._cache.get(domain)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = self.store.endpoints(domain)
        with self._lock:
            self._cache[domain] = (now + self.cache_seconds, found)
            if len(self._cache) > 10_000:  # bounded: domains seen long ago are read again
                self._cache.pop(next(iter(self._cache)))
        return found

    def thread_ended(self, event: ThreadEnded) -> None:
        self._thread_event(event)
        self._balance_checked(event.thread)  # after the thread's charges

    def _thread_event(self, event: ThreadEnded) -> None:
        name = f"thread.{event.status}"
        domain = event.thread.domain
        if name not in THREAD_EVENTS:
            return
        wanted = [e for e in self.endpoints(domain) if name in e.events]
        if not wanted:
            return
        rec = self.store.get_thread(event.thread.id) or event.thread  # with its result
        event_id, payload = thread_event(rec, self.base_url)
        self._write(lambda: self.store.enqueue(
            [Outgoing(e.id, domain, event_id, name, payload, rec.id) for e in wanted]), rec.id)

    def _balance_checked(self, rec: ThreadRecord) -> None:
        wanted = [e for e in self.endpoints(rec.domain)
                  if LOW_BALANCE in e.events and e.low_balance is not None]
        if not wanted or self.billing is None:
            return
        balance = self.billing.balance(rec.account).balance
        for ep in wanted:
            threshold = Decimal(ep.low_balance or "0")
            below = balance < threshold
            if self._below.get((ep.id, rec.account)) == below:
                continue
            outgoing = None
            if below:
                event_id = f"evt_{uuid.uuid4().hex}"
                outgoing = Outgoing(ep.id, rec.domain, event_id, LOW_BALANCE, event_body(
                    event_id, LOW_BALANCE, rec.domain,
                    {"account": rec.account, "balance": fmt(balance),
                     "threshold": fmt(threshold), "thread_id": rec.id}))
            self._write(lambda ep=ep, below=below, outgoing=outgoing: self.store.balance_crossed(
                ep.id, rec.account, below, outgoing), rec.id)
            with self._lock:
                self._below[(ep.id, rec.account)] = below
                if len(self._below) > 100_000:  # bounded: the oldest are read again
                    self._below.pop(next(iter(self._below)))

    @staticmethod
    def _write(write: Callable[[], object], thread_id: str) -> None:
        for attempt in range(WRITE_TRIES):
            try:
                write()
                return
            except ServiceUnavailable as exc:  # busy or restarting: worth another try
                if attempt == WRITE_TRIES - 1:
                    log.error("thread %s: webhook event not written to the outbox: %s",
                              thread_id, exc)
                    raise
                time.sleep(0.2 * (attempt + 1))
