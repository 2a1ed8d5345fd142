"""A real HTTP server on loopback that answers what a test scripts, for the answers the
service under test cannot be made to give on demand (a result past its retention, a rate
limit's headers, the ``x-request-id`` Serve adds)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# path -> function(hits so far) -> (status, headers, body)
Script = dict[str, Callable[[int], tuple[int, dict[str, str], object]]]


class ScriptedServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.hits: dict[str, list[float]] = {}
        self.requests: list[tuple[str, dict[str, str], bytes]] = []  # path, headers, body
        self.targets: list[str] = []  # each request's path with its query
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                server.targets.append(self.path)
                server.requests.append((path, {k.lower(): v for k, v in self.headers.items()},
                                        body))
                times = server.hits.setdefault(path, [])
                times.append(time.monotonic())
                answer = server.script.get(path)
                status, headers, body = answer(len(times)) if answer else (404, {}, {})
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_any

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
