"""The abbreviated 31-day history of an account whose ledger holds 1,000,000 entries, versus
summing the ledger itself for the same 31 days, in one run.

Target: ≤ 50 ms per query.

    python benchmarks/billing_history.py [--entries 1000000]
    python benchmarks/billing_history.py --smoke   # 20,000 entries: seconds
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from _common import arguments, finish, machine, parse, positive
from rich.progress import Progress

from tilemore.billing import Entry, SQLiteLedger
from tilemore.billing.history import abbreviated


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--entries", type=int, default=1_000_000)
    args = parse(ap, entries=20_000)
    start = datetime(2026, 10, 1, tzinfo=UTC).timestamp()
    per_second = args.entries / (40 * 86400)  # spread over 40 days
    clock = [start]
    ledger = SQLiteLedger(Path(tempfile.mkdtemp()) / "ledger.db", clock=lambda: clock[0])
    ledger.append([Entry("acme", "order", Decimal("100000000"), reference="seed")])
    batch = 10_000
    with Progress() as bar:
        job = bar.add_task("filling the ledger", total=args.entries)
        for b in range(0, args.entries, batch):
            entries = []
            for i in range(b, min(b + batch, args.entries)):
                account = ("acme", "acme/a", "acme/b", "other")[i % 4]
                entries.append(Entry(account, "charge", Decimal("-0.00000012345000000000"),
                                     f"t{i // 7}", f"k{i % 7}",
                                     traced_for="acme" if "/" in account else None)
                               if account != "other" or i % 8 else
                               Entry(account, "order", Decimal("5"), reference=f"o{i}"))
            clock[0] = start + b / per_second
            ledger.append(entries, allow_negative=True)
            bar.advance(job, len(entries))
    today = date(2026, 11, 9)

    times = []
    for _ in range(20):
        t = time.perf_counter()
        rows = abbreviated(ledger, "acme", today)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    with ledger._lock:  # noqa: SLF001 - the baseline: straight from the ledger
        raw = ledger._db.execute(  # noqa: SLF001
            "SELECT day, amount FROM ledger WHERE account = 'acme' AND day >= '2026-10-10'"
        ).fetchall()
    total = sum((Decimal(r["amount"]) for r in raw), Decimal(0))
    from_ledger = time.perf_counter() - t
    q = statistics.median(times)
    result = {"machine": machine(), "entries": args.entries, "query_ms": 1e3 * q,
              "from_ledger_ms": 1e3 * from_ledger, "target_ms": 50, "rows": len(rows)}
    print(f"{args.entries:,} ledger entries on {machine()}")
    print(f"  abbreviated 31-day history: {1e3 * q:.2f} ms (median of 20; target ≤ 50 ms: "
          f"{'met' if q <= 0.05 else 'NOT met'})")
    print(f"  summing the ledger for the same days: {1e3 * from_ledger:.0f} ms "
          f"({len(raw):,} entries, total {total})")
    report = ledger.verify()
    print(f"  verify (chain, balances, daily totals against the ledger): "
          f"{'ok' if report.ok else report.problems[:3]}")
    shown = sum((Decimal(r["transaction_total"]) for r in rows), Decimal(0))
    finish("billing_history", args, result, {
        "times are finite and positive": positive(q, from_ledger),
        f"31 rows, not {len(rows)}": len(rows) == 31,
        # the history shows charges as positive totals, the ledger stores them negative
        f"the history's totals ({shown}) are the ledger's ({-total})": shown == -total,
        "the ledger verifies": report.ok})


if __name__ == "__main__":
    main()
