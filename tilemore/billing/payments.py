"""Payment notifications: how a payment provider tells Tilemore that a domain bought credits.

The provider (or a small adapter in front of it) POSTs a JSON body to
``/billing/payment-notifications`` and signs it, Stripe-style, with a secret both sides hold::

    Tilemore-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">

Several ``v1=`` may be given (a provider rotating its secret signs with both), and the
service may hold several secrets (``TILEMORE_PAYMENT_WEBHOOK_SECRET``, comma-separated): one
match is enough. A timestamp further than the tolerance from the service's clock is refused,
so a captured request cannot be sent again later; within the tolerance, the event id is
recorded once with the credits it brought, so the same notification credits once.

The body is exactly::

    {"event_id": "evt_…", "domain": "denoised", "order_id": "inv-1042", "amount": "100"}

with the amount a decimal string (at most 20 fractional digits). :func:`notification` and
:func:`sign` build both, for an adapter or a test::

    body = notification("evt_1", "denoised", "inv-1042", "100")
    headers = {"Tilemore-Signature": sign(body, secret), "Content-Type": "application/json"}
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from pydantic import SecretStr

from tilemore.billing.money import InvalidAmount, parse_amount
from tilemore.errors import TilemoreError

# One signing scheme for what Tilemore receives and sends (webhooks): re-exported here.
from tilemore.signing import HEADER as HEADER
from tilemore.signing import sign as sign
from tilemore.signing import signature

MAX_BODY = 16 * 1024  # a notification is four short fields
MAX_HEADER = 1024
MAX_SIGNATURES = 8  # v1 values in one header
FIELDS = ("event_id", "domain", "order_id", "amount")
_REFERENCE = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces
_DOMAIN = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


class SignatureError(TilemoreError):
    """The notification's signature is missing, malformed, wrong or too old."""

    code = "invalid_signature"
    status = 401


class MalformedSignature(SignatureError):
    code = "malformed_signature"
    status = 400


class InvalidNotification(TilemoreError):
    code = "invalid_notification"
    status = 422


class MalformedNotification(InvalidNotification):
    code = "malformed_json"
    status = 400


@dataclass(frozen=True)
class Notification:
    event_id: str
    domain: str
    order_id: str
    amount: Decimal


def secrets_of(setting: SecretStr | None) -> list[str]:
    """The secrets ``TILEMORE_PAYMENT_WEBHOOK_SECRET`` holds (comma-separated)."""
    if setting is None:
        return []
    return [s.strip() for s in setting.get_secret_value().split(",") if s.strip()]


def notification(event_id: str, domain: str, order_id: str, amount: str) -> bytes:
    """A notification's body, as the service parses it."""
    return json.dumps({"event_id": event_id, "domain": domain, "order_id": order_id,
                       "amount": amount}).encode()


def verify(payload: bytes, header: str | None, secrets: Sequence[str], tolerance: float,
           now: float | None = None) -> int:
    """Check ``header`` against ``payload``; return its timestamp, or raise
    :class:`SignatureError` (``missing_signature``, ``malformed_signature``,
    ``invalid_signature``, ``stale_signature``). Every comparison is constant-time."""
    if not header:
        raise SignatureError(f"send the {HEADER} header", code="missing_signature")
    timestamp, candidates = _parse_header(header)
    expected = [signature(payload, s, timestamp) for s in secrets]
    # Every pair compared, whatever matched first: the time taken says nothing.
    matched = False
    for given in candidates:
        for want in expected:
            matched |= hmac.compare_digest(given, want)
    if not matched:
        raise SignatureError("no v1 signature matches the body", code="invalid_signature")
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        raise SignatureError(f"the signature's timestamp is {now - timestamp:+.0f} s from "
                             f"now; at most {tolerance:g} s is accepted",
                             code="stale_signature")
    return timestamp


def _parse_header(header: str) -> tuple[int, list[str]]:
    malformed = MalformedSignature(f"{HEADER} must read t=<unix seconds>,v1=<64 hex "
                                   "digits>[,v1=…]")
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


def parse_notification(payload: bytes) -> Notification:
    """The verified body, read strictly: a JSON object with exactly the four fields."""
    try:  # numbers are kept as their text, never turned into floats or huge ints
        value = json.loads(payload, parse_float=_Number, parse_int=_Number,
                           parse_constant=_Number, object_pairs_hook=_unique)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, a twin field
        raise MalformedNotification(f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict) or sorted(value) != sorted(FIELDS):
        raise InvalidNotification(f"the body must be a JSON object with exactly the fields "
                                  f"{', '.join(FIELDS)}")
    if not all(isinstance(value[f], str) for f in FIELDS if f != "amount"):
        raise InvalidNotification("event_id, domain and order_id are strings")
    for field in ("event_id", "order_id"):
        if not _REFERENCE.match(value[field]):
            raise InvalidNotification(f"{field}: 1 to 200 printable ASCII characters")
    if not _DOMAIN.match(value["domain"]):
        raise InvalidNotification("domain: letters, digits and . _ ~ - (at most 128)")
    if isinstance(value["amount"], _Number):
        raise InvalidAmount(f"amount must be a decimal string (\"{value['amount'].text}\"), "
                            "never a JSON number")
    return Notification(value["event_id"], value["domain"], value["order_id"],
                        parse_amount(value["amount"]))


def _unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a field is given twice")
    return out


class _Number:
    """A JSON number, kept as (at most 20 characters of) its text."""

    def __init__(self, text: str) -> None:
        self.text = text[:20]
