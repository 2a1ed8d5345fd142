"""The Python SDK's calls beyond submit: create/wait/run, streaming with progress, typed
billing objects, typed errors, the environment, and a clean shutdown."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import warnings
from decimal import Decimal

import pytest
import tilemore_sdk as sdk
from scripted import ScriptedServer
from support.images import encode, noisy, photo
from support.service_harness import Service

ADJUST = {"master": {"algorithm": "bilateral"}, "shifter": {"resize": {"width": 48}}}


def picture(seed: int) -> bytes:
    return encode(noisy(photo(96, 72), 10, seed=seed), "JPEG", quality=90)


def client(service, **options) -> sdk.Tilemore:
    return sdk.Tilemore(api_endpoint=service.url, api_token=service.token, domain="acme",
                        poll_interval=0.05, **options)


def test_create_returns_a_thread_wait_and_download_finish_it(service, tmp_path):
    src = tmp_path / "in.jpg"
    src.write_bytes(picture(101))
    with client(service) as tm:
        thread = tm.create(src, "png", ADJUST, {"ref": "c1"})
        assert isinstance(thread, sdk.Thread) and thread.status in ("processing", "done")
        assert thread.meta == {"ref": "c1"} and thread.id == thread.thread_id
        done = tm.wait(thread)
        assert done.status == "done" and done.finished and done.result is not None
        assert done.result.content_type == "image/png" and done.result.width == 48
        events: list[tuple[str, int, int | None]] = []
        out = tmp_path / "out.png"
        result = tm.download(done, out, progress=lambda *e: events.append(e))
        assert result.path == out and out.stat().st_size == done.result.bytes
        assert not list(tmp_path.glob(".*.part"))  # no partial file left
        assert events[-1] == ("download", done.result.bytes, done.result.bytes)
        # run() = create + wait + download: the same thread, nothing run again
        again = tm.run(src, "png", ADJUST, {"ref": "c1"})
        assert again.thread_id == done.id and again.data == out.read_bytes()
        assert tm.get(done.id)["status"] == "done"  # the typed objects still read as dicts


def test_upload_streams_from_a_file_with_progress(service, tmp_path):
    data = picture(102)
    src = tmp_path / "in.jpg"
    src.write_bytes(data)
    events: list[tuple[str, int, int | None]] = []
    with client(service) as tm:
        result = tm.run(src, "jpeg", ADJUST, progress=lambda *e: events.append(e),
                        output=tmp_path / "out.jpg")
    phases = [e[0] for e in events]
    assert phases.index("hash") < phases.index("upload") < phases.index("download")
    hashed = [e for e in events if e[0] == "hash"]
    uploaded = [e for e in events if e[0] == "upload"]
    assert hashed[-1] == ("hash", len(data), len(data))
    assert uploaded[-1] == ("upload", len(data), len(data))
    assert result.path is not None and result.path.read_bytes() == result.data


def test_a_seekable_file_is_sent_from_where_it_stands(service):
    data = picture(103)
    f = io.BytesIO(b"HEADER" + data)
    f.seek(6)
    with client(service) as tm:
        thread = tm.wait(tm.create(f, "png", ADJUST))
    assert thread.status == "done" and f.tell() == 6 + len(data)
    with client(service) as tm:  # the same bytes as bytes: the same thread
        assert tm.create(data, "png", ADJUST).id == thread.id


def test_a_non_seekable_input_is_spooled_to_disk_and_removed(service, tmp_path, monkeypatch):
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    data = picture(104)
    read, write = os.pipe()

    def feed() -> None:
        with os.fdopen(write, "wb") as w:
            for i in range(0, len(data), 1000):
                w.write(data[i:i + 1000])

    feeder = threading.Thread(target=feed)
    feeder.start()
    with os.fdopen(read, "rb", buffering=0) as pipe, client(service) as tm:
        assert not pipe.seekable()
        thread = tm.wait(tm.create(pipe, "png", ADJUST))
    feeder.join()
    assert thread.status == "done"
    assert list(spool.iterdir()) == []  # the spooled copy is gone
    with client(service) as tm:
        assert tm.create(data, "png", ADJUST).id == thread.id  # the hash of every byte


def test_billing_calls_return_typed_objects(service):
    with client(service) as tm:
        tm.run(picture(105), "png", ADJUST)
        balance = tm.balance()
        assert isinstance(balance, sdk.Balance) and balance.account == "acme"
        assert balance.available == balance.balance - balance.held
        days = tm.history()
        assert len(days) == 31 and all(isinstance(d, sdk.HistoryDay) for d in days)
        assert days[-1].transaction_total != Decimal(0)
        ops = tm.operations()
        assert ops and all(isinstance(o, sdk.Operation) for o in ops)
        assert any(o.kind == "charge" and o.thread_id for o in ops), {o.kind for o in ops}
        sub = tm.create_subaccount("studio")
        assert isinstance(sub, sdk.SubAccount) and sub.account == "acme/studio"
        assert tm.create_subaccount("studio").account == sub.account  # idempotent
        assert [s.name for s in tm.subaccounts()] == ["studio"]
        paid = tm.record_payment("studio", "pay-1", "2.5")
        assert isinstance(paid, sdk.Payment) and paid.amount == Decimal("2.5")
        assert not paid.replayed and tm.record_payment("studio", "pay-1", "2.5").replayed
        assert tm.balance("studio").balance == Decimal("2.5")
        token = tm.create_subaccount_token("studio")
        assert isinstance(token, sdk.Token) and token.account == "acme/studio"
    with sdk.Tilemore(service.url, token.token, "acme") as studio:
        assert studio.balance().account == "acme/studio"
        with pytest.raises(sdk.PermissionDeniedError) as info:
            studio.subaccounts()
        assert info.value.code == "wrong_account"
        with pytest.raises(sdk.ConflictError):
            client(service).record_payment("studio", "pay-1", "3")


def test_settings_come_from_the_environment(service, monkeypatch):
    monkeypatch.setenv("TILEMORE_API_ENDPOINT", service.url)
    monkeypatch.setenv("TILEMORE_API_TOKEN", service.token)
    monkeypatch.setenv("TILEMORE_DOMAIN", "acme")
    with sdk.Tilemore() as tm:
        assert tm.balance().account == "acme"
    monkeypatch.delenv("TILEMORE_DOMAIN")
    with sdk.Tilemore() as tm:  # Authorization: Bearer: the token names its domain
        assert tm.client.auth["Authorization"].startswith("Bearer ")
        assert tm.balance().account == "acme"
    monkeypatch.delenv("TILEMORE_API_TOKEN")
    with pytest.raises(sdk.TilemoreError) as info:
        sdk.Tilemore()
    assert info.value.code == "not_configured"


README_SNIPPET = """
import tilemore_sdk as sdk
tm = sdk.Tilemore(debug_mode=False, poll_interval=0.05)
result = tm.submit({path!r}, "jpeg", {adjust!r}, meta={{"client_ref": "order-17"}})
print(result.thread_id, result.content_type, len(result.data), result.credits_charged)
print(tm.balance(), tm.history()[-1])
"""


@pytest.mark.parametrize("ending", ["", "tm.close()\n", "del tm, result\n"])
def test_the_readme_snippet_leaves_no_unclosed_session(service, tmp_path, ending):
    src = tmp_path / "in.jpg"
    src.write_bytes(picture(106))
    code = textwrap.dedent(README_SNIPPET).format(path=str(src), adjust=ADJUST) + ending
    env = {**os.environ, "TILEMORE_API_ENDPOINT": service.url,
           "TILEMORE_API_TOKEN": service.token, "TILEMORE_DOMAIN": "acme",
           "PYTHONWARNINGS": "error"}  # not dev mode: its slow-callback notes vary with load
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no "Unclosed client session", no "Exception ignored"
    assert "image/jpeg" in done.stdout


def test_a_dropped_client_closes_its_session_in_process(service):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tm = client(service)
        tm.balance()
        loop = tm._loop  # noqa: SLF001
        del tm
        gc.collect()
        assert loop.is_closed()


def test_the_blocking_client_refuses_to_run_inside_an_event_loop(service):
    tm = client(service)

    async def inside() -> None:
        with pytest.raises(sdk.TilemoreError) as info:
            tm.balance()
        assert info.value.code == "inside_event_loop"

    asyncio.run(inside())
    tm.close()
    with pytest.raises(sdk.TilemoreError, match="closed"):
        tm.balance()


# -- typed errors for what the scripted server says -----------------------------------------

def done_thread(url: str) -> dict:
    return {"thread_id": "t1", "status": "done", "meta": {}, "result": {
        "url": f"{url}/results/t1/result.png", "content_type": "image/png", "bytes": 3,
        "sha256": "0" * 64, "width": 1, "height": 1}}


def test_an_expired_result_is_a_typed_error_with_the_request_id():
    server = ScriptedServer({})
    server.script.update({
        "/threads/t1": lambda n: (200, {}, done_thread(server.url)),
        "/results/t1/result.png": lambda n: (410, {"x-request-id": "req-410"}, {
            "error": {"code": "result_expired", "message": "removed after 7 days"}}),
    })
    try:
        with sdk.Tilemore(server.url, "t", "acme") as tm:
            with pytest.raises(sdk.ResultExpiredError) as info:
                tm.download("t1")
        assert info.value.code == "result_expired" and info.value.status == 410
        assert info.value.request_id == "req-410" and "req-410" in str(info.value)
        assert len(server.hits["/results/t1/result.png"]) == 1  # a 410 is not retried
    finally:
        server.close()


def test_429_waits_as_the_ratelimit_headers_say_then_succeeds():
    balance = {"account": "acme", "balance": "1", "held": "0", "available": "1"}
    server = ScriptedServer({
        # draft 7's combined header, no Retry-After: the reset is the wait
        "/billing/balance": lambda n: (429, {"RateLimit": "limit=5, remaining=0, reset=1",
                                             "RateLimit-Policy": "5;w=1"}, {
            "error": {"code": "rate_limited", "message": "slow down"}}) if n == 1
        else (200, {}, balance),
        # a 200 that spends the window's last request (draft 8's form): the next one waits
        "/billing/history": lambda n: (200, {"RateLimit": '"default";r=0;t=1'},
                                       {"days": []}),
    })
    try:
        with sdk.Tilemore(server.url, "t", "acme", backoff=0.01) as tm:
            assert tm.balance().balance == Decimal(1)
            first, second = server.hits["/billing/balance"]
            assert second - first >= 0.9  # waited for the reset, not the 10 ms backoff
            tm.history()
            started = time.monotonic()
            tm.history()
            assert time.monotonic() - started >= 0.9
    finally:
        server.close()


def test_a_202s_retry_after_holds_back_neither_the_next_poll_nor_other_calls():
    """Retry-After on a 202 is the service's hint for polling that one thread: it held every
    request of the client for a second (at concurrency 16, every other thread's calls)."""
    processing = {"thread_id": "t1", "status": "processing"}
    server = ScriptedServer({
        "/threads/t1": lambda n: (202, {"Retry-After": "1"}, processing) if n == 1
        else (200, {}, {**processing, "status": "canceled"}),
        "/billing/balance": lambda n: (200, {}, {"account": "acme", "balance": "1",
                                                 "held": "0", "available": "1"}),
    })
    try:
        with sdk.Tilemore(server.url, "t", "acme", poll_interval=0.01) as tm:
            assert tm.get("t1").status == "processing"
            started = time.monotonic()
            assert tm.balance().balance == Decimal(1)
            assert tm.wait("t1", check=False).status == "canceled"
            assert time.monotonic() - started < 0.8
    finally:
        server.close()


def test_429_that_persists_is_a_rate_limit_error():
    server = ScriptedServer({"/billing/balance": lambda n: (429, {
        "Retry-After": "0", "RateLimit-Limit": "10", "RateLimit-Remaining": "0",
        "RateLimit-Reset": "0", "x-request-id": "req-429"}, {
        "error": {"code": "rate_limited", "message": "slow down"}})})
    try:
        with sdk.Tilemore(server.url, "t", "acme", max_retries=2) as tm:
            with pytest.raises(sdk.RateLimitError) as info:
                tm.balance()
        err = info.value
        assert err.status == 429 and err.request_id == "req-429" and err.retry_after == 0
        assert err.rate_limit.limit == 10 and err.rate_limit.remaining == 0
        assert len(server.hits["/billing/balance"]) == 3
    finally:
        server.close()


def test_the_services_own_429_is_honoured(tmp_path):
    """Failed authentications are throttled per client (429 + Retry-After): the SDK raises a
    RateLimitError carrying the wait, and the client's next request waits that long."""
    svc = Service(tmp_path, auth_failure_burst=3, auth_failure_per_second=0.1)
    try:
        with sdk.Tilemore(svc.url, "tm_wrong", "acme", max_retries=0) as tm:
            errors = []
            for _ in range(4):
                try:
                    tm.balance()
                except sdk.TilemoreError as exc:
                    errors.append(exc)
            codes, exc = [type(e) for e in errors], errors[-1]
            assert codes == [sdk.AuthenticationError] * 3 + [sdk.RateLimitError]
            assert exc.code == "too_many_auth_failures" and exc.retry_after > 0
            started = time.monotonic()
            with pytest.raises(sdk.AuthenticationError):  # sent once the wait is over
                tm.balance()
            assert time.monotonic() - started >= exc.retry_after - 0.5
    finally:
        svc.close()


def test_the_services_rate_limit_is_honoured(tmp_path):
    """Against a service limiting the domain to 2 requests a second: a client making calls
    one after another is slowed to the limit (it waits as the RateLimit fields say) and never
    fails; concurrent calls that find nothing left, with no retries, raise RateLimitError
    carrying the fields."""
    svc = Service(tmp_path, rate_limit_requests_per_second=2)
    try:
        with sdk.Tilemore(svc.url, svc.token, "acme") as tm:
            started = time.monotonic()
            for _ in range(6):
                assert tm.balance().account == "acme"
            assert time.monotonic() - started >= 1.5  # six requests at 2/s, a burst of one

        async def burst() -> list[object]:
            async with sdk.AsyncTilemore(svc.url, svc.token, "acme", max_retries=0) as tm:
                return await asyncio.gather(*(tm.balance() for _ in range(6)),
                                            return_exceptions=True)

        refused = [e for e in asyncio.run(burst()) if isinstance(e, Exception)]
        assert refused and all(isinstance(e, sdk.RateLimitError) for e in refused), refused
        err = refused[0]
        assert err.code == "rate_limited" and err.retry_after >= 1
        assert err.rate_limit.remaining == 0 and err.rate_limit.limit == 2
    finally:
        svc.close()


def test_the_upload_is_one_multipart_body_of_known_length(tmp_path):
    data = picture(107)
    src = tmp_path / "in.jpg"
    src.write_bytes(data)
    url = f"/sdk/submitted/{hashlib.sha256(data).hexdigest()}/"
    server = ScriptedServer({url: lambda n: (200, {}, {"status": "needs-file"}) if n == 1
                             else (202, {}, {"thread_id": "t9", "status": "processing"})})
    try:
        with sdk.Tilemore(server.url, "t", "acme") as tm:
            assert tm.create(src, "png", {}).id == "t9"
        _, headers, body = server.requests[1]
        assert "transfer-encoding" not in headers
        assert int(headers["content-length"]) == len(body) > len(data)
        assert body.index(b'name="envelope"') < body.index(b'name="image"') < body.index(data)
    finally:
        server.close()


def test_wait_gives_up_after_its_timeout_and_cancel_answers_a_thread():
    processing = {"thread_id": "t1", "status": "processing", "meta": {}}
    server = ScriptedServer({
        "/threads/t1": lambda n: (200, {}, processing),
        "/threads/t1/cancel": lambda n: (200, {}, {**processing, "cancel_requested": True}),
    })
    try:
        with sdk.Tilemore(server.url, "t", "acme", poll_interval=0.05) as tm:
            started = time.monotonic()
            with pytest.raises(sdk.WaitTimeout) as info:
                tm.wait("t1", timeout=0.5)
            assert info.value.code == "wait_timeout" and time.monotonic() - started < 3
            assert len(server.hits["/threads/t1"]) >= 3  # it polled meanwhile
            canceled = tm.cancel("t1")
            assert isinstance(canceled, sdk.Thread) and canceled["cancel_requested"] is True
    finally:
        server.close()


def test_wait_long_polls_and_backs_off_when_answered_early():
    """wait() asks the service to hold each answer (``?wait=``) instead of polling; a
    service that answers at once anyway (it held too many waits) is not asked in a loop."""
    done = {"thread_id": "t2", "status": "done", "meta": {}}
    processing = {**done, "status": "processing"}
    server = ScriptedServer({"/threads/t2": lambda n: (200, {}, done if n >= 4 else processing)})
    try:
        with sdk.Tilemore(server.url, "t", "acme", poll_interval=0.05) as tm:
            started = time.monotonic()
            assert tm.wait("t2").status == "done"
            took = time.monotonic() - started
        waits = [t for t in server.targets if t.startswith("/threads/t2?wait=")]
        assert len(waits) == 3  # the first read is the plain get; then three long polls
        assert all(0 < float(t.split("=")[1]) <= 20 for t in waits)
        assert took >= 0.05 + 0.075  # it backed off between early answers
    finally:
        server.close()
