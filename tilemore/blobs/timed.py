"""A blob store whose calls are timed into ``tilemore_blob_seconds``."""

from __future__ import annotations

import time
from typing import IO

from tilemore.blobs import BlobStore
from tilemore.metrics import Metrics


class TimedBlobStore:
    def __init__(self, inner: BlobStore, metrics: Metrics, store: str) -> None:
        self.inner, self.metrics, self.store = inner, metrics, store

    def _timed(self, op: str, started: float) -> None:
        self.metrics.blob(op, self.store, time.perf_counter() - started)

    def put(self, data: bytes) -> str:
        started = time.perf_counter()
        try:
            return self.inner.put(data)
        finally:
            self._timed("put", started)

    def put_file(self, source: IO[bytes], key: str) -> str:
        started = time.perf_counter()
        try:
            return self.inner.put_file(source, key)
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

    def link(self, key: str, filename: str, content_type: str) -> str | None:
        return self.inner.link(key, filename, content_type)

    def __getattr__(self, name: str):  # anything else a backend offers (close, bucket…)
        return getattr(self.inner, name)
