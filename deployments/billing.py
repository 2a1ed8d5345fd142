"""The billing actor: named, detached, restartable — the one writer of the ledger."""

from __future__ import annotations

from typing import Any

import ray

from tilemore.billing.ledger import open_ledger
from tilemore.billing.service import Billing
from tilemore.settings import Settings

NAME = "tilemore-billing"
NAMESPACE = "tilemore"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=32)
class BillingActor:
    def __init__(self, settings: Settings) -> None:
        self.billing = Billing(open_ledger(settings))

    def call(self, method: str, args: tuple, kwargs: dict) -> Any:
        return getattr(self.billing, method)(*args, **kwargs)


class BillingProxy:
    """Looks like :class:`Billing`; every call runs in the billing actor. Safe to retry
    (``max_task_retries``): charges are keyed by (thread, task), orders by order id and
    payment notification, sub-account payments (transfers) by payment id, reservations by
    idempotency key; releasing and sweeping holds can be repeated."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def __getattr__(self, method: str):
        def call(*args: Any, **kwargs: Any) -> Any:
            return ray.get(self._handle.call.remote(method, args, kwargs))
        return call


def get_billing(settings: Settings) -> BillingProxy:
    handle = BillingActor.options(name=NAME, namespace=NAMESPACE, get_if_exists=True,
                                  lifetime="detached").remote(settings)
    return BillingProxy(handle)
