"""One Ray session for every integration test (starting Ray costs seconds)."""

from __future__ import annotations

import logging
import os

import pytest

ray = pytest.importorskip("ray")

# Logical CPUs: actors hold theirs for life, and the tests start replicas of every built-in
# operator plus the test operators; the machine's real cores still bound the parallelism.
SESSION_CPUS = 16


@pytest.fixture(scope="session", autouse=True)
def ray_session():
    # On a loaded 2-core machine Serve's proxy can take longer than its default 5 s
    # readiness check; the cluster's processes inherit this from the driver.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "30")
    # The dashboard's head writes the service-discovery file the Prometheus test scrapes by.
    # address="local": always a cluster of its own, never one a `ray start` (another test
    # tier, a benchmark) left on this machine.
    ray.init(address="local", num_cpus=SESSION_CPUS, include_dashboard=True,
             logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def ray_backend():
    from tilemore.engine.ray_backend import RayBackend

    backend = RayBackend()
    yield backend
    backend.close()  # its actors go, so each test starts from the same free resources


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
