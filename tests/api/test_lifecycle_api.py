"""The data lifecycle through the HTTP API: checkpoints that go when a thread is done, answers
after expiry (410, a new thread and charge), and running a failed thread again."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from support.images import encode, photo
from support.service_harness import Service, http
from support.waits import until

DATA = Path(__file__).parents[1] / "data"
THUMB = {"pipeline": "thumbnail", "adjustments": {"shifter": {"resize": {"width": 32}}},
         "output_format": "png"}


@pytest.fixture
def svc(tmp_path):
    service = Service(tmp_path, pipeline_paths=[DATA / "fragile.yaml"],
                      retention_results_seconds=3600, blob_grace_seconds=0,
                      checkpoint_policy="always")  # these tasks are too cheap to store else
    yield service
    service.close()


KIND = {"result_until": "result", "input_until": "input", "retry_until": "checkpoint"}


def age(svc: Service, thread_id: str, **columns: float) -> None:
    """Move a thread's dates back by these seconds (and its references' of that kind): time
    passing, on the database's clock."""
    with svc.lifecycle.store._tx() as db:  # noqa: SLF001 - time passing, by hand
        for column, seconds in columns.items():
            db.execute(f"UPDATE thread_expiry SET {column} = {column} - ? WHERE thread_id = ?",
                       (seconds, thread_id))
            db.execute("UPDATE blob_refs SET expires_at = expires_at - ? WHERE thread_id = ?"
                       " AND kind = ?", (seconds, thread_id, KIND.get(column)))


def ended(svc: Service, thread_id: str) -> dict:
    """The thread's answer once it ended and its end was dated (the listener dates it just
    after the status is written)."""
    body = svc.wait(thread_id)
    assert until(lambda: svc.lifecycle.dates(thread_id) is not None, 10, 0.02)
    return body


def done_thread(svc: Service, image: bytes, envelope: dict = THUMB) -> dict:
    reply = svc.submit(image, envelope)
    assert reply.status == 202, reply.body
    body = ended(svc, reply.json()["thread_id"])
    assert body["status"] == "done", body
    return body


def test_a_done_thread_keeps_its_input_and_its_result_once(svc):
    body = done_thread(svc, encode(photo(64, 48), "PNG"))
    rec = svc.store.get_thread(body["thread_id"])
    checkpoints = {t.checkpoint_key for t in rec.tasks if t.checkpoint_key}
    assert len(checkpoints) == 3
    # the checkpoints' references go with them (the files first, then the rows)
    assert until(lambda: {k for k, _, _ in svc.lifecycle.store.refs(rec.id)} == {
        "input", "result"}, 10, 0.05)
    assert not any(svc.blobs.exists(k) for k in checkpoints)
    assert {b.key for b in svc.blobs.list()} == {rec.input_key, rec.result.key}
    reply = http("GET", body["result"]["url"], headers=svc.auth())
    assert reply.status == 200
    max_age = int(reply.headers["cache-control"].split("max-age=")[1].split(",")[0])
    assert 3500 < max_age <= 3600  # never cached past the result's retention
    with svc.lifecycle.store._tx() as db:  # noqa: SLF001 - as before its end is dated
        db.execute("DELETE FROM thread_expiry WHERE thread_id = ?", (rec.id,))
    reply = http("GET", body["result"]["url"], headers=svc.auth())
    assert reply.headers["cache-control"] == "private, max-age=3600, immutable"


def test_after_the_result_expired_410_then_a_new_thread_charged_again(svc):
    image = encode(photo(48, 40), "PNG")
    first = done_thread(svc, image)
    tid = first["thread_id"]
    age(svc, tid, result_until=7200)
    svc.collector.run_pass()
    assert not svc.blobs.exists(first["result"]["sha256"])  # removed by the collector

    replay = svc.submit(image, THUMB)
    assert replay.status == 410 and replay.code == "result_expired"
    assert f"/threads/{tid}/retry" in replay.json()["error"]["message"]
    assert http("GET", first["result"]["url"], headers=svc.auth()).code == "result_expired"
    read = http("GET", f"{svc.url}/threads/{tid}", headers=svc.auth()).json()
    assert read["status"] == "done" and "result" not in read  # the record lives, no link

    again = http("POST", f"{svc.url}/threads/{tid}/retry", b"", svc.auth())
    assert again.status == 202, again.body
    new = again.json()["thread_id"]
    assert new != tid
    done = svc.wait(new)
    assert done["status"] == "done" and done["result"]["sha256"] == first["result"]["sha256"]
    assert done["credits_charged"] == first["credits_charged"] != "0"  # charged again
    assert svc.submit(image, THUMB).json()["thread_id"] == new  # the request leads there now
    assert http("GET", f"{svc.url}/threads/{tid}", headers=svc.auth()).json()["status"] == "done"


def test_after_the_record_expired_the_same_request_is_a_new_thread(svc):
    image = encode(photo(40, 40), "PNG")
    first = done_thread(svc, image)
    tid = first["thread_id"]
    age(svc, tid, result_until=10**8, input_until=10**8, record_until=10**8)
    report = svc.collector.run_pass()
    assert report.records == 1 and report.bytes > 0
    assert http("GET", f"{svc.url}/threads/{tid}", headers=svc.auth()).status == 404
    assert svc.submit(image, THUMB, upload=False).json()["status"] == "needs-file"
    second = done_thread(svc, image)
    assert second["thread_id"] != tid and second["credits_charged"] == first["credits_charged"]
    # the ledger still has the first thread's charges
    assert svc.billing.thread_cost(tid) > 0


def test_a_done_thread_is_not_run_again(svc):
    body = done_thread(svc, encode(photo(36, 30), "PNG"))
    reply = http("POST", f"{svc.url}/threads/{body['thread_id']}/retry", b"", svc.auth())
    assert reply.status == 409 and reply.code == "thread_done"


def test_a_thread_too_cheap_to_checkpoint_leaves_its_input_and_result_and_nothing_to_collect(
        tmp_path, monkeypatch):
    """The default policy, with a put costed at 1 s: no task stores its output, and the
    thread's end has no checkpoint to look for (the one with them, above, collects them)."""
    svc = Service(tmp_path, checkpoint_put_seconds=1, blob_grace_seconds=0)
    try:
        looked: list[str] = []
        collect = svc.lifecycle.checkpoints_done
        monkeypatch.setattr(svc.lifecycle, "checkpoints_done",
                            lambda tid: (looked.append(tid), collect(tid)))
        body = done_thread(svc, encode(photo(64, 48), "PNG"))
        rec = svc.store.get_thread(body["thread_id"])
        assert [t.checkpoint_key for t in rec.tasks] == [None] * len(rec.tasks)
        assert {b.key for b in svc.blobs.list()} == {rec.input_key, rec.result.key}
        assert {k for k, _, _ in svc.lifecycle.store.refs(rec.id)} == {"input", "result"}
        assert looked == []
    finally:
        svc.close()


def test_a_failed_thread_runs_again_and_only_unfinished_tasks_are_charged(svc, tmp_path):
    counter = tmp_path / "calls"
    env = {"pipeline": "fragile", "output_format": "png",
           "adjustments": {"flaky": {"failures": 3, "counter": str(counter)}}}
    image = encode(photo(40, 30), "PNG")
    reply = svc.submit(image, env)
    tid = reply.json()["thread_id"]
    failed = ended(svc, tid)
    assert failed["status"] == "failed", failed
    decode = next(t for t in svc.store.get_thread(tid).tasks if t.task_id == "decode")
    assert decode.status == "done" and svc.blobs.exists(decode.checkpoint_key)  # kept
    charged = svc.billing.thread_cost(tid)

    again = http("POST", f"{svc.url}/threads/{tid}/retry", b"", svc.auth())
    assert again.status == 200 or again.status == 202, again.body
    assert again.json()["thread_id"] == tid
    done = svc.wait(tid)
    assert done["status"] == "done", done
    rec = svc.store.get_thread(tid)
    assert next(t for t in rec.tasks if t.task_id == "decode") == decode  # skipped, not re-run
    assert svc.billing.thread_cost(tid) > charged
    # every task charged once: what the same work costs when it never failed
    clean = {**env, "adjustments": {"flaky": {"failures": 0, "counter": str(tmp_path / "c")}}}
    assert done["credits_charged"] == done_thread(svc, image, clean)["credits_charged"]
    # the same request now answers the done thread
    assert svc.submit(image, env).json()["status"] == "done"


def test_a_retry_after_the_input_expired_names_the_image_to_send(svc, tmp_path):
    counter = tmp_path / "calls"
    env = {"pipeline": "fragile", "output_format": "png",
           "adjustments": {"flaky": {"failures": 3, "counter": str(counter)}}}
    image = encode(photo(44, 30), "PNG")
    tid = svc.submit(image, env).json()["thread_id"]
    assert ended(svc, tid)["status"] == "failed"
    age(svc, tid, input_until=10**8)
    svc.collector.run_pass()
    sha = hashlib.sha256(image).hexdigest()
    assert not svc.blobs.exists(sha)
    reply = http("POST", f"{svc.url}/threads/{tid}/retry", b"", svc.auth())
    assert reply.status == 410 and reply.code == "input_expired"
    assert reply.json()["error"]["image_sha256"] == sha
    wrong = http("POST", f"{svc.url}/threads/{tid}/retry", b"not it",
                 {**svc.auth(), "Content-Type": "application/octet-stream"})
    assert wrong.status == 400 and wrong.code == "hash_mismatch"
    reply = http("POST", f"{svc.url}/threads/{tid}/retry", image,
                 {**svc.auth(), "Content-Type": "application/octet-stream"})
    assert reply.status in (200, 202), reply.body
    assert svc.wait(tid)["status"] == "done"


def test_a_retry_after_the_window_closed_is_410(svc, tmp_path):
    env = {"pipeline": "fragile", "output_format": "png",
           "adjustments": {"flaky": {"failures": 9, "counter": str(tmp_path / "c")}}}
    tid = svc.submit(encode(photo(30, 30), "PNG"), env).json()["thread_id"]
    assert ended(svc, tid)["status"] == "failed"
    age(svc, tid, retry_until=10**8)
    reply = http("POST", f"{svc.url}/threads/{tid}/retry", b"", svc.auth())
    assert reply.status == 410 and reply.code == "retry_window_closed"
    rival = {"Authorization": f"Token {svc.rival_token} Domain rival"}
    assert http("POST", f"{svc.url}/threads/{tid}/retry", b"", rival).status == 403


def test_expiry_and_retry_on_both_databases(backend, tmp_path):
    """The same answers with the records in PostgreSQL (and in SQLite): 410 after the
    result expired, a new thread on retry, a failed thread run again."""
    service = Service(tmp_path / "svc", database_url=backend.url,
                      pipeline_paths=[DATA / "fragile.yaml"], blob_grace_seconds=0)
    try:
        image = encode(photo(40, 36), "PNG")
        first = done_thread(service, image)
        age(service, first["thread_id"], result_until=10**8)
        service.collector.run_pass()
        assert service.submit(image, THUMB).code == "result_expired"
        again = http("POST", f"{service.url}/threads/{first['thread_id']}/retry", b"",
                     service.auth())
        assert again.status == 202 and service.wait(again.json()["thread_id"])["status"] == \
            "done"
        env = {"pipeline": "fragile", "output_format": "png",
               "adjustments": {"flaky": {"failures": 3, "counter": str(tmp_path / "c")}}}
        tid = service.submit(image, env).json()["thread_id"]
        assert ended(service, tid)["status"] == "failed"
        assert http("POST", f"{service.url}/threads/{tid}/retry", b"",
                    service.auth()).status == 202
        assert service.wait(tid)["status"] == "done"
    finally:
        service.close()
