"""The attacks of issue 13, against the real HTTP service (uvicorn, SQLite, no Ray), while a
client polls /healthz: each attack gets its 4xx (or 503) fast, and /healthz answers in under
half a second throughout. Attack builders: ``tests/support/attacks.py`` (the benchmark reuses
them)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from support import attacks
from support.attacks import HealthPoller, auth, multipart, send, sha256
from support.images import encode, photo
from support.service_harness import Service

HEALTHY = 0.5  # seconds: the slowest /healthz answer allowed while the service is attacked
QUICK = 1.0  # seconds: the slowest refusal of an attack that needs no waiting
IDLE, GRACE, MIN_RATE = 1.0, 1.0, 4096.0  # the service's upload deadlines, made small here
TINY = encode(photo(96, 72), "JPEG", quality=90)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    svc = Service(tmp_path_factory.mktemp("attacked"), upload_idle_seconds=IDLE,
                  upload_grace_seconds=GRACE, upload_min_bytes_per_second=MIN_RATE,
                  auth_failure_burst=5, auth_failure_per_second=0.5)
    svc.store.create_subaccount("acme", "broke")  # no credits: the attackers' account
    _, svc.broke_token = svc.store.issue_token("acme", "acme/broke")
    yield svc
    svc.close()


@pytest.fixture(autouse=True)
def healthz_stays_fast(service):
    """/healthz polled on fresh connections for the whole test: never slower than HEALTHY."""
    with HealthPoller(service.url, every=0.05) as poller:
        yield
    assert poller.latencies, "no /healthz answer during the attack"
    assert poller.worst < HEALTHY, f"/healthz took {poller.worst:.3f} s during the attack"


def threads_recorded(service) -> int:
    return service.store._query("SELECT COUNT(*) AS n FROM threads")[0]["n"]


def broke(service) -> dict[str, str]:
    return auth(service.broke_token, "acme")


def post(service, body: bytes, ctype: str, sha: str, headers: dict[str, str],
         source: str | None = None) -> attacks.Answer:
    return send(service.url, "POST", f"/attack/submitted/{sha}/", body,
                {"Content-Type": ctype, **headers}, source=source)


def post_image(service, envelope: dict | bytes, image: bytes,
               headers: dict[str, str]) -> attacks.Answer:
    body, ctype = multipart(envelope, image)
    return post(service, body, ctype, sha256(image), headers)


# -- (1) huge numbers in parameters ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(attacks.huge_number_envelopes()))
def test_huge_numbers_refused_fast(service, name):
    envelope = attacks.huge_number_envelopes()[name]
    asked = post(service, envelope, "application/json", sha256(TINY), broke(service))
    sent = post_image(service, envelope, TINY, broke(service))
    # A crop box of 10**20 is a valid number; only the image shows it falls outside.
    assert asked.status in (400, 422) or json.loads(asked.body)["status"] == "needs-file"
    assert sent.status in (400, 422), sent.body
    assert sent.code in ("malformed_json", "invalid_parameter", "invalid_geometry"), sent.body
    for answer in (asked, sent):
        assert answer.seconds < QUICK, f"{name}: {answer.seconds:.2f} s"


# -- (2) a decompression bomb from an account without credits ------------------------------------


def peak_rss_kib() -> int:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())[1])


def send_bomb(service) -> tuple[attacks.Answer, float]:
    """The bomb from the zero-credit account: its answer and this process's peak RSS growth
    (MiB) while it was handled (the service runs in this process)."""
    bomb = attacks.png_bomb()  # 12000×12000, 16-bit: ~280 KiB that decode to 1.65 GB
    assert len(bomb) < 400_000
    recorded = threads_recorded(service)
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS from now
    before = peak_rss_kib()
    answer = post_image(service, {"adjustments": {}, "pipeline": "thumbnail"}, bomb,
                        broke(service))
    grown_mib = (peak_rss_kib() - before) / 1024
    assert (answer.status, answer.code) == (402, "insufficient_credits"), answer.body
    assert service.api.decoding.in_flight == 0
    assert threads_recorded(service) == recorded
    return answer, grown_mib


def test_decompression_bomb_from_a_zero_credit_account_is_402(service):
    answer, grown_mib = send_bomb(service)
    assert answer.seconds < 5.0, f"{answer.seconds:.2f} s"
    assert grown_mib < 1024, f"peak RSS grew {grown_mib:.0f} MiB: decoded as RGB?"


def test_decompression_bomb_402_comes_before_any_decoding(service):
    answer, grown_mib = send_bomb(service)
    assert grown_mib < 64, f"peak RSS grew {grown_mib:.0f} MiB before the 402"
    assert answer.seconds < 0.5, f"{answer.seconds:.2f} s before the 402"


# -- (6) envelopes and meta over their limits ---------------------------------------------------


@pytest.mark.parametrize("body, code", [
    (attacks.big_envelope(100_000), "envelope_too_large"),
    (attacks.big_meta(100_000), "envelope_too_large"),  # over the envelope's limit first
    (attacks.big_meta(32_000), "meta_too_large"),  # within the envelope's, over meta's
])
def test_large_envelope_and_meta_are_413(service, body, code):
    for answer in (post(service, body, "application/json", sha256(TINY), broke(service)),
                   post_image(service, body, TINY, broke(service))):
        assert (answer.status, answer.code) == (413, code), answer.body
        assert answer.seconds < QUICK


# -- (7) an output larger than the limit ---------------------------------------------------------


@pytest.mark.parametrize("who", ["funded", "broke"])
def test_huge_output_is_413_naming_the_stage(service, who):
    headers = service.auth() if who == "funded" else broke(service)
    recorded = threads_recorded(service)
    answer = post_image(service, attacks.huge_output(60_000), TINY, headers)
    assert (answer.status, answer.code) == (413, "output_too_large"), answer.body
    assert "'shifter'" in json.loads(answer.body)["error"]["message"]
    assert answer.seconds < QUICK
    assert threads_recorded(service) == recorded


# -- (8) slow and half-sent uploads --------------------------------------------------------------


def test_a_1_kib_per_second_upload_is_cut_off(service):
    image = attacks.png_bomb(2000, 2000, 8)  # a few KiB: at 1 KiB/s it would take seconds
    answer = attacks.slow_upload(service.url, broke(service), image,
                                 {"adjustments": {}, "pipeline": "thumbnail"},
                                 bytes_per_second=1024)
    assert answer is not None, "closed without an answer"
    assert (answer.status, answer.code) == (408, "upload_too_slow"), answer.body
    assert GRACE <= answer.seconds < GRACE + IDLE + 1.0, answer.seconds


def test_200_idle_half_sent_uploads_are_cut_off_and_others_still_served(service):
    uploads = list(attacks.half_sent(service.url, broke(service), TINY,
                                     {"adjustments": {}, "pipeline": "thumbnail"}, 200))
    try:
        # Meanwhile a legitimate client is served as usual.
        legit = post_image(service, {"adjustments": {}, "pipeline": "thumbnail",
                                     "meta": {"n": 8}}, TINY, service.auth())
        assert legit.status in (200, 202), legit.body
        assert legit.seconds < QUICK
        answers = [u.answer() for u in uploads]
    finally:
        for u in uploads:
            u.close()
    assert all(a is not None and (a.status, a.code) == (408, "upload_too_slow")
               for a in answers), [a and (a.status, a.code) for a in answers][:5]
    slowest = max(a.seconds for a in answers if a)
    assert slowest < IDLE + 2.0, f"the last half-sent request was cut off after {slowest:.1f} s"


# -- (10) a forged Host header ---------------------------------------------------------------------


def test_forged_host_never_becomes_a_link(service):
    forged = {"Host": "evil.example", "X-Forwarded-Host": "evil.example",
              "X-Forwarded-Proto": "https", "Forwarded": "host=evil.example"}
    image = encode(photo(64, 48, "astronaut"), "JPEG", quality=80)
    body, ctype = multipart({"adjustments": {}, "pipeline": "thumbnail"}, image)
    answer = post(service, body, ctype, sha256(image), {**service.auth(), **forged})
    assert answer.status == 202, answer.body
    thread_id = json.loads(answer.body)["thread_id"]
    deadline = time.monotonic() + 30
    while True:
        polled = send(service.url, "GET", f"/threads/{thread_id}", b"",
                      {**service.auth(), **forged})
        status = json.loads(polled.body)["status"]
        if status != "processing" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == "done", polled.body
    assert b"evil" not in polled.body and b"evil" not in answer.body
    url = json.loads(polled.body)["result"]["url"]
    assert url.startswith(service.settings.base_url + "/results/"), url


# -- (15) guessing tokens -------------------------------------------------------------------------


def test_repeated_bad_tokens_from_one_client_get_429(service):
    attacker = "127.0.0.66"  # another loopback address: the throttle is per client
    body = json.dumps({"adjustments": {}}).encode()
    guesses = [post(service, body, "application/json", sha256(TINY),
                    auth(f"tm_guess{i}", "acme"), source=attacker) for i in range(8)]
    assert [g.status for g in guesses[:5]] == [401] * 5
    throttled = guesses[5:]
    assert all((g.status, g.code) == (429, "too_many_auth_failures") for g in throttled)
    assert all(int(g.headers["retry-after"]) >= 1 for g in throttled)
    assert all(g.seconds < QUICK for g in guesses)
    # Even the right token waits its turn from that client; other clients are not slowed.
    assert post(service, body, "application/json", sha256(TINY), service.auth(),
                source=attacker).status == 429
    assert post(service, body, "application/json", sha256(TINY),
                service.auth()).status == 200
