"""A blob store whose calls are timed into ``tilemore_blob_seconds``."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import IO

from tilemore.blobs import BlobInfo, BlobKind, BlobStore
from tilemore.metrics import Metrics


class TimedBlobStore:
    def __init__(self, inner: BlobStore, metrics: Metrics, store: str) -> None:
        self.inner, self.metrics, self.store = inner, metrics, store

    def _timed(self, op: str, started: float) -> None:
        self.metrics.blob(op, self.store, time.perf_counter() - started)

    def put(self, data: bytes, kind: BlobKind = "checkpoint") -> str:
        started = time.perf_counter()
        try:
            return self.inner.put(data, kind)
        finally:
            self._timed("put", started)

    def put_file(self, source: IO[bytes], key: str, kind: BlobKind = "input") -> str:
        started = time.perf_counter()
        try:
            return self.inner.put_file(source, key, kind)
        finally:
            self._timed("put", started)

    def get(self, key: str) -> bytes:
        started = time.perf_counter()
        try:
            return self.inner.get(key)
        finally:
            self._timed("get", started)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def link(self, key: str, filename: str, content_type: str,
             expires_in: int | None = None) -> str | None:
        return self.inner.link(key, filename, content_type, expires_in)

    def delete(self, keys: Sequence[str], *, modified_before: float | None = None) -> list[str]:
        started = time.perf_counter()
        try:
            return self.inner.delete(keys, modified_before=modified_before)
        finally:
            self._timed("delete", started)

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        return self.inner.list(prefix)

    def clock(self) -> float:
        return self.inner.clock()

    def __getattr__(self, name: str):  # anything else a backend offers (close, bucket…)
        return getattr(self.inner, name)
