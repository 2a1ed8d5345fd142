"""Writes the Grafana dashboards in ``dashboards/`` from the short specification below.

    python tilemore_deployments/grafana/build_dashboards.py

Edit the panels here, not the JSON: a test fails when the JSON and this file disagree, and
another checks against a real Prometheus that every metric a panel uses has data. Metric
names are Tilemore's (``tilemore/metrics.py``) with the ``ray_`` prefix Ray's exporter adds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
DATASOURCE = {"type": "prometheus", "uid": "tilemore-prometheus"}  # provisioning/datasources
W = "5m"  # rate window


def q(quantile: float, metric: str, by: str = "") -> str:
    keys = ", ".join(["le", *filter(None, [by])])
    return (f"histogram_quantile({quantile}, sum by ({keys}) "
            f"(rate(ray_{metric}_bucket[{W}])))")


def panel(title: str, unit: str, *targets: tuple[str, str], kind: str = "timeseries",
          ) -> dict[str, Any]:
    return {"title": title, "type": kind, "datasource": DATASOURCE,
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"expr": expr, "legendFormat": legend, "refId": chr(65 + i),
                         "datasource": DATASOURCE}
                        for i, (expr, legend) in enumerate(targets)]}


DASHBOARDS: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "tilemore-sla": ("Tilemore — pipeline SLA", [
        panel("Time to done (accepted → done)", "s",
              *((q(p, "tilemore_thread_seconds").replace(
                  "_bucket[", '_bucket{status="done"}['), f"p{int(p * 100)}")
                for p in (0.5, 0.95, 0.99))),
        panel("Queue time (accepted → first task running)", "s",
              (q(0.5, "tilemore_thread_queue_seconds"), "p50"),
              (q(0.95, "tilemore_thread_queue_seconds"), "p95")),
        panel("Threads by status", "short",
              ("sum by (status) (ray_tilemore_threads)", "{{status}}")),
        panel("Threads ending per second", "ops",
              (f"sum by (status) (rate(ray_tilemore_thread_seconds_count[{W}]))",
               "{{status}}")),
    ]),
    "tilemore-operators": ("Tilemore — operators", [
        panel("Task duration p95 by operator", "s",
              (q(0.95, "tilemore_task_seconds", "operator"), "{{operator}}")),
        panel("Queue wait p95 by operator (handed to the backend → running)", "s",
              (q(0.95, "tilemore_task_queue_seconds", "operator"), "{{operator}}")),
        panel("Tasks per second by operator", "ops",
              (f"sum by (operator) (rate(ray_tilemore_task_seconds_count[{W}]))",
               "{{operator}}")),
        panel("Retried runs by operator and reason", "short",
              (f"sum by (operator, reason) (increase(ray_tilemore_task_retries_total[{W}]))",
               "{{operator}} {{reason}}")),
        panel("QC picks by denoiser", "short",
              ("sum by (stage, pick) (ray_tilemore_qc_picks_total)", "{{stage}}: {{pick}}"),
              kind="barchart"),
    ]),
    "tilemore-tiling": ("Tilemore — tiling and blobs", [
        panel("Tiles per tiled task by operator", "short",
              (q(0.5, "tilemore_task_tiles", "operator"), "p50 {{operator}}"),
              (q(0.95, "tilemore_task_tiles", "operator"), "p95 {{operator}}")),
        panel("Tiles per second by operator", "ops",
              (f"sum by (operator) (rate(ray_tilemore_task_tiles_sum[{W}]))", "{{operator}}")),
        panel("Blob store latency p95", "s",
              (q(0.95, "tilemore_blob_seconds", "op, store"), "{{store}} {{op}}")),
        panel("Blob store calls per second", "ops",
              (f"sum by (op, store) (rate(ray_tilemore_blob_seconds_count[{W}]))",
               "{{store}} {{op}}")),
        panel("Bytes stored by kind", "bytes",
              ("sum by (kind) (ray_tilemore_blob_bytes)", "{{kind}}")),
        panel("Bytes collected per second by kind", "Bps",
              (f"sum by (kind) (rate(ray_tilemore_blob_collected_bytes_total[{W}]))",
               "{{kind}}")),
    ]),
    "tilemore-billing": ("Tilemore — billing", [
        panel("Credits per second by domain", "short",
              (f"sum by (domain) (rate(ray_tilemore_credits_total[{W}]))", "{{domain}}")),
        panel("Credits in the last hour by domain", "short",
              ("sum by (domain) (increase(ray_tilemore_credits_total[1h]))", "{{domain}}"),
              kind="bargauge"),
    ]),
    "tilemore-cluster": ("Tilemore — cluster", [
        panel("Nodes by kind", "short", ("sum by (kind) (ray_tilemore_nodes)", "{{kind}}")),
        panel("Replicas per deployment", "short",
              ("sum by (deployment, state) (ray_tilemore_replicas)",
               "{{deployment}} {{state}}")),
    ]),
}


def dashboard(uid: str, title: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    laid = []
    for i, p in enumerate(panels):  # two columns, 8 rows high
        laid.append({"id": i + 1, "gridPos": {"x": 12 * (i % 2), "y": 8 * (i // 2),
                                              "w": 12, "h": 8}, **p})
    return {"uid": uid, "title": title, "tags": ["tilemore"], "timezone": "utc",
            "schemaVersion": 39, "version": 1, "editable": True, "refresh": "10s",
            "time": {"from": "now-1h", "to": "now"}, "panels": laid,
            "templating": {"list": []}, "annotations": {"list": []}}


def rendered() -> dict[str, str]:
    """File name → JSON text, as written."""
    return {f"{uid}.json": json.dumps(dashboard(uid, title, panels), indent=2) + "\n"
            for uid, (title, panels) in DASHBOARDS.items()}


def main() -> None:
    for name, text in rendered().items():
        (HERE / "dashboards" / name).write_text(text)
        print(f"wrote dashboards/{name}")


if __name__ == "__main__":
    main()
