"""A multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``): a head without
CPUs, so operator replicas land on the worker nodes, which the tests preempt and kill.

It lives for this package only (hence its ``__init__.py``: package scope needs a package) and
is shut down before the integration tests start their own single-node session (pytest runs
``tests/cluster`` first)."""

from __future__ import annotations

import logging
import os

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from .nodes import add_worker  # noqa: E402

# How fast a dead node is noticed: the raylet's health checks, every 1 s, 3 misses.
SYSTEM_CONFIG = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3,
                 "health_check_initial_delay_ms": 1000, "health_check_timeout_ms": 1000}


@pytest.fixture(scope="package")
def cluster():
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "30")
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "_system_config": SYSTEM_CONFIG})
    c.kinds = {}
    for kind in ("cpu", "cpu", "gpu"):
        add_worker(c, kind)
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level=logging.WARNING)
    yield c
    ray.shutdown()
    c.shutdown()


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/cluster" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
