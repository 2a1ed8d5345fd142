"""Billing through the billing actor (what the ingress and the conductors on Ray use): credits
from a payment notification once, a sub-account funded by a transfer, holds swept; errors
keep their code across the process boundary."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
import ray

from tilemore.billing import InsufficientCredits
from tilemore.billing.entries import Charge
from tilemore.billing.money import AmountOutOfRange
from tilemore.settings import Settings

D = Decimal


@pytest.fixture
def billing(tmp_path):
    from tilemore_deployments.billing import BillingActor, BillingProxy

    from tilemore.store import open_store

    settings = Settings(data_dir=tmp_path)
    open_store(settings.db).create_domain("acme")  # the threads table the sweep reads
    handle = BillingActor.options(name=f"billing-{uuid.uuid4().hex[:8]}").remote(settings)
    yield BillingProxy(handle)
    ray.kill(handle)


def test_credits_transfers_and_holds_through_the_actor(billing):
    first = billing.order("acme", "inv-1", D("10"), "evt-1")
    assert first["replayed"] is False and first["balance"] == "10.00000000000000000000"
    assert billing.order("acme", "inv-1", D("10"), "evt-1")["replayed"] is True
    moved = billing.payment("acme", "acme/s", "pay-1", D("4"))
    assert moved["balance"] == "4.00000000000000000000"
    with pytest.raises(InsufficientCredits) as refused:
        billing.payment("acme", "acme/s", "pay-2", D("7"))
    assert (refused.value.code, refused.value.status) == ("insufficient_credits", 402)
    with pytest.raises(AmountOutOfRange):
        billing.order("acme", "inv-2", D("999999999999999999"))
    billing.reserve("acme", "orphan", D("1"))
    assert billing.sweep_holds(0.0, 3600.0, 500) == 1  # no grace: no thread was recorded
    assert billing.balance("acme").available == D("6")


def test_reads_come_from_this_process_and_see_the_actors_writes(tmp_path):
    """A thread's status and a balance cost no round trip to the actor: the proxy reads its
    own view of the ledger, which sees what the actor committed."""
    from tilemore_deployments.billing import BillingActor, BillingProxy

    from tilemore.billing.ledger import open_ledger
    from tilemore.billing.service import BillingReads
    from tilemore.store import open_store

    settings = Settings(data_dir=tmp_path)
    open_store(settings.db).create_domain("acme")
    handle = BillingActor.options(name=f"billing-{uuid.uuid4().hex[:8]}").remote(settings)
    billing = BillingProxy(handle, BillingReads(open_ledger(settings.db)))
    billing.order("acme", "inv-1", D("10"))
    billing.settle(account="acme", traced_for=None, thread_id="t1", hold=None,
                   charges=[Charge("a", "decode", 1.0, D("0.25"))])
    ray.kill(handle)  # writes would fail now; reads do not need the actor
    assert billing.thread_cost("t1") == D("0.25")
    assert billing.balance("acme").balance == D("9.75")
    with pytest.raises(ray.exceptions.RayActorError):
        billing.order("acme", "inv-2", D("1"))
