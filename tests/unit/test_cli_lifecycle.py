"""``tilemore admin gc | usage | delete-domain-data`` on SQLite and PostgreSQL, with the
service's local blobs."""

from __future__ import annotations

import json
import os

import pytest
from support.cli import run

from tilemore.blobs import blob_key
from tilemore.blobs.local import LocalBlobStore
from tilemore.lifecycle import Lifecycle
from tilemore.store import NewThread, ResultInfo
from tilemore.store.lifecycle import open_lifecycle_store


@pytest.fixture
def world(backend, monkeypatch):
    for name, value in backend.env.items():
        monkeypatch.setenv(name, value)
    settings = backend.settings()
    threads = backend.store()
    for domain in ("acme", "rival"):
        threads.create_domain(domain)
    blobs = LocalBlobStore(settings.blob_path)
    lifecycle = Lifecycle(backend._keep(open_lifecycle_store(settings.db)), blobs,  # noqa: SLF001
                          settings.retention)
    return threads, blobs, lifecycle


def done(world, domain: str, name: str, image: bytes) -> str:
    threads, blobs, lc = world
    key = blob_key(image)
    lc.pin(key, "input", len(image))
    blobs.put_file(__import__("io").BytesIO(image), key)
    rec, _ = threads.create_thread(NewThread(
        domain=domain, account=domain, idem_key=name, pipeline="thumbnail", fingerprint="f",
        meta_parts=[], image_sha256=key, input_key=key, output_format="png",
        envelope={"adjustments": {}}, tasks=[("decode", "decode")]))
    lc.refer(rec.id, domain, "input", key, len(image))
    result = b"result of " + name.encode()
    rkey = blob_key(result)
    lc.pin(rkey, "result", len(result))
    blobs.put(result, "result")
    lc.refer(rec.id, domain, "result", rkey, len(result))
    threads.finish_thread(rec.id, ResultInfo(rkey, rkey, len(result), "image/png", 1, 1))
    lc.thread_ended(rec.id, domain, "done")
    return rec.id


def test_usage_gc_and_deleting_a_domain_s_data(capsys, world):
    threads, blobs, lc = world
    shared = b"an input both domains sent" * 10
    a = done(world, "acme", "a", shared)
    b = done(world, "rival", "b", shared)
    code, out, _ = run(capsys, "admin", "usage", "--json")
    assert code == 0
    usage = {row["domain"]: row for row in json.loads(out)}
    assert usage["acme"]["threads"] == 1
    assert usage["acme"]["blobs"]["input"] == {"count": 1, "bytes": 260}
    assert "acme: 1 threads" in run(capsys, "admin", "usage")[1]

    code, out, _ = run(capsys, "admin", "gc", "--dry-run")
    assert code == 0 and "would remove: 0 thread records, no blobs" in out

    assert "Run again with --yes" in run(capsys, "admin", "delete-domain-data", "acme")[1]
    assert threads.get_thread(a) is not None
    code, out, _ = run(capsys, "admin", "delete-domain-data", "acme", "--yes")
    assert code == 0 and "1 thread records" in out
    assert threads.get_thread(a) is None and threads.get_thread(b) is not None
    assert blobs.exists(blob_key(shared))  # rival still uses it
    assert threads.domain_exists("acme")  # accounts, tokens and the ledger stay
    assert run(capsys, "admin", "delete-domain-data", "nobody", "--yes")[0] != 0

    with lc.store._tx() as db:  # noqa: SLF001 - a month passes, on the database's clock
        for table, column in (("thread_expiry", "record_until"),
                              ("thread_expiry", "input_until"),
                              ("thread_expiry", "result_until"), ("blob_refs", "expires_at"),
                              ("blobs", "touched_at")):
            db.execute(f"UPDATE {table} SET {column} = {column} - 4e6")
    for info in blobs.list():  # and on the files' clock
        path = blobs.root / info.key[:2] / info.key
        os.utime(path, (info.modified - 4e6, info.modified - 4e6))
    code, out, _ = run(capsys, "admin", "gc", "--dry-run", "--json")
    dry = json.loads(out)
    assert dry["records"] == 1 and dry["dry_run"]
    code, out, _ = run(capsys, "admin", "gc")
    assert code == 0 and "removed: 1 thread records" in out and "input" in out
    assert "0 webhook deliveries" in out
    assert threads.get_thread(b) is None and list(blobs.list()) == []


def test_gc_orphans(capsys, world):
    threads, blobs, lc = world
    key = blobs.put(b"no record names this")
    path = blobs.root / key[:2] / key
    os.utime(path, (path.stat().st_mtime - 2 * 86400,) * 2)
    code, out, _ = run(capsys, "admin", "gc", "--orphans", "--dry-run")
    assert code == 0 and "would remove: 0 thread records, 1 orphan (20 B)" in out
    assert blobs.exists(key)
    assert run(capsys, "admin", "gc", "--orphans")[0] == 0 and not blobs.exists(key)
    assert run(capsys, "admin", "gc", "--orphans", "--orphan-age", "60")[0] != 0  # too young
