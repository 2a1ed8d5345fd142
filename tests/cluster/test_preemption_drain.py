"""A preemption notice drains its node: replicas there restart on another node and the task
they were running retries there; the thread completes."""

from __future__ import annotations

import threading
import time

import pytest
from support.fake_metadata import FakeMetadata
from support.images import encode, photo
from support.pipelines import one_stage

from tilemore.engine.ray_backend import RayBackend
from tilemore.engine.ray_cluster import NodeGuard, draining_nodes
from tilemore.pipeline import build_graph, run_graph

from .nodes import node_of


@pytest.fixture
def meta():
    m = FakeMetadata()
    yield m
    m.close()


def test_a_preemption_notice_moves_the_work_off_its_node(cluster, tmp_path, meta):
    p = one_stage(tmp_path, "work", "spin")
    graph = build_graph(p, {"work": {"seconds": 4.0}})
    spin = graph.task("work").operator
    backend = RayBackend()
    guard = NodeGuard(backend.evacuate, "aws", f"{meta.url}/{{node_id}}", poll_seconds=0.2,
                      interval=0.3)
    try:
        backend.prepare([t.operator for t in graph.tasks])
        guard.start()
        doomed = node_of(backend.replicas(spin)[0])
        retries, started = [], threading.Event()
        result = {}

        def run() -> None:
            result["r"] = run_graph(graph, encode(photo(64, 48)), backend, on_retry=retries.append,
                                    on_start=lambda ts: any(t.id == "work" for t in ts)
                                    and started.set())

        runner = threading.Thread(target=run)
        runner.start()
        assert started.wait(30)
        time.sleep(1.0)  # the spin task is running on the doomed node
        deadline = meta.preempt(doomed, seconds=120)
        noticed = time.time()
        runner.join(60)
        assert not runner.is_alive() and "r" in result
        assert draining_nodes() == {doomed: int(deadline.timestamp() * 1000)}
        # its replica moved under it, and the task ran again from the start over there
        assert {r.task.id for r in retries} <= {"work"}
        assert result["r"].stats["work"].started > noticed
        moved = node_of(backend.replicas(spin)[0])
        assert moved != doomed  # nothing of ours lives on the draining node any more
        assert all(node_of(a) != doomed for op in (t.operator for t in graph.tasks)
                   for a in backend.replicas(op))
        assert result["r"].output.content_type == "image/png"
    finally:
        guard.stop()
        backend.close()
