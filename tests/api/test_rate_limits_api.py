"""Rate limits and thread quotas over real HTTP: 429 with Retry-After and the IETF draft's
RateLimit fields, the fields on admitted answers too, one domain's flood never another's
problem, and running threads capped per domain and sub-account (replays never refused)."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest
from support.images import encode, noisy, photo
from support.service_harness import Service, http

from tilemore.store.limits import Limit

SLOW = Path(__file__).parents[1] / "data" / "slow.yaml"


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    s = Service(tmp_path_factory.mktemp("limits"), pipeline_paths=[SLOW],
                rate_limit_requests_per_second=20)
    yield s
    s.close()


def image(seed: int) -> bytes:
    return encode(noisy(photo(48, 32), 10, seed=seed), "PNG")


def test_over_the_limit_is_429_with_the_drafts_fields(svc):
    thread = svc.submit(image(1), {"adjustments": {}}).json()["thread_id"]
    time.sleep(1.1)  # a full bucket again
    started = time.monotonic()
    replies = [http("GET", f"{svc.url}/threads/{thread}", headers=svc.auth())
               for _ in range(40)]
    took = time.monotonic() - started
    ok = [r for r in replies if r.status in (200, 202)]  # 202: still processing
    refused = [r for r in replies if r.status == 429]
    assert ok and refused and len(ok) + len(refused) == 40
    assert len(ok) <= 10 + 20 * took + 1  # a burst of 10, then 20 a second
    for r in ok:
        assert r.headers["ratelimit-policy"] == '"domain";q=20;w=1'
        assert r.headers["ratelimit"].startswith('"domain";r=')
    late = refused[-1]
    assert late.code == "rate_limited" and int(late.headers["retry-after"]) >= 1
    assert late.headers["ratelimit"] == '"domain";r=0;t=1'
    assert late.headers["ratelimit-policy"] == '"domain";q=20;w=1'
    # another domain is not slowed by acme's flood
    rival = http("GET", f"{svc.url}/billing/balance", headers=svc.auth(svc.rival_token, "rival"))
    assert rival.status == 200
    time.sleep(1.1)
    assert http("GET", f"{svc.url}/threads/{thread}", headers=svc.auth()).status in (200, 202)


def test_running_threads_are_capped(svc):
    svc.store.set_rate_limit("acme", Limit(concurrent_threads=2))
    svc.store.create_subaccount("acme", "studio")
    svc.billing.payment("acme", "acme/studio", "p1", Decimal("50"))
    _, token = svc.store.issue_token("acme", "acme/studio")
    svc.store.set_rate_limit("acme/studio", Limit(concurrent_threads=1))
    time.sleep(svc.settings.rate_limit_sync_seconds + 0.1)  # the next request reads them
    envelope = {"adjustments": {}, "pipeline": "slow", "output_format": "png"}
    # the studio's first runs long enough to be running still at every check below, however
    # loaded the machine (it ended early once, and the domain had a place free)
    lasting = {**envelope, "adjustments": {"first": {"seconds": 5.0}}}
    studio = svc.auth(token)
    first = svc.submit(image(10), lasting, headers=studio)
    assert first.status == 202, first.body
    second = svc.submit(image(11), envelope, headers=studio)
    assert (second.status, second.code) == (429, "too_many_threads")
    assert second.headers["retry-after"] == "2"
    again = svc.submit(image(10), lasting, headers=studio)  # a replay: never refused
    assert again.status == 202 and again.json()["thread_id"] == first.json()["thread_id"]
    mine = svc.submit(image(12), envelope)  # the domain's second
    assert mine.status == 202, mine.body
    third = svc.submit(image(13), envelope)
    assert (third.status, third.code) == (429, "too_many_threads")
    svc.wait(first.json()["thread_id"])
    last = svc.submit(image(13), envelope)
    assert last.status == 202  # a place came free
    svc.store.set_rate_limit("acme", Limit())  # back to the defaults
    for sent in (mine, last):  # nothing left running when the service closes
        svc.wait(sent.json()["thread_id"])
