"""The registry's writes for one thread of the two-stage pipeline, as the ingress and a
conductor make them today (create with its tasks, claim the lease, both tasks started in one
write — the graph is handed over as a DAG —, each done, finish with QC's verdicts, which
gives the lease back in the same write: 5 write transactions, each fenced by the lease), from
concurrent writers, on SQLite and on PostgreSQL with durable commits; the same with the data
lifecycle's writes, as the service makes them (the input and the result pinned before they
are stored, their references and the end's dates in the insert's and the finish's own
transactions: 8) against each of them in a transaction of its own, as the service made them
before (11), in the same run; SQLite written from several processes at once, as the ingress,
a conductor and the billing actor write one file (``SQLiteDatabase``'s own waits for the
write lock against SQLite's busy handler, which sleeps 1, 2, 5, 10… ms between tries); and
the ledger's
group-committed settlements (a thread's charges and its hold's release in one) on
PostgreSQL. These rates bound the threads/s one database carries
(docs/scaling.md). No target: a measurement for the scale plan.

PostgreSQL: the server ``--postgres-dsn`` names (a scratch database: tables are created), else
a throwaway cluster started with the installed PostgreSQL's ``initdb``, with fsync and
synchronous commit on (as a production server runs), on this machine's disk.

    python benchmarks/registry_writes.py [--threads 2000] [--writers 16]
    python benchmarks/registry_writes.py --smoke   # 40 threads, 4 writers: seconds
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

from _common import arguments, finish, machine, parse, positive, process_cpu

from tilemore.billing.entries import Charge, Settlement
from tilemore.billing.ledger import Entry, open_ledger
from tilemore.billing.writer import LedgerWriter
from tilemore.blobs.local import LocalBlobStore
from tilemore.lifecycle import Lifecycle
from tilemore.settings import Settings
from tilemore.store import NewThread, ResultInfo, open_store
from tilemore.store.lifecycle import open_lifecycle_store
from tilemore.store.sqlite_db import SQLiteDatabase

WRITES_PER_THREAD = 5
# with the lifecycle's: folded into the registry's (as the service writes them), or apart
LIFECYCLE_WRITES = {"folded": 8, "apart": 11}
PROCESSES, PROCESS_GAP_S = 4, 0.002  # writers of one SQLite file, each pausing between writes
TASKS = [("decode", "decode"), ("encoder", "encoder")]


def one_thread(store, owner: str, lc: Lifecycle | None = None, folded: bool = True) -> None:
    """What the ingress and a conductor write for one two-stage thread, in their order; with
    ``lc``, the lifecycle's writes too, ``folded`` into the registry's transactions or each
    in its own."""
    key = uuid.uuid4().hex
    in_key, out_key = f"in/{key}", f"out/{key}"
    if lc is not None:
        lc.pin(in_key, "input", 1000)
    also = lc.referring("bench", "input", in_key, 1000) if lc is not None and folded else None
    record, _ = store.create_thread(NewThread(
        "bench", "bench", key, "control-plane", "f" * 16, [], "0" * 64, in_key, "jpeg",
        {"adjustments": {}}, TASKS), also=also)
    if lc is not None and not folded:
        lc.refer(record.id, "bench", "input", in_key, 1000)
    lease = store.claim_thread(owner, record.id, 10.0)
    assert lease is not None
    started = time.time()
    store.tasks_started(record.id, [task for task, _ in TASKS], started, epoch=lease.epoch)
    for task, _ in TASKS:
        store.task_done(record.id, task, started, time.time(), 0.004, None,
                        epoch=lease.epoch)
    if lc is not None:
        lc.pin(out_key, "result", 1000)
        if not folded:
            lc.refer(record.id, "bench", "result", out_key, 1000)
    store.finish_thread(record.id, ResultInfo(out_key, "0" * 64, 1000, "image/jpeg", 64, 64),
                        qc=[], epoch=lease.epoch,
                        also=lc.ending("bench", "done") if lc is not None and folded else None)
    if lc is not None and not folded:
        lc.store.thread_ended(record.id, "bench", "done", lc.retention.ttl("bench"))


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def server_cpu_s(data_dir: Path | None) -> float:
    """CPU seconds of the PostgreSQL server (the postmaster and its backends, read from
    /proc), or 0 without a local cluster: the database's own cost, apart from the client's."""
    if data_dir is None:
        return 0.0
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    total = 0.0
    for entry in os.listdir("/proc"):
        stat = process_cpu(entry) if entry.isdigit() else None
        if stat is not None and postmaster in (int(entry), stat[0]):
            total += stat[1]
    return total


def registry_rate(settings: Settings, threads: int, writers: int,
                  server: Path | None = None, lifecycle: str | None = None) -> dict:
    """``lifecycle``: None (the registry's writes alone), "folded" or "apart"."""
    store = open_store(settings.db)
    store.create_domain("bench")
    lc = None if lifecycle is None else Lifecycle(
        open_lifecycle_store(settings.db), LocalBlobStore(settings.blob_path),
        settings.retention)
    folded = lifecycle != "apart"
    one_thread(store, "warm-up", lc, folded)
    done_before = store.thread_counts().get("done", 0)
    cpu, server_cpu = own_cpu_s(), server_cpu_s(server)
    started = time.perf_counter()
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(lambda i: one_thread(store, f"conductor-{i % writers}", lc, folded),
                      range(threads)))
    wall = time.perf_counter() - started
    cpu, server_cpu = own_cpu_s() - cpu, server_cpu_s(server) - server_cpu
    writes = WRITES_PER_THREAD if lifecycle is None else LIFECYCLE_WRITES[lifecycle]
    return {"threads_per_s": threads / wall, "writes_per_thread": writes,
            "write_transactions_per_s": writes * threads / wall,
            # SQLite runs in the writers' process: its cost is in the client's column.
            "client_cpu_ms_per_thread": 1000 * cpu / threads,
            "server_cpu_ms_per_thread": 1000 * server_cpu / threads,
            "threads_done": store.thread_counts().get("done", 0) - done_before,
            "expected_done": threads}


def _one_process_writes(path: str, own_waits: bool, n: int, gap_s: float,
                        out: multiprocessing.Queue) -> None:
    """One process's ``n`` small write transactions, ``gap_s`` apart: their latencies."""
    if own_waits:
        db = SQLiteDatabase(path, "CREATE TABLE IF NOT EXISTS w (v INTEGER);")
    else:  # SQLite's busy handler, as the service waited before 0d0d182
        raw = sqlite3.connect(path, isolation_level=None, timeout=5.0)
        raw.execute("PRAGMA synchronous=FULL")
    waits = []
    for _ in range(n):
        started = time.perf_counter()
        if own_waits:
            with db._tx() as tx:  # noqa: SLF001 - the service's write path itself
                tx.execute("INSERT INTO w VALUES (?)", (os.getpid(),))
        else:
            raw.execute("BEGIN IMMEDIATE")
            raw.execute("INSERT INTO w VALUES (?)", (os.getpid(),))
            raw.execute("COMMIT")
        waits.append(time.perf_counter() - started)
        time.sleep(gap_s)
    out.put(waits)


def processes_rate(data_dir: Path, processes: int, n: int, gap_s: float,
                   own_waits: bool) -> dict:
    """``processes`` processes writing one SQLite file at once (forked: each its own
    connections, as the service's processes have)."""
    path = str(data_dir / f"processes-{uuid.uuid4().hex[:8]}.db")
    SQLiteDatabase(path, "CREATE TABLE IF NOT EXISTS w (v INTEGER);").close()
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    workers = [ctx.Process(target=_one_process_writes, args=(path, own_waits, n, gap_s, out))
               for _ in range(processes)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    waits = sorted(sum((out.get(timeout=600) for _ in workers), []))
    for w in workers:
        w.join()
    wall = time.perf_counter() - started
    rows = sqlite3.connect(path).execute("SELECT COUNT(*) FROM w").fetchone()[0]
    return {"transactions_per_s": len(waits) / wall,
            "median_ms": 1000 * statistics.median(waits),
            "p90_ms": 1000 * waits[int(0.9 * len(waits))],
            "p99_ms": 1000 * waits[int(0.99 * len(waits))],
            "rows": rows, "expected_rows": processes * n}


def ledger_rate(settings: Settings, charges: int, writers: int,
                server: Path | None = None) -> dict:
    """Threads' settlements (their two charges and their hold's release in one) through the
    ledger's single group-committing writer, as the billing actor writes them; the holds are
    reserved beforehand, untimed (the ingress's part)."""
    settlements = max(1, charges // 2)
    with open_ledger(settings.db) as ledger:
        ledger.append([Entry("bench", "order", Decimal("1000000"), reference="seed")])
        for i in range(settlements):
            ledger.reserve("bench", f"hold{i}", Decimal("0.001"))
        writer = LedgerWriter(ledger)
        bills = [Settlement.of("bench", None, f"t{i}", f"hold{i}", [
            Charge(f"task{k}", "decode", 0.004, Decimal("0.00012")) for k in range(2)])
            for i in range(settlements)]
        cpu, server_cpu = own_cpu_s(), server_cpu_s(server)
        started = time.perf_counter()
        with ThreadPoolExecutor(writers) as pool:
            list(pool.map(writer.settle, bills))
        wall = time.perf_counter() - started
        cpu, server_cpu = own_cpu_s() - cpu, server_cpu_s(server) - server_cpu
        writer.close()
        report = ledger.verify()
        held = ledger.held("bench")
    return {"settlements_per_s": settlements / wall, "charges_per_s": 2 * settlements / wall,
            "client_cpu_ms_per_settlement": 1000 * cpu / settlements,
            "server_cpu_ms_per_settlement": 1000 * server_cpu / settlements,
            "entries_verified": report.entries, "expected_entries": 2 * settlements + 1,
            "ok": report.ok and held == 0}


def durable_postgres():
    """A throwaway cluster as tests/support/postgres.py starts one, but with fsync and synchronous
    commit on; None when PostgreSQL is not installed."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from support.postgres import Cluster, find_bindir

    bindir = find_bindir()
    return Cluster(bindir, "-c fsync=on -c synchronous_commit=on") if bindir else None


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--threads", type=int, default=2000)
    ap.add_argument("--writers", type=int, default=16)
    ap.add_argument("--charges", type=int, default=10_000)
    ap.add_argument("--postgres-dsn", help="a scratch PostgreSQL database (default: a "
                    "throwaway cluster)")
    args = parse(ap, threads=40, writers=4, charges=200)
    for name in ("threads", "writers", "charges"):
        if not 1 <= getattr(args, name) <= 1_000_000:
            ap.error(f"--{name} must be between 1 and 1000000")

    result: dict = {"machine": machine(), "threads": args.threads, "writers": args.writers,
                    "writes_per_thread": WRITES_PER_THREAD}
    sqlite = Settings(data_dir=Path(tempfile.mkdtemp(prefix="tilemore-registry-")))
    result["sqlite"] = registry_rate(sqlite, args.threads, args.writers)
    for how in ("apart", "folded", "folded", "apart"):  # alternated: the machine drifts
        result.setdefault(f"sqlite_lifecycle_{how}", []).append(
            registry_rate(sqlite, args.threads, args.writers, lifecycle=how))
    per_process = max(1, args.threads // 5)
    for own in (False, True, True, False):
        result.setdefault("sqlite_processes_" + ("own_waits" if own else "busy_handler"),
                          []).append(processes_rate(sqlite.data_dir, PROCESSES, per_process,
                                                    PROCESS_GAP_S, own))
    cluster = None if args.postgres_dsn else durable_postgres()
    dsn = args.postgres_dsn or (cluster.dsn if cluster else None)
    try:
        if dsn:
            pg = Settings(database_url=dsn)
            data = cluster.data if cluster else None
            result["postgres"] = registry_rate(pg, args.threads, args.writers, data)
            for how in ("apart", "folded", "folded", "apart"):
                result.setdefault(f"postgres_lifecycle_{how}", []).append(
                    registry_rate(pg, args.threads, args.writers, data, lifecycle=how))
            result["postgres_ledger"] = ledger_rate(pg, args.charges, args.writers, data)
            result["postgres_source"] = "--postgres-dsn" if args.postgres_dsn else \
                "throwaway cluster, fsync and synchronous_commit on"
    finally:
        if cluster:
            cluster.destroy()

    print(f"{args.threads} two-stage threads' registry writes ({WRITES_PER_THREAD} "
          f"transactions each) from {args.writers} writers on {machine()}")
    for db in ("sqlite", "postgres"):
        if db in result:
            r = result[db]
            print(f"  {db:9s} {r['threads_per_s']:7.0f} threads/s  "
                  f"({r['write_transactions_per_s']:.0f} write transactions/s); CPU per "
                  f"thread: client {r['client_cpu_ms_per_thread']:.1f} ms, server "
                  f"{r['server_cpu_ms_per_thread']:.1f} ms")
    for db in ("sqlite", "postgres"):
        if f"{db}_lifecycle_folded" not in result:
            continue
        print(f"  {db}, with the lifecycle's writes (two runs each, alternated):")
        for how in ("folded", "apart"):
            runs = result[f"{db}_lifecycle_{how}"]
            print(f"    {how:6s} ({LIFECYCLE_WRITES[how]:2d} transactions) "
                  + ", ".join(f"{r['threads_per_s']:.0f}" for r in runs) + " threads/s; CPU "
                  "per thread, client / server: " + ", ".join(
                      f"{r['client_cpu_ms_per_thread']:.1f} / {r['server_cpu_ms_per_thread']:.1f}"
                      " ms" for r in runs))
    print(f"  sqlite from {PROCESSES} processes at once, {per_process} transactions each "
          f"{PROCESS_GAP_S * 1000:g} ms apart (two runs each, alternated):")
    for how in ("own_waits", "busy_handler"):
        for r in result[f"sqlite_processes_{how}"]:
            print(f"    {how:12s} {r['transactions_per_s']:6.0f} transactions/s; a transaction:"
                  f" median {r['median_ms']:.2f} ms, p90 {r['p90_ms']:.2f}, p99 "
                  f"{r['p99_ms']:.2f}")
    if "postgres_ledger" in result:
        led = result["postgres_ledger"]
        print(f"  PostgreSQL ledger, group commits: {led['settlements_per_s']:.0f} threads "
              f"settled/s (2 charges and the hold's release each, {led['charges_per_s']:.0f} "
              f"charges/s); CPU per settlement: client "
              f"{led['client_cpu_ms_per_settlement']:.2f} ms, server "
              f"{led['server_cpu_ms_per_settlement']:.2f} ms")
    else:
        print("  PostgreSQL: not installed, not measured")
    runs = {db: [result[db], *result.get(f"{db}_lifecycle_folded", []),
                 *result.get(f"{db}_lifecycle_apart", [])]
            for db in ("sqlite", "postgres") if db in result}
    checks = {f"every thread done on {db}": all(r["threads_done"] == r["expected_done"]
                                                for r in rs) for db, rs in runs.items()}
    checks["every process's transaction written"] = all(
        r["rows"] == r["expected_rows"] for how in ("own_waits", "busy_handler")
        for r in result[f"sqlite_processes_{how}"])
    checks["rates finite and positive"] = positive(
        *(r["threads_per_s"] for rs in runs.values() for r in rs))
    if "postgres_ledger" in result:
        led = result["postgres_ledger"]
        checks["the PostgreSQL ledger verifies, every charge once, no hold left"] = (
            led["ok"] and led["entries_verified"] == led["expected_entries"])
    finish("registry_writes", args, result, checks)


if __name__ == "__main__":
    main()
