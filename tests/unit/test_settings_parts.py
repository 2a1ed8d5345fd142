"""Each consumer's part of the settings (tilemore/settings_parts.py): a projection of Settings
with the same names and values, holding no secret it does not need, and what the consumers
are really handed."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from tilemore.assembly import open_parts
from tilemore.blobs.local import LocalBlobStore
from tilemore.lifecycle import Retention
from tilemore.settings import Settings
from tilemore.settings_parts import (
    PARTS,
    DatabaseSettings,
    PaymentSettings,
    RetentionSettings,
    WebhookSettings,
)
from tilemore.webhooks.deliverer import Deliverer

PASSWORD, PAYMENT_SECRET = "hunter2-in-the-url", "whsec-payments-only"


def settings(tmp_path, **changes) -> Settings:
    return Settings(data_dir=tmp_path, metrics=False,
                    database_url=f"postgresql://tilemore:{PASSWORD}@db.internal/tilemore",
                    payment_webhook_secret=PAYMENT_SECRET, **changes)


@pytest.mark.parametrize("attr", sorted(PARTS))
def test_a_part_is_the_settings_own_values_under_the_same_names(attr, tmp_path):
    s = settings(tmp_path, gc_batch=17, webhook_concurrency=3, rate_limit_burst_seconds=2.5,
                 preemption_provider="gcp", tracing="console", s3_prefix="p/")
    part = getattr(s, attr)
    assert type(part) is PARTS[attr]
    assert type(part).model_fields, attr
    for name in type(part).model_fields:
        assert getattr(part, name) == getattr(s, name), name


@pytest.mark.parametrize("attr", sorted(PARTS))
def test_only_the_database_part_holds_the_url_and_only_payments_the_secret(attr, tmp_path):
    part = getattr(settings(tmp_path), attr)
    shown = repr({n: (v.get_secret_value() if isinstance(v, SecretStr) else v)
                  for n, v in part})
    assert (PASSWORD in shown) == (attr == "db")
    assert (PAYMENT_SECRET in shown) == (attr == "payments")


def test_parts_are_frozen(tmp_path):
    part = settings(tmp_path).db
    with pytest.raises(ValidationError):
        part.database_url = None  # type: ignore[misc]


def test_defaults_come_through_as_properties_compute_them(tmp_path):
    s = Settings(data_dir=tmp_path)
    assert s.db == DatabaseSettings(database_path=tmp_path / "tilemore.db",
                                    database_url=None, sqlite_busy_seconds=5.0)
    assert s.blobs.blob_path == tmp_path / "blobs"
    assert s.webhooks.base_url == "http://127.0.0.1:8000"
    assert s.payments == PaymentSettings()


def test_the_service_parts_are_handed_their_part_not_the_settings(tmp_path):
    s = Settings(data_dir=tmp_path, metrics=False, retention_results_seconds=120,
                 retention_domains={"acme": {"results": 60}})
    parts = open_parts(s)
    try:
        assert isinstance(parts.lifecycle.settings, RetentionSettings)
        assert parts.lifecycle.retention.ttl("acme").results == 60
        assert parts.lifecycle.retention.ttl("other").results == 120
        assert isinstance(parts.blobs, LocalBlobStore)
        assert parts.blobs.root == tmp_path / "blobs"
    finally:
        parts.close()


def test_the_deliverer_sees_webhook_settings_only(tmp_path):
    s = settings(tmp_path, webhook_concurrency=2)
    deliverer = Deliverer(store=None, settings=s.webhooks)
    try:
        assert isinstance(deliverer.settings, WebhookSettings)
        assert not hasattr(deliverer.settings, "database_url")
    finally:
        deliverer.stop()


def test_retention_overrides_per_domain_read_from_the_part(tmp_path):
    r = Retention(Settings(data_dir=tmp_path, retention_errors_seconds=7200,
                           retention_domains={"acme": {"errors": 3600}}).retention)
    assert (r.errors("acme"), r.errors("other"), r.errors()) == (3600, 7200, 7200)
    assert r.own("errors") == {"acme": 3600}
