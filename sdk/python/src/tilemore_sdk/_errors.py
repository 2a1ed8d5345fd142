"""Exceptions that mirror the API's error ``code``s, so callers catch what they mean.

Every error raised for an answer carries its HTTP ``status`` and the ``request_id`` the
service sent (``x-request-id``): quote it when asking for help, it finds the request's logs."""

from __future__ import annotations

from collections.abc import Mapping

from tilemore_sdk._ratelimit import RateLimit


class TilemoreError(Exception):
    """Base of every error the SDK raises. ``code`` is the API's machine-readable code."""

    def __init__(self, message: str, *, code: str = "error", status: int | None = None,
                 request_id: str | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status
        self.request_id = request_id

    def __str__(self) -> str:
        suffix = f" (request {self.request_id})" if self.request_id else ""
        return f"[{self.code}] {self.message}{suffix}"


class InputError(TilemoreError):
    """The input could not be read (missing, a folder, unreadable) — no request was sent."""


class UnsupportedFormatError(TilemoreError):
    """The output format is not one the API knows — checked before any request."""


class AuthenticationError(TilemoreError):
    """401: missing, malformed, unknown or revoked token."""


class PermissionDeniedError(TilemoreError):
    """403: the token's domain, account or scopes may not do this."""


class NotFoundError(TilemoreError):
    """404: no such thread, result, pipeline or account."""


class InsufficientCreditsError(TilemoreError):
    """402: the billed account cannot cover the estimated cost."""


class InvalidRequestError(TilemoreError):
    """400, 413, 415 or 422: the request itself is wrong (image, envelope, adjustments…)."""


class ConflictError(TilemoreError):
    """409: e.g. a payment id reused with another amount, or canceling a finished thread."""


class ResultExpiredError(TilemoreError):
    """410: the thread's result was removed after its retention; ``retry()`` runs it again."""


class RateLimitError(TilemoreError):
    """429 that kept coming back after the retries. ``retry_after`` is the seconds the
    service asked to wait; ``rate_limit`` what its ``RateLimit`` headers said."""

    def __init__(self, message: str, *, code: str = "rate_limited", status: int | None = 429,
                 request_id: str | None = None, retry_after: float | None = None,
                 rate_limit: RateLimit | None = None) -> None:
        super().__init__(message, code=code, status=status, request_id=request_id)
        self.retry_after, self.rate_limit = retry_after, rate_limit


class ServerError(TilemoreError):
    """5xx that kept coming back after the retries."""


class ConnectionFailed(TilemoreError):
    """The service could not be reached, after the retries (never a hang)."""


class TaskFailedError(TilemoreError):
    """The thread ran and failed; ``code`` is the failure's (e.g. ``truncated_image``)."""

    def __init__(self, message: str, *, code: str, thread_id: str) -> None:
        super().__init__(message, code=code)
        self.thread_id = thread_id


class TaskCanceledError(TilemoreError):
    """The thread was canceled before it finished."""


class WaitTimeout(TilemoreError):
    """``wait()`` gave up: the thread was still processing after ``timeout`` seconds."""


_BY_STATUS: dict[int, type[TilemoreError]] = {
    400: InvalidRequestError, 401: AuthenticationError, 402: InsufficientCreditsError,
    403: PermissionDeniedError, 404: NotFoundError, 409: ConflictError, 410: ResultExpiredError,
    413: InvalidRequestError, 415: InvalidRequestError, 422: InvalidRequestError,
}


def error_for(status: int, body: object, headers: Mapping[str, str] | None = None
              ) -> TilemoreError:
    headers = headers or {}
    err = body.get("error", {}) if isinstance(body, dict) else {}
    code = err.get("code", f"http_{status}") if isinstance(err, dict) else f"http_{status}"
    message = err.get("message", f"HTTP {status}") if isinstance(err, dict) else str(body)
    request_id = headers.get("x-request-id")
    if status == 429:
        limit = RateLimit.from_headers(headers)
        return RateLimitError(message, code=code, request_id=request_id,
                              retry_after=limit.wait_seconds(), rate_limit=limit)
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else TilemoreError)
    return cls(message, code=code, status=status, request_id=request_id)
