"""The billing actor: named, detached, restartable — the service's writer of the ledger (the CLI
and batch mode also write to it, each under the database's write lock). Each deploy has its
own (``tilemore-billing@<generation>``), so that its ingress replicas and conductors call the
code they were deployed with; a rolling upgrade runs two for a while, which the ledger's
write lock allows (:mod:`tilemore.service.generations`)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import ray

from tilemore.billing.ledger import open_ledger
from tilemore.billing.service import Billing, BillingReads
from tilemore.service.generations import named, older
from tilemore.settings import Settings

log = logging.getLogger("tilemore.billing")

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


def get_billing(settings: Settings, generation: str = "") -> BillingProxy:
    """The billing actor of ``generation`` (started if it is not running), with reads from
    this process."""
    handle = BillingActor.options(name=named(NAME, generation), namespace=NAMESPACE,
                                  get_if_exists=True, lifetime="detached").remote(settings)
    return BillingProxy(handle, BillingReads(open_ledger(settings.db)))


def running_billing() -> list[str]:
    """The names of the billing actors alive (or restarting), every generation's."""
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == NAMESPACE and a["name"].startswith(NAME))


def stop_older_billing(generation: str) -> list[str]:
    """Stop the billing actors of generations before ``generation`` (nothing calls them once
    their conductors and ingress replicas are gone); their names."""
    stopped = []
    for name in older(running_billing(), generation):
        with contextlib.suppress(ValueError):  # gone already
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
            stopped.append(name)
            log.info("generation %s stopped billing actor %s", generation, name)
    return stopped
