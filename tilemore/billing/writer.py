"""One writer for the ledger, committing in groups: callers from many threads hand in
entries (or a thread's settlement: its charges and its hold's release) and wait; the writer
writes whatever has queued up in one transaction — one fsync for the group — and answers
each caller once its entry is on disk.

A closed writer answers at once: entries handed in after :meth:`LedgerWriter.close` (a
thread still running while its service stops) fail ``503 unavailable`` instead of waiting for
ever — a caller waiting for ever holds its process's exit."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

from tilemore.billing.entries import Settlement
from tilemore.billing.ledger import Appended, Entry, Ledger
from tilemore.errors import ServiceUnavailable

_STOP = object()


class LedgerWriter:
    def __init__(self, ledger: Ledger, max_batch: int = 256) -> None:
        self.ledger = ledger
        self.max_batch = max_batch
        self._queue: queue.Queue = queue.Queue()
        self._closing = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    def submit(self, item: Entry | Settlement) -> Future:
        """An :class:`Appended` for an entry, a list of them for a settlement."""
        done: Future = Future()
        with self._closing:  # never queued behind the stop: nobody would answer it
            if self._closed:
                raise ServiceUnavailable("the ledger's writer has stopped (the service is "
                                         "shutting down)")
            self._queue.put((item, done))
        return done

    def append(self, entry: Entry) -> Appended:
        return self.submit(entry).result()

    def settle(self, settlement: Settlement) -> list[Appended]:
        return self.submit(settlement).result()

    def close(self) -> None:
        with self._closing:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)  # behind every entry handed in so far: each gets its answer
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(item)
            self._commit(batch)

    def _commit(self, batch: list) -> None:
        try:
            results = self.ledger.write([item for item, _ in batch])
        except Exception:  # noqa: BLE001 - one bad entry must not fail its neighbours
            for item, done in batch:  # retry one by one, each with its own answer
                try:
                    done.set_result(self.ledger.write([item])[0])
                except Exception as exc:  # noqa: BLE001
                    done.set_exception(exc)
            return
        for (_, done), result in zip(batch, results, strict=True):
            done.set_result(result)
