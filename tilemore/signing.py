"""Stripe-style HMAC signatures, one scheme for everything Tilemore signs or checks: payment
notifications it receives (:mod:`tilemore.billing.payments`) and webhooks it sends
(:mod:`tilemore.webhooks`)::

    Tilemore-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">

One ``v1`` per secret while a secret is rotated. The SDKs' verifiers
(``tilemore_sdk.webhooks``, the Node SDK's ``webhooks.cjs``) check exactly this.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

HEADER = "Tilemore-Signature"


def signature(payload: bytes, secret: str, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<payload>"`` under ``secret``."""
    signed = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(payload: bytes, secret: str | Sequence[str], timestamp: int | None = None) -> str:
    """The ``Tilemore-Signature`` header for ``payload``: one ``v1`` per secret given."""
    t = int(time.time()) if timestamp is None else timestamp
    secrets = [secret] if isinstance(secret, str) else list(secret)
    return ",".join([f"t={t}", *(f"v1={signature(payload, s, t)}" for s in secrets)])
