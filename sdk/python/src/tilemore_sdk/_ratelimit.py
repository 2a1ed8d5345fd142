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
_PARAM = re.compile(r"(?:^|[;,\s])(r|t|limit|remaining|reset)\s*=\s*(\d{1,12}(?:\.\d{1,6})?)")


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
        flat: dict[str, float] = {}  # draft 7's keys, each once
        states: list[tuple[float, float | None]] = []  # drafts ≥ 8: (r, t) per policy
        for item in h.get("ratelimit", "")[:1024].split(","):
            found = dict((k, float(v)) for k, v in _PARAM.findall(item))
            if "r" in found:
                states.append((found["r"], found.get("t")))
            for key in ("limit", "remaining", "reset"):
                if key in found:
                    flat.setdefault(key, found[key])
        remaining = flat.get("remaining", _number(h.get("ratelimit-remaining")))
        reset = flat.get("reset", _number(h.get("ratelimit-reset")))
        if states:  # several policies (a domain's, a sub-account's): the tightest counts
            remaining = min(r for r, _ in states)
            resets = [t for r, t in states if r == remaining and t is not None]
            reset = max(resets) if resets else None
        policy = h.get("ratelimit-policy")
        quotas = [float(q) for q in re.findall(r"(?:^|;)\s*q=(\d{1,12})", (policy or "")[:1024])]
        limit = flat.get("limit", min(quotas) if quotas else _number(h.get("ratelimit-limit")))
        if limit is None and policy:
            limit = _number(policy.split(";")[0])
        return cls(limit, remaining, reset, _number(h.get("retry-after")), policy)

    def wait_seconds(self) -> float | None:
        """How long to wait before the next request: Retry-After, else the window's reset
        when nothing remains in it; None when the headers say nothing."""
        if self.retry_after is not None:
            return min(self.retry_after, MAX_WAIT)
        if self.remaining is not None and self.remaining <= 0 and self.reset is not None:
            return min(self.reset, MAX_WAIT)
        return None
