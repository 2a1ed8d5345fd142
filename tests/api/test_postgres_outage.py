"""PostgreSQL stopped under a running service: requests answer 503 ``database_unavailable``
with Retry-After, and succeed again on their own once the server is back — no restart.

The server is a throwaway cluster of this test's own (the session's may be shared, or not
ours to stop)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import postgres
import pytest
from images import encode, noisy, photo
from service_harness import Service, http

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
