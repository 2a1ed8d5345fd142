"""The cluster's nodes, through Ray: preemption watchers on every node, and draining.

A watcher actor is pinned to each node. When its cloud announces the node's preemption, it
drains the node through Ray's GCS (reason PREEMPTION, with the cloud's deadline): Ray places
nothing new there. :class:`NodeGuard`, beside the conductor, then restarts the operator
replicas that live on draining nodes so they come back elsewhere, and the tasks they were
running retry there (see :mod:`tilemore.retry`) instead of waiting for the node to vanish.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from tilemore.cluster.preemption import Notice, PreemptionWatcher, Provider, notice_source
from tilemore.engine import ray_private
from tilemore.settings_parts import PreemptionSettings

log = logging.getLogger("tilemore.cluster")
NAMESPACE = "tilemore"


def drain_node(node_id: str, reason: str, deadline: float | None = None) -> bool:
    """Ask the GCS to drain ``node_id`` for preemption; True when accepted."""
    deadline_ms = int(deadline * 1000) if deadline else 0
    accepted, why = ray_private.drain_node(node_id, reason, deadline_ms)
    if not accepted:
        log.warning("drain of node %s refused: %s", node_id, why)
    return accepted


def draining_nodes() -> dict[str, int]:
    """Node id (hex) → drain deadline in ms (0: none), for every node being drained."""
    return ray_private.draining_nodes()


def alive_nodes() -> list[str]:
    return [n["NodeID"] for n in ray.nodes() if n.get("Alive")]


@ray.remote(num_cpus=0, max_restarts=0)
class NodeWatcher:
    """Watches its own node's preemption notice and drains the node when it comes."""

    def __init__(self, provider: Provider, base_url: str | None, interval: float) -> None:
        self.node_id = ray.get_runtime_context().get_node_id()
        url = base_url.format(node_id=self.node_id) if base_url else None  # per-node URLs
        self.watcher = PreemptionWatcher(notice_source(provider, url), self._drain,
                                         interval)
        threading.Thread(target=self.watcher.run, name="preemption", daemon=True).start()

    def _drain(self, notice: Notice) -> None:
        drain_node(self.node_id, f"{notice.provider}: {notice.detail}", notice.deadline)

    def node(self) -> str:
        return self.node_id

    def notice(self) -> Notice | None:
        return self.watcher.notice


class NodeGuard:
    """Keeps a watcher on every live node (nodes join and leave), and moves replicas off
    draining nodes. ``evacuate`` is the backend's: it gets the draining node ids."""

    def __init__(self, evacuate: Any, provider: Provider | None = None,
                 base_url: str | None = None, poll_seconds: float = 5.0,
                 interval: float = 1.0) -> None:
        self.evacuate, self.provider, self.base_url = evacuate, provider, base_url
        self.poll_seconds, self.interval = poll_seconds, interval
        self.watchers: dict[str, Any] = {}
        self._stop = threading.Event()

    @classmethod
    def from_settings(cls, evacuate: Any, settings: PreemptionSettings) -> NodeGuard:
        return cls(evacuate, settings.preemption_provider, settings.preemption_metadata_url,
                   settings.preemption_poll_seconds)

    def step(self) -> None:
        if self.provider is not None:
            live = set(alive_nodes())
            for node in live - set(self.watchers):
                self.watchers[node] = NodeWatcher.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
                    namespace=NAMESPACE,
                ).remote(self.provider, self.base_url, self.poll_seconds)
            for node in set(self.watchers) - live:  # gone with its node
                del self.watchers[node]
        draining = draining_nodes()
        if draining:
            self.evacuate(set(draining))

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.step()
                except Exception:  # noqa: BLE001 - the GCS may be briefly unreachable
                    log.exception("node guard step failed")
                self._stop.wait(self.interval)

        threading.Thread(target=loop, name="node-guard", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
