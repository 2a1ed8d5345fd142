"""Billing as the service uses it: prices (admin data over the operators' own), estimates,
reservations, charges per (thread, task), orders with the plan's bonus, subletting payments.

Every ledger entry goes through one :class:`LedgerWriter`; on a cluster that writer lives in
one named Ray actor (``deployments/billing.py``), the only writer of the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from tilemore.billing import history
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


class Billing:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.writer = LedgerWriter(ledger)

    def close(self) -> None:
        self.writer.close()

    # -- prices ----------------------------------------------------------------------------

    def prices(self) -> dict[str, tuple[Decimal, Decimal]]:
        """The admin's price overrides (operator → per call, per megapixel)."""
        return self.ledger.prices()

    # -- work ------------------------------------------------------------------------------

    def reserve(self, account: str, key: str, amount: Decimal) -> None:
        self.ledger.reserve(account, key, amount)

    def release(self, key: str) -> None:
        self.ledger.release(key)

    def charge(self, *, account: str, traced_for: str | None, thread_id: str, task_id: str,
               operator: str, megapixels: float, cost: Decimal, hold: str | None) -> Appended:
        return self.writer.append(Entry(account, "charge", CTX.minus(cost), thread_id, task_id,
                                        operator, megapixels, traced_for=traced_for, hold=hold))

    def thread_cost(self, thread_id: str) -> Decimal:
        return self.ledger.thread_cost(thread_id)

    # -- credits in ------------------------------------------------------------------------

    def order(self, domain: str, order_id: str, amount: Decimal) -> dict[str, Any]:
        """Credits a domain bought, plus its plan's commitment bonus; idempotent by id."""
        percent, commitment = self.ledger.plan(domain)
        bonus = CTX.multiply(amount, percent) / 100
        bonus = bonus.quantize(QUANTUM, context=CTX)
        entries = [Entry(domain, "order", amount, reference=order_id)]
        if bonus > 0:
            entries.append(Entry(domain, "bonus", bonus, reference=order_id))
        done = self.ledger.append(entries)[0]  # the order and its bonus: one transaction
        return {"order_id": order_id, "amount": fmt(amount), "applied_commitment_bonus":
                fmt(bonus), "plan": {"commitment": commitment, "bonus_percent": fmt(percent)},
                "replayed": done.duplicate, **self.balance(domain).to_dict()}

    def payment(self, account: str, payment_id: str, amount: Decimal) -> dict[str, Any]:
        """A payment a domain's customer made: raises the sub-account's credits; idempotent
        by payment id (the same id with another amount is a 409)."""
        done = self.writer.append(Entry(account, "payment", amount, reference=payment_id))
        return {"payment_id": payment_id, "amount": fmt(amount), "replayed": done.duplicate,
                **self.balance(account).to_dict()}

    # -- reading ---------------------------------------------------------------------------

    def balance(self, account: str) -> Balance:
        return Balance(account, self.ledger.balance(account), self.ledger.held(account))

    def history(self, account: str, today: date) -> list[dict[str, Any]]:
        return history.abbreviated(self.ledger, account, today)

    def operations(self, account: str, day: date, today: date) -> list[dict[str, Any]]:
        return history.detailed(self.ledger, account, day, today)
