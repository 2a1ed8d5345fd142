"""The service's parts, made from settings on a temporary folder: what is opened, what is
the caller's, and the order (and once-only) of closing them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tilemore.assembly import open_domain, open_parts, ray_cpus
from tilemore.billing.service import Billing
from tilemore.catalog import Catalog
from tilemore.engine import LocalBackend
from tilemore.metrics import NO_METRICS
from tilemore.service.events import Listener
from tilemore.settings import Settings
from tilemore.webhooks import WebhookListener


def record_closes(parts, log: list[str]) -> None:
    """Wrap each part's closing method so that calling it is written down (then done)."""
    def wrap(name: str, obj, method: str) -> None:
        real = getattr(obj, method)

        def recorded(*args, **kwargs):
            log.append(name)
            return real(*args, **kwargs)
        setattr(obj, method, recorded)

    wrap("conductor", parts.conductor, "close")
    if parts.deliverer is not None:
        wrap("deliverer", parts.deliverer, "stop")
    wrap("tracer", parts.tracer, "shutdown")
    wrap("backend", parts.backend, "close")
    wrap("billing", parts.billing, "close")
    wrap("ledger", parts.ledger, "close")
    wrap("errors", parts.errors, "close")
    wrap("lifecycle", parts.lifecycle.store, "close")
    wrap("store", parts.store, "close")


def test_parts_from_settings_close_in_order_once(tmp_path):
    parts = open_parts(Settings(data_dir=tmp_path))
    assert isinstance(parts.billing, Billing) and parts.ledger is not None
    parts.store.create_domain("acme")
    parts.billing.order("acme", "welcome", Decimal("5"))
    assert parts.billing.balance("acme").balance == Decimal("5")
    conductor = parts.start_conductor(LocalBackend(parts.settings), webhooks=True)
    assert conductor.name == "conductor"
    assert any(isinstance(x, WebhookListener) for x in conductor.events.listeners)
    api = parts.api()
    assert api.handoff == conductor.submit and api.threads is parts.store
    assert parts.lifecycle.blobs is parts.blobs

    log: list[str] = []
    record_closes(parts, log)
    parts.close()
    assert log == ["conductor", "deliverer", "tracer", "backend", "billing", "ledger",
                   "errors", "lifecycle", "store"]
    assert not parts.deliverer._thread.is_alive()  # noqa: SLF001
    parts.close()  # a second close does nothing
    assert len(log) == 9
    with pytest.raises(Exception):  # noqa: B017 - the registry is closed for good
        parts.store.create_domain("rival")


def test_callers_billing_and_listeners_are_used_and_billing_left_open(tmp_path):
    closed: list[str] = []

    class ActorBilling:  # stands for the billing actor's proxy: not ours to close
        def close(self) -> None:
            closed.append("billing")

    class Heard(Listener):
        pass

    heard = Heard()
    settings = Settings(data_dir=tmp_path, conductor_concurrency=3)
    parts = open_parts(settings, billing=ActorBilling(), metrics=NO_METRICS)
    assert parts.ledger is None and parts.metrics is NO_METRICS
    conductor = parts.start_conductor(LocalBackend(settings), name="c-2", listeners=[heard])
    assert conductor.name == "c-2" and heard in conductor.events.listeners
    assert conductor.claims.slots == 3  # sized by the settings
    assert parts.deliverer is None  # webhooks only where asked
    parts.close()
    assert closed == []


def test_api_without_a_conductor_needs_a_handoff(tmp_path):
    parts = open_parts(Settings(data_dir=tmp_path))
    try:
        with pytest.raises(ValueError):
            parts.api()
        handed: list[str] = []
        assert parts.api(handed.append).handoff == handed.append
    finally:
        parts.close()


def test_open_domain_orders_its_credits_once(tmp_path):
    settings = Settings(data_dir=tmp_path)
    first = open_domain(settings, "bench", Decimal("7"), reference="bench-credits")
    second = open_domain(settings, "bench", Decimal("7"), reference="bench-credits")
    assert first != second  # a token each time...
    parts = open_parts(settings)
    try:
        assert parts.store.domain_exists("bench")
        assert parts.billing.balance("bench").balance == Decimal("7")  # ...credits once
    finally:
        parts.close()


def test_ray_cpus_count_replicas_and_spare_unless_settings_say(tmp_path):
    catalog = Catalog.load(Settings(data_dir=tmp_path))
    plain = ray_cpus(Settings(data_dir=tmp_path), catalog, spare=0)
    assert ray_cpus(Settings(data_dir=tmp_path), catalog, spare=2) == plain + 2
    assert ray_cpus(Settings(data_dir=tmp_path, ingress_replicas=3), catalog) == plain + 3
    assert ray_cpus(Settings(data_dir=tmp_path, ray_num_cpus=5), catalog, spare=2) == 5
