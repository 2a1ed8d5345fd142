"""An HTTP proxy in front of moto's S3 server that refuses deletes, as a bucket whose policy
denies s3:DeleteObject does: either per key inside a DeleteObjects answer (``mode="keys"``)
or the whole request with 403 AccessDenied (``mode="request"``). Everything else passes."""

from __future__ import annotations

import http.client
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal


class RefusingS3Proxy:
    def __init__(self, target_port: int, mode: Literal["keys", "request"] = "keys") -> None:
        self.target_port, self.mode = target_port, mode
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.command == "DELETE" or (self.command == "POST"
                                                 and "delete" in self.path.split("?", 1)[-1]):
                    proxy.refused += 1
                    return proxy._refuse(self, body)
                conn = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body or None, headers)
                reply = conn.getresponse()
                data = reply.read()
                self.send_response(reply.status)
                for k, v in reply.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _refuse(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        if self.mode == "request":
            xml = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code>"
                   b"<Message>Access Denied</Message></Error>")
            status = 403
        else:
            keys = re.findall(rb"<Key>([^<]+)</Key>", body)
            xml = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><DeleteResult>" + b"".join(
                b"<Error><Key>" + k + b"</Key><Code>AccessDenied</Code>"
                b"<Message>Access Denied</Message></Error>" for k in keys) + b"</DeleteResult>")
            status = 200
        handler.send_response(status)
        handler.send_header("Content-Type", "application/xml")
        handler.send_header("Content-Length", str(len(xml)))
        handler.end_headers()
        handler.wfile.write(xml)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
