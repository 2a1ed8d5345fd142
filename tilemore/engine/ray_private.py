"""Every use of Ray's private APIs, in one adapter: the GCS's actor table and node drains,
and where Serve's controller is. Ray may move or change these in any release; a Ray upgrade
then touches this module only (public alternatives need the dashboard's state API, which
a cluster may run without)."""

from __future__ import annotations

from typing import Any

import ray
from ray.core.generated import autoscaler_pb2

__all__ = ["actor_id", "actor_info", "actor_table", "drain_node", "draining_nodes",
           "serve_controller"]


def actor_id(actor: Any) -> str:
    """An actor handle's id, in hex."""
    return actor._actor_id.hex()  # noqa: SLF001


def actor_info(actor: Any) -> dict[str, Any]:
    """The GCS's entry for ``actor`` (a handle): ``State``, ``Address.NodeID``,
    ``NumRestarts``…"""
    return actor_table(actor_id(actor))


def actor_table(actor: str | None = None) -> Any:
    """The GCS's entry for the actor with id ``actor`` (hex), or every actor's, by id."""
    return ray._private.state.state.actor_table(actor)  # noqa: SLF001


def drain_node(node_id: str, reason: str, deadline_ms: int) -> tuple[bool, str]:
    """Ask the GCS to drain ``node_id`` for preemption: (accepted, why not)."""
    gcs = ray._private.worker.global_worker.gcs_client  # noqa: SLF001 - Ray's drain API
    accepted, why = gcs.drain_node(node_id, autoscaler_pb2.DrainNodeReason.Value(
        "DRAIN_NODE_REASON_PREEMPTION"), reason, deadline_ms)
    return bool(accepted), why


def draining_nodes() -> dict[str, int]:
    """Node id (hex) → drain deadline in ms (0: none), for every node being drained."""
    return dict(ray._private.state.state.get_draining_nodes())  # noqa: SLF001


def serve_controller() -> tuple[str, str]:
    """Serve's controller actor: (name, namespace). Serve is imported only here, when asked
    (it is heavy, and most processes never need it)."""
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    return SERVE_CONTROLLER_NAME, SERVE_NAMESPACE
