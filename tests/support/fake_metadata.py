"""A cloud metadata service on loopback that announces preemptions on demand, for AWS
(IMDSv2 tokens required), GCP and Azure. Paths may start with a node's name
(``/<node>/latest/...``), so that nodes sharing this machine get their own notices."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "fake-imds-token"


class FakeMetadata:
    def __init__(self) -> None:
        self.preempted: dict[str, datetime] = {}  # node ("" for all) → when it goes
        self.requests = 0
        meta = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_PUT(self) -> None:  # noqa: N802
                if self.path.endswith("/latest/api/token"):
                    self._send(200, TOKEN)
                else:
                    self._send(404, "")

            def do_GET(self) -> None:  # noqa: N802
                meta.requests += 1
                node, _, rest = self.path.lstrip("/").partition("/")
                if node in ("latest", "computeMetadata", "metadata"):
                    node, rest = "", self.path.lstrip("/")
                when = meta.preempted.get(node) or meta.preempted.get("*")
                if rest.startswith("latest/meta-data/spot/instance-action"):
                    if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                        return self._send(401, "")
                    if when is None:
                        return self._send(404, "")
                    return self._send(200, json.dumps({
                        "action": "terminate", "time": when.strftime("%Y-%m-%dT%H:%M:%SZ")}))
                if rest.startswith("computeMetadata/v1/instance/preempted"):
                    if self.headers.get("Metadata-Flavor") != "Google":
                        return self._send(403, "")
                    return self._send(200, "TRUE" if when else "FALSE")
                if rest.startswith("metadata/scheduledevents"):
                    if self.headers.get("Metadata") != "true":
                        return self._send(400, "")
                    events = [] if when is None else [{
                        "EventId": "E1", "EventType": "Preempt", "ResourceType": "VirtualMachine",
                        "NotBefore": when.strftime("%a, %d %b %Y %H:%M:%S GMT")}]
                    return self._send(200, json.dumps({"DocumentIncarnation": 1,
                                                       "Events": events}))
                self._send(404, "")

            def _send(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def preempt(self, node: str = "*", seconds: int = 120) -> datetime:
        when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds)
        self.preempted[node] = when
        return when

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
