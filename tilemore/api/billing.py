"""The billing endpoints: balance, histories, sub-accounts and payments, and the payment
provider's notifications.

A domain sees its own account and, with ``?account=NAME``, any of its sub-accounts'; a
sub-account sees only its own. Amounts are strings with 20 fractional digits.

No token can create credits: ``POST /billing/orders`` answers ``403 orders_disabled``.
Credits enter by ``tilemore admin add-credits`` or by a payment provider's signed
notification (``POST /billing/payment-notifications``, no token: the signature is the
credential; :mod:`tilemore.billing.payments`). A sub-account's payment moves credits from its
domain. Every body is read bounded in size and time.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tilemore.api.auth import Caller, authenticated
from tilemore.api.body import BodyTooLarge, UploadTooSlow
from tilemore.api.envelope import META_PART, BadRequest
from tilemore.billing import payments
from tilemore.billing.money import parse_amount
from tilemore.errors import Forbidden, NotFound, TilemoreError
from tilemore.store import SCOPES, check_scopes

MAX_BODY = payments.MAX_BODY  # every billing body is a few short fields
BODY_SECONDS = 10.0  # to send one, whole
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # the operations' date=, as the document says


class UnknownDomain(TilemoreError):
    code = "unknown_domain"
    status = 422


def today() -> date:
    return datetime.now(UTC).date()


class BillingApi:
    def __init__(self, api: Any) -> None:
        self.api = api
        self.billing = api.billing
        self.accounts = api.tokens

    def account_for(self, caller: Caller, name: str | None) -> str:
        if name is None or caller.is_subaccount and f"{caller.domain}/{name}" == caller.account:
            return caller.account
        if caller.is_subaccount:
            raise Forbidden("a sub-account sees only its own billing", code="wrong_account")
        info = self.accounts.account(f"{caller.domain}/{name}")
        if info is None:
            raise NotFound(f"no sub-account '{name}'", code="unknown_account")
        return info.id

    def balance(self, caller: Caller, name: str | None) -> dict:
        return self.billing.balance(self.account_for(caller, name)).to_dict()

    def history(self, caller: Caller, name: str | None) -> dict:
        account = self.account_for(caller, name)
        return {"account": account, "days": self.billing.history(account, today())}

    def operations(self, caller: Caller, name: str | None, day: str | None) -> dict:
        account = self.account_for(caller, name)
        try:
            if day is not None and not DAY.fullmatch(day):  # fromisoformat takes more forms
                raise ValueError(day)
            when = date.fromisoformat(day) if day is not None else today()
        except ValueError:
            raise BadRequest(f"date '{day}' is not YYYY-MM-DD", code="invalid_date") from None
        return {"account": account, "date": when.isoformat(),
                "operations": self.billing.operations(account, when, today())}

    def notified(self, note: payments.Notification) -> dict:
        """A verified payment notification: the domain's order, with its plan's bonus."""
        if not self.accounts.domain_exists(note.domain):
            raise UnknownDomain(f"no domain '{note.domain}'")
        out = self.billing.order(note.domain, note.order_id, note.amount, note.event_id)
        return {"event_id": note.event_id, "domain": note.domain, "order_id": note.order_id,
                "amount": out["amount"], "applied_commitment_bonus":
                out["applied_commitment_bonus"], "replayed": out["replayed"]}

    def create_subaccount(self, caller: Caller, body: dict) -> tuple[int, dict]:
        self._domain_only(caller, "create sub-accounts")
        name = body.get("name")
        if not isinstance(name, str) or not META_PART.match(name):
            raise TilemoreError("name: letters, digits and . _ ~ - (at most 128)",
                                code="invalid_name")
        info, created = self.accounts.create_subaccount(caller.domain, name)
        return (201 if created else 200), {"account": info.id, "name": info.name,
                                           "created": created}

    def subaccounts(self, caller: Caller) -> dict:
        self._domain_only(caller, "list sub-accounts")
        return {"subaccounts": [{"name": a.name, **self.billing.balance(a.id).to_dict()}
                                for a in self.accounts.subaccounts(caller.domain)]}

    def subaccount_token(self, caller: Caller, name: str, body: dict) -> dict:
        """A token for the sub-account, with ``body["scopes"]`` (default: the caller's own);
        never a scope the caller lacks."""
        self._domain_only(caller, "issue tokens")
        account = self.account_for(caller, name)
        scopes = check_scopes(body["scopes"]) if body.get("scopes") is not None else tuple(
            s for s in SCOPES if s in caller.scopes)
        for scope in scopes:
            caller.require(scope)
        token_id, secret = self.accounts.issue_token(caller.domain, account, scopes)
        return {"account": account, "token_id": token_id, "token": secret,
                "scopes": list(scopes), "authorization": f"Token {secret} Domain "
                f"{caller.domain}", "bearer": f"Bearer {secret}"}

    def payment(self, caller: Caller, name: str, body: dict) -> dict:
        self._domain_only(caller, "record payments")
        account = self.account_for(caller, name)
        payment_id = _reference(body, "payment_id")
        amount = parse_amount(body.get("amount"))
        return self.billing.payment(caller.domain, account, payment_id, amount)

    @staticmethod
    def _domain_only(caller: Caller, what: str) -> None:
        if caller.is_subaccount:
            raise Forbidden(f"only the domain can {what}", code="wrong_account")


def _reference(body: dict, field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not 1 <= len(value) <= 200:
        raise TilemoreError(f"{field}: a string of 1 to 200 characters is required",
                            code="invalid_reference")
    return value


async def _body(request: Request) -> bytes:
    """The request's body: at most ``MAX_BODY`` bytes, all within ``BODY_SECONDS``."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_SECONDS):
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY:
                    raise BodyTooLarge(f"a billing body is at most {MAX_BODY:,} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise UploadTooSlow(f"the body did not arrive within {BODY_SECONDS:g} s") from None
    return b"".join(chunks)


async def _json(request: Request, empty: dict | None = None) -> dict:
    """The body as a JSON object; ``empty`` (when given) stands for no body at all."""
    raw = await _body(request)
    if empty is not None and not raw.strip():
        return empty
    try:
        # Exact, never a binary float: an amount must be a string (parse_amount refuses any
        # number), and a number elsewhere in the body (a field the route ignores) is fine.
        value = json.loads(raw, parse_float=Decimal)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="malformed_json") from None
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object", code="malformed_json")
    return value


def add_billing_routes(app: FastAPI, service: Callable[[Request], Any]) -> None:
    async def api(request: Request, scope: str = "read") -> tuple[BillingApi, Caller]:
        """Balances and histories need ``read``; sub-accounts, their tokens and payments
        ``billing``."""
        svc = service(request)
        # off the loop, throttled
        return BillingApi(svc), await authenticated(svc, request, scope)

    @app.get("/billing/balance", tags=["billing"])
    async def balance(request: Request, account: str | None = None) -> JSONResponse:
        b, caller = await api(request)
        return JSONResponse(await run_in_threadpool(b.balance, caller, account))

    @app.get("/billing/history", tags=["billing"])
    async def history(request: Request, account: str | None = None) -> JSONResponse:
        """One row per day for the latest 31 days."""
        b, caller = await api(request)
        return JSONResponse(await run_in_threadpool(b.history, caller, account))

    @app.get("/billing/operations", tags=["billing"])
    async def operations(request: Request, date: str | None = None,
                         account: str | None = None) -> JSONResponse:
        """Every operation and its cost, for today or yesterday (`date=YYYY-MM-DD`)."""
        b, caller = await api(request)
        return JSONResponse(await run_in_threadpool(b.operations, caller, account, date))

    @app.post("/billing/orders", tags=["billing"], deprecated=True, status_code=403)
    async def order(request: Request) -> JSONResponse:
        """Refused (`403 orders_disabled`) for every caller: a token cannot create credits.
        They come from a payment (the provider's signed notification) or an operator
        (`tilemore admin add-credits`)."""
        raise Forbidden("credits cannot be ordered with an API token: they are added when "
                        "a payment provider's signed notification arrives (POST "
                        "/billing/payment-notifications) or by an operator (tilemore admin "
                        "add-credits)", code="orders_disabled")

    @app.post("/billing/payment-notifications", tags=["billing"])
    async def payment_notification(request: Request) -> JSONResponse:
        """A payment provider's notification that a domain bought credits: `{"event_id",
        "domain", "order_id", "amount"}`, signed in `Tilemore-Signature: t=<unix>,v1=<hex
        HMAC-SHA256 of "<t>.<body>">`; no token. Credits the order with the domain's plan
        bonus, once per event id and once per order id (`replayed` says when it was seen
        before)."""
        svc = service(request)
        secrets = payments.secrets_of(svc.settings.payments.payment_webhook_secret)
        if not secrets:
            raise NotFound("this service takes no payment notifications "
                           "(TILEMORE_PAYMENT_WEBHOOK_SECRET is unset)",
                           code="payments_not_configured")
        payload = await _body(request)
        # Checked before the body is parsed: an unsigned request costs one HMAC per secret.
        payments.verify(payload, request.headers.get(payments.HEADER), secrets,
                        svc.settings.payments.payment_webhook_tolerance_seconds)
        note = payments.parse_notification(payload)
        return JSONResponse(await run_in_threadpool(BillingApi(svc).notified, note))

    @app.post("/billing/subaccounts", tags=["billing"])
    async def create_subaccount(request: Request) -> JSONResponse:
        b, caller = await api(request, "billing")
        body = await _json(request)
        status, out = await run_in_threadpool(b.create_subaccount, caller, body)
        return JSONResponse(out, status_code=status)

    @app.get("/billing/subaccounts", tags=["billing"])
    async def subaccounts(request: Request) -> JSONResponse:
        b, caller = await api(request, "billing")
        return JSONResponse(await run_in_threadpool(b.subaccounts, caller))

    @app.post("/billing/subaccounts/{name}/tokens", tags=["billing"])
    async def subaccount_token(request: Request, name: str) -> JSONResponse:
        """A new token for the sub-account, shown once. Body (optional): `{"scopes":
        ["submit", "read", "billing"]}`, by default the caller's own; a scope the caller
        lacks is `403 insufficient_scope`, an unknown one `422 unknown_scope`."""
        b, caller = await api(request, "billing")
        body = await _json(request, empty={})
        return JSONResponse(await run_in_threadpool(b.subaccount_token, caller, name, body),
                            status_code=201)

    @app.post("/billing/subaccounts/{name}/payments", tags=["billing"])
    async def payment(request: Request, name: str) -> JSONResponse:
        """Record a payment the sub-account's owner made: `{"payment_id", "amount"}` moves
        that much from the domain's available credits to the sub-account (`402
        insufficient_credits` when the domain cannot cover it)."""
        b, caller = await api(request, "billing")
        body = await _json(request)
        return JSONResponse(await run_in_threadpool(b.payment, caller, name, body))
