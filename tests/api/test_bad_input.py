"""Every bad request is a clear 4xx with a machine-readable code; nothing is recorded; the
service stays healthy."""

from __future__ import annotations

import hashlib
import http.client
import json
import time

import pytest
from support.images import encode, noisy, photo, png_bomb
from support.service_harness import http as request
from support.service_harness import multipart

GOOD = encode(noisy(photo(96, 72), 10, seed=9), "JPEG", quality=90)
SHA = hashlib.sha256(GOOD).hexdigest()
ENV = {"adjustments": {"shifter": {"resize": {"width": 32}}}}


@pytest.fixture(autouse=True)
def nothing_recorded_and_still_healthy(service):
    count = lambda: service.store._query("SELECT COUNT(*) AS n FROM threads")[0]["n"]  # noqa
    before = count()
    yield
    assert count() == before, "a refused request left a record"
    assert request("GET", f"{service.url}/healthz").status == 200


def post(service, body: bytes, ctype: str, sha: str = SHA, meta: str = "shop/v1",
         headers: dict | None = None):
    return request("POST", f"{service.url}/{meta}/submitted/{sha}/", body,
                   {"Content-Type": ctype, **(service.auth() if headers is None else headers)})


def send_image(service, image: bytes, envelope=ENV):
    body, ctype = multipart(envelope, image)
    return post(service, body, ctype, sha=hashlib.sha256(image).hexdigest())


@pytest.mark.parametrize("body, status, code", [
    (b"{not json", 400, "malformed_json"),
    (b"[1, 2]", 422, "invalid_envelope"),
    (b'{"output_format": "jpeg"}', 422, "missing_adjustments"),
    (b'{"adjustments": {}, "surprise": 1}', 422, "invalid_envelope"),
    (b'{"adjustments": {"master": {"algorithm": "magic"}}}', 422, "unknown_algorithm"),
    (b'{"adjustments": {"master": {"strenght": 2}}}', 422, "unknown_parameter"),
    (b'{"adjustments": {"shifter": {"resize": {"width": 0}}}}', 422, "invalid_parameter"),
    (b'{"adjustments": {}, "output_format": "gif"}', 422, "unsupported_output_format"),
    (b'{"adjustments": {}, "pipeline": "nope"}', 404, "unknown_pipeline"),
    (b'{"adjustments": {}, "meta": {"x": NaN}}', 400, "malformed_json"),
    (b'{"adjustments": {}, "meta": {"x": "\\ud800"}}', 400, "malformed_json"),
    (b"[" * 30_000 + b"]" * 30_000, 400, "malformed_json"),  # too deep, within the size cap
    (b"[" * 100_000 + b"]" * 100_000, 413, "envelope_too_large"),
    (b'{"adjustments": {"shifter": {"resize": {"width": ' + b"9" * 5000 + b"}}}}", 400,
     "malformed_json"),  # digits are bounded where JSON is parsed
    (b'{"adjustments": {"shifter": {"resize": {"width": 1e999}}}}', 400, "malformed_json"),
    (b'{"adjustments": {"master": {"branches": {"nlmeans": 5}}}}', 422, "invalid_adjustments"),
])
def test_bad_envelopes(service, body, status, code):
    reply = post(service, body, "application/json")
    assert (reply.status, reply.code) == (status, code), reply.body
    if code in ("unknown_algorithm", "unknown_parameter"):
        assert ("magic" if code == "unknown_algorithm" else "strenght") in reply.json()[
            "error"]["message"]


@pytest.mark.parametrize("sha, code", [
    ("abc", "invalid_hash"), (SHA.upper(), "invalid_hash"), (SHA[:-1] + "g", "invalid_hash"),
])
def test_bad_hashes(service, sha, code):
    reply = post(service, json.dumps(ENV).encode(), "application/json", sha=sha)
    assert (reply.status, reply.code) == (400, code)


def test_hash_mismatch(service):
    body, ctype = multipart(ENV, GOOD)
    reply = post(service, body, ctype, sha=hashlib.sha256(b"other").hexdigest())
    assert (reply.status, reply.code) == (400, "hash_mismatch")


@pytest.mark.parametrize("data, status, code", [
    (b"", 400, "empty_image"),
    (b"plain text, not a picture", 400, "corrupt_image"),
    (GOOD[: len(GOOD) // 2], 400, "truncated_image"),
    (png_bomb(), 413, "image_too_large"),
    (encode(photo(8, 8), "GIF"), 415, "unsupported_image_format"),
])
def test_bad_images(service, data, status, code):
    reply = send_image(service, data)
    assert (reply.status, reply.code) == (status, code), reply.body


def test_body_over_the_limit_counted_as_it_streams(service):
    big = b"x" * 3_500_000  # the module's service takes at most 3,000,000 bytes
    body, ctype = multipart(ENV, big)
    reply = post(service, body, ctype, sha=hashlib.sha256(big).hexdigest())
    assert (reply.status, reply.code) == (413, "body_too_large")
    # chunked, with no Content-Length to trust: still counted
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
    chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))
    conn.request("POST", f"/shop/v1/submitted/{hashlib.sha256(big).hexdigest()}/", chunks,
                 {"Content-Type": ctype, **service.auth()}, encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error"]["code"] == "body_too_large"
    conn.close()


def test_multipart_parts_swapped_or_missing(service):
    body, ctype = multipart(ENV, GOOD, swap=True)
    assert post(service, body, ctype).code == "multipart_order"
    body, ctype = multipart(ENV, None)
    assert post(service, body, ctype).code == "missing_image"
    assert post(service, b"--x--\r\n", "multipart/form-data; boundary=x").code in (
        "missing_envelope", "malformed_multipart")
    assert post(service, b"junk", "multipart/form-data").code == "malformed_multipart"
    reply = post(service, b"<xml/>", "application/xml")
    assert (reply.status, reply.code) == (415, "unsupported_media_type")


@pytest.mark.parametrize("meta", ["shop/..", "shop/%2Fetc", "shop%2Fv1", "..", "shop/.",
                                  "shop/%2e%2e", "a%20b"])
def test_path_tricks_in_meta_parts(service, meta):
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
    conn.request("POST", f"/{meta}/submitted/{SHA}/", json.dumps(ENV).encode(),
                 {"Content-Type": "application/json", **service.auth()})
    resp = conn.getresponse()
    body = json.loads(resp.read() or b"{}")
    assert resp.status in (400, 404), (resp.status, body)
    if resp.status == 400:
        assert body["error"]["code"] in ("invalid_meta_parts", "invalid_request")
    conn.close()


def test_credentials(service):
    body = json.dumps(ENV).encode()
    cases = [
        ({}, 401, "missing_credentials"),
        ({"Authorization": "Basic abc"}, 401, "malformed_credentials"),
        ({"Authorization": "Bearer abc"}, 401, "invalid_token"),  # well formed, unknown
        ({"Authorization": "Token tm_nope Domain acme"}, 401, "invalid_token"),
        (service.auth(service.rival_token, "acme"), 403, "wrong_domain"),
    ]
    for headers, status, code in cases:
        reply = post(service, body, "application/json", headers=headers)
        assert (reply.status, reply.code) == (status, code)
    token_id, secret = service.store.issue_token("acme")
    assert post(service, body, "application/json",
                headers=service.auth(secret)).json()["status"] == "needs-file"
    service.store.revoke_token(token_id)
    # Replicas trust a token they looked up for token_cache_seconds, no longer.
    deadline = time.monotonic() + service.settings.token_cache_seconds + 2
    while True:
        reply = post(service, body, "application/json", headers=service.auth(secret))
        if reply.status != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (reply.status, reply.code) == (401, "revoked_token")
