"""The Grafana dashboards and Prometheus config as shipped: generated from their spec, every
panel reading only metrics Tilemore declares, every declared metric on some panel."""

from __future__ import annotations

import importlib.util

import yaml
from support.prometheus import (
    CONFIG,
    DASHBOARDS,
    DEPLOYMENTS,
    PanelQuery,
    load_dashboards,
    panel_queries,
)

from tilemore.metrics import METRICS

SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("",), "gauge": ("",)}


def builder():
    path = DEPLOYMENTS / "grafana" / "build_dashboards.py"
    spec = importlib.util.spec_from_file_location("build_dashboards", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_json_is_what_the_spec_builds():
    rendered = builder().rendered()
    assert sorted(rendered) == sorted(p.name for p in DASHBOARDS.glob("*.json"))
    for name, text in rendered.items():
        assert (DASHBOARDS / name).read_text() == text, \
            f"{name} is stale: python tilemore_deployments/grafana/build_dashboards.py"


def test_the_five_dashboards_of_the_issue():
    titles = {d["title"] for d in load_dashboards()}
    assert titles == {"Tilemore — pipeline SLA", "Tilemore — operators",
                      "Tilemore — tiling and blobs", "Tilemore — billing",
                      "Tilemore — cluster"}


def test_panels_read_only_declared_metrics_and_every_metric_has_a_panel():
    exported = {f"ray_{m.name}{suffix}": m.name for m in METRICS.values()
                for suffix in SUFFIXES[m.kind]}
    used = set()
    for pq in panel_queries(load_dashboards()):
        assert pq.metrics, pq
        assert pq.metrics <= set(exported), f"{pq.panel}: {pq.metrics - set(exported)}"
        used |= {exported[m] for m in pq.metrics}
    assert used == set(METRICS)


def test_every_panel_uses_the_provisioned_datasource():
    provisioned = yaml.safe_load((DEPLOYMENTS / "grafana" / "provisioning" / "datasources"
                                  / "tilemore.yml").read_text())
    uid = provisioned["datasources"][0]["uid"]
    for d in load_dashboards():
        assert len({p["id"] for p in d["panels"]}) == len(d["panels"])
        for p in d["panels"]:
            assert p["datasource"]["uid"] == uid


def test_the_prometheus_config_scrapes_ray_through_its_service_discovery_file():
    config = yaml.safe_load(CONFIG.read_text())
    files = [f for job in config["scrape_configs"] for sd in job.get("file_sd_configs", [])
             for f in sd["files"]]
    assert files == ["/tmp/ray/prom_metrics_service_discovery.json"]


def test_metric_names_are_read_out_of_expressions():
    pq = PanelQuery("d", "p", 'histogram_quantile(0.95, sum by (le, operator) '
                    '(rate(ray_tilemore_task_seconds_bucket{status="done"}[5m]))) / '
                    'ignoring(x) sum(ray_other_total offset 5m)')
    assert pq.metrics == {"ray_tilemore_task_seconds_bucket", "ray_other_total"}
