"""The ingress's bounds, without HTTP: body reading (sizes, time, multipart split), the decode
pixel budget, the token cache and the failed-authentication throttle."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time

import pytest
from support.service_harness import multipart

from tilemore.api.auth import Authenticator
from tilemore.api.body import (
    BodyTooLarge,
    EnvelopeTooLarge,
    ReadLimits,
    UploadTooSlow,
    read_json_body,
    read_multipart,
)
from tilemore.api.budget import DecodeBusy, PixelBudget
from tilemore.errors import TilemoreError, TooManyRequests, Unauthorized
from tilemore.store import TokenInfo

LIMITS = ReadLimits(max_bytes=8 << 20, max_envelope_bytes=4096, idle_seconds=0.3,
                    min_rate=1000.0, grace_seconds=0.5)


async def _stream(chunks, pause: float = 0.0):
    for c in chunks:
        if pause:
            await asyncio.sleep(pause)
        yield c


def _read(body: bytes, ctype: str, size: int = 7, limits: ReadLimits = LIMITS):
    chunks = [body[i:i + size] for i in range(0, len(body), size)]
    return asyncio.run(read_multipart(_stream(chunks), ctype, limits))


@pytest.mark.parametrize("chunk, repeat", [(1, 8), (7, 100), (4096, 9000), (1 << 20, 9000)])
def test_a_multipart_body_is_split_and_hashed_as_it_streams(chunk, repeat):
    image = bytes(range(256)) * repeat  # 9000: past the in-memory spool, to a file
    body, ctype = multipart({"adjustments": {}}, image)
    up = _read(body, ctype, chunk)
    try:
        assert up.envelope == b'{"adjustments": {}}'
        assert up.size == len(image)
        assert up.sha256 == hashlib.sha256(image).hexdigest()
        assert up.image.read() == image
    finally:
        up.close()


@pytest.mark.parametrize("body, code", [
    (b"", "missing_envelope"),
    (b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b--\r\n", "missing_image"),
    (b"--b\r\nContent-Type: image/jpeg\r\n\r\nxx\r\n--b--\r\n", "multipart_order"),
    (b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(3)) + b"--b--\r\n",
     "malformed_multipart"),
    (b"--b\r\n" + b"X-Long: " + b"a" * 5000 + b"\r\n\r\nx\r\n--b--\r\n", "malformed_multipart"),
    (b"garbage without a boundary", "malformed_multipart"),
])
def test_bad_multipart_framing_is_a_4xx_with_a_code(body, code):
    with pytest.raises(TilemoreError) as err:
        _read(body, "multipart/form-data; boundary=b")
    assert err.value.code == code and 400 <= err.value.status < 500


def test_the_envelope_part_is_capped_while_it_streams():
    body, ctype = multipart(b"{" + b" " * 10_000 + b"}", b"img")
    with pytest.raises(EnvelopeTooLarge):
        _read(body, ctype)


def test_the_whole_body_is_capped_on_the_bytes_received():
    body, ctype = multipart({"adjustments": {}}, b"x" * 20_000)
    small = ReadLimits(10_000, 4096, 1.0, 0.0, 0.0)
    with pytest.raises(BodyTooLarge):
        _read(body, ctype, 1000, small)


def test_a_json_body_is_capped():
    with pytest.raises(EnvelopeTooLarge):
        asyncio.run(read_json_body(_stream([b"x" * 3000, b"x" * 3000]), LIMITS))


def test_a_client_that_goes_quiet_is_cut_off():
    started = time.monotonic()
    with pytest.raises(UploadTooSlow):
        asyncio.run(read_json_body(_stream([b"{", b"}"], pause=1.0), LIMITS))
    assert time.monotonic() - started < 1.0  # the idle limit (0.3 s), not the pause


def test_a_trickle_is_cut_off_after_the_grace():
    # 10 bytes every 0.1 s = 100 B/s, under the 1,000 B/s floor: refused once 0.5 s passed
    with pytest.raises(UploadTooSlow) as err:
        asyncio.run(read_json_body(_stream([b" " * 10] * 30, pause=0.1), LIMITS))
    assert err.value.status == 408


def test_the_pixel_budget_is_shared_and_bounded():
    budget = PixelBudget(100, wait_seconds=0.2)
    with budget.hold(60):
        assert budget.in_flight == 60
        with budget.hold(40):  # fits beside it
            assert budget.in_flight == 100
        started = time.monotonic()
        with pytest.raises(DecodeBusy) as err, budget.hold(50):
            pass
        assert 0.15 < time.monotonic() - started < 1.0
        assert err.value.status == 503 and err.value.retry_after >= 1
    assert budget.in_flight == 0


def test_a_waiting_decode_goes_ahead_when_room_is_made():
    budget = PixelBudget(100, wait_seconds=5)
    entered = threading.Event()

    def other() -> None:
        with budget.hold(100):
            entered.set()
            time.sleep(0.2)

    t = threading.Thread(target=other)
    t.start()
    entered.wait()
    started = time.monotonic()
    with budget.hold(1000):  # larger than the budget: waits to hold all of it, alone
        assert budget.in_flight == 100
    assert time.monotonic() - started < 2
    t.join()


class _Tokens:
    def __init__(self) -> None:
        self.lookups = 0
        self.revoked: float | None = None

    def find_token(self, secret: str) -> TokenInfo | None:
        self.lookups += 1
        if secret != "good":
            return None
        return TokenInfo("tok_1", "acme", 0.0, self.revoked, "acme")


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_tokens_are_cached_for_a_few_seconds():
    tokens, clock = _Tokens(), _Clock()
    auth = Authenticator(tokens, cache_seconds=5, clock=clock)  # type: ignore[arg-type]
    for _ in range(10):
        assert auth("Token good Domain acme", "c").domain == "acme"
    assert tokens.lookups == 1
    tokens.revoked = 1.0
    clock.now += 6  # past the cache: the revocation is seen
    with pytest.raises(Unauthorized) as err:
        auth("Token good Domain acme", "c")
    assert err.value.code == "revoked_token"


def test_failed_authentications_are_throttled_per_client():
    tokens, clock = _Tokens(), _Clock()
    auth = Authenticator(tokens, failure_burst=3, failures_per_second=0.5,  # type: ignore
                         clock=clock)
    for _ in range(3):
        with pytest.raises(Unauthorized):
            auth("Token guess Domain acme", "attacker")
    looked_up = tokens.lookups
    with pytest.raises(TooManyRequests) as err:
        auth("Token good Domain acme", "attacker")  # even a good token: slow down first
    assert err.value.code == "too_many_auth_failures" and err.value.retry_after == 2
    assert tokens.lookups == looked_up  # refused before any look-up
    assert auth("Token good Domain acme", "someone-else").domain == "acme"
    clock.now += 2  # one attempt earned back
    assert auth("Token good Domain acme", "attacker").domain == "acme"


def test_a_service_exposed_beyond_loopback_must_be_told_its_address():
    from tilemore.settings import Settings

    with pytest.raises(TilemoreError, match="TILEMORE_PUBLIC_URL must be set"):
        Settings.from_env({"TILEMORE_HOST": "0.0.0.0"})
    assert Settings.from_env({"TILEMORE_HOST": "::1"}).base_url == "http://::1:8000"
    exposed = Settings.from_env({"TILEMORE_HOST": "0.0.0.0",
                                 "TILEMORE_PUBLIC_URL": "https://api.example.com/"})
    assert exposed.base_url == "https://api.example.com"
