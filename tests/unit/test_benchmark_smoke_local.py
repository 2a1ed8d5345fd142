"""The benchmarks that need no Ray, each run end to end in its smoke mode (seconds), and a
check that every benchmark script has a smoke test, so that none can break unnoticed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.benchmark_smoke import BENCHMARKS, SMOKE_TESTS, positive, run_smoke

ROOT = Path(__file__).parents[2]


def test_every_benchmark_has_a_smoke_test():
    scripts = {p.stem for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")}
    missing, stale = scripts - set(SMOKE_TESTS), set(SMOKE_TESTS) - scripts
    assert not missing, (f"benchmarks without a smoke test: {sorted(missing)}: give each "
                         "--smoke (benchmarks/_common.py) and a test, listed in "
                         "tests/support/benchmark_smoke.py's SMOKE_TESTS")
    assert not stale, f"SMOKE_TESTS lists benchmarks that are gone: {sorted(stale)}"
    for name, test in SMOKE_TESTS.items():
        text = (ROOT / test).read_text()
        assert name in text and "smoke" in text, f"{test} does not run {name} --smoke"
        assert "--smoke" in (BENCHMARKS / f"{name}.py").read_text(), f"{name} has no --smoke"


def test_ledger_appends_smoke(tmp_path):
    r = run_smoke("ledger_appends", tmp_path)
    assert positive(r["group_commit_per_s"]) and positive(r["one_commit_per_charge_per_s"])
    assert r["entries_verified"] == 1 + 2 * r["charges"]


def test_billing_history_smoke(tmp_path):
    r = run_smoke("billing_history", tmp_path)
    assert r["rows"] == 31 and positive(r["query_ms"]) and r["entries"] < 100_000


def test_shifter_encoder_smoke(tmp_path):
    if not os.environ.get("CI"):  # CI installs the bench extras: there it must not skip
        pytest.importorskip("pyvips", reason="the bench extras: pip install -e '.[bench]'")
    r = run_smoke("shifter_encoder", tmp_path)
    assert positive(r["ratio"]) and r["tilemore_bytes"] > 0 and r["pyvips_bytes"] > 0


@pytest.mark.slow
def test_cnn_tiling_smoke(tmp_path):
    r = run_smoke("cnn_tiling", tmp_path)
    assert all(positive(v) for v in r["throughput_mp_s"].values())
    assert positive(r["tiling"]["ratio"]) and r["tiling"]["tile_side"] < 800  # really tiled
