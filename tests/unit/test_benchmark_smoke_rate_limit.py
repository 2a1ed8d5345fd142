"""The rate-limit benchmark runs end to end in its smoke mode (no Ray: each mode's service is
uvicorn in a child process): every request answered 200, the limiter's answers carry the
RateLimit fields, and three simulated replicas hold one limit within 10 %."""

from __future__ import annotations

from support.benchmark_smoke import positive, run_smoke


def test_rate_limit_smoke(tmp_path):
    result = run_smoke("rate_limit", tmp_path, timeout=180)
    assert positive(result["on_per_second"]) and positive(result["off_per_second"])
    assert result["ratio"] == result["on_per_second"] / result["off_per_second"]
    held = result["replicas"]
    assert 0.9 <= held["fewest_ratio"] <= held["most_ratio"] <= 1.1
