"""Blobs in any S3-compatible store (AWS S3, MinIO, Ceph, GCS's S3 API) through boto3.

Objects are tagged ``tilemore-kind=input|checkpoint|result``, so a bucket lifecycle rule can
expire one kind as a backstop to the collector. A put always writes the object again (its
``LastModified`` is the put's time); S3 has no conditional delete on general buckets, so
``modified_before`` is not checked here: the collector's database rule covers inputs and
results, and a resumed thread re-runs a task whose checkpoint went missing."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from email.utils import parsedate_to_datetime
from typing import IO, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tilemore.blobs import (
    BlobInfo,
    BlobKind,
    BlobNotFound,
    BlobStoreError,
    StoreClock,
    blob_key,
    check_prefix,
)
from tilemore.settings_parts import BlobSettings

log = logging.getLogger("tilemore.blobs")
DELETE_BATCH = 1000  # keys one DeleteObjects call takes (S3's own limit)
KIND_TAG = "tilemore-kind"


class S3BlobStore:
    def __init__(self, bucket: str, prefix: str = "", client: Any = None,
                 presign_seconds: int = 3600) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client or boto3.client("s3")
        self.presign_seconds = presign_seconds
        self.clock = StoreClock(self._server_time, every=300.0)  # LastModified is S3's clock

    def _server_time(self) -> float:
        """Now, by S3's clock: the Date of its answer to a bucket check."""
        reply = self.client.head_bucket(Bucket=self.bucket)
        return parsedate_to_datetime(reply["ResponseMetadata"]["HTTPHeaders"]["date"]).timestamp()

    @classmethod
    def from_settings(cls, settings: BlobSettings) -> S3BlobStore:
        if not settings.s3_bucket:
            raise BlobStoreError("TILEMORE_S3_BUCKET must be set when TILEMORE_BLOB_STORE=s3")
        client = boto3.client(
            "s3", endpoint_url=settings.s3_endpoint, region_name=settings.s3_region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"},
                          signature_version="s3v4"),
        )
        return cls(settings.s3_bucket, settings.s3_prefix, client, settings.presign_seconds)

    def _key(self, key: str) -> str:
        return f"{self.prefix}{key[:2]}/{key}"

    def put(self, data: bytes, kind: BlobKind = "checkpoint") -> str:
        key = blob_key(data)
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                                   Tagging=f"{KIND_TAG}={kind}")
        except (BotoCoreError, ClientError) as exc:
            raise BlobStoreError(f"cannot write blob {key[:12]}… to S3: {exc}") from None
        return key

    def put_file(self, source: IO[bytes], key: str, kind: BlobKind = "input") -> str:
        source.seek(0)
        try:  # multipart for large files, in parts of 8 MiB: never whole in memory
            self.client.upload_fileobj(source, self.bucket, self._key(key),
                                       ExtraArgs={"Tagging": f"{KIND_TAG}={kind}"})
        except (BotoCoreError, ClientError) as exc:
            raise BlobStoreError(f"cannot write blob {key[:12]}… to S3: {exc}") from None
        return key

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise BlobNotFound(f"blob {key[:12]}… does not exist") from None
            raise BlobStoreError(f"cannot read blob {key[:12]}… from S3: {exc}") from None
        except BotoCoreError as exc:
            raise BlobStoreError(f"cannot read blob {key[:12]}… from S3: {exc}") from None

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return False
            raise BlobStoreError(f"cannot reach S3: {exc}") from None

    def link(self, key: str, filename: str, content_type: str,
             expires_in: int | None = None) -> str | None:
        seconds = self.presign_seconds if expires_in is None else max(1, min(
            expires_in, self.presign_seconds))
        try:
            return self._presign(key, filename, content_type, seconds)
        except (BotoCoreError, ClientError) as exc:
            raise BlobStoreError(f"cannot sign a link to blob {key[:12]}…: {exc}") from None

    def _presign(self, key: str, filename: str, content_type: str, seconds: int) -> str:
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._key(key),
                    "ResponseContentType": content_type,
                    "ResponseContentDisposition": f'inline; filename="{filename}"',
                    # a copy cached from the link lives no longer than the link
                    "ResponseCacheControl": f"private, max-age={seconds}"},
            ExpiresIn=seconds,
        )

    def delete(self, keys: Sequence[str], *, modified_before: float | None = None) -> list[str]:
        gone: list[str] = []
        for i in range(0, len(keys), DELETE_BATCH):
            batch = list(keys[i:i + DELETE_BATCH])
            try:
                reply = self.client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": self._key(k)} for k in batch], "Quiet": True})
            except (BotoCoreError, ClientError) as exc:
                raise BlobStoreError(f"cannot delete blobs from S3: {exc}") from None
            refused = {e["Key"].rsplit("/", 1)[-1]: e.get("Code", "")
                       for e in reply.get("Errors", [])}
            for key, code in list(refused.items())[:3]:
                log.warning("blob %s… not deleted by S3: %s", key[:12], code)
            gone.extend(k for k in batch if k not in refused)
        return gone

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        check_prefix(prefix)
        where = f"{self.prefix}{prefix[:2]}/{prefix}" if len(prefix) >= 2 else (
            f"{self.prefix}{prefix}")
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=where)
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(self.prefix):]
                    folder, _, key = name.partition("/")
                    if len(key) == 64 and folder == key[:2] and key.startswith(prefix):
                        yield BlobInfo(key, int(obj["Size"]), obj["LastModified"].timestamp())
        except (BotoCoreError, ClientError) as exc:
            raise BlobStoreError(f"cannot list blobs in S3: {exc}") from None
