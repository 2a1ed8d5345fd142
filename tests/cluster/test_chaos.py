"""Chaos: worker nodes killed ungracefully, at random, while threads run through the HTTP
API — every thread completes, with the bytes of an undisturbed run, and each (thread, task)
charged exactly once."""

from __future__ import annotations

import random
import time
from decimal import Decimal
from pathlib import Path

import pytest
import ray
from support.images import encode, noisy, photo
from support.service_harness import Service, http

from tilemore.engine import LocalBackend
from tilemore.engine.ray_backend import RayBackend
from tilemore.pipeline import build_graph, run_graph

from .nodes import cpus_all_free, kill_and_replace, node_of

DATA = Path(__file__).parents[1] / "data"
THREADS = 24
ENV = {"adjustments": {"master": {"branches": {"slow": {"seconds": 1.5}}}}, "pipeline": "chaos",
       "output_format": "png"}


def images() -> list[bytes]:
    return [encode(noisy(photo(192, 128), 10, seed=i), "PNG") for i in range(THREADS)]


def undisturbed(svc: Service, imgs: list[bytes]) -> list[bytes]:
    graph = build_graph(svc.catalog.pipeline("chaos"), {}, "png")  # spin time changes nothing
    local = LocalBackend(svc.settings.model_copy(update={"checkpoint_tasks": False}))
    try:
        return [run_graph(graph, img, local).output.data for img in imgs]
    finally:
        local.close()


@pytest.fixture
def svc(cluster, tmp_path):
    s = Service(tmp_path, pipeline_paths=[DATA / "chaos.yaml"], replicas=2,
                tile_memory_bytes=2**22, backend=RayBackend)
    yield s
    s.close()


def test_threads_complete_while_worker_nodes_die(cluster, svc):
    imgs = images()
    expected = undisturbed(svc, imgs)
    total = ray.cluster_resources()["CPU"]
    svc.backend.prepare(t.operator for t in
                        build_graph(svc.catalog.pipeline("chaos"), {}, "png").tasks)
    sent = [svc.submit(img, ENV) for img in imgs]
    assert {r.status for r in sent} == {202}
    ids = [r.json()["thread_id"] for r in sent]

    # A worker node dies every 2 s and a fresh one joins (from this thread: Ray's Cluster
    # only adds nodes from the main thread), while the threads run.
    kills: list[str] = []  # the kinds of node killed
    rng = random.Random(7)
    deadline = time.monotonic() + 240
    next_kill = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        bodies = [http("GET", f"{svc.url}/threads/{tid}", headers=svc.auth()).json()
                  for tid in ids]
        if all(b["status"] != "processing" for b in bodies):
            break
        if time.monotonic() >= next_kill and len(kills) < 3:
            nodes = sorted(cluster.worker_nodes, key=lambda n: n.node_id)
            if not kills:  # first a stand-in GPU node: its replicas must find the new one
                nodes = [n for n in nodes if cluster.kinds.get(n.node_id) == "gpu"]
            kills.append(kill_and_replace(cluster, rng.choice(nodes)))
            next_kill = time.monotonic() + 2.0
        time.sleep(0.2)
    assert len(kills) >= 1, "the run ended before any node was killed"
    assert [b["status"] for b in bodies] == ["done"] * THREADS, [
        b.get("error") for b in bodies if b["status"] != "done"]
    # placement: the stand-in GPU operator's replicas live on stand-in GPU nodes only
    gpu_nodes = {n for n, kind in cluster.kinds.items() if kind == "gpu"}
    flip = build_graph(svc.catalog.pipeline("chaos"), {}, "png").task("master/flip").operator
    assert {node_of(a) for a in svc.backend.replicas(flip)} <= gpu_nodes
    for body, want in zip(bodies, expected, strict=True):
        got = http("GET", body["result"]["url"], headers=svc.auth())
        assert got.body == want  # byte-identical to the undisturbed run
    # each (thread, task) charged exactly once, whatever ran twice
    today = time.strftime("%Y-%m-%d", time.gmtime())
    ops = http("GET", f"{svc.url}/billing/operations?date={today}",
               headers=svc.auth()).json()["operations"]
    seen = [(o["thread_id"], o["task_id"]) for o in ops if o["thread_id"] in ids]
    assert len(seen) == len(set(seen)) == THREADS * len(bodies[0]["tasks"])
    for tid, body in zip(ids, bodies, strict=True):
        mine = [o for o in ops if o["thread_id"] == tid]
        assert sum(-Decimal(o["amount"]) for o in mine) == Decimal(body["credits_charged"])
    svc.backend.close()
    assert cpus_all_free(total), "CPUs held after the run: something leaked"
