"""One attempt: POST the signed body to the pinned address, read a little of the answer.

The connection goes to the address :func:`~tilemore.webhooks.addresses.check` resolved,
while the ``Host`` header (and, over TLS, the SNI name and the certificate check) keep the
URL's name. Redirects are not followed: a 3xx is a failed attempt like any other non-2xx.
The answer's body is read to at most ``READ_LIMIT`` bytes, and every step has a timeout.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass

from tilemore import __version__
from tilemore.signing import HEADER, sign
from tilemore.webhooks.addresses import Target

READ_LIMIT = 4096  # bytes of a receiver's answer kept (as the attempt's error, if any)


@dataclass(frozen=True)
class Outcome:
    status_code: int | None  # None: no HTTP answer (refused, timed out, TLS failed)
    error: str | None  # None: delivered (a 2xx)
    seconds: float

    @property
    def delivered(self) -> bool:
        return self.error is None


class _Pinned(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float,
                 context: ssl.SSLContext | None = None) -> None:
        super().__init__(target.host, target.port, timeout=timeout,
                         context=context or ssl.create_default_context())
        self._address = target.address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def send(target: Target, payload: bytes, secrets: list[str], headers: dict[str, str],
         timeout: float, context: ssl.SSLContext | None = None) -> Outcome:
    """POST ``payload`` signed with every secret in ``secrets``. ``context``: TLS's
    (default: the system's certificate authorities, the name checked)."""
    started = time.monotonic()
    conn: http.client.HTTPConnection = (
        _PinnedTLS(target, timeout, context) if target.scheme == "https"
        else _Pinned(target, timeout))
    try:
        conn.request("POST", target.path, body=payload, headers={
            "Content-Type": "application/json", "User-Agent": f"Tilemore-Webhooks/{__version__}",
            HEADER: sign(payload, secrets), **headers})
        answer = conn.getresponse()
        status = answer.status
        body = b""  # at most READ_LIMIT bytes, and not for longer than the attempt's time
        while len(body) < READ_LIMIT and time.monotonic() - started < 2 * timeout:
            chunk = answer.read1(READ_LIMIT - len(body))
            if not chunk:
                break
            body += chunk
    except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout, TLS
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:500],
                       time.monotonic() - started)
    finally:
        conn.close()
    seconds = time.monotonic() - started
    if 200 <= status < 300:
        return Outcome(status, None, seconds)
    text = body.decode("utf-8", "replace")[:200]
    if 300 <= status < 400:
        return Outcome(status, f"redirect not followed ({status}); give the final URL", seconds)
    return Outcome(status, f"HTTP {status}: {text}" if text else f"HTTP {status}", seconds)
