"""The OpenAPI document: FastAPI's, completed with what the routes cannot say themselves
(they read their bodies bounded, by hand, and answer with plain dicts).

Added: the bodies' models (:mod:`tilemore.api.schemas`) as components; two security schemes
(``Authorization: Bearer <token>``, and the guide's ``Token <token> Domain <domain>``) that
every route but health and the payment notifications requires, so ``/docs`` can make a real
call; the submission's request body as JSON (the envelope alone) and as multipart (envelope
part, image part); each route's answers, and its error responses with the codes each status
may carry. The document passes ``openapi-spec-validator`` (tests/api/test_openapi.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from tilemore.api import schemas as s
from tilemore.api.listing import SINCE_PATTERN
from tilemore.store.error_index import MAX_QUERY

REF = "#/components/schemas/{model}"
REQUESTS = {s.Envelope, s.MultipartSubmission, s.SubaccountRequest, s.TokenRequest,
            s.PaymentRequest, s.PaymentNotification, s.WebhookEndpointRequest,
            s.RotateRequest}

# The errors every authenticated route may answer, by status.
AUTH: dict[int, list[str]] = {
    401: ["missing_credentials", "malformed_credentials", "invalid_token", "revoked_token"],
    403: ["wrong_domain", "insufficient_scope"],
    429: ["too_many_auth_failures", "rate_limited"],
    503: ["not_ready", "database_unavailable", "database_busy", "database_full",
          "rate_limit_unavailable"],
}
SUBMIT_ERRORS: dict[int, list[str]] = {
    400: ["malformed_json", "invalid_hash", "hash_mismatch", "invalid_meta_parts",
          "multipart_order", "missing_envelope", "missing_image", "malformed_multipart",
          "empty_image", "corrupt_image", "truncated_image", "invalid_request"],
    402: ["insufficient_credits"],
    403: ["wrong_account"],
    404: ["unknown_pipeline", "unknown_account"],
    408: ["upload_too_slow"],
    413: ["body_too_large", "envelope_too_large", "meta_too_large", "image_too_large",
          "output_too_large"],
    415: ["unsupported_media_type", "unsupported_image_format"],
    422: ["missing_adjustments", "invalid_envelope", "unknown_stage", "unknown_algorithm",
          "unknown_parameter", "invalid_parameter", "unsupported_output_format"],
    410: ["result_expired"],  # a replay whose result went with its retention
    429: ["too_many_threads"],
    503: ["backlog_full", "blob_store_unavailable", "blob_store_full", "decode_busy"],
}
THREAD = {403: ["wrong_account"], 404: ["unknown_thread"]}
ACCOUNT = {403: ["wrong_account"], 404: ["unknown_account"]}
BODY = {400: ["malformed_json"], 408: ["upload_too_slow"], 413: ["body_too_large"]}
ENDPOINT = {403: ["wrong_account"], 404: ["unknown_endpoint"]}
DELIVERY = {403: ["wrong_account"], 404: ["unknown_delivery"]}

# (method, path) → (answers: status → model or description, request model, errors).
Spec = tuple[dict[int, Any], Any, dict[int, list[str]]]
ROUTES: dict[tuple[str, str], Spec] = {
    ("post", "/submitted/{image_sha256}/"): (
        {200: s.NeedsFile, 202: s.ThreadAnswer}, "submission", SUBMIT_ERRORS),
    ("post", "/{meta_parts}/submitted/{image_sha256}/"): (
        {200: s.NeedsFile, 202: s.ThreadAnswer}, "submission", SUBMIT_ERRORS),
    ("get", "/threads"): (
        {200: s.ThreadList}, None,
        {400: ["invalid_limit", "invalid_cursor", "invalid_filter"], **ACCOUNT}),
    ("get", "/threads/{thread_id}"): (
        {200: s.ThreadAnswer, 202: s.ThreadAnswer}, None, {**THREAD, 400: ["invalid_wait"]}),
    ("post", "/threads/{thread_id}/cancel"): (
        {200: s.ThreadAnswer, 202: s.ThreadAnswer}, None, {**THREAD, 409: ["already_finished"]}),
    ("get", "/results/{thread_id}/{filename}"): (
        {200: "the result's bytes", 307: "a presigned link to the result (blobs on S3)"},
        None, {403: ["wrong_account"], 404: ["unknown_thread", "no_result", "not_found"],
               410: ["result_expired"]}),
    ("post", "/threads/{thread_id}/retry"): (  # tilemore.api.lifecycle
        {200: s.ThreadAnswer, 202: s.ThreadAnswer}, None,
        {**THREAD, 402: ["insufficient_credits"], 409: ["thread_running", "thread_done"],
         410: ["input_expired", "retry_window_closed"]}),
    ("get", "/errors"): (
        {200: "the matches, best first"}, None,
        {400: ["empty_query", "invalid_query", "invalid_limit", "invalid_filter"],
         403: ["wrong_account"], 404: ["unknown_thread", "not_configured"]}),
    ("get", "/billing/balance"): ({200: s.Balance}, None, ACCOUNT),
    ("get", "/billing/history"): ({200: s.History}, None, ACCOUNT),
    ("get", "/billing/operations"): (
        {200: s.Operations}, None,
        {400: ["invalid_date"], 422: ["history_out_of_range"], **ACCOUNT}),
    ("post", "/billing/orders"): ({}, None, {403: ["orders_disabled"]}),
    ("post", "/billing/payment-notifications"): (
        {200: s.NotificationAnswer}, s.PaymentNotification,
        {**BODY, 400: ["malformed_json", "malformed_signature"],
         401: ["missing_signature", "invalid_signature", "stale_signature"],
         404: ["payments_not_configured"], 409: ["event_conflict", "duplicate_reference"],
         422: ["invalid_notification", "unknown_domain", "invalid_amount",
               "amount_out_of_range"]}),
    ("post", "/billing/subaccounts"): (
        {200: s.Subaccount, 201: s.Subaccount}, s.SubaccountRequest,
        {**BODY, 400: ["malformed_json", "invalid_name"], 403: ["wrong_account"]}),
    ("get", "/billing/subaccounts"): ({200: s.Subaccounts}, None, {403: ["wrong_account"]}),
    ("post", "/billing/subaccounts/{name}/tokens"): (
        {201: s.IssuedToken}, s.TokenRequest,
        {**BODY, **ACCOUNT, 422: ["unknown_scope"]}),
    ("post", "/billing/subaccounts/{name}/payments"): (
        {200: s.Payment}, s.PaymentRequest,
        {**BODY, 400: ["malformed_json", "invalid_reference"], **ACCOUNT,
         402: ["insufficient_credits"], 409: ["duplicate_reference"],
         422: ["invalid_amount", "amount_out_of_range"]}),
    ("get", "/healthz"): ({200: s.Health}, None, {}),
    # tilemore.api.webhooks: domain tokens with the billing scope
    ("post", "/webhooks/endpoints"): (
        {201: s.WebhookEndpointCreated}, s.WebhookEndpointRequest,
        {**BODY, 403: ["wrong_account"],
         422: ["invalid_webhook_url", "webhook_url_private", "webhook_url_unresolvable",
               "invalid_events", "unknown_event", "invalid_threshold", "invalid_amount",
               "amount_out_of_range", "too_many_endpoints"]}),
    ("get", "/webhooks/endpoints"): ({200: s.WebhookEndpoints}, None, {403: ["wrong_account"]}),
    ("get", "/webhooks/endpoints/{endpoint_id}"): ({200: s.WebhookEndpoint}, None, ENDPOINT),
    ("delete", "/webhooks/endpoints/{endpoint_id}"): (
        {200: s.WebhookEndpointDeleted}, None, ENDPOINT),
    ("post", "/webhooks/endpoints/{endpoint_id}/rotate"): (
        {200: s.WebhookEndpointCreated}, s.RotateRequest,
        {**BODY, **ENDPOINT, 422: ["invalid_overlap"]}),
    ("get", "/webhooks/endpoints/{endpoint_id}/deliveries"): (
        {200: s.WebhookDeliveries}, None,
        {400: ["invalid_limit", "invalid_filter"], **ENDPOINT}),
    ("get", "/webhooks/deliveries/{delivery_id}"): ({200: s.WebhookDelivery}, None, DELIVERY),
    ("post", "/webhooks/deliveries/{delivery_id}/resend"): (
        {202: s.WebhookDelivery}, None, DELIVERY),
}
# Parameters whose name another route uses with another meaning: (path, name) → schema.
ROUTE_PARAMETERS: dict[tuple[str, str], dict[str, Any]] = {
    ("/webhooks/endpoints/{endpoint_id}/deliveries", "status"): {
        "type": "string", "enum": ["pending", "delivered", "given_up"]},
}
OPEN = {("get", "/healthz"), ("post", "/billing/payment-notifications")}  # no token

# What each parameter accepts, by name: the routes read them as text and check them
# themselves (a bad one is a 400 with a code), so FastAPI cannot say it.
_PART = r"[A-Za-z0-9][A-Za-z0-9._~-]{0,127}"
PARAMETERS: dict[str, dict[str, Any]] = {
    "image_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                     "description": "the image's SHA-256, 64 lowercase hex digits"},
    "meta_parts": {"type": "string", "pattern": f"^{_PART}(/{_PART})*$",
                   "description": "path segments of your choosing: letters, digits, . _ ~ -"},
    "thread_id": {"type": "string", "maxLength": 64},
    "wait": {"type": "string", "pattern": "^(([0-5]?[0-9])(\\.[0-9]{1,3})?|60(\\.0{1,3})?)$",
             "description": "seconds (0-60) to hold the answer until the thread ends: one "
                            "request instead of polling"},
    "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
    "status": {"type": "string", "enum": ["processing", "done", "failed", "canceled"]},
    "meta_part": {"type": "array", "maxItems": 8,
                  "items": {"type": "string", "pattern": f"^{_PART}$"}},
    "created_since": {"type": "string", "maxLength": 40, "pattern": SINCE_PATTERN,
                      "description": "ISO 8601, a date or a time (no zone: UTC), or unix "
                                     "seconds"},
    "cursor": {"type": "string", "maxLength": 200,
               "description": "the previous page's next_cursor, as it came"},
    "date": {"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
             "description": "today or yesterday (UTC); other days: 422 "
                            "`history_out_of_range`"},
    # Required: a search needs words (a blank one is 400 empty_query); no NUL, which no
    # database takes.
    "q": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY,
          "pattern": "^[^\\u0000]*\\S[^\\u0000]*$",
          "description": "words, \"phrases\", OR (a syntax the index rejects: 400 "
                         "`invalid_query`)"},
    "account": {"type": "string", "pattern": f"^{_PART}$",
                "description": "one of your sub-accounts, by name"},
    "name": {"type": "string", "pattern": f"^{_PART}$", "description": "a sub-account's name"},
    "endpoint_id": {"type": "string", "maxLength": 64},
    "delivery_id": {"type": "string", "maxLength": 64},
}
STATUS_TEXT = {200: "OK", 201: "Created", 202: "Accepted: still processing", 307: "Redirect",
               400: "Bad request", 401: "Unauthenticated", 402: "Insufficient credits",
               403: "Forbidden", 404: "Not found", 408: "Request body too slow",
               409: "Conflict", 410: "Gone", 413: "Too large", 415: "Unsupported media type",
               422: "Unprocessable", 429: "Too many requests", 503: "Unavailable: retry"}


class DescribedAPI(FastAPI):
    """FastAPI whose document is the completed one, built once, on first request. A
    subclass, not a closure set on the app: Ray Serve pickles the app, and a function that
    holds the app it hangs on is a cycle cloudpickle cannot follow."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = document(self)
        return self.openapi_schema


def document(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=app.routes)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    _, defs = models_json_schema(
        [(m, "validation" if m in REQUESTS else "serialization") for m in s.MODELS],
        ref_template=REF)
    schemas.update(defs.get("$defs", {}))
    for unused in ("HTTPValidationError", "ValidationError"):  # refused as 400, not 422
        schemas.pop(unused, None)
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "`Authorization: Bearer <token>`; the token names its "
                                  "domain. Scopes: submit, read, billing (docs/api.md)"},
        "token_domain": {"type": "apiKey", "in": "header", "name": "Authorization",
                         "description": "the guide's form, the whole header value: "
                                        "`Token <token> Domain <domain>`"},
    }
    doc["security"] = [{"bearer": []}, {"token_domain": []}]
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            _complete(method, _template(path), op)
    return doc


def _template(path: str) -> str:
    return path.replace("{meta_parts:path}", "{meta_parts}")


def _complete(method: str, path: str, op: dict[str, Any]) -> None:
    answers, request, errors = ROUTES.get((method, path), ({}, None, {}))
    responses: dict[str, Any] = {}
    for status, model in answers.items():
        responses[str(status)] = _answer(status, model, path)
    if not answers:  # a route this module does not know (yet): FastAPI's own 2xx
        responses.update({k: v for k, v in op.get("responses", {}).items()
                          if k.startswith("2")})
    if (method, path) in OPEN:
        op["security"] = []
        merged = {k: list(v) for k, v in errors.items()}
    else:
        merged = {k: list(v) for k, v in AUTH.items()}
        for status, codes in errors.items():
            merged.setdefault(status, [])
            merged[status] += [c for c in codes if c not in merged[status]]
    for status in sorted(merged):
        codes = merged[status]
        responses[str(status)] = {
            "description": f"{STATUS_TEXT.get(status, 'Error')}: "
                           + ", ".join(f"`{c}`" for c in codes),
            "content": {"application/json": {"schema": {"$ref": REF.format(
                model="ErrorAnswer")}}}}
        if status in (429, 503):
            responses[str(status)]["headers"] = _retry_headers(status)
    op["responses"] = responses
    for param in op.get("parameters", []):
        if (path, param.get("name")) in ROUTE_PARAMETERS:
            param["schema"] = dict(ROUTE_PARAMETERS[(path, param["name"])])
        elif param.get("name") in PARAMETERS:
            param["schema"] = dict(PARAMETERS[param["name"]])
            if param["name"] == "q":
                param["required"] = True
    if request == "submission":
        op.setdefault("parameters", []).append({
            "name": "Prefer", "in": "header", "required": False,
            "schema": {"type": "string"},
            "description": "`wait=N` (seconds, at most 60): answer when the thread ends, or "
                           "after N seconds (RFC 7240; `Preference-Applied` says it was). A "
                           "preference it cannot read (or past 256 characters) is ignored"})
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"$ref": REF.format(model="Envelope")}},
            "multipart/form-data": {
                "schema": {"$ref": REF.format(model="MultipartSubmission")},
                "encoding": {"envelope": {"contentType": "application/json"},
                             "image": {"contentType": "application/octet-stream"}}}}}
    elif isinstance(request, type) and issubclass(request, BaseModel):
        op["requestBody"] = {"required": request not in (s.TokenRequest, s.RotateRequest),
                             "content": {
            "application/json": {"schema": {"$ref": REF.format(model=request.__name__)}}}}


def _answer(status: int, model: Any, path: str) -> dict[str, Any]:
    if isinstance(model, str):
        if status == 307:
            return {"description": model, "headers": {"Location": {"schema": {
                "type": "string"}}}}
        if path.startswith("/results/"):
            return {"description": model, "content": {"image/*": {"schema": {
                "type": "string", "format": "binary"}}}}
        return {"description": model, "content": {"application/json": {"schema": {
            "type": "object"}}}}
    return {"description": STATUS_TEXT.get(status, "OK"),
            "content": {"application/json": {"schema": {"$ref": REF.format(
                model=model.__name__)}}}}


def _retry_headers(status: int) -> dict[str, Any]:
    headers: dict[str, Any] = {"Retry-After": {"description": "seconds to wait",
                                               "schema": {"type": "integer"}}}
    if status == 429:
        for name in ("RateLimit", "RateLimit-Policy"):
            headers[name] = {"description": "draft-ietf-httpapi-ratelimit-headers",
                             "schema": {"type": "string"}}
    return headers
