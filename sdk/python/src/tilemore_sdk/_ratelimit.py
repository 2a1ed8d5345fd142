"""The rate-limit headers of the IETF draft (draft-ietf-httpapi-ratelimit-headers), read in
each of the forms its versions used, plus ``Retry-After``:

- ``RateLimit: "default";r=0;t=3`` (with ``RateLimit-Policy: "default";q=10;w=1``), drafts ≥ 8;
- ``RateLimit: limit=10, remaining=0, reset=3``, draft 7;
- ``RateLimit-Limit: 10``, ``RateLimit-Remaining: 0``, ``RateLimit-Reset: 3``, earlier drafts.

``reset`` / ``t`` are seconds from now. Values are bounded: a hostile or broken header can
make the client wait at most ``MAX_WAIT`` seconds."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

MAX_WAIT = 300.0
_PARAM = re.compile(r"(?:^|[;,\s])(r|t|q|w|limit|remaining|reset)\s*=\s*(\d{1,12}(?:\.\d{1,6})?)")


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    text = text.strip()
    if not re.fullmatch(r"\d{1,12}(?:\.\d{1,6})?", text):
        return None
    return float(text)


@dataclass(frozen=True)
class RateLimit:
    limit: float | None = None  # requests (quota) in the window
    remaining: float | None = None  # left in this window
    reset: float | None = None  # seconds until the window resets
    retry_after: float | None = None  # seconds, from Retry-After (an HTTP date is ignored)
    policy: str | None = None  # the raw RateLimit-Policy header

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimit:
        h = {k.lower(): v for k, v in headers.items()}
        params: dict[str, float] = {}
        for name in ("ratelimit", "ratelimit-policy"):
            for key, value in _PARAM.findall(h.get(name, "")[:1024]):
                params.setdefault(key if name == "ratelimit" else f"policy_{key}", float(value))
        limit = params.get("limit", params.get("policy_q", _number(h.get("ratelimit-limit"))))
        if limit is None:
            limit = _number((h.get("ratelimit-policy") or "").split(";")[0]) \
                if h.get("ratelimit-policy") else None
        remaining = params.get("remaining", params.get("r", _number(h.get("ratelimit-remaining"))))
        reset = params.get("reset", params.get("t", _number(h.get("ratelimit-reset"))))
        return cls(limit, remaining, reset, _number(h.get("retry-after")),
                   h.get("ratelimit-policy"))

    def wait_seconds(self) -> float | None:
        """How long to wait before the next request: Retry-After, else the window's reset
        when nothing remains in it; None when the headers say nothing."""
        if self.retry_after is not None:
            return min(self.retry_after, MAX_WAIT)
        if self.remaining is not None and self.remaining <= 0 and self.reset is not None:
            return min(self.reset, MAX_WAIT)
        return None
