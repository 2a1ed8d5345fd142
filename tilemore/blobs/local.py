"""Blobs as files: ``root/ab/abcdef…``, written beside their name and renamed into place.

A file's modification time is when it was last put: a put that finds the file already there
touches it, and a delete told ``modified_before`` leaves a file touched since (the put/delete
race rule of :mod:`tilemore.lifecycle`)."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from tilemore.blobs import (
    BlobInfo,
    BlobKind,
    BlobNotFound,
    BlobStoreError,
    StorageFull,
    StoreClock,
    blob_key,
    check_prefix,
)

log = logging.getLogger("tilemore.blobs")
DELETE_THREADS = 16  # unlinks in flight at once in a large delete

_KEY = re.compile(r"^[0-9a-f]{64}$")


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # File times are the file system's clock (a shared one's server's), not this node's.
        self.clock = StoreClock(self._file_time)

    def _file_time(self) -> float:
        """Now, as the file system dates a file touched now."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".clock"  # not a key: never listed, never collected
        with open(path, "ab"):
            pass
        os.utime(path)
        return os.stat(path).st_mtime

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise BlobNotFound(f"'{key}' is not a blob key")
        return self.root / key[:2] / key

    def put(self, data: bytes, kind: BlobKind = "checkpoint") -> str:
        key = blob_key(data)
        self._write(key, lambda f: f.write(data))
        return key

    def put_file(self, source: IO[bytes], key: str, kind: BlobKind = "input") -> str:
        source.seek(0)
        self._write(key, lambda f: shutil.copyfileobj(source, f, 1 << 20))
        return key

    def _write(self, key: str, write: Callable[[IO[bytes]], object]) -> None:
        path = self._path(key)
        try:
            os.utime(path)  # there already: refreshed, so a collector about to delete it keeps
            # it (tilemore.store.lifecycle's race rule)
            return
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise BlobStoreError(
                f"cannot touch blob {key[:12]}…: {exc.strerror or exc}") from None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())  # the record that names this key comes after
                os.replace(tmp, path)
                _fsync_dir(path.parent)  # the rename itself must survive a power cut
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            cls = StorageFull if exc.errno in (errno.ENOSPC, errno.EDQUOT) else BlobStoreError
            raise cls(f"cannot write blob {key[:12]}…: {exc.strerror or exc}") from None

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(f"blob {key[:12]}… does not exist") from None
        except OSError as exc:
            raise BlobStoreError(f"cannot read blob {key[:12]}…: {exc.strerror or exc}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def link(self, key: str, filename: str, content_type: str,
             expires_in: int | None = None) -> str | None:
        return None  # the API streams local blobs itself

    def delete(self, keys: Sequence[str], *, modified_before: float | None = None) -> list[str]:
        bad = next((k for k in keys if not _KEY.match(k)), None)  # (no Path: 16 µs each)
        if bad is not None:  # keys, nothing else, before anything is removed
            raise BlobNotFound(f"'{bad}' is not a blob key")
        root = str(self.root)

        def some(chunk: Sequence[str]) -> list[str]:
            gone = []
            for key in chunk:
                path = os.path.join(root, key[:2], key)  # strings: thousands a second
                try:
                    if modified_before is not None and os.stat(path).st_mtime >= modified_before:
                        continue  # put again meanwhile: someone relies on it
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:  # refused (permissions, a read-only disk): stays, counted
                    log.warning("blob %s… not deleted: %s", key[:12], exc.strerror or exc)
                    continue
                gone.append(key)
            return gone

        if len(keys) < DELETE_THREADS * 4:
            return some(keys)
        # An unlink waits on the disk, not on Python: a few at once go several times faster.
        # Each thread takes a share of the keys whole (a future per key cost more than the
        # unlink: 4,300 against 7,400 expired threads/s in benchmarks/storage.py).
        with ThreadPoolExecutor(DELETE_THREADS, thread_name_prefix="blob-delete") as pool:
            done = set().union(*pool.map(some, [keys[i::DELETE_THREADS]
                                                for i in range(DELETE_THREADS)]))
        return [k for k in keys if k in done]

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        check_prefix(prefix)
        if not self.root.is_dir():
            return
        for folder in sorted(self.root.iterdir()):
            name = folder.name
            if len(name) != 2 or not (name.startswith(prefix[:2])) or not folder.is_dir():
                continue
            with os.scandir(folder) as entries:
                for entry in entries:
                    if not (_KEY.match(entry.name) and entry.name.startswith(prefix)):
                        continue  # a write in progress (.tmp-…), or another prefix
                    try:
                        st = entry.stat()
                    except FileNotFoundError:  # deleted while listed
                        continue
                    yield BlobInfo(entry.name, st.st_size, st.st_mtime)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
