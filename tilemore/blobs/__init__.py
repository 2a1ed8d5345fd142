"""Content-addressed blobs: inputs, task checkpoints and results, named by their SHA-256.

The same bytes always get the same key, so a retried write is harmless and a key read back
can be checked against its content. Two backends: the local filesystem (the embedded default)
and any S3-compatible store through boto3.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Literal, Protocol

from tilemore.errors import ServiceUnavailable, TilemoreError
from tilemore.settings_parts import BlobSettings


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


BlobKind = Literal["input", "checkpoint", "result"]
KINDS: tuple[BlobKind, ...] = ("input", "checkpoint", "result")
_PREFIX = re.compile(r"^[0-9a-f]{0,64}$")


@dataclass(frozen=True)
class BlobInfo:
    """One stored blob, as a listing sees it: ``modified`` is the store's own clock."""

    key: str
    bytes: int
    modified: float


class BlobStore(Protocol):
    def put(self, data: bytes, kind: BlobKind = "checkpoint") -> str:
        """Store ``data``; return its key (the SHA-256 hex digest). ``kind`` goes with the
        object where the store can carry it (an S3 object tag), for lifecycle rules. A put
        that finds the blob already stored refreshes its modification time, so a collector
        that checks it keeps the blob (see :mod:`tilemore.lifecycle`)."""

    def put_file(self, source: IO[bytes], key: str, kind: BlobKind = "input") -> str:
        """Store a seekable file whose SHA-256 (``key``) the caller computed as it arrived,
        without reading it whole into memory; return ``key``."""

    def delete(self, keys: Sequence[str], *, modified_before: float | None = None) -> list[str]:
        """Remove these blobs; return the keys that are gone now (one already absent
        included). A blob the store refused to remove, or — with ``modified_before`` — one
        written or refreshed since then (the store's clock), is left and not returned. A
        store that cannot be reached at all raises :class:`BlobStoreError`."""

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Every stored blob whose key starts with ``prefix`` (lower-case hex), in no set
        order."""

    def clock(self) -> float:
        """Now, by the store's own clock: the one its modification times (``delete``'s
        ``modified_before``, a listing's ``modified``) are in. A node compares a blob's time
        with this, never with its own clock, which may disagree (:class:`StoreClock`)."""

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def link(self, key: str, filename: str, content_type: str,
             expires_in: int | None = None) -> str | None:
        """A time-limited URL a client may download from directly, where the store has one;
        valid for ``expires_in`` seconds when given (never past what the blob is kept for),
        else the store's own lifetime."""


class StoreClock:
    """A store's clock as this process's clock plus an offset, read from the store (``probe``:
    the store's time now) at most every ``every`` seconds; the process's own clock where the
    store cannot say (unreachable, read-only)."""

    def __init__(self, probe: Callable[[], float], every: float = 60.0) -> None:
        self.probe, self.every = probe, every
        self._offset, self._read_at = 0.0, float("-inf")

    def __call__(self) -> float:
        local = time.monotonic()
        if local - self._read_at >= self.every:
            before = time.time()
            try:
                offset = self.probe() - before
                # Under a second is no disagreement: the grain of what stores say (the
                # kernel's coarse file times, S3's whole-second Date).
                self._offset = offset if abs(offset) >= 1.0 else 0.0
            except Exception as exc:  # noqa: BLE001 - a store we cannot ask: our clock then
                logging.getLogger("tilemore.blobs").warning(
                    "the blob store's clock not read (%s): this node's clock is used", exc)
                self._offset = 0.0
            self._read_at = local
        return time.time() + self._offset


def blob_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_prefix(prefix: str) -> str:
    """A listing prefix: lower-case hex, at most a whole key (nothing else names a blob)."""
    if not _PREFIX.match(prefix):
        raise ValueError(f"a blob prefix is lower-case hex, at most 64 digits: {prefix[:70]!r}")
    return prefix


def open_blob_store(settings: BlobSettings) -> BlobStore:
    """The configured store (``settings.blobs``); its gets and puts are timed where metrics
    are recorded."""
    from tilemore.metrics import open_metrics

    store = _open(settings)
    metrics = open_metrics(settings.metrics)
    if not metrics.enabled:
        return store
    from tilemore.blobs.timed import TimedBlobStore

    return TimedBlobStore(store, metrics, settings.blob_store)


def _open(settings: BlobSettings) -> BlobStore:
    if settings.blob_store == "s3":
        from tilemore.blobs.s3 import S3BlobStore

        return S3BlobStore.from_settings(settings)
    from tilemore.blobs.local import LocalBlobStore

    return LocalBlobStore(settings.blob_path)


__all__ = ["KINDS", "BlobInfo", "BlobKind", "BlobNotFound", "BlobStore", "BlobStoreError",
           "StoreClock", "blob_key", "check_prefix", "open_blob_store"]
