"""Runs a benchmark's smoke mode (``--smoke``: tiny inputs, one round) as its own process,
exactly as a person would run the script, and returns the figures it wrote.

A subprocess per benchmark rather than calling each ``main()`` in the test process: the
script's own imports, argument parsing and ``sys.exit`` are what rot, and a benchmark that
needs Ray starts its own local Ray there (``RAY_ADDRESS=local``: never the tests' shared
session, nor a cluster some earlier ``ray start`` left in ``/tmp/ray``, which Ray would
otherwise join)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"

# Every benchmark script and the test file that runs its smoke mode: a script added to
# benchmarks/ without one fails tests/unit/test_benchmark_smoke_local.py.
SMOKE_TESTS = {
    "api_replay": "tests/integration/test_benchmark_smoke_ray.py",
    "api_time_to_done": "tests/integration/test_benchmark_smoke_ray.py",
    "batch": "tests/integration/test_benchmark_smoke_ray.py",
    "billing_history": "tests/unit/test_benchmark_smoke_local.py",
    "chaos": "tests/cluster/test_benchmark_smoke_chaos.py",
    "cnn_tiling": "tests/unit/test_benchmark_smoke_local.py",
    "control_plane": "tests/integration/test_benchmark_smoke_control_plane.py",
    "denoise_quality": "tests/unit/test_denoise_quality_smoke.py",
    "hostile_load": "tests/unit/test_benchmark_smoke.py",
    "ledger_appends": "tests/unit/test_benchmark_smoke_local.py",
    "metrics_overhead": "tests/integration/test_benchmark_smoke_ray.py",
    "pipeline_overhead": "tests/integration/test_benchmark_smoke_ray.py",
    "rate_limit": "tests/unit/test_benchmark_smoke_rate_limit.py",
    "registry_writes": "tests/unit/test_benchmark_smoke_registry.py",
    "sdk_memory": "tests/unit/test_benchmark_smoke_sdk_memory.py",
    "sdk_overhead": "tests/integration/test_benchmark_smoke_ray.py",
    "shifter_encoder": "tests/unit/test_benchmark_smoke_local.py",
    "storage": "tests/unit/test_benchmark_smoke_storage.py",
}


def run_smoke(name: str, out_dir: Path, timeout: float = 240) -> dict:
    """``python benchmarks/NAME.py --smoke --out …``: asserts it exits 0, wrote its figures,
    marked them a smoke run and failed none of its own sanity checks; returns the figures."""
    out = out_dir / f"{name}.json"
    env = {k: v for k, v in os.environ.items() if k != "TILEMORE_RAY_ADDRESS"}
    env["RAY_ADDRESS"] = "local"
    # Its Ray under a temp root of its own: a session's files (the service-discovery file
    # Prometheus reads) stay the tests' own session's. Short: Ray's socket paths must fit.
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray-smoke-", dir="/tmp")
    try:
        run = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), "--smoke",
                              "--out", str(out)], capture_output=True, text=True,
                             timeout=timeout, cwd=BENCHMARKS, env=env)
    finally:
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    assert run.returncode == 0, f"{name} --smoke exited {run.returncode}:\n" \
        + run.stdout[-3000:] + run.stderr[-3000:]
    assert out.exists(), f"{name} --smoke wrote no figures"
    result = json.loads(out.read_text())
    assert result["smoke"] is True and result["checks_failed"] == []
    assert result["commit"]  # the commit the figures were measured at
    return result


def positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0
