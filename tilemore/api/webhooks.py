"""The webhook endpoints' routes: register, list, delete and rotate endpoints; list
deliveries with their attempts, and send one again. Domain tokens with the ``billing``
scope only (the scope that administers the domain: sub-accounts, tokens, payments); a
sub-account gets ``403 wrong_account``.

Every body is read bounded (:func:`tilemore.api.billing._json`); a URL is checked, and its
host resolved, before anything is written (:mod:`tilemore.webhooks.addresses`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tilemore.api.auth import Caller, authenticated
from tilemore.api.billing import _json
from tilemore.api.envelope import BadRequest
from tilemore.api.views import iso
from tilemore.billing.money import fmt, parse_amount
from tilemore.errors import Forbidden, NotFound, TilemoreError
from tilemore.store.webhooks import Endpoint
from tilemore.webhooks.addresses import check, networks, system_resolver
from tilemore.webhooks.listener import EVENTS, LOW_BALANCE

STATUSES = ("pending", "delivered", "given_up")
MAX_LIMIT = 100
MAX_ID = 64


class InvalidWebhook(TilemoreError):
    status = 422


class WebhooksApi:
    def __init__(self, api: Any) -> None:
        self.api, self.settings, self.store = api, api.settings.webhooks, api.threads
        self.resolve = getattr(api, "webhook_resolve", None) or system_resolver

    @staticmethod
    def _domain(caller: Caller) -> str:
        if caller.is_subaccount:
            raise Forbidden("only the domain manages its webhooks", code="wrong_account")
        return caller.domain

    def create(self, caller: Caller, body: dict) -> dict:
        domain = self._domain(caller)
        events = _events(body.get("events"))
        threshold = body.get("low_balance_threshold")
        if (threshold is None) == (LOW_BALANCE in events):
            raise InvalidWebhook(f"low_balance_threshold: required with {LOW_BALANCE}, and "
                                 "only with it", code="invalid_threshold")
        amount = None if threshold is None else fmt(parse_amount(threshold))
        check(body.get("url"), networks(self.settings.webhook_allowed_networks), self.resolve)
        secret = new_secret()
        ep = self.store.create_endpoint(domain, body["url"], events, amount, secret,
                                        self.settings.webhook_max_endpoints)
        return {**endpoint_body(ep), "secret": secret}

    def list(self, caller: Caller) -> dict:
        return {"endpoints": [endpoint_body(e)
                              for e in self.store.endpoints(self._domain(caller))]}

    def get(self, caller: Caller, endpoint_id: str) -> dict:
        return endpoint_body(self._endpoint(caller, endpoint_id))

    def delete(self, caller: Caller, endpoint_id: str) -> dict:
        if not self.store.delete_endpoint(self._domain(caller), endpoint_id[:MAX_ID]):
            raise NotFound(f"no webhook endpoint '{endpoint_id[:MAX_ID]}'",
                           code="unknown_endpoint")
        return {"id": endpoint_id, "deleted": True}

    def rotate(self, caller: Caller, endpoint_id: str, body: dict) -> dict:
        ep = self._endpoint(caller, endpoint_id)
        overlap = body.get("overlap_seconds")
        if overlap is None:  # absent or null: the service's setting
            overlap = self.settings.webhook_secret_overlap_seconds
        # (the body's fractions come as Decimal: exact, never a binary float)
        if isinstance(overlap, bool) or not isinstance(overlap, int | float | Decimal) or \
                not 0 <= overlap <= 30 * 86400:
            raise InvalidWebhook("overlap_seconds: a number from 0 to 2592000 (30 days)",
                                 code="invalid_overlap")
        secret = new_secret()
        rotated = self.store.rotate_secret(ep.domain, ep.id, secret,
                                           time.time() + float(overlap))
        if rotated is None:  # deleted meanwhile
            raise NotFound(f"no webhook endpoint '{ep.id}'", code="unknown_endpoint")
        return {**endpoint_body(rotated), "secret": secret}

    def deliveries(self, caller: Caller, endpoint_id: str, status: str | None,
                   limit: str | None) -> dict:
        ep = self._endpoint(caller, endpoint_id)
        if status is not None and status not in STATUSES:
            raise BadRequest(f"status: one of {', '.join(STATUSES)}", code="invalid_filter")
        n = _limit(limit)
        return {"deliveries": [delivery_body(d) for d in self.store.deliveries(
            ep.domain, ep.id, status, n)]}

    def delivery(self, caller: Caller, delivery_id: str) -> dict:
        found = self.store.delivery(self._domain(caller), delivery_id[:MAX_ID])
        if found is None:
            raise NotFound(f"no webhook delivery '{delivery_id[:MAX_ID]}'",
                           code="unknown_delivery")
        return delivery_body(found)

    def resend(self, caller: Caller, delivery_id: str) -> dict:
        domain = self._domain(caller)
        if not self.store.resend(domain, delivery_id[:MAX_ID]):
            raise NotFound(f"no webhook delivery '{delivery_id[:MAX_ID]}'",
                           code="unknown_delivery")
        return self.delivery(caller, delivery_id)

    def _endpoint(self, caller: Caller, endpoint_id: str) -> Endpoint:
        ep = self.store.endpoint(self._domain(caller), endpoint_id[:MAX_ID])
        if ep is None:
            raise NotFound(f"no webhook endpoint '{endpoint_id[:MAX_ID]}'",
                           code="unknown_endpoint")
        return ep


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def _events(value: object) -> list[str]:
    if not isinstance(value, list) or not 1 <= len(value) <= len(EVENTS) or \
            not all(isinstance(v, str) for v in value) or len(set(value)) != len(value):
        raise InvalidWebhook(f"events: a list of distinct event names, 1 to {len(EVENTS)} of "
                             f"{', '.join(EVENTS)}", code="invalid_events")
    unknown = [v for v in value if v not in EVENTS]
    if unknown:
        raise InvalidWebhook(f"events: unknown event '{unknown[0][:40]}' (known: "
                             f"{', '.join(EVENTS)})", code="unknown_event")
    return list(value)


def _limit(value: str | None) -> int:
    if value is None:
        return 20
    if not (value.isascii() and value.isdigit() and len(value) <= 3) or \
            not 1 <= int(value) <= MAX_LIMIT:
        raise BadRequest(f"limit: a whole number from 1 to {MAX_LIMIT}", code="invalid_limit")
    return int(value)


def endpoint_body(ep: Endpoint) -> dict[str, Any]:
    overlap = ep.previous_until if ep.previous_secret and ep.previous_until and \
        ep.previous_until > time.time() else None
    return {"id": ep.id, "url": ep.url, "events": list(ep.events),
            "low_balance_threshold": ep.low_balance, "created_at": iso(ep.created_at),
            "previous_secret_until": iso(overlap)}


def delivery_body(d: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in d.items() if k != "next_at"}
    return {**out, "created_at": iso(d["created_at"]), "next_attempt_at": iso(d["next_at"]),
            "finished_at": iso(d["finished_at"]),
            "attempts": [{**a, "at": iso(a["at"])} for a in d["attempts"]]}


def add_webhook_routes(app: FastAPI, service: Callable[[Request], Any]) -> None:
    async def api(request: Request) -> tuple[WebhooksApi, Caller]:
        svc = service(request)
        return WebhooksApi(svc), await authenticated(svc, request, "billing")

    @app.post("/webhooks/endpoints", tags=["webhooks"], status_code=201)
    async def create_endpoint(request: Request) -> JSONResponse:
        """Register an endpoint: `{"url", "events", "low_balance_threshold"?}`. The answer
        holds its signing `secret`, shown once."""
        w, caller = await api(request)
        body = await _json(request)
        return JSONResponse(await run_in_threadpool(w.create, caller, body), status_code=201)

    @app.get("/webhooks/endpoints", tags=["webhooks"])
    async def list_endpoints(request: Request) -> JSONResponse:
        w, caller = await api(request)
        return JSONResponse(await run_in_threadpool(w.list, caller))

    @app.get("/webhooks/endpoints/{endpoint_id}", tags=["webhooks"])
    async def get_endpoint(request: Request, endpoint_id: str) -> JSONResponse:
        w, caller = await api(request)
        return JSONResponse(await run_in_threadpool(w.get, caller, endpoint_id))

    @app.delete("/webhooks/endpoints/{endpoint_id}", tags=["webhooks"])
    async def delete_endpoint(request: Request, endpoint_id: str) -> JSONResponse:
        """The endpoint goes, with its deliveries."""
        w, caller = await api(request)
        return JSONResponse(await run_in_threadpool(w.delete, caller, endpoint_id))

    @app.post("/webhooks/endpoints/{endpoint_id}/rotate", tags=["webhooks"])
    async def rotate_secret(request: Request, endpoint_id: str) -> JSONResponse:
        """A new signing secret (shown once). The previous one still signs, as a second
        `v1`, for `overlap_seconds` (body, optional; default: the service's setting)."""
        w, caller = await api(request)
        body = await _json(request, empty={})
        return JSONResponse(await run_in_threadpool(w.rotate, caller, endpoint_id, body))

    @app.get("/webhooks/endpoints/{endpoint_id}/deliveries", tags=["webhooks"])
    async def list_deliveries(request: Request, endpoint_id: str, status: str | None = None,
                              limit: str | None = None) -> JSONResponse:
        """The endpoint's deliveries, newest first, with their attempts."""
        w, caller = await api(request)
        return JSONResponse(await run_in_threadpool(w.deliveries, caller, endpoint_id,
                                                    status, limit))

    @app.get("/webhooks/deliveries/{delivery_id}", tags=["webhooks"])
    async def get_delivery(request: Request, delivery_id: str) -> JSONResponse:
        w, caller = await api(request)
        return JSONResponse(await run_in_threadpool(w.delivery, caller, delivery_id))

    @app.post("/webhooks/deliveries/{delivery_id}/resend", tags=["webhooks"],
              status_code=202)
    async def resend_delivery(request: Request, delivery_id: str) -> JSONResponse:
        """Send it again now, whatever its status, with a new retry window."""
        w, caller = await api(request)
        return JSONResponse(await run_in_threadpool(w.resend, caller, delivery_id),
                            status_code=202)
