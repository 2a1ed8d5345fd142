"""Which replicas of an operator take work now: a replica whose call failed with its node is
set aside and probed until Ray has restarted it (elsewhere), so work goes to the replicas
that are up instead of waiting for the lost one to come back."""

from __future__ import annotations

import threading
import time
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, ObjectLostError, RayActorError

LOST = (RayActorError, ActorUnavailableError, ObjectLostError)
PROBE_SECONDS = 0.5


class Replicas:
    """Round-robin over the replicas that are up; thread-safe (a conductor runs many graphs
    at once on one backend)."""

    def __init__(self, hosts: list[Any]) -> None:
        self.hosts = hosts
        self.down: dict[int, float] = {}  # index → when to probe it next
        self.probes: dict[Any, int] = {}  # ready() ref → index
        self._turn = 0
        self._lock = threading.Lock()

    def next_up(self) -> int | None:
        with self._lock:
            for _ in range(len(self.hosts)):
                i = self._turn % len(self.hosts)
                self._turn += 1
                if i not in self.down:
                    return i
            return None

    def next_any(self) -> int:
        """An up replica, or (none is up) the next in turn: its call waits for the restart."""
        up = self.next_up()
        if up is not None:
            return up
        with self._lock:
            self._turn += 1
            return self._turn % len(self.hosts)

    def lost(self, i: int) -> None:
        with self._lock:
            self.down.setdefault(i, time.monotonic() + PROBE_SECONDS)

    def probe(self) -> list[Any]:
        """Start a ``ready()`` call on each lost replica due for one; the probes in flight."""
        now = time.monotonic()
        with self._lock:
            probing = set(self.probes.values())
            for i, when in self.down.items():
                if when <= now and i not in probing:
                    ref = self.hosts[i].ready.options(max_task_retries=0).remote()
                    self.probes[ref] = i
            return list(self.probes)

    def answered(self, ref: Any) -> None:
        with self._lock:
            i = self.probes.pop(ref, None)
        if i is None:
            return
        try:
            ray.get(ref)
            with self._lock:
                self.down.pop(i, None)
        except LOST:
            with self._lock:
                self.down[i] = time.monotonic() + PROBE_SECONDS

    def refresh(self) -> None:
        """Take in the probes that have answered, without waiting."""
        probes = self.probe()
        if probes:
            ready, _ = ray.wait(probes, num_returns=len(probes), timeout=0)
            for ref in ready:
                self.answered(ref)

    def call(self, method: str, *args: Any) -> Any:
        """A one-off call on any replica that answers (tile size, checkpoint)."""
        for attempt in range(5 * len(self.hosts)):
            host = self.hosts[attempt % len(self.hosts)]
            try:
                return ray.get(getattr(host, method).remote(*args))
            except LOST:
                time.sleep(PROBE_SECONDS / len(self.hosts))
        raise RuntimeError(f"no replica answered {method}()")
