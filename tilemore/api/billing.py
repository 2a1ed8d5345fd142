"""The billing endpoints: balance, histories, credit orders, sub-accounts and payments.

A domain sees its own account and, with ``?account=NAME``, any of its sub-accounts'; a
sub-account sees only its own. Amounts are strings with 20 fractional digits.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tilemore.api.auth import Caller
from tilemore.api.envelope import META_PART, BadRequest
from tilemore.billing.money import InvalidAmount, parse_amount
from tilemore.errors import Forbidden, NotFound, TilemoreError


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
            when = date.fromisoformat(day) if day else today()
        except ValueError:
            raise BadRequest(f"date '{day}' is not YYYY-MM-DD", code="invalid_date") from None
        return {"account": account, "date": when.isoformat(),
                "operations": self.billing.operations(account, when, today())}

    def order(self, caller: Caller, body: dict) -> dict:
        self._domain_only(caller, "order credits")
        order_id = _reference(body, "order_id")
        return self.billing.order(caller.domain, order_id, parse_amount(body.get("amount")))

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

    def subaccount_token(self, caller: Caller, name: str) -> dict:
        self._domain_only(caller, "issue tokens")
        account = self.account_for(caller, name)
        token_id, secret = self.accounts.issue_token(caller.domain, account)
        return {"account": account, "token_id": token_id, "token": secret,
                "authorization": f"Token {secret} Domain {caller.domain}"}

    def payment(self, caller: Caller, name: str, body: dict) -> dict:
        self._domain_only(caller, "record payments")
        account = self.account_for(caller, name)
        payment_id = _reference(body, "payment_id")
        return self.billing.payment(account, payment_id, parse_amount(body.get("amount")))

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


async def _json(request: Request) -> dict:
    try:
        value = json.loads(await request.body(), parse_float=_no_float)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="malformed_json") from None
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object", code="malformed_json")
    return value


def _no_float(text: str) -> float:
    raise InvalidAmount(f"amounts are strings ('\"{text}\"'), never JSON numbers")


def add_billing_routes(app: FastAPI, service: Callable[[Request], Any]) -> None:
    def api(request: Request) -> tuple[BillingApi, Caller]:
        svc = service(request)
        return BillingApi(svc), svc.authenticate(request.headers.get("authorization"))

    @app.get("/billing/balance", tags=["billing"])
    async def balance(request: Request, account: str | None = None) -> JSONResponse:
        b, caller = api(request)
        return JSONResponse(await run_in_threadpool(b.balance, caller, account))

    @app.get("/billing/history", tags=["billing"])
    async def history(request: Request, account: str | None = None) -> JSONResponse:
        """One row per day for the latest 31 days."""
        b, caller = api(request)
        return JSONResponse(await run_in_threadpool(b.history, caller, account))

    @app.get("/billing/operations", tags=["billing"])
    async def operations(request: Request, date: str | None = None,
                         account: str | None = None) -> JSONResponse:
        """Every operation and its cost, for today or yesterday (`date=YYYY-MM-DD`)."""
        b, caller = api(request)
        return JSONResponse(await run_in_threadpool(b.operations, caller, account, date))

    @app.post("/billing/orders", tags=["billing"])
    async def order(request: Request) -> JSONResponse:
        """Order credits: `{"order_id": "…", "amount": "100"}`; the plan's bonus is added."""
        b, caller = api(request)
        body = await _json(request)
        return JSONResponse(await run_in_threadpool(b.order, caller, body))

    @app.post("/billing/subaccounts", tags=["billing"])
    async def create_subaccount(request: Request) -> JSONResponse:
        b, caller = api(request)
        body = await _json(request)
        status, out = await run_in_threadpool(b.create_subaccount, caller, body)
        return JSONResponse(out, status_code=status)

    @app.get("/billing/subaccounts", tags=["billing"])
    async def subaccounts(request: Request) -> JSONResponse:
        b, caller = api(request)
        return JSONResponse(await run_in_threadpool(b.subaccounts, caller))

    @app.post("/billing/subaccounts/{name}/tokens", tags=["billing"])
    async def subaccount_token(request: Request, name: str) -> JSONResponse:
        b, caller = api(request)
        return JSONResponse(await run_in_threadpool(b.subaccount_token, caller, name),
                            status_code=201)

    @app.post("/billing/subaccounts/{name}/payments", tags=["billing"])
    async def payment(request: Request, name: str) -> JSONResponse:
        """Record a payment the sub-account's owner made: `{"payment_id", "amount"}`."""
        b, caller = api(request)
        body = await _json(request)
        return JSONResponse(await run_in_threadpool(b.payment, caller, name, body))
