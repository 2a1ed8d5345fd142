"""Where a webhook may go (every private range refused, an allowed network let through, the
address pinned), the backoff's shape, and the one signing scheme: what the service signs, both
SDKs' verifiers accept, and refuse once forged or replayed (the Node one through ``node``)."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from tilemore_sdk.webhooks import WebhookSignatureError, verify

from tilemore.billing import payments
from tilemore.signing import sign
from tilemore.webhooks import sender
from tilemore.webhooks.addresses import (
    InvalidWebhookUrl,
    PrivateAddress,
    check,
    networks,
    parse_url,
)
from tilemore.webhooks.deliverer import backoff

NODE_SDK = Path(__file__).parents[2] / "sdk" / "node"


def resolver(*addresses: str):
    return lambda host, port: list(addresses)


@pytest.mark.parametrize("address", [
    "10.0.0.1", "172.16.5.4", "192.168.1.1", "127.0.0.1", "0.0.0.0", "169.254.169.254",
    "100.64.0.1", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "fe80::1", "fc00::1",
    "::ffff:10.0.0.1", "::ffff:127.0.0.1", "192.0.2.1", "198.18.0.1",
])
def test_private_and_reserved_addresses_are_refused(address):
    with pytest.raises(PrivateAddress):
        check("https://hooks.example.com/x", [], resolver(address))


def test_one_inside_address_among_public_ones_is_refused_and_public_ones_are_pinned():
    with pytest.raises(PrivateAddress):
        check("https://h.example.com/", [], resolver("93.184.215.14", "10.0.0.1"))
    target = check("https://h.example.com:8443/in?x=1", [], resolver("93.184.215.14"))
    assert (target.host, target.port, target.path, target.address) == (
        "h.example.com", 8443, "/in?x=1", "93.184.215.14")
    assert check("http://[2606:4700::1111]/", [], resolver()).address == "2606:4700::1111"


def test_an_allowed_network_lets_its_addresses_through_and_no_others():
    allow = networks(["127.0.0.0/8"])
    assert check("http://127.0.0.1:9/", allow).address == "127.0.0.1"  # a literal: no DNS
    with pytest.raises(PrivateAddress):
        check("http://10.0.0.1/", allow)
    with pytest.raises(PrivateAddress):
        check("http://[::1]/", allow)  # another family


@pytest.mark.parametrize("url", [
    "", "x" * 3000, "http//a", "ftp://a.example/", "file:///etc/passwd", "http://",
    "http://u@a.example/", "http://a.example:0x50/", "http://a.example/#f",
    "http://a.example/ x", "http://ä.example/", "http://a.example/\n", None, 5,
])
def test_malformed_urls_are_refused(url):
    with pytest.raises(InvalidWebhookUrl) as refused:
        parse_url(url)
    assert refused.value.code == "invalid_webhook_url"


def test_backoff_doubles_up_to_its_cap_with_some_jitter():
    pauses = [backoff(n, 10, 3600, jitter=0) for n in range(1, 12)]
    assert pauses[:4] == [10, 20, 40, 80] and pauses[-1] == 3600
    assert all(8 <= backoff(1, 10, 3600) <= 12 for _ in range(50))
    assert backoff(10_000, 10, 3600, jitter=0) == 3600  # no overflow


def test_the_service_and_payments_share_one_signing_scheme():
    assert payments.sign is sign  # one function, shared
    body = b'{"id":"evt_1"}'
    header = sign(body, ["whsec_new", "whsec_old"], timestamp=1_800_000_000)
    for secret in ("whsec_new", "whsec_old"):
        assert verify(body, header, secret, now=1_800_000_010) == 1_800_000_000
    assert payments.verify(body, header, ["whsec_old"], 300, now=1_800_000_010)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_node_sdk_verifies_what_the_service_signs():
    body = '{"id":"evt_2","type":"thread.done","data":{"name":"caf\u00e9"}}'
    t = 1_800_000_000
    header = sign(body.encode(), ["whsec_new", "whsec_old"], timestamp=t)
    script = """
const { webhooks } = require(process.argv[1]);
const [body, header, t] = [process.argv[2], process.argv[3], Number(process.argv[4])];
const out = {};
const attempt = (name, f) => { try { out[name] = f(); } catch (e) { out[name] = e.code; } };
attempt('new', () => webhooks.constructEvent(body, header, 'whsec_new', { now: t + 5 }).id);
attempt('old', () => webhooks.verify(body, header, 'whsec_old', { now: t + 5 }));
const forged = body.replace('done', 'fail');
attempt('forged', () => webhooks.verify(forged, header, 'whsec_new', { now: t }));
attempt('wrong', () => webhooks.verify(body, header, 'whsec_other', { now: t }));
attempt('replayed', () => webhooks.verify(body, header, 'whsec_new', { now: t + 301 }));
console.log(JSON.stringify(out));
"""
    run = subprocess.run(["node", "-e", script, str(NODE_SDK / "index.cjs"), body, header,
                          str(t)], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(run.stdout) == {"new": "evt_2", "old": t, "forged": "invalid_signature",
                                      "wrong": "invalid_signature",
                                      "replayed": "stale_signature"}


def test_the_python_sdk_refuses_forged_and_replayed_deliveries():
    body, t = b'{"id":"evt_3"}', 1_800_000_000
    header = sign(body, "whsec_a", timestamp=t)
    for payload, secret, now, code in ((body + b" ", "whsec_a", t, "invalid_signature"),
                                       (body, "whsec_b", t, "invalid_signature"),
                                       (body, "whsec_a", t + 301, "stale_signature"),
                                       (body, "whsec_a", t - 301, "stale_signature")):
        with pytest.raises(WebhookSignatureError) as refused:
            verify(payload, header, secret, now=now)
        assert refused.value.code == code


@pytest.fixture(scope="module")
def tls_receiver(tmp_path_factory):
    """An https receiver on 127.0.0.1 whose certificate names hooks.example.test only; it
    keeps each request's Host header and each handshake's SNI name."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    root = tmp_path_factory.mktemp("tls")
    key, cert = root / "key.pem", root / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=hooks.example.test",
                    "-addext", "subjectAltName=DNS:hooks.example.test"],
                   check=True, capture_output=True, timeout=60)
    seen: list[str] = []  # Host headers

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers["Host"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    trust = ssl.create_default_context(cafile=str(cert))
    yield server.server_address[1], trust, seen, names
    server.shutdown()
    server.server_close()


def test_tls_goes_to_the_pinned_address_and_checks_the_name(tls_receiver):
    port, trust, seen, names = tls_receiver
    target = check(f"https://hooks.example.test:{port}/in", networks(["127.0.0.0/8"]),
                   resolver("127.0.0.1"))  # the name resolves only through this resolver
    outcome = sender.send(target, b"{}", ["s"], {}, 5.0, trust)
    assert outcome.delivered and outcome.status_code == 204
    assert seen[-1] == f"hooks.example.test:{port}" and names[-1] == "hooks.example.test"
    # The same address under another name: its certificate does not say that name.
    other = replace(target, host="inside.example.test", address="127.0.0.1")
    refused = sender.send(other, b"{}", ["s"], {}, 5.0, trust)
    assert refused.status_code is None and "certificate" in refused.error.lower()
