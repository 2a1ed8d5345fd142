"""The S3 blob store against moto's standalone server, over real HTTP, through boto3; and the
API handing out presigned result links from it."""

from __future__ import annotations

import hashlib
import re
import urllib.request

import boto3
import pytest
from images import encode, photo
from moto.server import ThreadedMotoServer
from refusing_s3 import RefusingS3Proxy
from service_harness import Service, free_port, http
from waits import until

from tilemore.blobs import BlobNotFound, BlobStoreError, blob_key
from tilemore.blobs.s3 import S3BlobStore
from tilemore.settings import Settings


@pytest.fixture(scope="module")
def s3_endpoint(monkeypatch_module):
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for var, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch_module.setenv(var, value)
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="tilemore-test")
    yield endpoint
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def store(endpoint: str, prefix: str = "t1/") -> S3BlobStore:
    return S3BlobStore.from_settings(Settings(blob_store="s3", s3_endpoint=endpoint,
                                              s3_bucket="tilemore-test", s3_prefix=prefix,
                                              s3_region="us-east-1"))


def test_delete_list_and_kind_tags(s3_endpoint):
    blobs = store(s3_endpoint, "del/")
    keys = [blobs.put(f"checkpoint {i}".encode()) for i in range(30)]
    result = blobs.put(b"the result", kind="result")
    listed = {b.key: b for b in blobs.list()}
    assert set(listed) == set(keys) | {result}
    assert listed[result].bytes == len(b"the result") and listed[result].modified > 0
    one = keys[0][:1]
    assert {b.key for b in blobs.list(one)} == {k for k in keys + [result] if k[0] == one}
    assert [b.key for b in blobs.list(keys[7])] == [keys[7]]
    raw = boto3.client("s3", endpoint_url=s3_endpoint)
    tags = raw.get_object_tagging(Bucket="tilemore-test", Key=f"del/{result[:2]}/{result}")
    assert tags["TagSet"] == [{"Key": "tilemore-kind", "Value": "result"}]  # for lifecycle rules

    assert blobs.delete(keys[:10] + ["0" * 64]) == keys[:10] + ["0" * 64]
    assert {b.key for b in blobs.list()} == set(keys[10:]) | {result}
    assert not blobs.exists(keys[0])
    assert blobs.delete(keys[:10]) == keys[:10]  # again: no error


def test_a_bucket_refusing_deletes_keeps_its_blobs_and_says_so(s3_endpoint):
    port = int(s3_endpoint.rsplit(":", 1)[1])
    blobs = store(s3_endpoint, "refuse/")
    keys = [blobs.put(f"kept {i}".encode()) for i in range(3)]
    per_key = RefusingS3Proxy(port, mode="keys")
    whole = RefusingS3Proxy(port, mode="request")
    try:
        assert store(per_key.url, "refuse/").delete(keys) == []  # none reported gone
        with pytest.raises(BlobStoreError):
            store(whole.url, "refuse/").delete(keys)
        assert per_key.refused == 1 and whole.refused >= 1
        assert all(blobs.exists(k) for k in keys)
        assert {b.key for b in store(per_key.url, "refuse/").list()} == set(keys)
    finally:
        per_key.close()
        whole.close()


def test_content_addressed_roundtrip(s3_endpoint):
    blobs = store(s3_endpoint)
    data = b"pixels" * 1000
    key = blobs.put(data)
    assert key == blob_key(data) == hashlib.sha256(data).hexdigest()
    assert blobs.put(data) == key  # idempotent
    assert blobs.get(key) == data and blobs.exists(key)
    raw = boto3.client("s3", endpoint_url=s3_endpoint).get_object(
        Bucket="tilemore-test", Key=f"t1/{key[:2]}/{key}")
    assert raw["Body"].read() == data  # where the prefix setting says
    missing = "0" * 64
    assert not blobs.exists(missing)
    with pytest.raises(BlobNotFound):
        blobs.get(missing)


def test_presigned_link_downloads_without_credentials(s3_endpoint):
    blobs = store(s3_endpoint)
    key = blobs.put(b"result bytes")
    url = blobs.link(key, "result.jpg", "image/jpeg")
    assert "Signature" in url or "X-Amz-Signature" in url
    with urllib.request.urlopen(url) as resp:
        assert resp.read() == b"result bytes"
        assert resp.headers["Content-Type"] == "image/jpeg"


def test_api_redirects_results_to_s3(s3_endpoint, tmp_path):
    svc = Service(tmp_path, blob_store="s3", s3_endpoint=s3_endpoint,
                  s3_bucket="tilemore-test", s3_prefix="api/", s3_region="us-east-1",
                  retention_results_seconds=600)
    try:
        img = encode(photo(64, 48), "PNG")
        tid = svc.submit(img, {"adjustments": {}, "output_format": "png"}).json()["thread_id"]
        body = svc.wait(tid)
        assert body["status"] == "done", body
        reply = http("GET", body["result"]["url"], headers=svc.auth())  # follows the redirect
        assert reply.status == 200
        assert hashlib.sha256(reply.body).hexdigest() == body["result"]["sha256"]
        rec = svc.store.get_thread(tid)
        checkpoints = {t.checkpoint_key for t in rec.tasks if t.checkpoint_key}
        raw = boto3.client("s3", endpoint_url=s3_endpoint)

        def listed() -> set[str]:
            return {o["Key"] for o in raw.list_objects_v2(
                Bucket="tilemore-test", Prefix="api/").get("Contents", [])}
        # the thread done, its checkpoints go; the input and the result stay, tagged
        assert until(lambda: not {f"api/{k[:2]}/{k}" for k in checkpoints} & listed(), 10, 0.1)
        assert {f"api/{k[:2]}/{k}" for k in (rec.input_key, rec.result.key)} <= listed()
        for key, kind in ((rec.result.key, "result"), (rec.input_key, "input")):
            tags = raw.get_object_tagging(Bucket="tilemore-test", Key=f"api/{key[:2]}/{key}")
            # (a result with the very bytes of its input is one object: the last put's tag)
            assert tags["TagSet"] == [{"Key": "tilemore-kind", "Value": (
                kind if rec.result.key != rec.input_key else "result")}]
        # the presigned link lives no longer than the result (10 minutes here, links an hour)
        link = svc.api.result(svc.api.authenticate(svc.auth()["Authorization"]), tid,
                              "result.png")[1]
        expires = int(re.search(r"X-Amz-Expires=(\d+)", link).group(1))
        assert 500 < expires <= 600
        with urllib.request.urlopen(link) as resp:
            assert resp.headers["Cache-Control"] == f"private, max-age={expires}"
    finally:
        svc.close()
