"""``Authorization: Token <token> Domain <domain>``: who is calling, for which domain."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tilemore.errors import Forbidden, Unauthorized
from tilemore.store import TokenRepository

_HEADER = re.compile(r"^Token\s+(\S+)\s+Domain\s+(\S+)\s*$")


@dataclass(frozen=True)
class Caller:
    domain: str
    account: str  # the domain itself, or one of its sub-accounts (``domain/name``)

    @property
    def is_subaccount(self) -> bool:
        return self.account != self.domain


def authenticate(tokens: TokenRepository, header: str | None) -> Caller:
    """Who is calling, or an error that says what is wrong with the credentials."""
    if not header:
        raise Unauthorized("send Authorization: Token <token> Domain <domain>",
                           code="missing_credentials")
    match = _HEADER.match(header)
    if match is None:
        raise Unauthorized("the Authorization header must read 'Token <token> Domain <domain>'",
                           code="malformed_credentials")
    secret, domain = match.groups()
    token = tokens.find_token(secret)
    if token is None:
        raise Unauthorized("unknown token", code="invalid_token")
    if token.revoked_at is not None:
        raise Unauthorized("this token was revoked", code="revoked_token")
    if token.domain != domain:
        raise Forbidden(f"this token does not belong to domain '{domain}'", code="wrong_domain")
    return Caller(domain, token.account or domain)
