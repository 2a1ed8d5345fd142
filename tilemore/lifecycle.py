"""The data lifecycle: what a thread leaves behind, how long it is kept, and the collector
that removes what expired (docs/lifecycle.md says it for users).

- Writers pin a blob before they put it and reference it from its thread after
  (:class:`Lifecycle`); the conductor's thread-end listener (:meth:`Lifecycle.thread_ended`)
  dates what the thread leaves, and removes a done thread's checkpoints at once.
- :class:`Collector` removes, in batches: expired records (with their references), blobs no
  live reference names once past their grace, indexed errors past their time. A pass killed
  half-way leaves nothing half-done that the next pass does not finish: a blob's row goes only
  once the store said the blob is gone, and removing an absent blob is not an error.

Every date is the database's clock (:mod:`tilemore.store.lifecycle`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tilemore.blobs import BlobKind, BlobStore, BlobStoreError
from tilemore.errors import Conflict, TilemoreError
from tilemore.metrics import NO_METRICS, Metrics
from tilemore.settings_parts import RetentionSettings
from tilemore.store import AlsoWrite
from tilemore.store.lifecycle import LifecycleSQL, Removed, ThreadExpiry, Ttl

log = logging.getLogger("tilemore.lifecycle")


class Gone(TilemoreError):
    """Something a request needs was deleted under its retention: 410, with what to do."""

    status = 410

    def __init__(self, message: str, **details: str) -> None:
        super().__init__(message)
        self.details = details  # machine-readable: the thread, when it went, what to send

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), **self.details}


class ResultExpired(Gone):
    code = "result_expired"


class InputExpired(Gone):
    code = "input_expired"


class RetryWindowClosed(Gone):
    code = "retry_window_closed"


class ThreadDone(Conflict):
    code = "thread_done"


class Retention:
    """Each domain's times to live: the settings, with the domain's overrides."""

    def __init__(self, settings: RetentionSettings) -> None:
        self.settings = settings

    def ttl(self, domain: str) -> Ttl:
        s, own = self.settings, self.settings.retention_domains.get(domain, {})
        return Ttl(results=own.get("results", s.retention_results_seconds),
                   inputs=own.get("inputs", s.retention_inputs_seconds),
                   records=own.get("records", s.retention_records_seconds),
                   retry=own.get("retry", s.retry_window_seconds))

    def errors(self, domain: str | None = None) -> float:
        own = self.settings.retention_domains.get(domain or "", {})
        return own.get("errors", self.settings.retention_errors_seconds)

    def webhooks(self, domain: str | None = None) -> float:
        own = self.settings.retention_domains.get(domain or "", {})
        return own.get("webhooks", self.settings.retention_webhooks_seconds)

    def own(self, what: str) -> dict[str, float]:
        """The domains with a time of their own for ``what`` ("errors", "webhooks")."""
        return {d: own[what] for d, own in sorted(self.settings.retention_domains.items())
                if what in own}


class Lifecycle:
    """The hooks the ingress and the conductor call. Each is one short transaction; none
    fails a thread: what is not recorded now, the collector's next pass dates."""

    def __init__(self, store: LifecycleSQL, blobs: BlobStore, settings: RetentionSettings,
                 metrics: Metrics = NO_METRICS) -> None:
        self.store, self.blobs, self.settings = store, blobs, settings
        self.retention = Retention(settings)
        self.metrics = metrics

    def pin(self, key: str, kind: BlobKind, size: int = 0) -> None:
        """Before a put: the blob is safe from the collector for its grace period."""
        self.store.pin(key, kind, size)

    def refer(self, thread_id: str, domain: str, kind: BlobKind, key: str,
              size: int = 0) -> None:
        self.store.add_refs([(thread_id, domain, kind, key, size)])

    def referring(self, domain: str, kind: BlobKind, key: str, size: int = 0) -> AlsoWrite:
        """:meth:`refer`, written in the thread record's own transaction (its creation)."""
        def write(db: Any, thread_id: str) -> None:
            self.store.add_refs_in(db, [(thread_id, domain, kind, key, size)])
        return write

    def ending(self, domain: str, status: str,
               sizes: dict[str, int] | None = None) -> AlsoWrite:
        """A thread's end as the lifecycle records it, written in the transaction that
        records the end itself: what the record names (input, checkpoints, result; ``sizes``
        by key where known) referenced, and dated. One commit less than a transaction of its
        own, and a thread is never ended but undated."""
        def write(db: Any, thread_id: str) -> None:
            self.store.date_end_in(db, thread_id, domain, status, self.retention.ttl(domain),
                                   sizes)
        return write

    def thread_ended(self, thread_id: str, domain: str, status: str,
                     sizes: dict[str, int] | None = None) -> ThreadExpiry | None:
        """A thread's end recorded apart from its record's (a tool's, a test's): reference
        what its record names and date it, in one transaction; a done thread's checkpoints
        go now. Never raises."""
        try:
            dates = self.store.date_end(thread_id, domain, status, self.retention.ttl(domain),
                                        sizes)
            if status == "done":
                self.checkpoints_done(thread_id)
            return dates
        except Exception as exc:  # noqa: BLE001 - the collector dates it on its next pass
            log.warning("thread %s: end not dated (%s); the collector will", thread_id, exc)
            return None

    def checkpoints_done(self, thread_id: str) -> None:
        """A done thread's checkpoints go now, those no other thread needs (after its end
        was dated)."""
        keys = {key for kind, key, _ in self.store.refs(thread_id) if kind == "checkpoint"}
        if keys:
            self.collect(sorted(keys))

    def ensure_input(self, thread_id: str, domain: str, key: str) -> None:
        """Reference a thread's input unless it is (a read, a write only when missing: the
        ingress references it; one that died between its record and its reference did not)."""
        if not any(kind == "input" for kind, _, _ in self.store.refs(thread_id)):
            self.refer(thread_id, domain, "input", key)

    def collect(self, keys: Sequence[str] | None = None, limit: int | None = None,
                dry_run: bool = False, grace: float | None = None) -> tuple[list[Removed],
                                                                            list[Removed]]:
        """One batch of blobs (these ``keys`` only, when given): (removed, kept)."""
        s = self.settings
        blob_grace = s.blob_grace_seconds if grace is None else grace
        ck_grace = s.checkpoint_grace_seconds if grace is None else grace

        def remove(chosen: list[Removed]) -> list[str]:
            now = self.blobs.clock()  # the store's clock, for its own files' times
            gone = []
            for kind_grace, group in ((ck_grace, [b.key for b in chosen
                                                  if b.kind == "checkpoint"]),
                                      (blob_grace, [b.key for b in chosen
                                                    if b.kind != "checkpoint"])):
                if group:
                    gone += self.blobs.delete(group, modified_before=now - kind_grace)
            return gone

        removed, kept = self.store.collect_blobs(remove, limit or s.gc_batch, blob_grace,
                                                 ck_grace, keys, dry_run)
        if not dry_run:
            for b in removed:
                self.metrics.blobs_collected(b.kind, b.bytes)
        return removed, kept

    def dates(self, thread_id: str) -> ThreadExpiry | None:
        return self.store.expiry(thread_id)

    def listener(self) -> Any:
        """This, as a listener on a conductor's events."""
        from tilemore.service.lifecycle import LifecycleListener

        return LifecycleListener(self)


@dataclass
class Report:
    """What one collector pass removed (or, dry, would remove)."""

    dry_run: bool = False
    dated: int = 0  # ended threads given their dates on this pass
    records: int = 0
    refs: int = 0
    errors: int = 0
    webhooks: int = 0  # webhook deliveries (delivered or given up) past their time
    blobs: dict[str, list[int]] = field(default_factory=dict)  # kind → [count, bytes]
    kept: int = 0  # blobs the store refused to remove, or put again meanwhile
    blob_store_error: str = ""  # the store could not be reached: no blob removed this pass
    seconds: float = 0.0

    def add(self, removed: list[Removed], kept: list[Removed]) -> None:
        for b in removed:
            entry = self.blobs.setdefault(b.kind, [0, 0])
            entry[0] += 1
            entry[1] += b.bytes
        self.kept += len(kept)

    @property
    def bytes(self) -> int:
        return sum(b for _, b in self.blobs.values())

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "threads_dated": self.dated,
                "records": self.records, "references": self.refs, "errors": self.errors,
                "webhook_deliveries": self.webhooks,
                "blobs": {k: {"count": c, "bytes": b} for k, (c, b) in sorted(
                    self.blobs.items())},
                "bytes": self.bytes, "kept": self.kept,
                "blob_store_error": self.blob_store_error or None,
                "seconds": round(self.seconds, 3)}


class Collector:
    """Removes what expired, in batches of ``settings.gc_batch``; on a thread of its own
    every ``settings.gc_interval_seconds`` (:meth:`start`), or once (:meth:`run_pass`)."""

    MAX_BATCHES = 100  # per step and pass: a backlog drains over a few passes

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self.store = lifecycle.store
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_pass(self, dry_run: bool = False, domain: str | None = None,
                 errors: bool = True) -> Report:
        """One pass. ``domain``: remove all of that domain's ended threads now, whatever
        their dates (its data deleted on request; the ledger stays)."""
        started = time.perf_counter()
        s, lc = self.lifecycle.settings, self.lifecycle
        batch = s.gc_batch
        report = Report(dry_run=dry_run)
        if not dry_run:
            report.dated = self._date_unrecorded(batch)
        for _ in range(self.MAX_BATCHES):
            expired = self.store.expired_records(batch, domain)
            if not expired:
                break
            if dry_run:
                report.records += len(expired)
                break
            report.records += self.store.delete_records([t for t, _ in expired])
            if len(expired) < batch:
                break
        if not dry_run:
            for _ in range(self.MAX_BATCHES):
                n = self.store.drop_expired_refs(batch)
                report.refs += n
                if n < batch:
                    break
        try:
            for _ in range(self.MAX_BATCHES):
                removed, kept = lc.collect(limit=batch, dry_run=dry_run)
                report.add(removed, kept)
                if dry_run or len(removed) + len(kept) < batch or not removed:
                    break
        except BlobStoreError as exc:  # its batch rolled back: every row kept, tried again
            log.warning("blob store unreachable; blobs kept for the next pass: %s", exc)
            report.blob_store_error = str(exc)  # the rest of the pass goes on
        if errors and not dry_run:
            report.errors = self._expire_errors(batch, domain)
            report.webhooks = self._expire_webhooks(batch, domain)
        self._gauge()
        report.seconds = time.perf_counter() - started
        return report

    def sweep_orphans(self, min_age: float = 86400.0, dry_run: bool = False) -> Report:
        """Remove blobs no record knows (no row, no thread's input, no task's checkpoint)
        written more than ``min_age`` seconds ago by the store's clock: left by a writer that
        died between its put and its record, or by an older release. Refused (an empty report)
        while ended threads from before lifecycles are still to be dated: their results are
        known only once they are."""
        started = time.perf_counter()
        report = Report(dry_run=dry_run)
        if self.store.unrecorded_ends(1):
            log.warning("orphan sweep skipped: ended threads are still to be dated (gc first)")
            return report
        blobs = self.lifecycle.blobs
        cutoff = blobs.clock() - min_age  # listings' times are the store's clock, not ours
        chunk: list = []

        def judge(infos: list) -> None:
            known = self.store.known([b.key for b in infos])
            orphans = [b for b in infos if b.key not in known and b.modified < cutoff]
            gone = set() if dry_run or not orphans else set(blobs.delete(
                [b.key for b in orphans], modified_before=cutoff))
            removed = [Removed(b.key, "orphan", b.bytes) for b in orphans
                       if dry_run or b.key in gone]
            report.add(removed, [Removed(b.key, "orphan", b.bytes) for b in orphans
                                 if not dry_run and b.key not in gone])

        for info in blobs.list():
            chunk.append(info)
            if len(chunk) >= 500:
                judge(chunk)
                chunk = []
        if chunk:
            judge(chunk)
        report.seconds = time.perf_counter() - started
        return report

    def _date_unrecorded(self, batch: int) -> int:
        """Ended threads without dates (ended before this release, or a listener that did
        not get through): referenced and dated now, from now."""
        ended = self.store.unrecorded_ends(batch)
        for thread_id, domain, status in ended:
            self.store.date_end(thread_id, domain, status, self.lifecycle.retention.ttl(domain))
        return len(ended)

    def _expire_errors(self, batch: int, domain: str | None) -> int:
        try:
            if domain is not None:
                return self.store.delete_domain_errors(domain, batch * self.MAX_BATCHES)
            return self._expire(self.store.expire_errors, "errors",
                                self.lifecycle.retention.errors(), batch * self.MAX_BATCHES)
        except Exception as exc:  # noqa: BLE001 - no error index here yet: nothing to expire
            log.info("error index not expired: %s", exc)
            return 0

    def _expire_webhooks(self, batch: int, domain: str | None) -> int:
        try:
            if domain is not None:
                return self.store.delete_domain_webhooks(domain, batch * self.MAX_BATCHES)
            return self._expire(self.store.expire_webhooks, "webhooks",
                                self.lifecycle.retention.webhooks(), batch * self.MAX_BATCHES)
        except Exception as exc:  # noqa: BLE001 - no outbox here yet: nothing to expire
            log.info("webhook deliveries not expired: %s", exc)
            return 0

    def _expire(self, expire: Any, what: str, default: float, limit: int) -> int:
        """Each domain with a time of its own by that time, then the rest by ``default``."""
        own = self.lifecycle.retention.own(what)
        n = sum(expire(seconds, limit, domain=d) for d, seconds in own.items())
        return n + expire(default, limit, besides=list(own))

    def _gauge(self) -> None:
        metrics = self.lifecycle.metrics
        if not metrics.enabled:
            return
        stored = self.store.stored_bytes()
        for kind in ("input", "checkpoint", "result"):
            metrics.blobs_stored(kind, stored.get(kind, 0))

    def start(self) -> None:
        def loop() -> None:
            try:  # the storage gauges from the start, not only after the first pass
                self._gauge()
            except Exception as exc:  # noqa: BLE001 - the first pass tries again
                log.warning("storage gauges not read: %s", exc)
            while not self._stop.wait(self.lifecycle.settings.gc_interval_seconds):
                try:
                    report = self.run_pass()
                    if report.records or report.blobs:
                        log.info("collected: %s", report.to_dict())
                except Exception as exc:  # noqa: BLE001 - the next pass tries again
                    log.warning("collector pass failed: %s", exc)

        self._thread = threading.Thread(target=loop, name="collector", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
