"""Billing a batch exactly like API threads: the estimate set aside before an image runs
(refused when the credits are not there), then, when it is done, one charge per finished
task, keyed by the image's synthetic thread and the task (a resumed or repeated batch never
charges twice), settled with the reservation's release in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from tilemore.billing.entries import Charge, Settlement
from tilemore.billing.ledger import open_ledger
from tilemore.billing.money import CTX, add
from tilemore.billing.service import Billing
from tilemore.errors import TilemoreError
from tilemore.settings import Settings


@dataclass(frozen=True)
class Bill:
    """One image's finished tasks, to charge against its reservation ``key``."""

    thread_id: str
    key: str
    charges: list[Charge]


class Charger(Protocol):
    """What a worker needs from billing (in-process, or the batch's billing actor). Each call
    takes a block's images at once (one round trip to the actor); a failure is one image's,
    returned in its place (the others go on)."""

    def reserve(self, account: str, holds: list[tuple[str, Decimal]]
                ) -> list[TilemoreError | None]:
        """Set each (key, estimate) aside; ``insufficient_credits`` where it is not there."""

    def settle(self, account: str, traced_for: str | None, bills: list[Bill]
               ) -> list[Decimal | TilemoreError]:
        """Charge each bill and release its reservation; what was newly charged per bill (a
        charge already in the ledger counts zero)."""


class BatchBilling:
    """Billing for batch workers, on the ledger the settings name."""

    def __init__(self, settings: Settings) -> None:
        self.billing = Billing(open_ledger(settings.db))

    def reserve(self, account: str, holds: list[tuple[str, Decimal]]
                ) -> list[TilemoreError | None]:
        errors: list[TilemoreError | None] = []
        for key, amount in holds:
            try:
                self.billing.reserve(account, key, amount, kind="batch")  # no thread
                errors.append(None)
            except TilemoreError as exc:
                errors.append(exc)
        return errors

    def settle(self, account: str, traced_for: str | None, bills: list[Bill]
               ) -> list[Decimal | TilemoreError]:
        # Every bill handed in at once, so the ledger's writer settles them in one group (a
        # charge made before, at whatever price, stands).
        futures = [self.billing.writer.submit(Settlement.of(
            account, traced_for, bill.thread_id, bill.key, bill.charges)) for bill in bills]
        results: list[Decimal | TilemoreError] = []
        for bill, pending in zip(bills, futures, strict=True):
            try:
                done = pending.result()
            except TilemoreError as exc:  # e.g. insufficient credits: this image is unpaid
                self.billing.release(bill.key)
                results.append(exc)
                continue
            results.append(add(*(CTX.minus(a.entry.amount) for a in done
                                       if not a.duplicate)))
        return results

    def close(self) -> None:
        self.billing.close()
