"""Webhooks end to end over real HTTP, on SQLite and PostgreSQL: endpoints registered through
the API, events from the conductor written to the outbox, a deliverer sending them to a real
receiver on this machine (loopback is allowed here by ``webhook_allowed_networks``), and the
receiver checking them with the SDK's verifier. Short backoff and retry window settings, so
that outages and giving up take seconds."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.backends import NAMES, Backend
from support.images import encode, noisy, photo
from support.service_harness import Service, free_port, http
from tilemore_sdk.webhooks import WebhookSignatureError, construct_event, verify

from tilemore.webhooks import Deliverer, WebhookListener
from tilemore.webhooks.addresses import Unresolvable, check, system_resolver

BROKEN = Path(__file__).parents[1] / "data" / "broken.yaml"
ENV = {"output_format": "png", "adjustments": {"master": {"algorithm": "bilateral"}}}
WINDOW = 10.0  # webhook_retry_seconds here: long enough for a loaded machine to run threads


class Receiver:
    """A real HTTP receiver: each path answers as ``modes`` says (``ok``, ``500``, or
    ``redirect:<url>``), and every request is kept."""

    def __init__(self, port: int = 0) -> None:
        self.got: list[tuple[str, dict[str, str], bytes]] = []
        self.modes: dict[str, str] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.got.append((self.path, dict(self.headers), body))
                mode = outer.modes.get(self.path, "ok")
                if mode.startswith("redirect:"):
                    self.send_response(302)
                    self.send_header("Location", mode.removeprefix("redirect:"))
                elif mode == "500":
                    self.send_response(500)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for p, h, b in self.got if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module", params=NAMES)
def svc(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"webhooks-{request.param}")
    db = Backend.of(request, root / "db")
    s = Service(root, database_url=db.url, pipeline_paths=[BROKEN],
                webhook_allowed_networks=["127.0.0.0/8"], webhook_retry_seconds=WINDOW,
                webhook_backoff_seconds=0.1, webhook_backoff_max_seconds=0.4,
                webhook_poll_seconds=0.05, webhook_timeout_seconds=2.0,
                webhook_max_endpoints=12)
    s.resolved = {}  # host → address, for names this test makes up (else the system's)
    s.api.webhook_resolve = s.resolve = lambda host, port: [s.resolved.get(host, "127.0.0.1")]
    s.conductor.events.add(WebhookListener(s.store, s.billing, s.settings.base_url,
                                           cache_seconds=0))
    s.deliverer = Deliverer(s.store, s.settings.webhooks, resolve=lambda h, p: s.resolve(h, p))
    s.deliverer.start()
    s.receiver = Receiver()
    s.h = {**s.auth(), "Content-Type": "application/json"}
    yield s
    s.deliverer.stop()
    s.receiver.close()
    s.close()
    db.close()


def register(svc, url: str, events=("thread.done", "thread.failed"), **more):
    return http("POST", f"{svc.url}/webhooks/endpoints",
                json.dumps({"url": url, "events": list(events), **more}).encode(), svc.h)


def run_thread(svc, seed: int, pipeline: str | None = None) -> str:
    env = {"adjustments": {}, "pipeline": pipeline} if pipeline else ENV
    image = encode(noisy(photo(40, 30), 10, seed=seed), "PNG")
    sent = svc.submit(image, env)
    assert sent.status == 202, sent.body
    tid = sent.json()["thread_id"]
    svc.wait(tid)
    return tid


def until(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def deliveries(svc, endpoint_id: str, **query) -> list[dict]:
    q = "&".join(f"{k}={v}" for k, v in query.items())
    r = http("GET", f"{svc.url}/webhooks/endpoints/{endpoint_id}/deliveries?{q}",
             headers=svc.h)
    assert r.status == 200, r.body
    return r.json()["deliveries"]


def test_thread_events_arrive_signed_and_the_sdk_verifies_them(svc):
    ep = register(svc, svc.receiver.url("/signed"))
    assert ep.status == 201, ep.body
    ep = ep.json()
    assert ep["secret"].startswith("whsec_") and "secret" not in http(
        "GET", f"{svc.url}/webhooks/endpoints/{ep['id']}", headers=svc.h).json()
    done = run_thread(svc, 1)
    failed = run_thread(svc, 2, pipeline="broken")
    got = until(lambda: len(svc.receiver.at("/signed")) >= 2 and svc.receiver.at("/signed"))
    events = {}
    for headers, body in got:
        event = construct_event(body, headers["Tilemore-Signature"], ep["secret"])
        events[event["type"]] = event
        assert headers["Tilemore-Event-Id"] == event["id"]
    assert events["thread.done"]["data"]["thread_id"] == done
    assert events["thread.done"]["data"]["result"]["url"].endswith("/result.png")
    assert events["thread.failed"]["data"]["thread_id"] == failed
    assert events["thread.failed"]["data"]["error"]["code"]
    listed = until(lambda: [d for d in deliveries(svc, ep["id"]) if d["status"] == "delivered"
                            ] if len(deliveries(svc, ep["id"], status="delivered")) == 2
                   else None)
    assert {d["event"] for d in listed} == {"thread.done", "thread.failed"}
    assert all(d["attempts"][-1]["status_code"] == 200 for d in listed)


def test_forged_and_replayed_signatures_are_rejected_by_the_sdk(svc):
    ep = register(svc, svc.receiver.url("/forged"), ["thread.done"]).json()
    run_thread(svc, 3)
    [(headers, body)] = until(lambda: svc.receiver.at("/forged"))
    header = headers["Tilemore-Signature"]
    t = verify(body, header, ep["secret"])
    with pytest.raises(WebhookSignatureError) as forged:
        verify(body.replace(b"thread.done", b"thread.fail"), header, ep["secret"])
    assert forged.value.code == "invalid_signature"
    with pytest.raises(WebhookSignatureError) as wrong:
        verify(body, header, "whsec_someone-elses")
    assert wrong.value.code == "invalid_signature"
    with pytest.raises(WebhookSignatureError) as replayed:  # the same request, 6 min later
        verify(body, header, ep["secret"], now=t + 360)
    assert replayed.value.code == "stale_signature"


def test_a_receiver_down_for_a_while_gets_every_event_once_back(svc):
    port = free_port()  # nothing listens there yet
    ep = register(svc, f"http://127.0.0.1:{port}/down").json()
    made = [run_thread(svc, 10 + i) for i in range(3)]
    assert until(lambda: all(len(d["attempts"]) >= 2 for d in deliveries(svc, ep["id"]))
                 and len(deliveries(svc, ep["id"])) == 3)
    failed = deliveries(svc, ep["id"])[0]["attempts"][0]
    assert failed["status_code"] is None and "Connection" in failed["error"]
    back = Receiver(port)  # back up, within the retry window
    try:
        got = until(lambda: len({json.loads(b)["id"] for _, b in back.at("/down")}) == 3
                    and back.at("/down"))
        assert {json.loads(b)["data"]["thread_id"] for _, b in got} == set(made)
        assert until(lambda: {d["status"] for d in deliveries(svc, ep["id"])} == {"delivered"})
    finally:
        back.close()


def test_a_receiver_answering_500_forever_is_given_up_and_the_listing_says_so(svc):
    svc.receiver.modes["/broken"] = "500"
    ep = register(svc, svc.receiver.url("/broken"), ["thread.done"]).json()
    run_thread(svc, 20)
    [d] = until(lambda: [d for d in deliveries(svc, ep["id"], status="given_up")],
                timeout=WINDOW + 20)
    assert len(d["attempts"]) >= 3 and d["finished_at"] and d["next_attempt_at"] is None
    assert {a["status_code"] for a in d["attempts"]} == {500}
    assert d["attempts"][-1]["error"].startswith("HTTP 500")
    # Re-sent by hand, once the receiver is fixed: delivered.
    svc.receiver.modes["/broken"] = "ok"
    r = http("POST", f"{svc.url}/webhooks/deliveries/{d['id']}/resend", b"", svc.h)
    assert r.status == 202 and r.json()["status"] == "pending"
    assert until(lambda: http("GET", f"{svc.url}/webhooks/deliveries/{d['id']}",
                              headers=svc.h).json()["status"] == "delivered")
    ids = {json.loads(b)["id"] for _, b in svc.receiver.at("/broken")}
    assert ids == {d["event_id"]}  # the same event, the same id: receivers dedupe on it


def test_a_redirect_is_a_failed_attempt_and_is_not_followed(svc):
    inside = Receiver()  # stands for an address inside: the redirect's target
    try:
        svc.receiver.modes["/moved"] = f"redirect:{inside.url('/admin')}"
        ep = register(svc, svc.receiver.url("/moved"), ["thread.done"]).json()
        run_thread(svc, 30)
        [d] = until(lambda: [d for d in deliveries(svc, ep["id"]) if d["attempts"]])
        assert d["attempts"][0]["status_code"] == 302
        assert "redirect not followed" in d["attempts"][0]["error"]
        time.sleep(0.5)
        assert inside.got == []
    finally:
        inside.close()
        http("DELETE", f"{svc.url}/webhooks/endpoints/{ep['id']}", headers=svc.h)


def test_the_connection_goes_to_the_address_checked_with_the_name_kept(svc):
    """The name resolves once per attempt; the connection goes to that address, with the
    URL's name as Host. A name that resolves to an address inside at delivery time (DNS
    rebinding after registration) is refused there, and nothing is sent."""
    svc.resolved["hooks.example.test"] = "127.0.0.1"
    ep = register(svc, f"http://hooks.example.test:{svc.receiver.port}/pinned",
                  ["thread.done"]).json()
    run_thread(svc, 40)
    [(headers, _)] = until(lambda: svc.receiver.at("/pinned"))
    assert headers["Host"] == f"hooks.example.test:{svc.receiver.port}"
    svc.resolved["hooks.example.test"] = "10.1.2.3"  # rebound, inside
    run_thread(svc, 41)
    refused = until(lambda: [a for d in deliveries(svc, ep["id"]) for a in d["attempts"]
                             if a["error"] and "webhook_url_private" in a["error"]])
    assert refused and refused[0]["status_code"] is None
    assert len(svc.receiver.at("/pinned")) == 1
    http("DELETE", f"{svc.url}/webhooks/endpoints/{ep['id']}", headers=svc.h)


def test_a_rotated_secret_overlaps_then_only_the_new_one_signs(svc):
    ep = register(svc, svc.receiver.url("/rotated"), ["thread.done"]).json()
    old = ep["secret"]
    r = http("POST", f"{svc.url}/webhooks/endpoints/{ep['id']}/rotate",
             json.dumps({"overlap_seconds": 8}).encode(), svc.h)
    assert r.status == 200, r.body
    new = r.json()["secret"]
    assert new != old and r.json()["previous_secret_until"]
    run_thread(svc, 50)
    [(headers, body)] = until(lambda: svc.receiver.at("/rotated"))
    header = headers["Tilemore-Signature"]
    assert header.count("v1=") == 2
    verify(body, header, old)  # a receiver not yet updated
    verify(body, header, new)  # one updated already
    overlap_ends = datetime.fromisoformat(r.json()["previous_secret_until"]).timestamp()
    time.sleep(max(0.0, overlap_ends - time.time()) + 0.2)
    run_thread(svc, 51)
    got = until(lambda: len(svc.receiver.at("/rotated")) == 2 and svc.receiver.at("/rotated"))
    headers, body = got[1]
    assert headers["Tilemore-Signature"].count("v1=") == 1
    verify(body, headers["Tilemore-Signature"], new)
    with pytest.raises(WebhookSignatureError):
        verify(body, headers["Tilemore-Signature"], old)
    http("DELETE", f"{svc.url}/webhooks/endpoints/{ep['id']}", headers=svc.h)


def test_a_low_balance_is_one_event_per_crossing(svc):
    balance = svc.billing.balance("acme").balance
    ep = register(svc, svc.receiver.url("/low"), ["billing.low_balance"],
                  low_balance_threshold=str(balance + 1)).json()  # below from the next charge
    run_thread(svc, 60)
    run_thread(svc, 61)
    got = until(lambda: svc.receiver.at("/low"))
    time.sleep(0.5)
    assert len(svc.receiver.at("/low")) == 1
    event = construct_event(got[0][1], got[0][0]["Tilemore-Signature"], ep["secret"])
    assert event["type"] == "billing.low_balance" and event["data"]["account"] == "acme"
    http("DELETE", f"{svc.url}/webhooks/endpoints/{ep['id']}", headers=svc.h)


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"url": "http://127.0.0.1/x", "events": ["thread.exploded"]}, 422, "unknown_event"),
    ({"url": "http://127.0.0.1/x", "events": []}, 422, "invalid_events"),
    ({"url": "http://127.0.0.1/x", "events": "thread.done"}, 422, "invalid_events"),
    ({"url": "http://127.0.0.1/x", "events": ["thread.done", "thread.done"]}, 422,
     "invalid_events"),
    ({"url": "http//nowhere", "events": ["thread.done"]}, 422, "invalid_webhook_url"),
    ({"url": "ftp://example.com/", "events": ["thread.done"]}, 422, "invalid_webhook_url"),
    ({"url": "http://u:p@example.com/", "events": ["thread.done"]}, 422,
     "invalid_webhook_url"),
    ({"url": "http://example.com:99999/", "events": ["thread.done"]}, 422,
     "invalid_webhook_url"),
    ({"url": "http://x/" + "a" * 3000, "events": ["thread.done"]}, 422, "invalid_webhook_url"),
    ({"url": 7, "events": ["thread.done"]}, 422, "invalid_webhook_url"),
    ({"url": "http://10.0.0.1/", "events": ["thread.done"]}, 422, "webhook_url_private"),
    ({"url": "http://169.254.169.254/latest", "events": ["thread.done"]}, 422,
     "webhook_url_private"),
    ({"url": "http://[::ffff:192.168.0.1]/", "events": ["thread.done"]}, 422,
     "webhook_url_private"),
    ({"url": "http://127.0.0.1/x", "events": ["billing.low_balance"]}, 422,
     "invalid_threshold"),
    ({"url": "http://127.0.0.1/x", "events": ["thread.done"], "low_balance_threshold": "5"},
     422, "invalid_threshold"),
    ({"url": "http://127.0.0.1/x", "events": ["billing.low_balance"],
      "low_balance_threshold": 5}, 422, "invalid_amount"),
])
def test_bad_registrations_are_refused_with_a_code(svc, body, status, code):
    r = http("POST", f"{svc.url}/webhooks/endpoints", json.dumps(body).encode(), svc.h)
    assert (r.status, r.code) == (status, code), r.body


def test_more_bad_input_and_who_may_manage_webhooks(svc):
    r = http("POST", f"{svc.url}/webhooks/endpoints", b"{nope", svc.h)
    assert (r.status, r.code) == (400, "malformed_json")
    r = http("GET", f"{svc.url}/webhooks/endpoints/we_nope/deliveries", headers=svc.h)
    assert (r.status, r.code) == (404, "unknown_endpoint")
    r = http("POST", f"{svc.url}/webhooks/deliveries/wd_nope/resend", b"", svc.h)
    assert (r.status, r.code) == (404, "unknown_delivery")
    ep = register(svc, svc.receiver.url("/misc"), ["thread.done"]).json()
    for query, code in (("limit=0", "invalid_limit"), ("limit=x", "invalid_limit"),
                        ("status=lost", "invalid_filter")):
        r = http("GET", f"{svc.url}/webhooks/endpoints/{ep['id']}/deliveries?{query}",
                 headers=svc.h)
        assert (r.status, r.code) == (400, code)
    r = http("POST", f"{svc.url}/webhooks/endpoints/{ep['id']}/rotate",
             b'{"overlap_seconds": -1}', svc.h)
    assert (r.status, r.code) == (422, "invalid_overlap")
    # A token without the billing scope, a sub-account, another domain: none of them.
    _, reader = svc.store.issue_token("acme", scopes=("read",))
    r = http("GET", f"{svc.url}/webhooks/endpoints", headers={"Authorization": f"Bearer {reader}"})
    assert (r.status, r.code) == (403, "insufficient_scope")
    svc.store.create_subaccount("acme", "hooksub")
    _, sub = svc.store.issue_token("acme", "acme/hooksub")
    r = http("GET", f"{svc.url}/webhooks/endpoints", headers={"Authorization": f"Bearer {sub}"})
    assert (r.status, r.code) == (403, "wrong_account")
    r = http("GET", f"{svc.url}/webhooks/endpoints/{ep['id']}",
             headers=svc.auth(svc.rival_token, "rival"))
    assert (r.status, r.code) == (404, "unknown_endpoint")
    r = http("DELETE", f"{svc.url}/webhooks/endpoints/{ep['id']}", headers=svc.h)
    assert r.status == 200 and r.json()["deleted"] is True
    r = http("DELETE", f"{svc.url}/webhooks/endpoints/{ep['id']}", headers=svc.h)
    assert (r.status, r.code) == (404, "unknown_endpoint")


def test_too_many_endpoints(svc):
    h = {**svc.auth(svc.rival_token, "rival"), "Content-Type": "application/json"}
    codes = [http("POST", f"{svc.url}/webhooks/endpoints", json.dumps(
        {"url": f"http://127.0.0.1/{i}", "events": ["thread.done"]}).encode(), h)
        for i in range(13)]
    assert [c.status for c in codes[:12]] == [201] * 12
    assert (codes[12].status, codes[12].code) == (422, "too_many_endpoints")
    listed = http("GET", f"{svc.url}/webhooks/endpoints", headers=h).json()["endpoints"]
    assert len(listed) == 12


def test_unresolvable_names_are_refused():
    with pytest.raises(Unresolvable):  # .invalid never resolves (RFC 6761)
        check("https://nowhere.invalid/", [], system_resolver)
    with pytest.raises(Unresolvable):
        check("https://empty.example/", [], lambda host, port: [])


def test_a_thread_end_whose_outbox_row_was_never_written_is_swept_in(svc):
    """A conductor that died between recording a thread's end and writing its outbox row:
    stood for here by removing the row. The deliverers' sweep writes the event again, with
    the listener's own id, once the listener's few seconds are past; a second sweep (or a
    second deliverer) writes nothing more."""
    ep = register(svc, svc.receiver.url("/swept"), ["thread.done"]).json()
    tid = run_thread(svc, 70)
    [(_, first)] = until(lambda: svc.receiver.at("/swept"))
    with svc.store._tx() as db:  # noqa: SLF001 - the crash: no row for this end
        db.execute("DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM"
                   " webhook_deliveries WHERE endpoint_id = ?)", (ep["id"],))
        db.execute("DELETE FROM webhook_deliveries WHERE endpoint_id = ?", (ep["id"],))
    assert svc.deliverer.sweep() == 0  # within the margin: the listener's turn
    assert svc.deliverer.sweep(now=time.time() + 31) == 1
    assert svc.deliverer.sweep(now=time.time() + 31) == 0
    got = until(lambda: len(svc.receiver.at("/swept")) == 2 and svc.receiver.at("/swept"))
    assert got[1][1] == first  # the same event, byte for byte: the same id
    assert json.loads(got[1][1])["data"]["thread_id"] == tid
    http("DELETE", f"{svc.url}/webhooks/endpoints/{ep['id']}", headers=svc.h)
