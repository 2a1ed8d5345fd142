"""A domain's rate limit held across two real ingress replicas: two processes, each the HTTP
service (uvicorn, the FastAPI app, its own rate limiter) on one shared database (SQLite, then
PostgreSQL), flooded at once, unevenly (three clients on one replica, one on the other), well
past the limit. What both admitted in any 10 s window stays within 10 % of the limit, and every
429 carries ``Retry-After`` and the IETF draft's ``RateLimit`` and ``RateLimit-Policy``.

Two replicas that did not share the limit would admit up to twice it, so the upper bound can
fail. Only counts are asserted, each bounded so that a slow machine cannot fail it: a request
counts as admitted inside a window for the upper bound only when it was both sent and answered
inside it, and for the lower bound whenever its flight overlaps the window. A machine too slow
to offer the limit at all would fail the lower bound, and the test checks the replicas refused
requests throughout (so the offer was above the limit)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.backends import NAMES, Backend
from support.service_harness import http
from support.waits import close_child

pytestmark = pytest.mark.slow

LIMIT = 10.0  # requests a second for the domain, both replicas together
WINDOW = 10.0  # seconds
WARM = 3.0  # seconds of load before windows count: the replicas learn of each other
SPAN = 12.0  # seconds of load counted: windows start anywhere in the first SPAN - WINDOW
PAUSE = 0.02  # each client's pause between requests: ~40 a second each, 4× the limit or more
CLIENTS = (3, 1)  # clients on the first replica, on the second


# One replica, in a process of its own, until stdin closes: the harness's service on the
# shared folder and database (its domains and credits made idempotently), the first one
# setting the domain's limit; prints its URL and the domain's token.
REPLICA = """
import json, sys
from pathlib import Path
tests, root, database_url, first, limit = sys.argv[1:6]
sys.path.insert(0, tests)
from support.service_harness import Service
from tilemore.store.limits import Limit
svc = Service(Path(root), database_url=database_url or None)
if first:
    svc.store.set_rate_limit("acme", Limit(requests_per_second=float(limit)))
print(json.dumps({"url": svc.url, "token": svc.token}), flush=True)
try:
    sys.stdin.read()
finally:
    svc.close()
"""


class Replica:
    def __init__(self, root: Path, database_url: str | None, first: bool) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", REPLICA, str(Path(__file__).parents[1]), str(root),
             database_url or "", "first" if first else "", str(LIMIT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            self.proc.wait(timeout=30)
            raise RuntimeError(f"the replica did not start (exit {self.proc.returncode})")
        info = json.loads(line)
        self.url, self.token = info["url"], info["token"]

    def close(self) -> None:
        close_child(self.proc)


@pytest.fixture(params=NAMES)
def replicas(request, tmp_path):
    db = Backend.of(request, tmp_path / "db")
    started: list[Replica] = []
    try:
        # one after the other: the first creates the domains, sets the limit
        started.append(Replica(tmp_path, db.url, first=True))
        started.append(Replica(tmp_path, db.url, first=False))
        yield started
    finally:
        for r in started:
            r.close()
        db.close()


Seen = tuple[int, float, float, int, str | None, dict[str, str]]


def flood(replicas: list[Replica]) -> list[Seen]:
    """Every client's requests: (replica, sent, answered, status, error code, headers); times
    from the start of the flood."""
    token = replicas[0].token  # tokens live in the shared database: valid on both
    auth = {"Authorization": f"Token {token} Domain acme"}
    start = time.monotonic()
    end = start + WARM + SPAN
    seen: list[Seen] = []

    def client(i: int) -> None:
        url = f"{replicas[i].url}/threads?limit=1"
        while (sent := time.monotonic()) < end:
            r = http("GET", url, headers=auth)
            code = r.code if r.status >= 400 else None
            seen.append((i, sent - start, time.monotonic() - start, r.status, code, r.headers))
            time.sleep(PAUSE)

    workers = [threading.Thread(target=client, args=(i,))
               for i, n in enumerate(CLIENTS) for _ in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return seen


def test_a_domain_limit_holds_across_two_replicas(replicas):
    seen = flood(replicas)
    assert {s for *_, s, _, _ in seen} <= {200, 429}, {s for *_, s, _, _ in seen}
    admitted = [(sent, answered) for _, sent, answered, s, _, _ in seen if s == 200]
    starts = [WARM + k * 0.05 for k in range(int((SPAN - WINDOW) / 0.05) + 1)]
    surely = [sum(t <= sent and answered <= t + WINDOW for sent, answered in admitted)
              for t in starts]
    maybe = [sum(sent <= t + WINDOW and answered >= t for sent, answered in admitted)
             for t in starts]
    quota = LIMIT * WINDOW
    assert max(surely) <= 1.1 * quota, (max(surely), quota)
    assert min(maybe) >= 0.9 * quota, (min(maybe), quota)
    # both replicas admitted and refused, every second counted: demand past the limit
    for i in range(len(CLIENTS)):
        mine = [(answered, s) for r, _, answered, s, _, _ in seen if r == i and answered >= WARM]
        assert any(s == 200 for _, s in mine) and any(s == 429 for _, s in mine), i
    refused_in = {int(answered) for _, _, answered, s, _, _ in seen if s == 429}
    assert set(range(int(WARM), int(WARM + SPAN) - 1)) <= refused_in, sorted(refused_in)
    # the draft's fields, on every refusal and every admitted answer
    policy = f'"domain";q={int(LIMIT)};w=1'
    for *_, status, code, headers in seen:
        assert headers["ratelimit-policy"] == policy, headers
        if status == 429:
            assert code == "rate_limited" and int(headers["retry-after"]) >= 1, (code, headers)
            assert re.fullmatch(r'"domain";r=0;t=\d+', headers["ratelimit"]), headers
        else:
            assert re.fullmatch(r'"domain";r=\d+;t=\d+', headers["ratelimit"]), headers

