"""The hostile-load benchmark runs end to end in its smoke mode (no Ray: the service is
uvicorn in a child process): it exits 0 — every attack got the answer it must — and writes
its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def test_hostile_load_smoke(tmp_path):
    out = tmp_path / "hostile_load.json"
    run = subprocess.run([sys.executable, str(BENCHMARKS / "hostile_load.py"), "--smoke",
                          "--out", str(out)], capture_output=True, text=True, timeout=120,
                         cwd=BENCHMARKS)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["smoke"] is True
    assert result["quiet_per_second"] > 0 and result["hostile_per_second"] > 0
    assert result["ratio"] == result["hostile_per_second"] / result["quiet_per_second"]
    assert sum(k["count"] for k in result["attacks"].values()) >= 1
    assert result["unexpected_answers"] == {} and result["checks_failed"] == []
    assert result["commit"]  # the commit the figures were measured at
    assert [r["hostile"] for r in result["rounds"]] == [False, True]
