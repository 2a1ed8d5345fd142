"""Billing history as the product guide has it: one abbreviated row per day for the latest 31
days, and every operation for today and yesterday only."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from tilemore.billing.ledger import Ledger
from tilemore.billing.money import CTX, ZERO, add, fmt
from tilemore.errors import TilemoreError

ABBREVIATED_DAYS = 31
DETAILED_DAYS = 2


class HistoryOutOfRange(TilemoreError):
    code = "history_out_of_range"
    status = 422


def abbreviated(ledger: Ledger, account: str, today: date) -> list[dict[str, Any]]:
    """31 rows, oldest first, with exactly the guide's fields; days without activity carry
    the balance forward with zero totals. Reads the daily aggregates (≤ 32 rows), never the
    ledger itself."""
    first = today - timedelta(days=ABBREVIATED_DAYS - 1)
    rows = ledger.daily(account, first.isoformat(), today.isoformat())
    before = ledger.daily_before(account, first.isoformat())
    by_day = {r["day"]: r for r in rows}
    carried = _closing(before) if before is not None else ZERO
    out = []
    for i in range(ABBREVIATED_DAYS):
        day = (first + timedelta(days=i)).isoformat()
        r = by_day.get(day)
        if r is None:
            out.append({"date": day, "amount_when_day_started": fmt(carried),
                        "transaction_total": fmt(ZERO), "traced_total": fmt(ZERO),
                        "ordered_total": fmt(ZERO), "applied_commitment_bonus": fmt(ZERO)})
            continue
        # Amounts as the wire has them (SQLite keeps them as such strings, PostgreSQL as
        # NUMERIC): fmt gives both the same 20 fractional digits.
        out.append({"date": day, "amount_when_day_started": _text(r["opening"]),
                    "transaction_total": _text(r["transaction_total"]),
                    "traced_total": _text(r["traced_total"]),
                    "ordered_total": _text(r["ordered_total"]),
                    "applied_commitment_bonus": _text(r["bonus_total"])})
        carried = _closing(r)
    return out


def _text(value: str | Decimal) -> str:
    return fmt(Decimal(value))


def _closing(row) -> Decimal:
    # Traced totals are the sub-accounts' spending, shown to the parent, not taken from it.
    return add(Decimal(row["opening"]), CTX.minus(Decimal(row["transaction_total"])),
               Decimal(row["ordered_total"]), Decimal(row["bonus_total"]))


def detailed(ledger: Ledger, account: str, day: date, today: date) -> list[dict[str, Any]]:
    """Every entry of ``day``, which must be today or yesterday."""
    if not today - timedelta(days=DETAILED_DAYS - 1) <= day <= today:
        raise HistoryOutOfRange(
            f"detailed history covers today and yesterday only ({today - timedelta(days=1)} "
            f"to {today}); use the abbreviated history for {day}")
    return [{"seq": r["seq"], "kind": r["kind"], "amount": _text(r["amount"]),
             "balance_after": _text(r["balance_after"]), "thread_id": r["thread_id"],
             "task_id": r["task_id"], "operator": r["operator"], "megapixels": r["megapixels"],
             "reference": r["reference"], "at": r["created_at"]}
            for r in ledger.entries(account, day.isoformat())]
