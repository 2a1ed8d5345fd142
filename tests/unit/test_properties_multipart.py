"""Property: the multipart reader, fed any bytes in any chunking, gives a good Upload or one
of our errors (a 4xx with a code) — never another exception, never a hang; and a valid body
gives the same Upload however the network splits it."""

from __future__ import annotations

import asyncio
import hashlib
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tilemore.api.body import ReadLimits, Upload, read_multipart
from tilemore.errors import TilemoreError

BOUNDED = settings(max_examples=100, deadline=2000,
                   suppress_health_check=[HealthCheck.too_slow])
LIMITS = ReadLimits(max_bytes=64 * 2**10, max_envelope_bytes=2048, idle_seconds=5,
                    min_rate=0, grace_seconds=0)
BOUNDARY = "b0undary"
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"
ENV_HEAD = (b'Content-Disposition: form-data; name="envelope"\r\n'
            b"Content-Type: application/json\r\n\r\n")
IMG_HEAD = (b'Content-Disposition: form-data; name="image"; filename="in.png"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n")


def body(envelope: bytes, image: bytes, boundary: str = BOUNDARY) -> bytes:
    mark = b"--" + boundary.encode()
    return (mark + b"\r\n" + ENV_HEAD + envelope + b"\r\n" + mark + b"\r\n" + IMG_HEAD
            + image + b"\r\n" + mark + b"--\r\n")


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


async def _stream(chunks: list[bytes]):
    for chunk in chunks:
        yield chunk


def read(chunks: list[bytes], content_type: str = CTYPE,
         limits: ReadLimits = LIMITS) -> Upload | TilemoreError:
    """The reader's verdict, within a bound: an Upload (image read back whole) or our error."""
    started = time.monotonic()
    try:
        upload = asyncio.run(read_multipart(_stream(chunks), content_type, limits))
    except TilemoreError as err:
        assert 400 <= err.status < 500 and err.code, err
        return err
    finally:
        assert time.monotonic() - started < 2.0  # a hang, not a slow machine
    image = upload.image.read()
    upload.close()
    assert len(image) == upload.size and hashlib.sha256(image).hexdigest() == upload.sha256
    upload.image = image  # type: ignore[assignment] - compared by value below
    return upload


# Image bytes that look like the framing: CRLFs, dashes and boundary prefixes inside parts.
tricky = st.lists(st.sampled_from([b"\r\n", b"--", b"-", b"\r", b"\n", b"--b0und",
                                   b"--b0undary", b"\x00", b"\xff", b"PNG", b"x"]),
                  max_size=40).map(b"".join)
payloads = tricky | st.binary(max_size=3000)
# Header values as Starlette hands them over: bytes decoded as latin-1.
LATIN1 = st.characters(max_codepoint=255)
cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=12)


def verdict(result: Upload | TilemoreError) -> tuple:
    if isinstance(result, Upload):
        return ("upload", result.envelope, result.image, result.size, result.sha256)
    return ("refused", result.code)


@BOUNDED
@given(envelope=st.binary(max_size=1500) | tricky, image=payloads, cuts=cuts)
def test_any_split_of_a_body_gives_the_same_verdict(envelope, image, cuts):
    """However the bytes are chunked, the same Upload (or the same refusal); a valid body
    (no part holds the delimiter, as RFC 2046 requires of the sender) gives its parts back
    exactly."""
    data = body(envelope, image)
    whole = read([data])
    pieces = read(split(data, cuts))
    bytewise = read([data[i:i + 1] for i in range(len(data))]) if len(data) < 600 else whole
    assert verdict(whole) == verdict(pieces) == verdict(bytewise)
    delimiter = b"\r\n--" + BOUNDARY.encode()
    if all(delimiter not in b"\r\n" + part + b"\r\n" for part in (envelope, image)):
        assert isinstance(whole, Upload), whole
        assert (whole.envelope, whole.image) == (envelope, image)


@BOUNDED
@given(data=st.binary(max_size=4000), cuts=cuts)
def test_arbitrary_bytes(data, cuts):
    read(split(data, cuts))


@BOUNDED
@given(envelope=st.binary(max_size=400), image=payloads, cuts=cuts,
       edits=st.lists(st.tuples(st.integers(0, 10_000), st.binary(max_size=6),
                                st.integers(0, 8)), min_size=1, max_size=6))
def test_mangled_bodies(envelope, image, cuts, edits):
    """A valid body with bytes replaced, inserted or cut anywhere (headers, boundaries)."""
    data = bytearray(body(envelope, image))
    for where, new, drop in edits:
        at = where % (len(data) + 1)
        data[at:at + drop] = new
    read(split(bytes(data), cuts))


@BOUNDED
@given(content_type=st.text(LATIN1, max_size=300) | st.sampled_from([
           "multipart/form-data", "multipart/form-data; boundary=",
           'multipart/form-data; boundary=""', "multipart/form-data; boundary=" + "b" * 300,
           "multipart/form-data; boundary=b0undary; boundary=other",
           "multipart/form-data; boundary*=utf-8''b0undary"]),
       image=payloads)
def test_arbitrary_content_types(content_type, image):
    read([body(b'{"adjustments": {}}', image)], content_type)


@BOUNDED
@given(extra=st.integers(1, 5000), image=payloads, cuts=cuts)
def test_limits_hold_on_bytes_received(extra, image, cuts):
    """An envelope part over its limit, or a body over the whole limit: 413, in any chunking."""
    big_env = b"x" * (LIMITS.max_envelope_bytes + extra)
    verdict = read(split(body(big_env, image), cuts))
    assert isinstance(verdict, TilemoreError) and verdict.code == "envelope_too_large"
    big_image = image + b"y" * (LIMITS.max_bytes + extra)
    verdict = read(split(body(b"{}", big_image), cuts))
    assert isinstance(verdict, TilemoreError) and verdict.code == "body_too_large"
