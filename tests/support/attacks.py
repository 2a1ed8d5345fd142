"""The attacks of issue 13, as request builders and raw clients, shared by the attack test
(``tests/api/test_attacks.py``) and the hostile-load benchmark (``benchmarks/hostile_load.py``).

Each builder returns bytes and headers to send; nothing here needs the service's internals.
The raw clients speak HTTP/1.1 over a plain socket, so a body can be sent slowly, half-sent
or from another loopback address (the failed-authentication throttle is per client address).
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import socket
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# -- (1) parameters that are huge numbers -------------------------------------------------------

HUGE_NUMBER_ADJUSTMENTS: dict[str, dict[str, Any]] = {
    # Fraction('1e10000000') used to hold the GIL for seconds.
    "aspect_exponent": {"shifter": {"crop": {"aspect": "1e10000000"}}},
    "aspect_ratio_exponents": {"shifter": {"crop": {"aspect": "1e999999:1e-999999"}}},
    "aspect_many_digits": {"shifter": {"crop": {"aspect": "9" * 31}}},
    "crop_box_huge": {"shifter": {"crop": {"x": 10**20, "y": 0, "width": 10**20,
                                           "height": 10**20}}},
    "resize_huge": {"shifter": {"resize": {"width": 10**20}}},
    "quality_float": {"encoder": {"quality": 1e308}},
}

# Numbers too long for the JSON parser itself (written out: json.dumps cannot make these).
HUGE_NUMBER_BODIES: dict[str, bytes] = {
    "width_5000_digits": b'{"adjustments": {"shifter": {"resize": {"width": '
                         + b"9" * 5000 + b"}}}}",
    "width_exponent": b'{"adjustments": {"shifter": {"resize": {"width": 1e10000000}}}}',
    "quality_inf": b'{"adjustments": {"encoder": {"quality": 1e999}}}',
}


def huge_number_envelopes(pipeline: str = "thumbnail") -> dict[str, bytes]:
    """Every huge-number attack as a JSON envelope's bytes."""
    out = {name: json.dumps({"adjustments": adj, "pipeline": pipeline}).encode()
           for name, adj in HUGE_NUMBER_ADJUSTMENTS.items()}
    for name, body in HUGE_NUMBER_BODIES.items():
        out[name] = body[:-1] + f', "pipeline": "{pipeline}"}}'.encode()
    return out


# -- (2) a decompression bomb -------------------------------------------------------------------


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


@functools.lru_cache(maxsize=4)
def png_bomb(width: int = 12_000, height: int = 12_000, bit_depth: int = 16) -> bytes:
    """A complete, valid greyscale PNG of ``width``×``height`` black pixels: every row a
    filter byte and zeros, deflated as it is made (never whole in memory). 12000×12000 at
    16 bits is about 280 KiB on disk and 288 MB of raw rows (Pillow: 1.65 GB to decode)."""
    row = b"\x00" * (1 + width * bit_depth // 8)
    packer = zlib.compressobj(9)
    parts = [packer.compress(row) for _ in range(height)]
    parts.append(packer.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts))
            + _chunk(b"IEND", b""))


# -- (6) large envelopes and meta ---------------------------------------------------------------


def big_envelope(size: int = 100_000, pipeline: str = "thumbnail") -> bytes:
    """An envelope of about ``size`` bytes, its bulk in an adjustment string."""
    pad = "x" * size
    return json.dumps({"adjustments": {"shifter": {"crop": {"aspect": pad}}},
                       "pipeline": pipeline}).encode()


def big_meta(size: int = 100_000, pipeline: str = "thumbnail") -> bytes:
    """An envelope whose ``meta`` is about ``size`` bytes of compact JSON."""
    return json.dumps({"adjustments": {}, "pipeline": pipeline,
                       "meta": {"note": "m" * size}}).encode()


# -- (7) an output larger than any input may be -------------------------------------------------


def huge_output(side: int = 60_000, pipeline: str = "thumbnail") -> dict[str, Any]:
    return {"adjustments": {"shifter": {"resize": {"width": side, "height": side,
                                                   "mode": "force"}}},
            "pipeline": pipeline}


# -- multipart --------------------------------------------------------------------------------


def multipart(envelope: dict | bytes, image: bytes) -> tuple[bytes, str]:
    """The envelope part then the image part, and the Content-Type naming the boundary."""
    boundary = uuid.uuid4().hex
    env = envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode()
    parts = [(b'Content-Disposition: form-data; name="envelope"\r\n'
              b"Content-Type: application/json\r\n\r\n", env),
             (b'Content-Disposition: form-data; name="image"; filename="in.png"\r\n'
              b"Content-Type: application/octet-stream\r\n\r\n", image)]
    out = b"".join(b"--" + boundary.encode() + b"\r\n" + head + data + b"\r\n"
                   for head, data in parts)
    return out + b"--" + boundary.encode() + b"--\r\n", f"multipart/form-data; boundary={boundary}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def auth(token: str, domain: str) -> dict[str, str]:
    return {"Authorization": f"Token {token} Domain {domain}"}


# -- raw HTTP ---------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float  # from the first byte sent to the whole answer read

    @property
    def code(self) -> str | None:
        try:
            return json.loads(self.body).get("error", {}).get("code")
        except ValueError:
            return None


def send(url: str, method: str, path: str, body: bytes = b"",
         headers: dict[str, str] | None = None, source: str | None = None,
         timeout: float = 30) -> Answer:
    """One request on a fresh connection, optionally from another loopback address."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    started = time.monotonic()
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data,
                      time.monotonic() - started)
    finally:
        conn.close()


class RawUpload:
    """A POST whose ``Content-Length`` promises more than is sent at once: the head goes out
    now, the body as the caller sends it (slowly, or never)."""

    def __init__(self, url: str, path: str, content_length: int, headers: dict[str, str],
                 timeout: float = 30) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self.started = time.monotonic()
        head = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}",
                f"Content-Length: {content_length}",
                *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        self.sock.sendall("\r\n".join(head).encode("latin-1"))
        self._answered = threading.Event()

    def send(self, data: bytes) -> bool:
        """False once the server has answered or closed the connection."""
        if self._answered.is_set():
            return False
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def drip(self, data: bytes, bytes_per_second: float, step: float = 0.25) -> threading.Thread:
        """Send ``data`` at about ``bytes_per_second`` on a thread, until the answer."""
        size = max(1, int(bytes_per_second * step))

        def run() -> None:
            for i in range(0, len(data), size):
                if not self.send(data[i:i + size]):
                    return
                time.sleep(step)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def answer(self) -> Answer | None:
        """The server's answer (None if it closed without one)."""
        try:
            resp = http.client.HTTPResponse(self.sock)
            resp.begin()
            self._answered.set()
            body = resp.read()
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body,
                          time.monotonic() - self.started)
        except (OSError, http.client.HTTPException):
            return None
        finally:
            self._answered.set()

    def close(self) -> None:
        self.sock.close()


def slow_upload(url: str, headers: dict[str, str], image: bytes,
                envelope: dict | bytes, bytes_per_second: float = 1024) -> Answer | None:
    """(8) A submission whose body arrives at ``bytes_per_second``: the server's answer."""
    body, ctype = multipart(envelope, image)
    upload = RawUpload(url, f"/attack/submitted/{sha256(image)}/", len(body),
                       {**headers, "Content-Type": ctype})
    try:
        upload.drip(body, bytes_per_second)
        return upload.answer()
    finally:
        upload.close()


def half_sent(url: str, headers: dict[str, str], image: bytes, envelope: dict | bytes,
              count: int) -> Iterator[RawUpload]:
    """(8) ``count`` submissions that send their head and a little body, then nothing."""
    body, ctype = multipart(envelope, image)
    for _ in range(count):
        upload = RawUpload(url, f"/attack/submitted/{sha256(image)}/", len(body),
                           {**headers, "Content-Type": ctype})
        upload.send(body[: min(200, len(body) // 2)])
        yield upload


# -- health, polled throughout ------------------------------------------------------------------


class HealthPoller:
    """GET /healthz on a fresh connection every ``every`` seconds on a thread; records each
    answer's latency (a failure counts as infinitely slow)."""

    def __init__(self, url: str, every: float = 0.05) -> None:
        self.url, self.every = url, every
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                answer = send(self.url, "GET", "/healthz", timeout=5)
                ok = answer.status == 200
                self.latencies.append(answer.seconds if ok else float("inf"))
            except OSError:
                self.latencies.append(float("inf"))
            self._stop.wait(self.every)

    @property
    def worst(self) -> float:
        return max(self.latencies, default=0.0)
