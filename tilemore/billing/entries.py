"""What the ledger records and how a record is checked, whatever database keeps it: entries,
the hash chain that links each to the one before, which daily total an entry moves, and the
verification that recomputes chain, balances and daily totals from the entries alone."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from tilemore.billing.money import CTX, ZERO, add, fmt
from tilemore.errors import TilemoreError

Kind = Literal["order", "bonus", "charge", "payment", "correction"]
GENESIS = "0" * 64
DAILY_TOTALS = ("transaction_total", "traced_total", "ordered_total", "bonus_total")
Row = Any  # a ledger row as either database returns it, read by column name


class InsufficientCredits(TilemoreError):
    code = "insufficient_credits"
    status = 402


class DuplicateReference(TilemoreError):
    code = "duplicate_reference"
    status = 409


@dataclass(frozen=True)
class Entry:
    """What to append. ``amount`` is signed: charges are negative."""

    account: str
    kind: Kind
    amount: Decimal
    thread_id: str | None = None
    task_id: str | None = None
    operator: str | None = None
    megapixels: float | None = None
    reference: str | None = None
    traced_for: str | None = None  # a sub-account's charge shows in this parent's traced total
    hold: str | None = None  # a charge draws down this reservation (not part of the entry)
    epoch: int | None = None  # a charge is made only while its thread's lease is at this


@dataclass(frozen=True)
class Charge:
    """A finished task's price, to settle."""

    task_id: str
    operator: str
    megapixels: float
    cost: Decimal


@dataclass(frozen=True)
class Settlement:
    """A piece of work's end at the ledger, in one transaction: its finished tasks' charges
    and its hold given back. A charge already in the ledger for the same (thread, task)
    stands, at its own amount (a resumed thread settles again what an earlier run settled,
    perhaps before a price change). With ``epoch``, only while ``thread_id``'s lease is at
    it: a conductor that lost the thread neither charges nor gives its hold back."""

    charges: tuple[Entry, ...]
    hold: str | None
    thread_id: str | None = None
    epoch: int | None = None

    @classmethod
    def of(cls, account: str, traced_for: str | None, thread_id: str, hold: str | None,
           charges: Iterable[Charge], epoch: int | None = None) -> Settlement:
        return cls(tuple(Entry(account, "charge", CTX.minus(c.cost), thread_id, c.task_id,
                               c.operator, c.megapixels, traced_for=traced_for, hold=hold)
                         for c in charges), hold, thread_id, epoch)


@dataclass(frozen=True)
class Appended:
    seq: int
    entry: Entry
    balance_after: Decimal
    duplicate: bool = False  # the same charge or reference was already in the ledger


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    problems: list[str]


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def entry_hash(prev: str, seq: int, e: Entry, created_at: float, balance_after: str) -> str:
    fields = [prev, str(seq), e.account, e.kind, fmt(e.amount), balance_after,
              repr(created_at), e.thread_id or "", e.task_id or "", e.operator or "",
              "" if e.megapixels is None else repr(e.megapixels), e.reference or "",
              e.traced_for or ""]
    return hashlib.sha256("\x1f".join(fields).encode()).hexdigest()


def daily_total(kind: str, traced: bool = False, amount: Decimal | None = None
                ) -> str | None:
    """The daily total an entry moves; corrections move the balance only. A payment is a
    transfer from a domain to its sub-account (subletting): credits in for the sub-account
    (``ordered_total``), spent by the domain (``transaction_total``, its negative side)."""
    if traced:
        return "traced_total"
    if kind == "payment" and amount is not None and amount < 0:
        return "transaction_total"
    return {"charge": "transaction_total", "order": "ordered_total",
            "payment": "ordered_total", "bonus": "bonus_total"}.get(kind)


def daily_delta(total: str, amount: Decimal) -> Decimal:
    # Spending (own or a sub-account's) is shown as a positive total; credits as they came.
    return CTX.minus(amount) if total in ("traced_total", "transaction_total") else amount


def entry_of(row: Row) -> Entry:
    return Entry(row["account"], row["kind"], Decimal(row["amount"]), row["thread_id"],
                 row["task_id"], row["operator"], row["megapixels"], row["reference"],
                 row["traced_for"])


def verify_rows(rows: Iterable[Row], balances: Mapping[str, Decimal],
                daily: Mapping[tuple[str, str], Mapping[str, Decimal]]) -> Verification:
    """Check ``rows`` (every entry, in ``seq`` order) against themselves — the chain and each
    entry's hash — and the stored ``balances`` and ``daily`` totals against the entries."""
    problems: list[str] = []
    sums: dict[str, Decimal] = {}
    want: dict[tuple[str, str], dict[str, Decimal]] = {}
    prev, count = GENESIS, 0
    for r in rows:
        count += 1
        e = entry_of(r)
        sums[e.account] = add(sums.get(e.account, ZERO), e.amount)
        balance_after = fmt(Decimal(r["balance_after"]))
        if r["prev_hash"] != prev:
            problems.append(f"entry {r['seq']}: does not follow entry before it")
        if entry_hash(r["prev_hash"], r["seq"], e, r["created_at"], balance_after) != r["hash"]:
            problems.append(f"entry {r['seq']}: its content does not match its hash")
        if Decimal(r["balance_after"]) != sums[e.account]:
            problems.append(f"entry {r['seq']}: balance_after disagrees with the sum")
        prev = r["hash"]
        # A correction still opens its day's row, moving nothing.
        total = daily_total(e.kind, amount=e.amount)
        _note(want, e.account, r["day"], total or "transaction_total",
              daily_delta(total, e.amount) if total else ZERO)
        if e.kind == "charge" and e.traced_for:
            _note(want, e.traced_for, r["day"], "traced_total", CTX.minus(e.amount))
    for account in set(sums) | set(balances):
        if sums.get(account, ZERO) != balances.get(account, ZERO):
            problems.append(f"account {account}: stored balance {balances.get(account)} "
                            f"but entries sum to {sums.get(account, ZERO)}")
    problems += [f"daily totals of {a} on {d} disagree with the ledger"
                 for (a, d) in set(want) | set(daily) if want.get((a, d)) != daily.get((a, d))]
    return Verification(not problems, count, problems)


def _note(want: dict[tuple[str, str], dict[str, Decimal]], account: str, day: str, total: str,
          amount: Decimal) -> None:
    totals = want.setdefault((account, day), dict.fromkeys(DAILY_TOTALS, ZERO))
    totals[total] = add(totals[total], amount)
