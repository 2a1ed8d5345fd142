"""Long polls over real HTTP: `GET /threads/{id}?wait=S` and `Prefer: wait=S` answer when the
thread ends (or when S runs out), in one request."""

from __future__ import annotations

import time

import pytest
from support.images import encode, noisy, photo
from support.service_harness import http

SLOW = {"pipeline": "slow", "adjustments": {}}  # two 1 s spins: about 2 s


def image(seed: int) -> bytes:
    return encode(noisy(photo(48, 40), 10, seed=seed), "PNG")


def test_a_waited_read_answers_when_the_thread_ends(service):
    thread_id = service.submit(image(901), SLOW).json()["thread_id"]
    started = time.monotonic()
    got = http("GET", f"{service.url}/threads/{thread_id}?wait=30", headers=service.auth())
    took = time.monotonic() - started
    assert got.status == 200 and got.json()["status"] == "done", got.json()
    assert took < 25  # the end answered it, not the 30 s


def test_a_wait_that_runs_out_answers_processing(service):
    thread_id = service.submit(image(902), SLOW).json()["thread_id"]
    started = time.monotonic()
    got = http("GET", f"{service.url}/threads/{thread_id}?wait=0.4", headers=service.auth())
    took = time.monotonic() - started
    assert got.status == 202 and got.json()["status"] == "processing"
    assert took >= 0.4  # it did wait
    service.wait(thread_id)


def test_a_submission_that_prefers_to_wait_gets_the_ended_thread(service):
    headers = {**service.auth(), "Prefer": "respond-async, wait=30"}
    sent = service.submit(image(903), SLOW, headers=headers)
    assert sent.status == 200 and sent.json()["status"] == "done", sent.json()
    assert sent.headers["preference-applied"] == "wait=30"
    # A replay of a done thread answers at once, still saying the preference was read.
    again = service.submit(image(903), SLOW, headers=headers, upload=False)
    assert again.status == 200 and again.headers["idempotent-replayed"] == "true"


def test_a_prefer_header_it_cannot_read_is_ignored(service):
    headers = {**service.auth(), "Prefer": "wait=soon, handling=lenient"}
    started = time.monotonic()
    sent = service.submit(image(904), SLOW, headers=headers)
    assert sent.status == 202 and sent.json()["status"] == "processing"
    assert "preference-applied" not in sent.headers
    assert time.monotonic() - started < 1.5  # not held: the thread takes about 2 s
    service.wait(sent.json()["thread_id"])


@pytest.mark.parametrize("wait", ["61", "60.5", "-1", "abc", "1e3", "1.2345", "", "%0A5"])
def test_a_malformed_wait_is_refused(service, wait):
    thread_id = service.submit(image(905), SLOW).json()["thread_id"]
    got = http("GET", f"{service.url}/threads/{thread_id}?wait={wait}", headers=service.auth())
    assert got.status == 400 and got.code == "invalid_wait", got.body


def test_waiting_on_another_domains_thread_is_still_forbidden(service):
    thread_id = service.submit(image(906), SLOW).json()["thread_id"]
    got = http("GET", f"{service.url}/threads/{thread_id}?wait=5",
               headers=service.auth(service.rival_token, "rival"))
    assert got.status == 403 and got.code == "wrong_domain"
