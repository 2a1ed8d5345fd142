"""Ledger appends from concurrent writers with durable (fsync'd) commits, one commit per
charge versus group commits through the single writer, in one run.

Target: ≥ 2,000 charges/s.

    python benchmarks/ledger_appends.py [--charges 20000] [--writers 16]
    python benchmarks/ledger_appends.py --smoke   # 400 charges, 4 writers: seconds
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

from _common import arguments, finish, machine, parse, positive

from tilemore.billing import Entry, SQLiteLedger
from tilemore.billing.writer import LedgerWriter


def charges(n: int, tag: str) -> list[Entry]:
    return [Entry("bench", "charge", Decimal("-0.00000123450000000000"), f"{tag}{i // 7}",
                  f"task{i % 7}", "nlmeans", 12.0) for i in range(n)]


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--charges", type=int, default=20_000)
    ap.add_argument("--writers", type=int, default=16)
    args = parse(ap, charges=400, writers=4)
    ledger = SQLiteLedger(Path(tempfile.mkdtemp()) / "ledger.db")
    ledger.append([Entry("bench", "order", Decimal("1000000"), reference="seed")])

    single = charges(min(args.charges, 2000), "s")
    started = time.perf_counter()
    with ThreadPoolExecutor(args.writers) as pool:
        list(pool.map(lambda e: ledger.append([e]), single))
    one_by_one = len(single) / (time.perf_counter() - started)

    writer = LedgerWriter(ledger)
    grouped = charges(args.charges, "g")
    started = time.perf_counter()
    with ThreadPoolExecutor(args.writers) as pool:
        list(pool.map(writer.append, grouped))
    group = len(grouped) / (time.perf_counter() - started)
    writer.close()
    report = ledger.verify()
    result = {"machine": machine(), "writers": args.writers, "charges": args.charges,
              "one_commit_per_charge_per_s": one_by_one, "group_commit_per_s": group,
              "target": 2000, "entries_verified": report.entries}
    print(f"{args.writers} concurrent writers, fsync'd commits, on {machine()}")
    print(f"  one commit per charge: {one_by_one:8.0f} charges/s")
    print(f"  group commits:         {group:8.0f} charges/s  (target ≥ 2,000: "
          f"{'met' if group >= 2000 else 'NOT met'})")
    print(f"  ledger verified: {report.entries:,} entries, chain and balances "
          f"{'intact' if report.ok else report.problems[:3]}")
    expected = 1 + len(single) + len(grouped)  # the seed order and every charge, once
    finish("ledger_appends", args, result, {
        "rates are finite and positive": positive(one_by_one, group),
        "the ledger verifies (chain, balances)": report.ok,
        f"{expected} entries, not {report.entries}": report.entries == expected})


if __name__ == "__main__":
    main()
