"""Where a batch reads and writes: a local folder or an S3 prefix, behind one small protocol.

Names are relative, ``/``-separated paths (``trips/2024/a.jpg``) whichever side holds them,
so a source name maps to a destination name the same way on disk and in a bucket. A location
is plain data: it travels to the workers (an S3 client is made there, once per process; see
:mod:`tilemore.batch.s3`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tilemore.errors import ImageTooLarge, TilemoreError
from tilemore.files import write_atomically
from tilemore.settings import Settings


class LocationError(TilemoreError):
    """A source or destination that cannot be used at all (fatal: nothing is processed)."""

    code = "bad_location"


class Unreadable(TilemoreError):
    """One input that cannot be read (skipped and reported, the batch goes on)."""

    code = "unreadable"


class Location(Protocol):
    def names(self, skip: str | None = None) -> Iterator[str]:
        """Every file's relative name, hidden ones (``.name``) aside; ``skip``: a sub-folder
        (relative) to leave out, where the destination lies inside the source."""

    def read(self, name: str, limit: int) -> bytes: ...

    def write(self, name: str, data: bytes, content_type: str) -> None:
        """All or nothing: a reader (or a resumed batch) never sees half a file."""

    def check(self, *, create: bool) -> None:
        """Raise :class:`LocationError` unless the location can be read now (or, with
        ``create``, written: a missing folder is made by the first write)."""

    def within(self, other: Location) -> str | None:
        """Where this location lies inside ``other``, relative to it ('' when the same);
        None when it does not."""

    def uri(self, name: str = "") -> str: ...


def parse_location(text: str, settings: Settings) -> Location:
    """``s3://bucket/prefix`` (endpoint and region from the S3 settings), else a folder."""
    if text.startswith("s3://"):
        from tilemore.batch.s3 import S3Prefix  # boto3 only for S3

        bucket, _, prefix = text[len("s3://"):].partition("/")
        if not bucket:
            raise LocationError(f"'{text}' names no bucket (s3://bucket/prefix)")
        return S3Prefix(bucket, prefix.strip("/"), settings.s3_endpoint, settings.s3_region)
    if "://" in text:
        raise LocationError(f"'{text}': only local folders and s3:// prefixes are supported")
    return LocalFolder(str(Path(text).expanduser().resolve()))


@dataclass(frozen=True)
class LocalFolder:
    root: str  # absolute, so workers with another working directory find it

    def uri(self, name: str = "") -> str:
        return str(Path(self.root, name)) if name else self.root

    def names(self, skip: str | None = None) -> Iterator[str]:
        for folder, dirs, files in os.walk(self.root):
            rel = os.path.relpath(folder, self.root)
            rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                             and (skip is None or rel + d != skip))
            for f in sorted(files):
                if not f.startswith("."):
                    yield rel + f

    def read(self, name: str, limit: int) -> bytes:
        path = Path(self.root, name)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > limit:
                    raise ImageTooLarge(f"the file is {size:,} bytes; the limit is {limit:,}")
                return f.read()
        except FileNotFoundError:
            raise Unreadable("no such file (removed, or a broken link)",
                             code="not_found") from None
        except PermissionError:
            raise Unreadable("permission denied", code="permission_denied") from None
        except OSError as exc:
            raise Unreadable(f"cannot read: {exc.strerror or exc}") from None

    def write(self, name: str, data: bytes, content_type: str) -> None:
        write_atomically(Path(self.root, name), data)

    def check(self, *, create: bool) -> None:
        path = Path(self.root)
        if create:  # it is made by the first write: here only whether it can be
            existing = next(p for p in (path, *path.parents) if p.exists())
            if existing != path and not existing.is_dir():
                raise LocationError(f"{path}: {existing} is a file, not a folder")
            path = existing
        if not path.exists():
            raise LocationError(f"{path}: no such folder")
        if not path.is_dir():
            raise LocationError(f"{path} is a file, not a folder")
        if not os.access(path, os.W_OK if create else os.R_OK):
            raise LocationError(f"{path}: permission denied")

    def within(self, other: Location) -> str | None:
        if not isinstance(other, LocalFolder):
            return None
        rel = os.path.relpath(self.root, other.root)
        if rel == ".":
            return ""
        return None if rel == ".." or rel.startswith(".." + os.sep) else rel.replace(os.sep, "/")
