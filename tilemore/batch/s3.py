"""An S3 prefix as a batch location (any S3-compatible store, through boto3): a listing
is paginated, an object appears whole or not at all, and each process makes its own client."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tilemore.batch.locations import Location, LocationError, Unreadable
from tilemore.errors import ImageTooLarge


def _hidden(name: str) -> bool:
    return any(part.startswith(".") for part in name.split("/"))


@functools.cache
def _client(endpoint: str | None, region: str | None):
    """One client per process and endpoint (boto3 clients are thread-safe)."""
    return boto3.client("s3", endpoint_url=endpoint, region_name=region,
                        config=Config(retries={"max_attempts": 5, "mode": "standard"},
                                      signature_version="s3v4"))


@dataclass(frozen=True)
class S3Prefix:
    bucket: str
    prefix: str  # without slashes at either end; '' for the whole bucket
    endpoint: str | None = None
    region: str | None = None

    @property
    def _client(self):
        return _client(self.endpoint, self.region)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def uri(self, name: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(name) if name else self.prefix}"

    def names(self, skip: str | None = None) -> Iterator[str]:
        start = f"{self.prefix}/" if self.prefix else ""
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start)
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(start):]
                    if not name or name.endswith("/") or _hidden(name):
                        continue  # folder markers and hidden names
                    if skip is not None and name.startswith(skip + "/"):
                        continue
                    yield name
        except (BotoCoreError, ClientError) as exc:
            raise LocationError(f"cannot list {self.uri()}: {_why(exc)}") from None

    def read(self, name: str, limit: int) -> bytes:
        try:
            obj = self._client.get_object(Bucket=self.bucket, Key=self._key(name))
            if obj["ContentLength"] > limit:
                obj["Body"].close()
                raise ImageTooLarge(f"the object is {obj['ContentLength']:,} bytes; the limit "
                                    f"is {limit:,}")
            return obj["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404"):
                raise Unreadable("no such object (removed since listed)",
                                 code="not_found") from None
            if code in ("AccessDenied", "403"):
                raise Unreadable("access denied", code="permission_denied") from None
            raise Unreadable(f"cannot read: {_why(exc)}") from None
        except BotoCoreError as exc:
            raise Unreadable(f"cannot read: {_why(exc)}") from None

    def write(self, name: str, data: bytes, content_type: str) -> None:
        # A PUT is atomic: the object appears whole or not at all.
        self._client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data,
                                ContentType=content_type)

    def check(self, *, create: bool) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise LocationError(f"cannot reach bucket '{self.bucket}': {_why(exc)}") from None

    def within(self, other: Location) -> str | None:
        if not isinstance(other, S3Prefix) or other.bucket != self.bucket:
            return None
        if self.prefix == other.prefix:
            return ""
        if not other.prefix:
            return self.prefix
        return self.prefix[len(other.prefix) + 1:] if self.prefix.startswith(
            other.prefix + "/") else None


def _why(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'error')}: {err.get('Message') or exc}"
    return str(exc)
