"""Billing as the service uses it: prices (admin data over the operators' own), estimates,
reservations, a thread's charges per (thread, task) settled with its hold, orders with the
plan's bonus, subletting payments.

Credits enter only by :meth:`Billing.order`: from an operator (``tilemore admin add-credits``)
or a payment provider's verified notification (:mod:`tilemore.billing.payments`). A
sub-account's payment moves credits from its domain; it creates none.

Every ledger entry goes through one :class:`LedgerWriter`; on a cluster that writer lives in
one named Ray actor (``tilemore_deployments/billing.py``), the only writer of the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from tilemore.billing import history
from tilemore.billing.entries import Charge, Settlement
from tilemore.billing.holds import HoldKind
from tilemore.billing.ledger import Appended, Entry, Ledger
from tilemore.billing.money import CTX, QUANTUM, add, fmt
from tilemore.billing.writer import LedgerWriter


@dataclass(frozen=True)
class Balance:
    account: str
    balance: Decimal
    held: Decimal

    @property
    def available(self) -> Decimal:
        return add(self.balance, CTX.minus(self.held))

    def to_dict(self) -> dict[str, str]:
        return {"account": self.account, "balance": fmt(self.balance), "held": fmt(self.held),
                "available": fmt(self.available)}


class BillingReads:
    """What billing answers without writing: any process may open the ledger and read it
    (SQLite in WAL mode, PostgreSQL), so reads need no round trip to the one writer."""

    READS = frozenset({"prices", "thread_cost", "balance", "history", "operations"})

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def prices(self) -> dict[str, tuple[Decimal, Decimal]]:
        """The admin's price overrides (operator → per call, per megapixel)."""
        return self.ledger.prices()

    def thread_cost(self, thread_id: str) -> Decimal:
        return self.ledger.thread_cost(thread_id)

    def balance(self, account: str) -> Balance:
        return Balance(account, self.ledger.balance(account), self.ledger.held(account))

    def history(self, account: str, today: date) -> list[dict[str, Any]]:
        return history.abbreviated(self.ledger, account, today)

    def operations(self, account: str, day: date, today: date) -> list[dict[str, Any]]:
        return history.detailed(self.ledger, account, day, today)


class Billing(BillingReads):
    def __init__(self, ledger: Ledger) -> None:
        super().__init__(ledger)
        self.writer = LedgerWriter(ledger)

    def close(self) -> None:
        self.writer.close()

    # -- work ------------------------------------------------------------------------------

    def reserve(self, account: str, key: str, amount: Decimal, *,
                kind: HoldKind = "thread") -> None:
        self.ledger.reserve(account, key, amount, kind=kind)

    def release(self, key: str) -> None:
        self.ledger.release(key)

    def release_part(self, key: str, amount: Decimal) -> None:
        self.ledger.release_part(key, amount)

    def sweep_holds(self, grace_seconds: float, batch_grace_seconds: float,
                    limit: int = 500) -> int:
        """Give back holds no work owns any more (see :mod:`tilemore.billing.holds`)."""
        return self.ledger.sweep_holds(grace_seconds, batch_grace_seconds, limit)

    def settle(self, *, account: str, traced_for: str | None, thread_id: str, hold: str | None,
               charges: Sequence[Charge], epoch: int | None = None) -> list[Appended]:
        """A thread's end: its finished tasks charged (once each, keyed by thread and task; a
        charge already in the ledger stands) and what its hold did not spend given back, in
        one transaction; with ``epoch``, only while the thread's lease is at it."""
        return self.writer.settle(Settlement.of(account, traced_for, thread_id, hold, charges,
                                                epoch))

    # -- credits in ------------------------------------------------------------------------

    def order(self, domain: str, order_id: str, amount: Decimal,
              event_id: str | None = None) -> dict[str, Any]:
        """Credits a domain bought, plus its plan's commitment bonus; idempotent by order
        id. ``event_id``: the payment provider's notification it comes from, recorded with
        it; a notification seen before credits nothing (``replayed``)."""
        percent, commitment = self.ledger.plan(domain)
        bonus = CTX.multiply(amount, percent) / 100
        bonus = bonus.quantize(QUANTUM, context=CTX)
        entries = [Entry(domain, "order", amount, reference=order_id)]
        if bonus > 0:
            entries.append(Entry(domain, "bonus", bonus, reference=order_id))
        # The order and its bonus (and the event): one transaction.
        if event_id is None:
            replayed = self.ledger.append(entries)[0].duplicate
        else:
            done = self.ledger.append_event(event_id, entries)
            replayed = done is None or done[0].duplicate
        return {"order_id": order_id, "amount": fmt(amount), "applied_commitment_bonus":
                fmt(bonus), "plan": {"commitment": commitment, "bonus_percent": fmt(percent)},
                "replayed": replayed, **self.balance(domain).to_dict()}

    def payment(self, domain: str, account: str, payment_id: str, amount: Decimal
                ) -> dict[str, Any]:
        """A payment a domain's customer made, as a transfer: ``amount`` moves from the
        domain's available credits to its sub-account ``account`` (402 when the domain
        cannot cover it); idempotent by payment id (the same id with another amount is a
        409)."""
        done = self.ledger.transfer(domain, account, payment_id, amount)
        return {"payment_id": payment_id, "amount": fmt(amount), "from": domain,
                "replayed": done.duplicate, **self.balance(account).to_dict()}
