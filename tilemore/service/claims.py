"""The threads one conductor holds leases on: which it runs, at which epoch, which it lost.

A conductor runs a thread only while it holds the thread's lease in the registry
(:mod:`tilemore.store.leases`). This is its side of that: taking leases (a hand-off from the
ingress, or a claim of free threads for its free slots), renewing them, noticing the ones
another conductor took, and giving them back. The conductor asks :meth:`Claims.epoch` before
every write, so that a run whose lease went elsewhere stops at its next step.

Every method blocks on the registry or on a lock, never on the event loop's work: the
conductor calls them from its sweeper thread and its I/O threads.
"""

from __future__ import annotations

import logging
import threading

from tilemore.store import ThreadRepository
from tilemore.store.leases import Lease, LeaseLost

log = logging.getLogger("tilemore.conductor")


class Claims:
    def __init__(self, threads: ThreadRepository, owner: str, lease_seconds: float,
                 slots: int) -> None:
        """``owner`` names the leases (unique among running conductors); a conductor runs at
        most ``slots`` claimed threads at once."""
        self.threads, self.owner = threads, owner
        self.lease_seconds, self.slots = lease_seconds, slots
        self._leases: dict[str, Lease] = {}  # thread id → the lease held here
        self._lost: set[str] = set()  # threads whose lease another conductor took
        self._running: set[str] = set()  # threads taken to run here, until forgotten
        self._lock = threading.Lock()
        self._claiming = threading.Lock()  # one claim at a time: a thread never starts twice
        self._draining = False  # leaving the pool: takes no new thread

    # -- taking ----------------------------------------------------------------------------

    def take(self, thread_id: str, *, bounded: bool = True) -> Lease | None:
        """The thread's lease for a run here (a hand-off), or None: it runs here already, the
        slots are full (``bounded``), this conductor drains, or another holds it, or it ended."""
        with self._claiming:
            with self._lock:
                full = bounded and len(self._running) >= self.slots
                if thread_id in self._running or full or self._draining:
                    return None
            lease = self.threads.claim_thread(self.owner, thread_id, self.lease_seconds)
            if lease is not None:
                self._taken(lease)
            return lease

    def take_free(self, *, own: bool = False) -> list[Lease]:
        """Leases on as many unleased threads as there are free slots (``own``: also those
        leased under this owner's name, its previous life's, at start-up)."""
        with self._claiming:
            with self._lock:
                free = 0 if self._draining else self.slots - len(self._running)
                running = set(self._running)
            if free <= 0:
                return []
            leases = self.threads.claim_threads(self.owner, free, self.lease_seconds,
                                                owner_may_reclaim=own, exclude=running)
            for lease in leases:
                self._taken(lease)
            return leases

    def take_one(self, thread_id: str) -> Lease | None:
        """The thread's lease for one run outside the slots (a tool's, a test's), its own
        previous lease included; None while another conductor holds it."""
        lease = self.threads.claim_thread(self.owner, thread_id, self.lease_seconds,
                                          owner_may_reclaim=True)
        if lease is not None:
            with self._lock:
                self._leases[thread_id] = lease
                self._lost.discard(thread_id)
        return lease

    def _taken(self, lease: Lease) -> None:
        with self._lock:
            self._running.add(lease.thread_id)
            self._leases[lease.thread_id] = lease
            self._lost.discard(lease.thread_id)

    # -- holding ---------------------------------------------------------------------------

    def epoch(self, thread_id: str) -> int | None:
        """The epoch the thread's lease is held at here (None: not leased here); raises
        :class:`LeaseLost` when another conductor took it."""
        with self._lock:
            if thread_id in self._lost:
                raise LeaseLost(f"thread {thread_id} was taken by another conductor")
            lease = self._leases.get(thread_id)
        return None if lease is None else lease.epoch

    def last_epoch(self, thread_id: str) -> int | None:
        """The epoch it was held at, even if lost at the last step (its end names it, and the
        registry refuses it if another conductor took the thread)."""
        with self._lock:
            lease = self._leases.get(thread_id)
        return None if lease is None else lease.epoch

    def renew(self) -> list[Lease]:
        """Extend every lease held here; the lost ones, whose runs stop at their next step."""
        with self._lock:
            held = list(self._leases.values())
        lost = self.threads.renew_leases(held, self.lease_seconds) if held else []
        with self._lock:
            for lease in lost:
                if self._leases.get(lease.thread_id) == lease:
                    self._lost.add(lease.thread_id)
        for lease in lost:
            log.warning("thread %s: lease lost (epoch %d); it stops here", lease.thread_id,
                        lease.epoch)
        return lost

    def holds(self, thread_id: str) -> bool:
        """Whether its lease is held here and not lost."""
        with self._lock:
            return thread_id in self._leases and thread_id not in self._lost

    # -- giving back -----------------------------------------------------------------------

    def give_back(self, thread_id: str) -> None:
        """The run here is over (waiting for a store, or stopped): its lease goes back, so
        that the next claim, here or elsewhere, can take it at once."""
        with self._lock:
            lease = None if thread_id in self._lost else self._leases.get(thread_id)
        try:
            if lease is not None:
                self.threads.release_lease(lease)
        except Exception as exc:  # noqa: BLE001 - it runs out by itself
            log.warning("thread %s: lease not given back (%s); it runs out", thread_id, exc)
        self.forget(thread_id)

    def forget(self, thread_id: str) -> None:
        """No longer held here (its lease went back with its end's record, or was lost)."""
        with self._lock:
            self._running.discard(thread_id)
            self._leases.pop(thread_id, None)
            self._lost.discard(thread_id)

    def running(self) -> int:
        with self._lock:
            return len(self._running)

    def drain(self) -> int:
        """Take no new thread from now on; how many still run here."""
        with self._claiming:  # a claim under way finishes first, and is counted
            self._draining = True
        return self.running()
