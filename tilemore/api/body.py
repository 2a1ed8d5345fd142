"""Request bodies, read as they stream in: bounded in size and in time, split on the fly.

Limits hold on the bytes actually received, never on ``Content-Length``. A client that sends
nothing for ``idle_seconds``, or less than ``min_rate`` bytes a second once ``grace_seconds``
have passed, is cut off (408): a slow or half-sent upload cannot hold the service.

A multipart body is the envelope part first (JSON, kept in memory up to its own limit), then
the image part, which goes to a spooled temporary file (memory, then disk past
``SPOOL_MEMORY``) and is hashed as it arrives: the image is held once, never joined, copied
and re-sliced in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from tempfile import SpooledTemporaryFile
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from tilemore.api.envelope import BadRequest
from tilemore.errors import TilemoreError

SPOOL_MEMORY = 1 << 20  # an upload past this many bytes goes to a temporary file


class BodyTooLarge(TilemoreError):
    code = "body_too_large"
    status = 413


class EnvelopeTooLarge(TilemoreError):
    code = "envelope_too_large"
    status = 413


class UploadTooSlow(TilemoreError):
    code = "upload_too_slow"
    status = 408


class UnsupportedMediaType(TilemoreError):
    code = "unsupported_media_type"
    status = 415


@dataclass(frozen=True)
class ReadLimits:
    max_bytes: int  # the whole body
    max_envelope_bytes: int  # the JSON envelope, alone or as the first part
    idle_seconds: float  # longest wait for the next chunk
    min_rate: float  # bytes per second, on average, once the grace has passed
    grace_seconds: float


async def timed_chunks(stream: AsyncIterator[bytes], limits: ReadLimits,
                       clock=time.monotonic) -> AsyncIterator[bytes]:
    """The body's chunks, each within ``idle_seconds``, at ``min_rate`` on average after the
    grace; the whole no larger than ``max_bytes``."""
    started, size = clock(), 0
    chunks = stream.__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), limits.idle_seconds)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise UploadTooSlow(f"no body data for {limits.idle_seconds:g} s; the upload was "
                                "cut off") from None
        size += len(chunk)
        if size > limits.max_bytes:
            raise BodyTooLarge(f"the request body is over the limit of {limits.max_bytes:,} "
                               "bytes")
        elapsed = clock() - started
        if elapsed > limits.grace_seconds and size < limits.min_rate * elapsed:
            raise UploadTooSlow(f"the upload is arriving at {size / elapsed:,.0f} bytes/s; "
                                f"the least accepted is {limits.min_rate:,.0f}")
        yield chunk


async def read_json_body(stream: AsyncIterator[bytes], limits: ReadLimits) -> bytes:
    """A JSON body (an envelope, a billing request), no larger than ``max_envelope_bytes``."""
    chunks, size = [], 0
    async for chunk in timed_chunks(stream, limits):
        size += len(chunk)
        if size > limits.max_envelope_bytes:
            raise EnvelopeTooLarge(f"the JSON body is over the limit of "
                                   f"{limits.max_envelope_bytes:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class Upload:
    """A multipart submission: the envelope's bytes and the image, spooled and hashed."""

    envelope: bytes
    image: IO[bytes]
    size: int
    sha256: str

    def close(self) -> None:
        self.image.close()


def media_type(content_type: str) -> str:
    mime, _ = parse_options_header(content_type or "application/json")
    mime_text = mime.decode("latin-1")
    if mime_text in ("application/json", "text/json", "multipart/form-data"):
        return mime_text
    raise UnsupportedMediaType(
        f"Content-Type {mime_text or '(none)'} is not accepted; send application/json or "
        "multipart/form-data (envelope part, then image part)")


async def read_multipart(stream: AsyncIterator[bytes], content_type: str,
                         limits: ReadLimits) -> Upload:
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise BadRequest("multipart body without a (sensible) boundary",
                         code="malformed_multipart")
    splitter = _PartSplitter(limits.max_envelope_bytes)
    parser = MultipartParser(boundary, splitter.callbacks())
    image: IO[bytes] = SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115 - Upload owns it
    digest, size = hashlib.sha256(), 0
    try:
        async for chunk in timed_chunks(stream, limits):
            _feed(parser, chunk)
            data = splitter.take_image_data()
            if data:
                digest.update(data)
                size += len(data)
                if size > SPOOL_MEMORY:  # on disk now: the write is the thread pool's
                    await run_in_threadpool(image.write, data)
                else:
                    image.write(data)
        _finish(parser)
        splitter.check_complete()
    except BaseException:
        image.close()
        raise
    image.seek(0)
    return Upload(bytes(splitter.envelope), image, size, digest.hexdigest())


def _feed(parser: MultipartParser, chunk: bytes) -> None:
    try:
        parser.write(chunk)
    except TilemoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - the parser's own error types vary by version
        raise BadRequest(f"malformed multipart body: {exc}", code="malformed_multipart") from None


def _finish(parser: MultipartParser) -> None:
    try:
        parser.finalize()
    except Exception as exc:  # noqa: BLE001
        raise BadRequest(f"malformed multipart body: {exc}", code="malformed_multipart") from None


@dataclass
class _PartSplitter:
    """The parser's callbacks: part 1 is the envelope, part 2 the image, nothing after."""

    max_envelope: int
    envelope: bytearray = field(default_factory=bytearray)
    parts: int = 0
    ended: int = 0
    _headers: dict[str, str] = field(default_factory=dict)
    _name: bytearray = field(default_factory=bytearray)
    _value: bytearray = field(default_factory=bytearray)
    _image: list[bytes] = field(default_factory=list)

    def callbacks(self) -> dict:
        return {"on_part_begin": self._begin, "on_header_field": self._field,
                "on_header_value": self._val, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_done, "on_part_data": self._data,
                "on_part_end": self._end}

    def take_image_data(self) -> bytes:
        data = b"".join(self._image)
        self._image.clear()
        return data

    def check_complete(self) -> None:
        if self.parts == 0:
            raise BadRequest("the multipart body has no parts", code="missing_envelope")
        if self.parts < 2 or self.ended < 2:
            raise BadRequest("the multipart body has the envelope but no image part; send the "
                             "envelope alone as application/json to ask without the image",
                             code="missing_image")

    def _begin(self) -> None:
        self.parts += 1
        if self.parts > 2:
            raise BadRequest("the multipart body has more than two parts",
                             code="malformed_multipart")
        self._headers = {}

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._name.extend(data[start:end])
        if len(self._name) > 256:
            raise BadRequest("a multipart header name is too long", code="malformed_multipart")

    def _val(self, data: bytes, start: int, end: int) -> None:
        self._value.extend(data[start:end])
        if len(self._value) > 1024:
            raise BadRequest("a multipart header is too long", code="malformed_multipart")

    def _header_end(self) -> None:
        if len(self._headers) >= 8:
            raise BadRequest("too many multipart headers", code="malformed_multipart")
        self._headers[self._name.decode("latin-1").lower()] = self._value.decode("latin-1")
        self._name.clear()
        self._value.clear()

    def _headers_done(self) -> None:
        if self.parts == 1 and _looks_like_image(self._headers):
            raise BadRequest("the envelope must be the first part and the image the second "
                             "(parts swapped?)", code="multipart_order")

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.parts == 1:
            self.envelope.extend(data[start:end])
            if len(self.envelope) > self.max_envelope:
                raise EnvelopeTooLarge(f"the envelope part is over the limit of "
                                       f"{self.max_envelope:,} bytes")
        else:
            self._image.append(data[start:end])

    def _end(self) -> None:
        self.ended += 1


def _looks_like_image(headers: dict[str, str]) -> bool:
    _, disposition = parse_options_header(headers.get("content-disposition", ""))
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    name = disposition.get(b"name", b"").decode("latin-1")
    json_part = name == "envelope" or content_type in ("application/json", "text/json")
    return name == "image" or content_type.startswith("image/") or (
        b"filename" in disposition and not json_part)
