"""Inputs and outputs without holding them in memory.

An input is hashed in a first streaming pass and sent in a second, from disk: a path is read
twice; a seekable file object is read from where it stands, then rewound there; a
non-seekable one (a pipe, a socket, a generator's reader) is spooled to a temporary file while
it is hashed. Only bytes given as bytes stay in memory."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import payload

from tilemore_sdk._errors import InputError

CHUNK = 1 << 20
Input = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO
# progress(phase, done, total): phase is "hash", "upload" or "download"; total may be None
Progress = Callable[[str, int, int | None], Any]


class Source:
    """An input ready to send: its SHA-256 and size, and how to read it again."""

    def __init__(self, file: BinaryIO, start: int, size: int, sha256: str,
                 owned: bool, spooled: Path | None = None) -> None:
        self.file, self.start, self.size, self.sha256 = file, start, size, sha256
        self.in_memory = isinstance(file, io.BytesIO)  # read without a thread hop
        self._owned, self._spooled = owned, spooled

    def close(self) -> None:
        if self._owned:
            self.file.close()
        if self._spooled is not None:
            self._spooled.unlink(missing_ok=True)

    def part(self, progress: Progress | None) -> payload.Payload:
        return _FilePart(self, progress)


async def prepare(value: Input, progress: Progress | None = None) -> Source:
    """Hash ``value`` (spooling it first when it cannot be read twice); files are read off
    the event loop, bytes at once."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _prepare(value, progress)
    return await asyncio.to_thread(_prepare, value, progress)


def _prepare(value: Input, progress: Progress | None) -> Source:
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return Source(io.BytesIO(data), 0, len(data), hashlib.sha256(data).hexdigest(), True)
    if not isinstance(value, (str, os.PathLike)):
        if not hasattr(value, "read"):
            raise InputError("input must be a path, bytes or a binary file object",
                             code="input_error")
        return _from_file(value, progress)
    path = Path(value)
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file", code="input_not_found") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a file", code="input_unreadable") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})",
                         code="input_unreadable") from None
    try:
        size = os.fstat(f.fileno()).st_size
        sha, n = _hash(f, size, progress)
    except OSError as exc:
        f.close()
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})",
                         code="input_unreadable") from None
    except BaseException:
        f.close()
        raise
    return Source(f, 0, n, sha, owned=True)


def _from_file(f: BinaryIO, progress: Progress | None) -> Source:
    if isinstance(f, io.TextIOBase):
        raise InputError("the file object must be opened in binary mode", code="input_error")
    seekable = False
    try:
        seekable = f.seekable() and isinstance(f.tell(), int)
    except (AttributeError, OSError, ValueError):
        pass
    if seekable:
        start = f.tell()
        sha, size = _hash(f, None, progress)
        f.seek(start)
        return Source(f, start, size, sha, owned=False)
    fd, name = tempfile.mkstemp(prefix="tilemore-upload-")
    spool = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            sha, size = _hash(f, None, progress, copy_to=out)
        return Source(spool.open("rb"), 0, size, sha, owned=True, spooled=spool)
    except BaseException:
        spool.unlink(missing_ok=True)
        raise


def _hash(f: BinaryIO, total: int | None, progress: Progress | None,
          copy_to: BinaryIO | None = None) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    while True:
        chunk = f.read(CHUNK)
        if chunk is None:  # a non-blocking stream with nothing yet
            continue
        if not isinstance(chunk, (bytes, bytearray)):
            raise InputError("the file object must be opened in binary mode",
                             code="input_error")
        if not chunk:
            return h.hexdigest(), n
        h.update(chunk)
        if copy_to is not None:
            copy_to.write(chunk)
        n += len(chunk)
        if progress is not None:
            progress("hash", n, total)


class _FilePart(payload.Payload):
    """The image part of the upload, read from its source a chunk at a time (off the event
    loop), from the start at every attempt, with a known length."""

    def __init__(self, source: Source, progress: Progress | None) -> None:
        super().__init__(None, content_type="application/octet-stream", filename="input")
        self._source, self._progress = source, progress
        self._size = source.size

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("an image part has no text form")

    async def write(self, writer: Any) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        src = self._source
        left = src.size if content_length is None else min(src.size, content_length)
        async def run(fn: Callable[..., Any], *args: Any) -> Any:
            return fn(*args) if src.in_memory else await asyncio.to_thread(fn, *args)

        await run(src.file.seek, src.start)
        sent = 0
        while left > 0:
            chunk = await run(src.file.read, min(CHUNK, left))
            if not chunk:
                raise InputError("the input shrank while it was sent", code="input_changed")
            await writer.write(chunk)
            left -= len(chunk)
            sent += len(chunk)
            if self._progress is not None:
                self._progress("upload", sent, src.size)
