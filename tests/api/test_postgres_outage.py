"""PostgreSQL stopped under a running service: requests answer 503 ``database_unavailable``
with Retry-After, and succeed again on their own once the server is back — no restart.

The server is a throwaway cluster of this test's own (the session's may be shared, or not
ours to stop)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from support import postgres
from support.images import encode, noisy, photo
from support.service_harness import Service, http

ENVELOPE = {"output_format": "png", "adjustments": {"master": {"algorithm": "bilateral"}}}


@pytest.fixture
def cluster():
    server = postgres.cluster_or_give_up()
    yield server
    server.destroy()


def image(seed: int) -> bytes:
    return encode(noisy(photo(64, 48), 10, seed=seed), "PNG")


def test_an_outage_is_a_503_with_retry_after_and_heals_itself(cluster, tmp_path):
    svc = Service(tmp_path, database_url=cluster.dsn)
    try:
        thread_id = svc.submit(image(1), ENVELOPE).json()["thread_id"]
        assert svc.wait(thread_id)["status"] == "done"
        reads = [f"/threads/{thread_id}", "/billing/balance"]

        cluster.stop()
        started = time.monotonic()
        answers = [http("GET", svc.url + path, headers=svc.auth()) for path in reads]
        answers.append(svc.submit(image(2), ENVELOPE))
        for reply in answers:
            assert (reply.status, reply.code) == (503, "database_unavailable"), reply.body
            assert int(reply.headers["retry-after"]) >= 1
            assert "PostgreSQL" in reply.json()["error"]["message"]
        assert time.monotonic() - started < 30  # a bounded wait each, not a hang
        # Many callers at once: the outage must not stall the event loop for each in turn.
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            burst = list(pool.map(lambda _: http("GET", svc.url + reads[1],
                                                 headers=svc.auth()), range(16)))
        assert {r.status for r in burst} == {503}
        assert time.monotonic() - started < 5

        cluster.start()
        deadline = time.monotonic() + 30
        while (reply := http("GET", svc.url + reads[0], headers=svc.auth())).status != 200:
            assert reply.status == 503 and time.monotonic() < deadline, reply.body
            time.sleep(0.2)
        assert reply.json()["status"] == "done"
        # Writes too, store and ledger: a new thread runs and is charged.
        again = svc.submit(image(2), ENVELOPE)
        assert again.status == 202, again.body
        done = svc.wait(again.json()["thread_id"])
        assert done["status"] == "done" and done["credits_charged"] != "0.00000000000000000000"
        assert svc.ledger.verify().ok
    finally:
        svc.close()


def test_a_thread_running_through_a_10_s_outage_completes_charged_once(cluster, tmp_path):
    """The conductor meets the outage mid-thread: the thread waits (not failed), resumes
    from its checkpoints once the database is back, and each task is charged exactly once."""
    from pathlib import Path

    data = Path(__file__).parents[1] / "data"
    svc = Service(tmp_path, database_url=cluster.dsn, pipeline_paths=[data / "slow.yaml"])
    svc.conductor.start_sweeping()
    try:
        sent = svc.submit(image(3), {"adjustments": {}, "pipeline": "slow",
                                     "output_format": "png"})
        thread_id = sent.json()["thread_id"]
        time.sleep(0.5)  # decode done, `first` spinning
        cluster.stop()
        time.sleep(10)
        cluster.start()
        deadline = time.monotonic() + 60
        while True:  # 503s until the pool reconnects, then the thread finishes on its own
            reply = http("GET", f"{svc.url}/threads/{thread_id}", headers=svc.auth())
            if reply.status == 200 and reply.json()["status"] != "processing":
                break
            assert time.monotonic() < deadline, reply.body
            time.sleep(0.2)
        body = reply.json()
        assert body["status"] == "done", body
        today = time.strftime("%Y-%m-%d", time.gmtime())
        ops = [o for o in http("GET", f"{svc.url}/billing/operations?date={today}",
                               headers=svc.auth()).json()["operations"]
               if o["thread_id"] == thread_id]
        assert sorted(o["task_id"] for o in ops) == sorted(t["id"] for t in body["tasks"])
        assert svc.ledger.verify().ok
    finally:
        svc.close()
