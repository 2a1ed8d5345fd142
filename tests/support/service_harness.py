"""A real Tilemore HTTP service in this process, without Ray: uvicorn on a free port, the
FastAPI app, SQLite (or PostgreSQL: ``database_url=``) and local blobs in a temporary folder,
the conductor on threads."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import uvicorn

from tilemore.api.app import create_app
from tilemore.assembly import open_parts
from tilemore.engine import LocalBackend
from tilemore.engine.backend import Backend
from tilemore.lifecycle import Collector
from tilemore.metrics import Metrics
from tilemore.ports import free_port
from tilemore.settings import Settings


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        try:
            return self.json().get("error", {}).get("code")
        except ValueError:
            return None


def http(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 60) -> Reply:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Reply(resp.status, _lower(resp.headers), resp.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, _lower(exc.headers), exc.read())


def multipart(envelope: dict | bytes, image: bytes | None, swap: bool = False
              ) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    env = envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode()
    parts = [(b'Content-Disposition: form-data; name="envelope"\r\n'
              b"Content-Type: application/json\r\n\r\n", env)]
    if image is not None:
        parts.append((b'Content-Disposition: form-data; name="image"; filename="in.jpg"\r\n'
                      b"Content-Type: application/octet-stream\r\n\r\n", image))
    if swap:
        parts.reverse()
    out = b"".join(b"--" + boundary.encode() + b"\r\n" + head + data + b"\r\n"
                   for head, data in parts)
    return out + b"--" + boundary.encode() + b"--\r\n", f"multipart/form-data; boundary={boundary}"


class Service:
    def __init__(self, root: Path, credits: str = "1000",
                 backend: Callable[[Settings], Backend] = LocalBackend,
                 recorder: Metrics | None = None, **settings: Any) -> None:
        """``backend`` makes the operators' backend from the settings: threads in this
        process by default, or ``RayBackend`` for the multi-node tests. ``recorder`` gets
        the conductor's metrics (default: Ray's metrics where Ray runs, else none)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Links name the bound address (never the request's Host): the port is in settings.
        self.settings = Settings(data_dir=root, checkpoint_tasks=True, port=self.port,
                                 **settings)
        self.parts = open_parts(self.settings, metrics=recorder)
        self.store, self.blobs, self.catalog = (self.parts.store, self.parts.blobs,
                                                self.parts.catalog)
        self.ledger, self.billing, self.errors = (self.parts.ledger, self.parts.billing,
                                                  self.parts.errors)
        self.lifecycle = self.parts.lifecycle
        self.collector = Collector(self.lifecycle)  # passes run when a test asks
        self.backend = backend(self.settings)
        self.conductor = self.parts.start_conductor(self.backend)
        self.tracer = self.parts.tracer
        self.api = self.parts.api()
        self.store.create_domain("acme")
        self.store.create_domain("rival")
        for domain in ("acme", "rival"):
            self.billing.order(domain, "welcome", Decimal(credits))
        self.token_id, self.token = self.store.issue_token("acme")
        _, self.rival_token = self.store.issue_token("rival")
        config = uvicorn.Config(create_app(self.api), host="127.0.0.1", port=self.port,
                                log_level="warning", limit_concurrency=1000, backlog=2048)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def auth(self, token: str | None = None, domain: str = "acme") -> dict[str, str]:
        return {"Authorization": f"Token {token or self.token} Domain {domain}"}

    def submit(self, image: bytes, envelope: dict | None = None, meta: str = "shop/v1",
               sha: str | None = None, headers: dict[str, str] | None = None,
               upload: bool = True) -> Reply:
        """POST the envelope, with the image as multipart when ``upload``, else as JSON."""
        envelope = envelope if envelope is not None else {"adjustments": {}}
        sha = sha or hashlib.sha256(image).hexdigest()
        if not upload:
            body, ctype = json.dumps(envelope).encode(), "application/json"
        else:
            body, ctype = multipart(envelope, image)
        return http("POST", f"{self.url}/{meta}/submitted/{sha}/", body,
                    {"Content-Type": ctype, **(headers or self.auth())})

    def wait(self, thread_id: str, timeout: float = 60,
             headers: dict[str, str] | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            body = http("GET", f"{self.url}/threads/{thread_id}",
                        headers=headers or self.auth()).json()
            if body["status"] != "processing" or time.monotonic() > deadline:
                return body
            time.sleep(0.05)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.parts.close()  # threads in flight finish their step before the stores go


def _lower(headers) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}
