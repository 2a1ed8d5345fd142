"""Where a webhook may go: an http(s) URL whose host resolves to public addresses only.

A URL is checked when it is registered and again before every attempt, and the attempt
connects to the address this check resolved (:mod:`tilemore.webhooks.sender`), never to a
second resolution: a name that answers a public address to the check and a private one to
the connection (DNS rebinding) cannot reach inside. Private, loopback, link-local, shared,
multicast and reserved ranges are refused unless a setting lists them
(``webhook_allowed_networks``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import urlsplit

from tilemore.errors import TilemoreError

MAX_URL = 2048
RESOLVE_SECONDS = 5.0
IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]  # (host, port) → addresses, as text

_resolving = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")


class InvalidWebhookUrl(TilemoreError):
    code = "invalid_webhook_url"
    status = 422


class PrivateAddress(InvalidWebhookUrl):
    code = "webhook_url_private"


class Unresolvable(InvalidWebhookUrl):
    code = "webhook_url_unresolvable"


@dataclass(frozen=True)
class Target:
    """A checked URL, and the address its attempt connects to."""

    url: str
    scheme: str
    host: str  # the name, for the Host header and TLS's SNI and certificate check
    port: int
    path: str  # path and query, as sent
    address: str  # the pinned IP


def parse_url(url: object) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an http(s) URL, bounded and strict."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise InvalidWebhookUrl(f"url: an http:// or https:// URL of at most {MAX_URL} "
                                "characters")
    if not url.isascii() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise InvalidWebhookUrl("url: ASCII without spaces or control characters "
                                "(punycode a name first)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidWebhookUrl(f"url: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidWebhookUrl("url: the scheme must be http or https")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhookUrl("url: no user or password in the URL (the signature is "
                                "the credential)")
    host = (parts.hostname or "").rstrip(".")
    if not host or len(host) > 253:
        raise InvalidWebhookUrl("url: a host name or address is required")
    if parts.fragment:
        raise InvalidWebhookUrl("url: no #fragment")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, host, port or (443 if scheme == "https" else 80), path


def networks(allowed: Sequence[str]) -> list[Network]:
    return [ipaddress.ip_network(n, strict=False) for n in allowed]


def is_public(ip: IP) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return is_public(ip.ipv4_mapped)  # ::ffff:10.0.0.1 is 10.0.0.1
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def allowed(ip: IP, allow: Sequence[Network]) -> bool:
    return is_public(ip) or any(ip.version == n.version and ip in n for n in allow)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system's resolver gives, within ``RESOLVE_SECONDS``."""
    future = _resolving.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=RESOLVE_SECONDS)
    except FutureTimeout:
        raise Unresolvable(f"url: {host} did not resolve within {RESOLVE_SECONDS:g} s"
                           ) from None
    except (OSError, UnicodeError) as exc:
        raise Unresolvable(f"url: {host} does not resolve ({exc})") from None
    return [str(info[4][0]) for info in infos]


def check(url: object, allow: Sequence[Network], resolve: Resolver = system_resolver
          ) -> Target:
    """The URL checked and its address pinned: every address its host resolves to must be
    public or allowed (a name with one private address among public ones is refused: the
    connection might have gone to any of them)."""
    scheme, host, port, path = parse_url(url)
    try:
        literal: IP | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    found = [str(literal)] if literal is not None else resolve(host, port)
    ips: list[IP] = []
    for text in found[:32]:
        try:
            ips.append(ipaddress.ip_address(text.split("%", 1)[0]))  # no IPv6 zone
        except ValueError:
            continue
    if not ips:
        raise Unresolvable(f"url: {host} has no address")
    refused = [ip for ip in ips if not allowed(ip, allow)]
    if refused:
        raise PrivateAddress(f"url: {host} is at {refused[0]}, a private, loopback, "
                             "link-local or reserved address; webhooks go to public "
                             "addresses only")
    return Target(str(url), scheme, host, port, path, str(ips[0]))
