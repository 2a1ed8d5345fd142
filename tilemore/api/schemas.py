"""The bodies of the HTTP API as pydantic models, for the OpenAPI document
(:mod:`tilemore.api.openapi`): what a client sends and gets back. The routes build their
answers as plain dicts (``tilemore.api.views``, ``tilemore.billing``); these models describe
them, and a test checks real answers against them. Amounts are strings (20 fractional
digits), times ISO 8601 in UTC."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tilemore.api.envelope import Envelope

Amount = str  # a decimal, as a string: "12.50000000000000000000"
# What a request may send: greater than zero, below 10^18, at most 20 fractional digits (the
# server takes a few more spellings, " 5" or "5e2"; this is the one to use).
PositiveAmount = Annotated[str, Field(
    pattern=r"^([1-9][0-9]{0,17}(\.[0-9]{1,20})?|0\.[0-9]{0,19}[1-9])$",
    examples=["12.5"])]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # answers may gain fields; clients ignore them


class ErrorDetail(_Open):
    code: str = Field(description="machine-readable: README, Errors, and docs/api.md")
    message: str


class ErrorAnswer(_Open):
    error: ErrorDetail


class Progress(_Open):
    done: int
    total: int


class TaskState(_Open):
    id: str
    operator: str
    status: Literal["pending", "running", "done", "failed", "canceled", "skipped"]
    started_at: str | None
    finished_at: str | None
    seconds: float | None
    megapixels: float | None
    error: str | None = None
    reason: str | None = Field(None, description="why a skipped task did not run")


class Result(_Open):
    url: str = Field(description="GET it with the same credentials")
    content_type: str
    bytes: int
    sha256: str
    width: int
    height: int


class ThreadAnswer(_Open):
    status: Literal["processing", "done", "failed", "canceled"]
    thread_id: str
    pipeline: str
    meta_parts: list[str]
    meta: dict[str, Any]
    created_at: str
    updated_at: str
    finished_at: str | None
    progress: Progress
    tasks: list[TaskState]
    qc: list[dict[str, Any]]
    trace_id: str | None
    account: str
    credits_charged: Amount
    cancel_requested: bool | None = None
    result: Result | None = Field(None, description="when done")
    error: ErrorDetail | None = Field(None, description="when failed")


class NeedsFile(_Open):
    status: Literal["needs-file"]
    message: str


class ThreadList(_Open):
    threads: list[ThreadAnswer] = Field(description="newest first")
    next_cursor: str | None = Field(description="send back as `cursor`; null: the last page")


class Health(_Open):
    status: str
    version: str


class MultipartSubmission(BaseModel):
    """The envelope part first, then the image part."""

    envelope: Envelope
    image: bytes = Field(json_schema_extra={"format": "binary", "contentMediaType":
                                            "application/octet-stream"})


# -- billing -------------------------------------------------------------------------------


class Balance(_Open):
    account: str
    balance: Amount
    held: Amount = Field(description="reserved for threads running")
    available: Amount


class HistoryDay(_Open):
    date: str
    amount_when_day_started: Amount
    transaction_total: Amount
    traced_total: Amount = Field(description="what sub-accounts consumed for the domain")
    ordered_total: Amount
    applied_commitment_bonus: Amount


class History(_Open):
    account: str
    days: list[HistoryDay] = Field(description="the latest 31 days, oldest first")


class Operation(_Open):
    seq: int
    kind: Literal["order", "bonus", "charge", "payment", "correction"]
    amount: Amount
    balance_after: Amount
    thread_id: str | None
    task_id: str | None
    operator: str | None
    megapixels: float | None
    reference: str | None
    at: float = Field(description="unix seconds")


class Operations(_Open):
    account: str
    date: str
    operations: list[Operation]


class SubaccountRequest(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$")  # as meta parts


class Subaccount(_Open):
    account: str
    name: str
    created: bool


class SubaccountBalance(Balance):
    name: str


class Subaccounts(_Open):
    subaccounts: list[SubaccountBalance]


class TokenRequest(BaseModel):
    scopes: list[Literal["submit", "read", "billing"]] | None = Field(
        None, min_length=1, max_length=12,
        description="default (absent or null): the caller's own scopes")


class IssuedToken(_Open):
    account: str
    token_id: str
    token: str = Field(description="shown once")
    scopes: list[str]
    bearer: str = Field(description="`Bearer <token>`: the Authorization header's value")
    authorization: str = Field(description="the guide's `Token <token> Domain <domain>`")


class PaymentRequest(BaseModel):
    payment_id: str = Field(min_length=1, max_length=200)
    amount: PositiveAmount


class Payment(Balance):
    payment_id: str
    amount: Amount
    from_: str = Field(alias="from")
    replayed: bool


class PaymentNotification(BaseModel):
    event_id: str
    domain: str
    order_id: str
    amount: PositiveAmount


class NotificationAnswer(_Open):
    event_id: str
    domain: str
    order_id: str
    amount: Amount
    applied_commitment_bonus: Amount
    replayed: bool


# -- webhooks ------------------------------------------------------------------------------

WebhookEvent = Literal["thread.done", "thread.failed", "thread.canceled", "billing.low_balance"]


class WebhookEndpointRequest(BaseModel):
    url: str = Field(max_length=2048, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[!-~]+$",
                     description="http(s), to a public address (a private one: 422 "
                                 "`webhook_url_private`); redirects are not followed")
    events: list[WebhookEvent] = Field(min_length=1, max_length=4,
                                       json_schema_extra={"uniqueItems": True})
    low_balance_threshold: PositiveAmount | None = Field(
        None, description="with `billing.low_balance` (required then, refused otherwise): "
                          "an account's balance going below it sends the event, once per "
                          "crossing")


class WebhookEndpoint(_Open):
    id: str
    url: str
    events: list[str]
    low_balance_threshold: Amount | None
    created_at: str
    previous_secret_until: str | None = Field(
        description="while a rotation overlaps: the previous secret signs too until then")


class WebhookEndpointCreated(WebhookEndpoint):
    secret: str = Field(description="the signing secret, shown once")


class WebhookEndpoints(_Open):
    endpoints: list[WebhookEndpoint]


class WebhookEndpointDeleted(_Open):
    id: str
    deleted: bool


class RotateRequest(BaseModel):
    overlap_seconds: float | None = Field(
        None, ge=0, le=2_592_000, description="how long the previous secret still signs "
                                              "(default: the service's setting)")


class WebhookAttempt(_Open):
    n: int
    at: str
    status_code: int | None = Field(description="null: no HTTP answer")
    error: str | None = Field(description="null: delivered")
    seconds: float | None


class WebhookDelivery(_Open):
    id: str
    endpoint_id: str
    event: str
    event_id: str = Field(description="the body's `id`: the same on every attempt")
    status: Literal["pending", "delivered", "given_up"]
    created_at: str
    next_attempt_at: str | None
    finished_at: str | None
    payload: dict[str, Any] = Field(description="the body sent")
    attempts: list[WebhookAttempt] = Field(description="the latest 50, oldest first")


class WebhookDeliveries(_Open):
    deliveries: list[WebhookDelivery] = Field(description="newest first")


MODELS: tuple[type[BaseModel], ...] = (
    ErrorAnswer, ThreadAnswer, NeedsFile, ThreadList, Health, Envelope, MultipartSubmission,
    Balance, History, Operations, SubaccountRequest, Subaccount, Subaccounts, TokenRequest,
    IssuedToken, PaymentRequest, Payment, PaymentNotification, NotificationAnswer,
    WebhookEndpointRequest, WebhookEndpoint, WebhookEndpointCreated, WebhookEndpoints,
    WebhookEndpointDeleted, RotateRequest, WebhookDelivery, WebhookDeliveries,
)
