"""The benchmarks that run on Ray, each end to end in its smoke mode (tiny inputs, one round)
in a process of its own with its own local Ray: the shared integration session is neither
used nor disturbed. Each benchmark checks its own figures for sanity and exits 1 otherwise;
these tests check that it ran, wrote them, and that they describe the smoke run asked for."""

from __future__ import annotations

import os
import shutil

import pytest
from support.benchmark_smoke import positive, run_smoke

pytestmark = pytest.mark.slow


def test_pipeline_overhead_smoke(tmp_path):
    r = run_smoke("pipeline_overhead", tmp_path)
    assert positive(r["ratio"]) and r["megapixels"] < 1 and len(r["ray_all_s"]) == 1


def test_api_replay_smoke(tmp_path):
    r = run_smoke("api_replay", tmp_path)
    for kind in ("noop", "noop_post", "replay", "status"):
        assert r[kind]["statuses"] == {"200": r["requests"]}, (kind, r[kind])
    assert positive(r["replay_ratio"]) and positive(r["status_ratio"])


def test_api_time_to_done_smoke(tmp_path):
    r = run_smoke("api_time_to_done", tmp_path)
    assert positive(r["ratio"]) and len(r["api_all_s"]) == len(r["direct_all_s"]) == 1


def test_sdk_overhead_smoke(tmp_path):
    """Both SDKs against their hand-written flows (Python: aiohttp; NodeJS: fetch, in a Node
    process); Node is measured wherever node is installed, and always on CI."""
    r = run_smoke("sdk_overhead", tmp_path)
    expected = {"python", "node"} if os.environ.get("CI") or shutil.which("node") else {"python"}
    assert set(r["clients"]) == expected
    for name, c in r["clients"].items():
        assert positive(c["ratio"]) and positive(c["paired_ratio"]), name
        assert c["outputs"] == [r["images"], r["images"]], name
        assert len(c["sdk_all_s"]) == len(c["by_hand_all_s"]) == 1, name
    if "node" in r["clients"]:  # the Node client's own CPU, each side
        assert positive(r["clients"]["node"]["cpu_ratio"])


def test_batch_smoke(tmp_path):
    r = run_smoke("batch", tmp_path)
    assert r["identical_outputs"] == r["images"] and positive(r["throughput_ratio"])


def test_metrics_overhead_smoke(tmp_path):
    r = run_smoke("metrics_overhead", tmp_path)
    assert positive(r["ratio"]) and [len(t) for t in r["seconds"].values()] == [1, 1]
