"""One tiled task spread across every replica of its operator, on Ray.

The coordinator (a Ray task placed beside the conductor) keeps a bounded number of tiles in
flight, stitches them as they come back, and survives the loss of replicas: a tile whose
replica (or whose only copy) went with its node runs again on a replica that is up, while
the lost one is probed until Ray has restarted it elsewhere.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from typing import Any

import numpy as np
import ray

from tilemore.engine.host import TaskFailure, TaskStats
from tilemore.engine.ray_replicas import LOST, PROBE_SECONDS, Replicas
from tilemore.errors import TilemoreError
from tilemore.image import Image
from tilemore.operator import OperatorParams
from tilemore.tiling import Tile, plan_tiles, stitch_exact, stitch_feathered

MAX_LOSSES_PER_TILE = 5


@ray.remote(num_cpus=0)
def fan_out(hosts: list[Any], task_id: str, operator_name: str, params: OperatorParams,
            exact: bool, halo: int, image: Image) -> tuple[Any, TaskStats]:
    """Failures come back as data in the stats, as a replica's do."""
    started = time.time()
    tiles = 0
    try:
        replicas = Replicas(hosts)
        h, w = image.height, image.width
        queue = plan_tiles(h, w, replicas.call("tile_side"), halo)
        tiles = len(queue)  # as planned: a tile re-run after a loss is still one tile
        in_flight: dict[Any, tuple[Tile, int]] = {}
        done: list[tuple[Tile, Any]] = []
        losses: dict[Tile, int] = {}
        while queue or in_flight:
            while queue and len(in_flight) < 2 * len(hosts):  # bounded: memory stays flat
                i = replicas.next_up()
                if i is None:
                    break
                t = queue.pop(0)
                window = np.ascontiguousarray(image.pixels[t.wy0:t.wy1, t.wx0:t.wx1])
                # fails fast with a lost replica: the tile then goes to one that is up
                call = hosts[i].run_window.options(max_task_retries=0)
                in_flight[call.remote(params, window)] = (t, i)
            probes = replicas.probe()
            ready, _ = ray.wait([*in_flight, *probes], num_returns=1, timeout=PROBE_SECONDS)
            for ref in ready:
                if ref in replicas.probes:
                    replicas.answered(ref)
                    continue
                t, i = in_flight.pop(ref)
                try:
                    done.append((t, ray.get(ref)))
                except LOST:
                    losses[t] = losses.get(t, 0) + 1
                    if losses[t] > MAX_LOSSES_PER_TILE:
                        raise
                    replicas.lost(i)
                    queue.append(t)
        channels = image.pixels.shape[2]
        if exact:
            pixels = stitch_exact(h, w, channels, image.pixels.dtype, iter(done))
        else:
            pixels = np.clip(np.rint(stitch_feathered(h, w, channels, iter(done))),
                             0, 255).astype(np.uint8)
        output = image.with_pixels(pixels)
        key, size = replicas.call("checkpoint", output, time.time() - started)
        failure = None
    except Exception as exc:  # noqa: BLE001 - reported through the stats, as replicas do
        output, key, size = None, None, 0
        failure = TaskFailure(exc if isinstance(exc, TilemoreError) else RuntimeError(repr(exc)),
                              traceback.format_exc())
    stats = TaskStats(task_id, operator_name, started, time.time(), image.megapixels,
                      socket.gethostname(), os.getpid(), failure, key, tiles, size)
    return output, stats
