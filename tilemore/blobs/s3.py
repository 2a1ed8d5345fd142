"""Blobs in any S3-compatible store (AWS S3, MinIO, Ceph, GCS's S3 API) through boto3."""

from __future__ import annotations

from typing import IO, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tilemore.blobs import BlobNotFound, BlobStoreError, blob_key
from tilemore.settings import Settings


class S3BlobStore:
    def __init__(self, bucket: str, prefix: str = "", client: Any = None,
                 presign_seconds: int = 3600) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client or boto3.client("s3")
        self.presign_seconds = presign_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> S3BlobStore:
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

    def put(self, data: bytes) -> str:
        key = blob_key(data)
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise BlobStoreError(f"cannot write blob {key[:12]}… to S3: {exc}") from None
        return key

    def put_file(self, source: IO[bytes], key: str) -> str:
        source.seek(0)
        try:  # multipart for large files, in parts of 8 MiB: never whole in memory
            self.client.upload_fileobj(source, self.bucket, self._key(key))
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

    def link(self, key: str, filename: str, content_type: str) -> str | None:
        try:
            return self._presign(key, filename, content_type)
        except (BotoCoreError, ClientError) as exc:
            raise BlobStoreError(f"cannot sign a link to blob {key[:12]}…: {exc}") from None

    def _presign(self, key: str, filename: str, content_type: str) -> str:
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._key(key),
                    "ResponseContentType": content_type,
                    "ResponseContentDisposition": f'inline; filename="{filename}"'},
            ExpiresIn=self.presign_seconds,
        )
