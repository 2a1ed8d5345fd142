"""The SDK memory benchmark runs end to end in its smoke mode (no Ray: the service is the
harness's uvicorn): a 60 MB input, more than the 50 MB bound, goes through the Python and the
NodeJS SDK, each in a process of its own, and neither client's RSS grows past the bound (a
client that held the input whole would)."""

from __future__ import annotations

import os
import shutil

from support.benchmark_smoke import positive, run_smoke


def test_sdk_memory_smoke(tmp_path):
    result = run_smoke("sdk_memory", tmp_path, timeout=480)  # the shared machine can be slow
    clients = result["clients"]
    expected = {"python", "node"} if os.environ.get("CI") or shutil.which("node") else {"python"}
    assert set(clients) == expected
    for name, figures in clients.items():
        assert figures["status"] == "done", name
        assert positive(figures["seconds"]) and figures["peak"] >= figures["before"]
        assert figures["rss_growth_mb"] <= result["target_mb"] < result["input_mb"], name
