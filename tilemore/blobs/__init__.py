"""Content-addressed blobs: inputs, task checkpoints and results, named by their SHA-256.

The same bytes always get the same key, so a retried write is harmless and a key read back
can be checked against its content. Two backends: the local filesystem (the embedded default)
and any S3-compatible store through boto3.
"""

from __future__ import annotations

import hashlib
from typing import IO, Protocol

from tilemore.errors import ServiceUnavailable, TilemoreError
from tilemore.settings import Settings


class BlobStoreError(ServiceUnavailable):
    """The blob store cannot be written or read now; a thread that meets it waits and is
    retried later, it does not fail."""

    code = "blob_store_unavailable"


class StorageFull(BlobStoreError):
    """No space left where blobs are written: nothing half-written is kept."""

    code = "blob_store_full"
    retry_after = 30


class BlobNotFound(TilemoreError):
    code = "blob_not_found"
    status = 404


class BlobStore(Protocol):
    def put(self, data: bytes) -> str:
        """Store ``data``; return its key (the SHA-256 hex digest)."""

    def put_file(self, source: IO[bytes], key: str) -> str:
        """Store a seekable file whose SHA-256 (``key``) the caller computed as it arrived,
        without reading it whole into memory; return ``key``."""

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def link(self, key: str, filename: str, content_type: str) -> str | None:
        """A time-limited URL a client may download from directly, where the store has one."""


def blob_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_blob_store(settings: Settings) -> BlobStore:
    """The configured store; its gets and puts are timed where metrics are recorded."""
    from tilemore.metrics import open_metrics

    store = _open(settings)
    metrics = open_metrics(settings.metrics)
    if not metrics.enabled:
        return store
    from tilemore.blobs.timed import TimedBlobStore

    return TimedBlobStore(store, metrics, settings.blob_store)


def _open(settings: Settings) -> BlobStore:
    if settings.blob_store == "s3":
        from tilemore.blobs.s3 import S3BlobStore

        return S3BlobStore.from_settings(settings)
    from tilemore.blobs.local import LocalBlobStore

    return LocalBlobStore(settings.blob_path)


__all__ = ["BlobNotFound", "BlobStore", "BlobStoreError", "blob_key", "open_blob_store"]
