"""Blobs as files: ``root/ab/abcdef…``, written beside their name and renamed into place."""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from tilemore.blobs import BlobNotFound, BlobStoreError, StorageFull, blob_key

_KEY = re.compile(r"^[0-9a-f]{64}$")


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise BlobNotFound(f"'{key}' is not a blob key")
        return self.root / key[:2] / key

    def put(self, data: bytes) -> str:
        key = blob_key(data)
        self._write(key, lambda f: f.write(data))
        return key

    def put_file(self, source: IO[bytes], key: str) -> str:
        source.seek(0)
        self._write(key, lambda f: shutil.copyfileobj(source, f, 1 << 20))
        return key

    def _write(self, key: str, write: Callable[[IO[bytes]], object]) -> None:
        path = self._path(key)
        if path.exists():
            return
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

    def link(self, key: str, filename: str, content_type: str) -> str | None:
        return None  # the API streams local blobs itself


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
