"""benchmarks/storage.py end to end in its smoke mode (no Ray): a thread under each policy,
what it wrote and kept, and the collector removing expired threads."""

from __future__ import annotations

from support.benchmark_smoke import positive, run_smoke


def test_storage_smoke(tmp_path):
    r = run_smoke("storage", tmp_path, timeout=180)
    new, every, old = r["costly"][0], r["always"][0], r["everything"][0]
    assert new["kept"] == new["input"] + new["result"] < old["kept"]
    assert every["checkpointed"] == every["tasks"] == old["checkpointed"]
    assert new["checkpointed"] <= every["checkpointed"]
    assert new["checkpoint"] <= every["checkpoint"] < old["checkpoint"]
    assert 0 < r["checkpoints_over_raw"] < 1
    assert r["collector"]["removed"] == r["collector"]["threads"] == 300
    assert positive(r["collector"]["threads_per_s"]) and positive(r["time_ratio"])
