"""The hostile-load benchmark runs end to end in its smoke mode (no Ray: the service is
uvicorn in a child process): it exits 0 — every attack got the answer it must — and writes
its figures."""

from __future__ import annotations

from support.benchmark_smoke import run_smoke


def test_hostile_load_smoke(tmp_path):
    result = run_smoke("hostile_load", tmp_path, timeout=120)
    assert result["quiet_per_second"] > 0 and result["hostile_per_second"] > 0
    assert result["ratio"] == result["hostile_per_second"] / result["quiet_per_second"]
    assert sum(k["count"] for k in result["attacks"].values()) >= 1
    assert result["unexpected_answers"] == {}
    assert [r["hostile"] for r in result["rounds"]] == [False, True]
