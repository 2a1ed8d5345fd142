"""Metrics end to end: threads run on Ray with Ray's metrics sink, a real Prometheus scrapes
the nodes' metrics agents through Ray's service-discovery file, and every Grafana panel's
metrics have data there."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
from support.images import encode, noisy, photo
from support.prometheus import load_dashboards, panel_queries, running_prometheus, without_data
from support.service_harness import Service
from support.waits import until

from tilemore.engine.ray_backend import RayBackend
from tilemore.engine.ray_metrics import ClusterGauges
from tilemore.metrics import open_metrics

DATA = Path(__file__).parents[1] / "data"
THREADS = 3


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """Prometheus, after three threads (each with a tiled stage, a QC pick and a retry)."""
    root = tmp_path_factory.mktemp("metrics")
    with running_prometheus(root / "prometheus") as prom:
        metrics = open_metrics(True)
        assert metrics.enabled, "metrics on Ray record through Ray's sink"
        svc = Service(root / "svc", credits="1000", pipeline_paths=[DATA / "metrics.yaml"],
                      replicas=2, tile_memory_bytes=2**20, backend=RayBackend, recorder=metrics)
        gauges = ClusterGauges(metrics, svc.store, svc.backend, period=1.0)
        gauges.start()
        try:
            ids = []
            for i in range(THREADS):
                env = {"pipeline": "metrics", "output_format": "png", "adjustments": {
                    "shaky": {"failures": 1, "counter": str(root / f"calls-{i}")}}}
                img = encode(noisy(photo(160, 120), 10, seed=i), "PNG")
                ids.append(svc.submit(img, env).json()["thread_id"])
            assert [svc.wait(t, timeout=120)["status"] for t in ids] == ["done"] * THREADS
            svc.collector.run_pass()  # the storage gauges, as the first conductor's collector
            yield prom
        finally:
            gauges.stop()
            svc.close()


def wait_for_data(prom, queries, timeout: float = 90.0) -> list[str]:
    """Ray's agents report every few seconds and Prometheus scrapes every second."""
    deadline = time.monotonic() + timeout
    while True:
        missing = without_data(prom, queries)
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(2)


def test_prometheus_finds_ray_through_its_service_discovery_file(scraped):
    # Ray's dashboard rewrites the file every few seconds; Prometheus rereads it every second.
    assert until(lambda: scraped.targets_up() >= 1, timeout=30)


def test_every_metric_of_every_dashboard_panel_has_data(scraped):
    queries = panel_queries(load_dashboards())
    assert len(queries) >= 20
    assert wait_for_data(scraped, queries) == []


def test_the_recorded_values_are_the_runs(scraped):
    wait_for_data(scraped, panel_queries(load_dashboards()))
    picks = scraped.query("sum(ray_tilemore_qc_picks_total)")
    assert float(picks[0]["value"][1]) >= THREADS  # one pick per thread (more: other tests')
    retries = scraped.query('sum(ray_tilemore_task_retries_total{operator="flaky",'
                            'reason="policy"})')
    assert float(retries[0]["value"][1]) >= THREADS
    tiles = scraped.query('sum(ray_tilemore_task_tiles_count{operator="tiled-blur"})')
    assert float(tiles[0]["value"][1]) >= THREADS


def test_a_panel_whose_metric_does_not_exist_is_caught(scraped):
    dashboards = copy.deepcopy(load_dashboards())
    bad = copy.deepcopy(dashboards[0]["panels"][0])
    bad["title"] = "Misspelt"
    bad["targets"] = [{"expr": "sum(rate(ray_tilemore_task_secnds_count[5m]))", "refId": "A"}]
    dashboards[0]["panels"].append(bad)
    wait_for_data(scraped, panel_queries(load_dashboards()))  # the real panels have data
    missing = without_data(scraped, panel_queries(dashboards))
    assert missing == [f"{dashboards[0]['title']} / Misspelt: no series "
                       "ray_tilemore_task_secnds_count"]
