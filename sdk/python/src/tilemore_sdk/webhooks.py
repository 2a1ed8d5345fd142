"""Verify that a webhook came from Tilemore.

Every delivery is signed, Stripe-style, with the endpoint's signing secret — the same scheme
the service uses for payment notifications::

    Tilemore-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">

While a secret is being rotated the header carries one ``v1`` per secret; one match is
enough. A timestamp further than ``tolerance`` seconds from this machine's clock is refused,
so a captured delivery cannot be replayed later. Pass the raw body, exactly as received
(before any JSON parsing)::

    from tilemore_sdk.webhooks import construct_event, WebhookSignatureError

    try:
        event = construct_event(request.body, request.headers["Tilemore-Signature"], SECRET)
    except WebhookSignatureError:
        return 400
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Sequence
from typing import Any

from tilemore_sdk._errors import TilemoreError

HEADER = "Tilemore-Signature"
DEFAULT_TOLERANCE = 300.0
MAX_HEADER = 1024
MAX_SIGNATURES = 8  # v1 values in one header
_HEX = re.compile(r"^[0-9a-f]{64}$")


class WebhookSignatureError(TilemoreError):
    """The header is missing (``missing_signature``), malformed (``malformed_signature``),
    matches no secret (``invalid_signature``) or is too old or too new
    (``stale_signature``)."""


def signature(payload: bytes, secret: str, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<payload>"`` under ``secret``."""
    signed = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(payload: bytes | str, secret: str | Sequence[str], timestamp: int | None = None
         ) -> str:
    """A ``Tilemore-Signature`` header for ``payload`` (one ``v1`` per secret): for tests,
    and for a receiver's own fixtures."""
    body = payload.encode() if isinstance(payload, str) else payload
    t = int(time.time()) if timestamp is None else timestamp
    secrets = [secret] if isinstance(secret, str) else list(secret)
    return ",".join([f"t={t}", *(f"v1={signature(body, s, t)}" for s in secrets)])


def verify(payload: bytes | str, header: str | None, secret: str | Sequence[str],
           tolerance: float = DEFAULT_TOLERANCE, now: float | None = None) -> int:
    """Check ``header`` against the raw ``payload``; return its timestamp, or raise
    :class:`WebhookSignatureError`. ``secret`` may be several (during a rotation).
    Every comparison is constant-time."""
    body = payload.encode() if isinstance(payload, str) else bytes(payload)
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets or not all(isinstance(s, str) and s for s in secrets):
        raise ValueError("give the endpoint's signing secret (a non-empty string)")
    if not header:
        raise WebhookSignatureError(f"no {HEADER} header", code="missing_signature")
    timestamp, candidates = _parse(header)
    expected = [signature(body, s, timestamp) for s in secrets]
    matched = False  # every pair compared, whatever matched first: the time says nothing
    for given in candidates:
        for want in expected:
            matched |= hmac.compare_digest(given, want)
    if not matched:
        raise WebhookSignatureError("no v1 signature matches the body",
                                    code="invalid_signature")
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        raise WebhookSignatureError(f"the signature's timestamp is {now - timestamp:+.0f} s "
                                    f"from now; at most {tolerance:g} s is accepted",
                                    code="stale_signature")
    return timestamp


def construct_event(payload: bytes | str, header: str | None, secret: str | Sequence[str],
                    tolerance: float = DEFAULT_TOLERANCE) -> Any:
    """``verify``, then the body parsed as JSON."""
    verify(payload, header, secret, tolerance)
    return json.loads(payload)


def _parse(header: str) -> tuple[int, list[str]]:
    malformed = WebhookSignatureError(f"{HEADER} must read t=<unix seconds>,v1=<64 hex "
                                      "digits>[,v1=…]", code="malformed_signature")
    if len(header) > MAX_HEADER:
        raise malformed
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t" and timestamp is None and value.isascii() and value.isdigit() \
                and len(value) <= 12:
            timestamp = int(value)
        elif name == "v1" and _HEX.match(value):
            candidates.append(value)
        elif name in ("t", "v1"):
            raise malformed
        # other schemes (v0, a future v2) are ignored, as Stripe's are
    if timestamp is None or not candidates or len(candidates) > MAX_SIGNATURES:
        raise malformed
    return timestamp, candidates
