"""benchmarks/registry_writes.py end to end in its smoke mode (no Ray): every thread's five
registry writes land on SQLite, and on PostgreSQL where it is installed (a throwaway cluster
with durable commits), with the lifecycle's writes folded into them and apart; several
processes' writes all land on one SQLite file; and the PostgreSQL ledger verifies with every
charge once."""

from __future__ import annotations

from support.benchmark_smoke import positive, run_smoke
from support.postgres import find_bindir


def test_registry_writes_smoke(tmp_path):
    r = run_smoke("registry_writes", tmp_path, timeout=180)
    assert r["threads"] == 40 and r["writes_per_thread"] == 5
    assert r["sqlite"]["threads_done"] == r["sqlite"]["expected_done"] == 40
    assert positive(r["sqlite"]["threads_per_s"])
    for how, writes in (("folded", 8), ("apart", 11)):
        runs = r[f"sqlite_lifecycle_{how}"]
        assert [x["threads_done"] for x in runs] == [40, 40]
        assert runs[0]["writes_per_thread"] == writes
    for how in ("own_waits", "busy_handler"):  # 4 processes at once on one SQLite file
        assert [x["rows"] for x in r[f"sqlite_processes_{how}"]] == [32, 32]
    if find_bindir() is not None:  # measured wherever PostgreSQL is installed
        assert r["postgres"]["threads_done"] == 40 and positive(r["postgres"]["threads_per_s"])
        assert [x["threads_done"] for x in r["postgres_lifecycle_folded"]] == [40, 40]
        assert r["postgres_ledger"]["ok"] and positive(r["postgres_ledger"]["charges_per_s"])
