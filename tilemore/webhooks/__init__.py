"""Signed webhooks: a domain's endpoints get ``thread.done``, ``thread.failed``,
``thread.canceled`` and ``billing.low_balance`` events, at least once, from a durable outbox.

- :mod:`.listener`: the conductor's listener that writes events to the outbox;
- :mod:`.deliverer`: the loop beside every conductor that sends them, with backoff;
- :mod:`.addresses` and :mod:`.sender`: where a delivery may go, and one pinned attempt;
- :mod:`tilemore.store.webhooks`: the endpoints and the outbox in the registry;
- :mod:`tilemore.api.webhooks`: the HTTP routes (docs/api.md, Webhooks).
"""

from __future__ import annotations

from typing import Any

from tilemore.settings_parts import WebhookSettings
from tilemore.webhooks.deliverer import Deliverer
from tilemore.webhooks.listener import EVENTS, WebhookListener

__all__ = ["EVENTS", "Deliverer", "WebhookListener", "attach"]


def attach(conductor: Any, store: Any, billing: Any, settings: WebhookSettings,
           name: str = "deliverer") -> Deliverer:
    """Webhooks for this conductor: its listener on the conductor's events, and a started
    deliverer (stop it when the conductor stops)."""
    conductor.events.add(WebhookListener(store, billing, settings.base_url))
    deliverer = Deliverer(store, settings, name=name)
    deliverer.start()
    return deliverer
