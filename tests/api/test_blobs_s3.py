"""The S3 blob store against moto's standalone server, over real HTTP, through boto3; and the
API handing out presigned result links from it."""

from __future__ import annotations

import hashlib
import re
import urllib.request

import boto3
import pytest
from support.images import encode, photo
from support.moto_s3 import moto_s3
from support.refusing_s3 import RefusingS3Proxy
from support.service_harness import Service, free_port, http
from support.waits import until

from tilemore.blobs import BlobNotFound, BlobStoreError, blob_key
from tilemore.blobs.s3 import S3BlobStore
from tilemore.settings import Settings


@pytest.fixture(scope="module")
def s3_endpoint(monkeypatch_module):
    with moto_s3(monkeypatch_module) as endpoint:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="tilemore-test")
        yield endpoint


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


def _s3_world(backend, endpoint: str, prefix: str):
    """A thread store, its lifecycle and an S3 blob store (through ``endpoint``)."""
    from tilemore.lifecycle import Collector, Lifecycle
    from tilemore.store.lifecycle import open_lifecycle_store

    settings = backend.settings(blob_grace_seconds=0)
    threads = backend.store()
    threads.create_domain("acme")
    lc_store = backend._keep(open_lifecycle_store(settings.db))  # noqa: SLF001

    def collector(url: str) -> Collector:
        return Collector(Lifecycle(lc_store, store(url, prefix), settings.retention))

    return settings, threads, lc_store, collector


def _listed(endpoint: str, prefix: str) -> set[str]:
    raw = boto3.client("s3", endpoint_url=endpoint)
    return {o["Key"].rsplit("/", 1)[-1] for o in raw.list_objects_v2(
        Bucket="tilemore-test", Prefix=prefix).get("Contents", [])}


def test_the_collector_on_s3_keeps_what_the_bucket_refuses_then_finishes(s3_endpoint, backend):
    """A bucket that refuses deletes (per key, then the whole request): the collector keeps
    every row, says so, and still expires records; once deletes are allowed again the next
    pass removes the blobs."""
    from tilemore.store import NewThread, ResultInfo

    prefix = f"gc-{backend.name}/"
    settings, threads, lc_store, collector = _s3_world(backend, s3_endpoint, prefix)
    port = int(s3_endpoint.rsplit(":", 1)[1])
    per_key, whole = RefusingS3Proxy(port, mode="keys"), RefusingS3Proxy(port, mode="request")
    try:
        refusing = collector(per_key.url)
        lc, blobs = refusing.lifecycle, refusing.lifecycle.blobs
        image, result, ck = b"an input on S3", b"its result", b"a checkpoint"
        keys = {}
        for data, kind in ((image, "input"), (result, "result"), (ck, "checkpoint")):
            keys[kind] = blob_key(data)
            lc.pin(keys[kind], kind, len(data))
            blobs.put(data, kind)
        rec, _ = threads.create_thread(NewThread(
            domain="acme", account="acme", idem_key="s3", pipeline="thumbnail",
            fingerprint="f", meta_parts=[], image_sha256=keys["input"],
            input_key=keys["input"], output_format="png", envelope={"adjustments": {}},
            tasks=[("decode", "decode")]))
        for kind in ("input", "result", "checkpoint"):
            lc.refer(rec.id, "acme", kind, keys[kind])
        threads.finish_thread(rec.id, ResultInfo(keys["result"], keys["result"], 10,
                                                 "image/png", 1, 1))
        lc.thread_ended(rec.id, "acme", "done")  # its checkpoint refused at its end
        assert keys["checkpoint"] in _listed(s3_endpoint, prefix)
        with lc_store._tx() as db:  # noqa: SLF001 - everything expired, on the database's clock
            for table, column in (("thread_expiry", "record_until"),
                                  ("thread_expiry", "input_until"),
                                  ("thread_expiry", "result_until"),
                                  ("blob_refs", "expires_at")):
                db.execute(f"UPDATE {table} SET {column} = {column} - 1e8")
        report = refusing.run_pass()
        assert report.records == 1 and report.blobs == {} and report.kept == 3
        assert set(keys.values()) <= _listed(s3_endpoint, prefix)
        report = collector(whole.url).run_pass()  # the whole request refused: 403
        assert "cannot delete blobs" in report.blob_store_error and report.blobs == {}
        assert len(lc_store.stored_bytes()) == 3  # every row kept
        report = collector(s3_endpoint).run_pass()  # deletes allowed again
        assert sum(c for c, _ in report.blobs.values()) == 3 and report.kept == 0
        assert not _listed(s3_endpoint, prefix) and lc_store.stored_bytes() == {}
    finally:
        per_key.close()
        whole.close()


@pytest.fixture
def s3_elsewhere(s3_endpoint):  # (its credentials)
    """moto's server in a process of its own: its clock is not this test's, which the test
    sets two days ahead (the in-process server would follow it)."""
    import subprocess
    import sys

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="tilemore-test")
                return True
            except Exception:  # noqa: BLE001 - not listening yet
                return False

        assert until(up, 60, 0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_orphan_sweep_on_s3_uses_s3_s_clock(s3_elsewhere, backend, monkeypatch):
    """Orphans on S3, judged by the objects' LastModified against S3's clock: a node two
    days ahead sweeps nothing young; an orphan old enough goes, a known blob stays."""
    import time

    prefix = "orphans/"
    _, _, lc_store, collector = _s3_world(backend, s3_elsewhere, prefix)
    blobs = store(s3_elsewhere, prefix)
    known = blob_key(b"a blob the database knows")
    lc_store.pin(known, "input", 25)
    blobs.put(b"a blob the database knows", "input")
    orphan = blobs.put(b"no record names this")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 2 * 86400)
    assert collector(s3_elsewhere).sweep_orphans(86400).blobs == {}  # a day old? not by S3
    assert _listed(s3_elsewhere, prefix) == {known, orphan}
    time.sleep(2)  # (the real sleep: only time.time is patched)
    report = collector(s3_elsewhere).sweep_orphans(1)
    assert report.blobs == {"orphan": [1, 20]}
    assert _listed(s3_elsewhere, prefix) == {known}
