"""Request bodies: counted as they stream in, then split into envelope and image.

The size limit is enforced on the bytes actually received, never on ``Content-Length``.
A multipart body is the envelope part first (JSON), then the image part.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from tilemore.api.envelope import BadRequest
from tilemore.errors import TilemoreError


class BodyTooLarge(TilemoreError):
    code = "body_too_large"
    status = 413


class UnsupportedMediaType(TilemoreError):
    code = "unsupported_media_type"
    status = 415


async def read_limited(stream: AsyncIterator[bytes], limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the request body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)

    @property
    def disposition(self) -> dict[bytes, bytes]:
        return parse_options_header(self.headers.get("content-disposition", ""))[1]

    @property
    def name(self) -> str:
        return self.disposition.get(b"name", b"").decode("latin-1")

    @property
    def is_file(self) -> bool:
        return b"filename" in self.disposition

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


def split_body(content_type: str, body: bytes) -> tuple[bytes, bytes | None]:
    """(envelope JSON, image bytes or None)."""
    mime, options = parse_options_header(content_type or "application/json")
    if mime in (b"application/json", b"text/json"):
        return body, None
    if mime != b"multipart/form-data":
        raise UnsupportedMediaType(
            f"Content-Type {mime.decode() or '(none)'} is not accepted; send application/json "
            "or multipart/form-data (envelope part, then image part)")
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart body without a boundary", code="malformed_multipart")
    parts = _parse_multipart(boundary, body)
    if not parts:
        raise BadRequest("the multipart body has no parts", code="missing_envelope")
    first = parts[0]
    json_part = first.name == "envelope" or first.content_type in ("application/json",
                                                                   "text/json")
    if first.name == "image" or first.content_type.startswith("image/") or (
            first.is_file and not json_part):
        raise BadRequest("the envelope must be the first part and the image the second "
                         "(parts swapped?)", code="multipart_order")
    if len(parts) < 2:
        raise BadRequest("the multipart body has the envelope but no image part; send the "
                         "envelope alone as application/json to ask without the image",
                         code="missing_image")
    if len(parts) > 2:
        raise BadRequest("the multipart body has more than two parts", code="malformed_multipart")
    return bytes(first.data), bytes(parts[1].data)


def _parse_multipart(boundary: bytes, body: bytes) -> list[_Part]:
    parts: list[_Part] = []
    field_name = bytearray()
    field_value = bytearray()

    def begin() -> None:
        parts.append(_Part())

    def header_field(data: bytes, start: int, end: int) -> None:
        field_name.extend(data[start:end])

    def header_value(data: bytes, start: int, end: int) -> None:
        field_value.extend(data[start:end])

    def header_end() -> None:
        parts[-1].headers[field_name.decode("latin-1").lower()] = field_value.decode("latin-1")
        field_name.clear()
        field_value.clear()

    def part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data.extend(data[start:end])

    parser = MultipartParser(boundary, {
        "on_part_begin": begin, "on_header_field": header_field,
        "on_header_value": header_value, "on_header_end": header_end,
        "on_part_data": part_data,
    })
    try:
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # noqa: BLE001 - the parser's own error types vary by version
        raise BadRequest(f"malformed multipart body: {exc}", code="malformed_multipart") from None
    return parts
