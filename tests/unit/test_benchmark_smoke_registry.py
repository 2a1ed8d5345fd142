"""benchmarks/registry_writes.py end to end in its smoke mode (no Ray): every thread's five
registry writes land on SQLite, and on PostgreSQL where it is installed (a throwaway cluster
with durable commits), and the PostgreSQL ledger verifies with every charge once."""

from __future__ import annotations

from support.benchmark_smoke import positive, run_smoke
from support.postgres import find_bindir


def test_registry_writes_smoke(tmp_path):
    r = run_smoke("registry_writes", tmp_path, timeout=180)
    assert r["threads"] == 40 and r["writes_per_thread"] == 5
    assert r["sqlite"]["threads_done"] == r["sqlite"]["expected_done"] == 41
    assert positive(r["sqlite"]["threads_per_s"])
    if find_bindir() is not None:  # measured wherever PostgreSQL is installed
        assert r["postgres"]["threads_done"] == 41 and positive(r["postgres"]["threads_per_s"])
        assert r["postgres_ledger"]["ok"] and positive(r["postgres_ledger"]["charges_per_s"])
