"""Tilemore's Python SDK: ``Tilemore(...).submit(path, "jpeg", adjustments)`` and the result.

No HTTP, hashing, handshakes, polling or retries to write: the client does them, safely,
because the API is idempotent on the request's parameters. ``create()`` starts a thread and
returns, ``wait()`` waits for it, ``run()`` (= ``submit()``) does both and downloads.
"""

from tilemore_sdk import webhooks
from tilemore_sdk._client import FORMATS, AsyncTilemore
from tilemore_sdk._errors import (
    AuthenticationError,
    ConflictError,
    ConnectionFailed,
    InputError,
    InsufficientCreditsError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResultExpiredError,
    ServerError,
    TaskCanceledError,
    TaskFailedError,
    TilemoreError,
    UnsupportedFormatError,
    WaitTimeout,
)
from tilemore_sdk._ratelimit import RateLimit
from tilemore_sdk._sync import Tilemore
from tilemore_sdk._types import (
    Balance,
    HistoryDay,
    Operation,
    Payment,
    Result,
    ResultInfo,
    SubAccount,
    Thread,
    ThreadPage,
    Token,
)
from tilemore_sdk.webhooks import WebhookSignatureError

__version__ = "0.2.0"

__all__ = [
    "FORMATS", "AsyncTilemore", "AuthenticationError", "Balance", "ConflictError",
    "ConnectionFailed", "HistoryDay", "InputError", "InsufficientCreditsError",
    "InvalidRequestError", "NotFoundError", "Operation", "Payment", "PermissionDeniedError",
    "RateLimit", "RateLimitError", "Result", "ResultExpiredError", "ResultInfo", "ServerError",
    "SubAccount", "TaskCanceledError", "TaskFailedError", "Thread", "ThreadPage", "Tilemore",
    "TilemoreError", "Token", "UnsupportedFormatError", "WaitTimeout", "WebhookSignatureError",
    "__version__", "webhooks",
]
