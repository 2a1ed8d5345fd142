"""The HTTP contract over real HTTP (uvicorn, SQLite, local blobs; the conductor on threads)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from support.images import encode, noisy, photo
from support.service_harness import http, multipart

ENVELOPE = {"output_format": "png", "meta": {"client_ref": "a"},
            "adjustments": {"master": {"algorithm": "bilateral"},
                            "shifter": {"resize": {"width": 64}}}}


def image(seed: int) -> bytes:
    return encode(noisy(photo(96, 72), 10, seed=seed), "JPEG", quality=90)


def count_threads(service) -> int:
    return service.store._query("SELECT COUNT(*) AS n FROM threads")[0]["n"]  # noqa: SLF001


def test_needs_file_then_processing_then_done(service):
    img = image(1)
    before = count_threads(service)
    ask = service.submit(img, ENVELOPE, upload=False)
    assert ask.status == 200 and ask.json()["status"] == "needs-file"
    assert count_threads(service) == before  # nothing scheduled, nothing recorded

    sent = service.submit(img, ENVELOPE)
    assert sent.status == 202 and sent.json()["status"] == "processing"
    assert "idempotent-replayed" not in sent.headers
    thread_id = sent.json()["thread_id"]
    body = service.wait(thread_id)
    assert body["status"] == "done", body
    assert [t["status"] for t in body["tasks"]] == ["done"] * 4
    assert body["progress"] == {"done": 4, "total": 4}
    assert body["meta"] == {"client_ref": "a"}
    result = body["result"]
    got = http("GET", result["url"], headers=service.auth())
    assert got.status == 200 and got.headers["content-type"] == "image/png"
    assert hashlib.sha256(got.body).hexdigest() == result["sha256"]
    assert len(got.body) == result["bytes"] and result["width"] == 64


def test_replays_answer_the_same_thread(service):
    img = image(2)
    first = service.submit(img, ENVELOPE).json()["thread_id"]
    service.wait(first)
    for upload in (False, True):
        again = service.submit(img, ENVELOPE, upload=upload)
        assert again.status == 200 and again.json()["thread_id"] == first
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["status"] == "done"
    # meta is the caller's note, not part of the key
    noted = service.submit(img, {**ENVELOPE, "meta": {"client_ref": "b"}}, upload=False)
    assert noted.json()["thread_id"] == first


def test_what_changes_the_key(service):
    img = image(3)
    base = service.submit(img, ENVELOPE).json()["thread_id"]
    other_adjust = {**ENVELOPE, "adjustments": {"shifter": {"resize": {"width": 32}}}}
    other_format = {**ENVELOPE, "output_format": "webp"}
    ids = {base,
           service.submit(img, other_adjust).json()["thread_id"],
           service.submit(img, other_format).json()["thread_id"],
           service.submit(img, ENVELOPE, meta="shop/v2").json()["thread_id"]}
    assert len(ids) == 4
    # key order in the JSON does not matter: the adjustments are canonicalised
    reordered = json.loads(json.dumps(ENVELOPE["adjustments"])[::1])
    reordered = dict(reversed(list(reordered.items())))
    same = service.submit(img, {**ENVELOPE, "adjustments": reordered}, upload=False)
    assert same.json()["thread_id"] == base


def test_hundred_concurrent_identical_submissions_make_one_thread(service):
    import asyncio

    import aiohttp

    img = image(4)
    sha = hashlib.sha256(img).hexdigest()
    body, ctype = multipart(ENVELOPE, img)
    url = f"{service.url}/shop/v1/submitted/{sha}/"
    before = count_threads(service)

    async def burst() -> list[tuple[int, str]]:
        async with aiohttp.ClientSession() as session:
            async def one() -> tuple[int, str]:
                async with session.post(url, data=body, headers={
                        "Content-Type": ctype, **service.auth()}) as resp:
                    return resp.status, (await resp.json())["thread_id"]
            return await asyncio.gather(*(one() for _ in range(100)))

    answers = asyncio.run(burst())
    assert len({tid for _, tid in answers}) == 1
    assert {status for status, _ in answers} <= {200, 202}
    assert count_threads(service) == before + 1
    service.wait(answers[0][1])


def test_failed_thread_reports_the_error(service):
    sent = service.submit(image(5), {"adjustments": {}, "pipeline": "broken"})
    body = service.wait(sent.json()["thread_id"])
    assert body["status"] == "failed"
    assert body["error"]["code"] == "operator_failed"
    assert "the operator broke (after 3 attempts)" in body["error"]["message"]  # 2 retries
    statuses = {t["id"]: t["status"] for t in body["tasks"]}
    assert statuses == {"decode": "done", "boom": "failed", "encoder": "canceled"}
    assert "result" not in body
    # only what finished is charged: the failed task (and its retries) cost nothing
    today = datetime.now(UTC).date().isoformat()
    ops = http("GET", f"{service.url}/billing/operations?date={today}",
               headers=service.auth()).json()["operations"]
    assert [o["task_id"] for o in ops if o["thread_id"] == body["thread_id"]] == ["decode"]


def test_cancel_stops_what_has_not_started(service):
    sent = service.submit(image(6), {"adjustments": {"first": {"seconds": 1.5}},
                                     "pipeline": "slow"})
    thread_id = sent.json()["thread_id"]
    import time
    time.sleep(0.5)  # decode done, `first` running
    cancel = http("POST", f"{service.url}/threads/{thread_id}/cancel", headers=service.auth())
    assert cancel.status in (200, 202)
    body = service.wait(thread_id)
    assert body["status"] == "canceled"
    statuses = {t["id"]: t["status"] for t in body["tasks"]}
    assert statuses["decode"] == "done" and statuses["second"] == "canceled"
    assert statuses["encoder"] == "canceled"
    again = http("POST", f"{service.url}/threads/{thread_id}/cancel", headers=service.auth())
    assert again.status == 409 and again.code == "already_finished"


def test_openapi_and_health(service):
    spec = http("GET", f"{service.url}/openapi.json").json()
    assert "/threads/{thread_id}" in spec["paths"]
    assert "/{meta_parts}/submitted/{image_sha256}/" in spec["paths"]
    assert http("GET", f"{service.url}/healthz").json()["status"] == "ok"


def test_one_domain_never_sees_another(service):
    mine = send_image_as(service, image(7), service.auth())
    tid = mine.json()["thread_id"]
    done = service.wait(tid)
    rival = service.auth(service.rival_token, "rival")
    for method, path in (("GET", f"/threads/{tid}"), ("POST", f"/threads/{tid}/cancel"),
                         ("GET", f"/results/{tid}/result.png")):
        reply = http(method, f"{service.url}{path}", headers=rival)
        assert (reply.status, reply.code) == (403, "wrong_domain")
    assert http("GET", done["result"]["url"], headers=service.auth()).status == 200
    unknown = http("GET", f"{service.url}/threads/{'0' * 32}", headers=service.auth())
    assert (unknown.status, unknown.code) == (404, "unknown_thread")
    # a rival's identical submission is its own thread (the domain is in the key)
    theirs = send_image_as(service, image(7), rival)
    assert theirs.json()["thread_id"] != tid
    assert service.wait(theirs.json()["thread_id"], headers=rival)["status"] == "done"


def send_image_as(service, data: bytes, headers: dict):
    body, ctype = multipart({"adjustments": {}, "output_format": "png"}, data)
    return http("POST", f"{service.url}/shop/v1/submitted/{hashlib.sha256(data).hexdigest()}/",
                body, {"Content-Type": ctype, **headers})


def test_envelope_part_sent_as_a_json_file_is_accepted(service):
    """Some clients (browsers' and Node's FormData with a Blob) name every part a file."""
    img = image(8)
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"envelope\"; "
            f"filename=\"blob\"\r\nContent-Type: application/json\r\n\r\n"
            f"{json.dumps(ENVELOPE)}\r\n--{boundary}\r\nContent-Disposition: form-data; "
            f"name=\"image\"; filename=\"blob\"\r\nContent-Type: application/octet-stream"
            f"\r\n\r\n").encode() + img + f"\r\n--{boundary}--\r\n".encode()
    reply = http("POST", f"{service.url}/shop/v1/submitted/{hashlib.sha256(img).hexdigest()}/",
                 body, {"Content-Type": f"multipart/form-data; boundary={boundary}",
                        **service.auth()})
    assert reply.status == 202, reply.body
