"""Worker nodes killed ungracefully mid-task, as when a spot instance vanishes."""

from __future__ import annotations

import threading
import time

import numpy as np
import ray
from PIL import Image as PILImage
from support.images import encode, photo
from support.operators import box_blur_twice
from support.pipelines import one_stage

from tilemore.engine.ray_backend import RayBackend
from tilemore.pipeline import build_graph, run_graph
from tilemore.settings import Settings

from .nodes import actor_info, cpus_all_free, kill_and_replace, node_of


def kill_node(cluster, node_id: str) -> None:
    kill_and_replace(cluster, next(n for n in cluster.worker_nodes if n.node_id == node_id))


def test_tiles_on_a_lost_node_run_again_elsewhere(cluster, tmp_path):
    import io

    p = one_stage(tmp_path, "blur", "tiled-blur")
    src = photo(256, 128)  # 8 tiles of 64 px at this memory budget, 0.6 s each
    graph = build_graph(p, {"blur": {"seconds": 0.6}})
    blur = graph.task("blur").operator
    backend = RayBackend(Settings(replicas=2, tile_memory_bytes=2**22))
    total = ray.cluster_resources()["CPU"]
    try:
        backend.prepare([t.operator for t in graph.tasks])
        victim = node_of(backend.replicas(blur)[0])
        retries, started = [], threading.Event()
        result = {}

        def run() -> None:
            result["r"] = run_graph(graph, encode(src), backend, on_retry=retries.append,
                                    on_start=lambda ts: any(t.id == "blur" for t in ts)
                                    and started.set())

        runner = threading.Thread(target=run)
        runner.start()
        assert started.wait(30)
        time.sleep(1.0)  # tiles in flight on both replicas
        kill_node(cluster, victim)  # and a replacement joins
        runner.join(120)
        assert "r" in result, "the run did not finish"
        out = np.asarray(PILImage.open(io.BytesIO(result["r"].output.data)))
        assert np.array_equal(out, box_blur_twice(src))  # every tile there, exactly once
        # the lost tiles ran again inside the task: the task itself did not fail
        assert [(r.task.id, r.failure.error) for r in retries if r.task.id == "blur"] == []
        assert all(node_of(a) != victim for a in backend.replicas(blur))
        assert actor_info(backend.replicas(blur)[0])["NumRestarts"] >= 1
    finally:
        backend.close()
    # nothing leaks: every CPU is free again (as Ray's own chaos tests check)
    assert cpus_all_free(total)
