"""The billing actor: named, detached, restartable — the service's writer of the ledger (the CLI
and batch mode also write to it, each under the database's write lock)."""

from __future__ import annotations

from typing import Any

import ray

from tilemore.billing.ledger import open_ledger
from tilemore.billing.service import Billing, BillingReads
from tilemore.settings import Settings

NAME = "tilemore-billing"
NAMESPACE = "tilemore"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=32)
class BillingActor:
    def __init__(self, settings: Settings) -> None:
        self.billing = Billing(open_ledger(settings.db))

    def call(self, method: str, args: tuple, kwargs: dict) -> Any:
        return getattr(self.billing, method)(*args, **kwargs)


class BillingProxy:
    """Looks like :class:`Billing`; every write runs in the billing actor. Safe to retry
    (``max_task_retries``): charges are keyed by (thread, task), orders by order id and
    payment notification, sub-account payments (transfers) by payment id, reservations by
    idempotency key; releasing and sweeping holds can be repeated. Reads go to ``reads``, this
    process's own view of the ledger, when given: a thread's status costs no round trip."""

    def __init__(self, handle: Any, reads: BillingReads | None = None) -> None:
        self._handle = handle
        self._reads = reads

    def __getattr__(self, method: str):
        if self._reads is not None and method in BillingReads.READS:
            return getattr(self._reads, method)

        def call(*args: Any, **kwargs: Any) -> Any:
            return ray.get(self._handle.call.remote(method, args, kwargs))
        return call


def get_billing(settings: Settings) -> BillingProxy:
    """The billing actor (started if it is not running), with reads from this process."""
    handle = BillingActor.options(name=NAME, namespace=NAMESPACE, get_if_exists=True,
                                  lifetime="detached").remote(settings)
    return BillingProxy(handle, BillingReads(open_ledger(settings.db)))
