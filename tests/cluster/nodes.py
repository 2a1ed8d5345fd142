"""Worker nodes of the tests' cluster, by kind: plain CPU spot nodes, and spot nodes with a
``gpu_node`` resource standing in for GPU machines (operators that ask for it are placed
there only). A killed node is replaced by one of its own kind, as an autoscaler would."""

from __future__ import annotations

from typing import Any

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
