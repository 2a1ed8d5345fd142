"""Who is calling, for which domain, and what the token may do.

Two forms of the ``Authorization`` header: ``Bearer <token>`` (RFC 6750; the token names
its domain) and the guide's ``Token <token> Domain <domain>``. A token carries scopes
(:data:`~tilemore.store.SCOPES`); a route names the one it needs, and a token without it
gets ``403 insufficient_scope``.

Token look-ups are cached for a few seconds per ingress replica (a revoked token stops
working within ``token_cache_seconds``), and failed attempts are throttled per client, so
guessing tokens is slow and costs the database nothing once a client is over its budget.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from tilemore.api.ratelimit import fields
from tilemore.errors import Forbidden, TooManyRequests, Unauthorized
from tilemore.store import SCOPES, TokenInfo, TokenRepository

_HEADER = re.compile(r"^Token\s+(\S{1,200})\s+Domain\s+(\S{1,200})\s*$")
_BEARER = re.compile(r"^bearer\s+(\S{1,200})\s*$", re.IGNORECASE)  # schemes have no case
MAX_HEADER = 512
FORMS = "'Bearer <token>' or 'Token <token> Domain <domain>'"


@dataclass(frozen=True)
class Caller:
    domain: str
    account: str  # the domain itself, or one of its sub-accounts (``domain/name``)
    scopes: frozenset[str] = frozenset(SCOPES)

    @property
    def is_subaccount(self) -> bool:
        return self.account != self.domain

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise InsufficientScope(scope)


class InsufficientScope(Forbidden):
    code = "insufficient_scope"

    def __init__(self, scope: str) -> None:
        super().__init__(f"this token lacks the '{scope}' scope")
        self.scope = scope
        # RFC 6750's answer for a token that may not do this.
        self.headers = {"WWW-Authenticate": f'Bearer error="insufficient_scope", '
                                            f'scope="{scope}"'}


class TooManyAuthFailures(TooManyRequests):
    code = "too_many_auth_failures"


class Authenticator:
    def __init__(self, tokens: TokenRepository, cache_seconds: float = 5.0,
                 failure_burst: int = 10, failures_per_second: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.tokens = tokens
        self.cache = _TokenCache(cache_seconds, clock)
        self.throttle = AuthThrottle(failure_burst, failures_per_second, clock=clock)

    def __call__(self, header: str | None, client: str = "") -> Caller:
        """Who is calling, or an error that says what is wrong with the credentials. Blocking
        (a database read on a cache miss): call it off the event loop."""
        self.throttle.check(client)
        try:
            return self._authenticate(header)
        except (Unauthorized, Forbidden):
            self.throttle.failed(client)
            raise

    def _authenticate(self, header: str | None) -> Caller:
        if not header:
            raise Unauthorized(f"send Authorization: {FORMS}", code="missing_credentials")
        secret, domain = _parse(header)
        token = self.cache.get(secret, self.tokens.find_token)
        if token is None:
            raise Unauthorized("unknown token", code="invalid_token")
        if token.revoked_at is not None:
            raise Unauthorized("this token was revoked", code="revoked_token")
        if domain is not None and token.domain != domain:
            raise Forbidden(f"this token does not belong to domain '{domain}'",
                            code="wrong_domain")
        return Caller(token.domain, token.account or token.domain, frozenset(token.scopes))


def _parse(header: str) -> tuple[str, str | None]:
    """(secret, the domain the header names, None for a Bearer token)."""
    if len(header) <= MAX_HEADER:
        bearer = _BEARER.match(header)
        if bearer is not None:
            return bearer.group(1), None
        match = _HEADER.match(header)
        if match is not None:
            return match.group(1), match.group(2)
    raise Unauthorized(f"the Authorization header must read {FORMS}",
                       code="malformed_credentials")


async def authenticated(api: Any, request: Request, scope: str = "read") -> Caller:
    """The caller of an HTTP request, checked on the thread pool (a token look-up may read
    the database, which the event loop must never wait for), holding ``scope``."""
    caller: Caller = await run_in_threadpool(
        api.authenticate, request.headers.get("authorization"), client_of(request))
    caller.require(scope)
    limiter = getattr(api, "limiter", None)
    if limiter is not None:  # in memory: 429 rate_limited over the caller's limits
        taken = limiter.admit(caller.domain, caller.account)
        if taken:  # the RateLimit fields, for RateLimitHeaders to put on the answer
            request.state.ratelimit = fields(taken, limiter.burst_seconds)
    return caller


def client_of(request: Request) -> str:
    return request.client.host if request.client else ""


def authenticate(tokens: TokenRepository, header: str | None) -> Caller:
    """One check, uncached and unthrottled (the CLI, tests)."""
    return Authenticator(tokens, cache_seconds=0)(header)


class _TokenCache:
    """Tokens found recently, by the hash of their secret; unknown tokens are not cached
    (the throttle answers those)."""

    def __init__(self, seconds: float, clock: Callable[[], float], size: int = 10_000) -> None:
        self.seconds, self.clock, self.size = seconds, clock, size
        self._found: OrderedDict[str, tuple[TokenInfo, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, secret: str, find: Callable[[str], TokenInfo | None]) -> TokenInfo | None:
        if self.seconds <= 0:
            return find(secret)
        key = hashlib.sha256(secret.encode()).hexdigest()
        now = self.clock()
        with self._lock:
            hit = self._found.get(key)
            if hit is not None and hit[1] > now:
                return hit[0]
        token = find(secret)
        if token is not None:
            with self._lock:
                self._found[key] = (token, now + self.seconds)
                self._found.move_to_end(key)
                while len(self._found) > self.size:
                    self._found.popitem(last=False)
        return token


class AuthThrottle:
    """Failed authentications per client, as a token bucket: ``burst`` in a row, then
    ``per_second``. A client out of budget gets 429 with Retry-After before any look-up.
    Per replica and bounded in memory (the least recently seen clients are forgotten)."""

    def __init__(self, burst: int, per_second: float, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.per_second, self.max_clients = burst, per_second, max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # level, when
        self._lock = threading.Lock()

    def _level(self, client: str, now: float) -> float:
        level, when = self._buckets.get(client, (float(self.burst), now))
        return min(float(self.burst), level + (now - when) * self.per_second)

    def check(self, client: str) -> None:
        now = self.clock()
        with self._lock:
            level = self._level(client, now)
        if level < 1:
            wait = math.ceil((1 - level) / self.per_second)
            err = TooManyAuthFailures(f"too many failed authentications from this client; "
                                      f"try again in {wait} s")
            err.retry_after = wait
            raise err

    def failed(self, client: str) -> None:
        now = self.clock()
        with self._lock:
            self._buckets[client] = (self._level(client, now) - 1, now)
            self._buckets.move_to_end(client)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)


__all__ = ["AuthThrottle", "Authenticator", "Caller", "InsufficientScope", "authenticate",
           "authenticated", "client_of"]
