"""Worker nodes of the tests' cluster, by kind: plain CPU spot nodes, and spot nodes with a
``gpu_node`` resource standing in for GPU machines (operators that ask for it are placed
there only). A killed node is replaced by one of its own kind, as an autoscaler would."""

from __future__ import annotations

import time
from typing import Any

import ray

from tilemore.engine import ray_private

WORKER_CPUS = 8  # logical: replicas hold theirs for life, the 2 real cores bound the work
KINDS: dict[str, dict[str, float]] = {"cpu": {"spot": 1}, "gpu": {"spot": 1, "gpu_node": 2}}


def add_worker(cluster: Any, kind: str) -> Any:
    node = cluster.add_node(num_cpus=WORKER_CPUS, resources=dict(KINDS[kind]))
    cluster.kinds[node.node_id] = kind
    return node


def kill_and_replace(cluster: Any, node: Any) -> str:
    """Kill ``node`` ungracefully (a vanished spot instance); a fresh one of its kind joins.
    Returns the killed node's kind."""
    kind = cluster.kinds.pop(node.node_id, "cpu")
    cluster.remove_node(node, allow_graceful=False)
    add_worker(cluster, kind)
    return kind


def actor_info(actor: Any) -> dict[str, Any]:
    """The GCS's record of an actor (the state API would need the dashboard)."""
    return ray_private.actor_info(actor)


def node_of(actor: Any) -> str:
    return actor_info(actor)["Address"]["NodeID"]


def cpus_all_free(total: float, seconds: float = 60) -> bool:
    """Whether every CPU is free again within ``seconds`` (nothing leaked), as Ray's own
    chaos tests check."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0) >= total:
            return True
        time.sleep(0.5)
    return False
