"""A real Prometheus for the tests: the Debian package's binary, started on a free loopback
port with the shipped config (``tilemore_deployments/prometheus/prometheus.yml``) at a 1 s scrape
interval, and the checks that every metric of every Grafana dashboard panel has data."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tilemore.ports import free_port

DEPLOYMENTS = Path(__file__).parents[2] / "tilemore_deployments"
CONFIG = DEPLOYMENTS / "prometheus" / "prometheus.yml"
DASHBOARDS = DEPLOYMENTS / "grafana" / "dashboards"
# A series name in PromQL: an identifier not followed by "(" (a function) and not a keyword.
NAME = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")
GROUPING = r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "le", "bool",
               "and", "or", "unless", "offset"}


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed: .ci/run installs the Debian package")
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    return found


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        qs = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{qs}", timeout=10) as resp:
            body = json.load(resp)
        if body["status"] != "success":
            raise RuntimeError(f"{expr}: {body}")
        return body["data"]["result"]

    def targets_up(self) -> int:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as resp:
            active = json.load(resp)["data"]["activeTargets"]
        return sum(t["health"] == "up" for t in active)


@contextmanager
def running_prometheus(tmp: Path) -> Iterator[Prometheus]:
    tmp.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(CONFIG.read_text())
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
    for job in config["scrape_configs"]:
        for sd in job.get("file_sd_configs", []):
            sd["refresh_interval"] = "1s"
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [prometheus_binary(), f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT)
    prom = Prometheus(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("prometheus did not start: "
                                       + (tmp / "prometheus.log").read_text()[-2000:]) from None
                time.sleep(0.3)
        yield prom
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    expr: str

    @property
    def metrics(self) -> set[str]:
        """The series names the expression reads (labels, functions and keywords left out)."""
        without_labels = re.sub(r"\{[^}]*\}", "", self.expr)
        without_ranges = re.sub(r"\[[^\]]*\]", "", without_labels)
        without_groupings = re.sub(GROUPING, "", without_ranges)
        names = set(NAME.findall(without_groupings)) - NOT_METRICS
        return {n for n in names if not re.fullmatch(r"[0-9.]+", n)}


def panel_queries(dashboards: list[dict[str, Any]]) -> list[PanelQuery]:
    return [PanelQuery(d["title"], p["title"], t["expr"])
            for d in dashboards for p in d["panels"] for t in p.get("targets", [])]


def load_dashboards(folder: Path = DASHBOARDS) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def without_data(prom: Prometheus, queries: list[PanelQuery]) -> list[str]:
    """Each panel query whose metrics have no series, or whose expression returns nothing."""
    missing = []
    for pq in queries:
        empty = sorted(m for m in pq.metrics if not prom.query(f"group({m})"))
        if empty:
            missing.append(f"{pq.dashboard} / {pq.panel}: no series {', '.join(empty)}")
        elif not prom.query(pq.expr):
            missing.append(f"{pq.dashboard} / {pq.panel}: no result for {pq.expr}")
    return missing
