"""What the ingress does when what it stands on fails: a SQLite file whose write lock stays
taken, a thread insert that fails after the credits were reserved, a client that leaves
mid-upload."""

from __future__ import annotations

import hashlib
import logging
import socket
import sqlite3
import time
from pathlib import Path

import pytest
from support.images import encode, noisy, photo
from support.service_harness import Service, multipart

from tilemore.errors import DatabaseBusy

SLOW = Path(__file__).parents[1] / "data" / "slow.yaml"


@pytest.fixture
def service(tmp_path):
    svc = Service(tmp_path / "svc", sqlite_busy_seconds=0.3)
    yield svc
    svc.close()


def image(seed: int) -> bytes:
    return encode(noisy(photo(64, 48), 10, seed=seed), "PNG")


class _LockedFile:
    """Another process's long write transaction on the service's SQLite file."""

    def __init__(self, path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *exc) -> None:
        self.db.execute("ROLLBACK")
        self.db.close()


def test_a_busy_sqlite_file_is_a_503_with_retry_after_then_works(service):
    img = image(1)
    with _LockedFile(service.settings.database_path):
        started = time.monotonic()
        got = service.submit(img)
        assert time.monotonic() - started < 3  # waited sqlite_busy_seconds, not 30 s
    assert (got.status, got.code) == (503, "database_busy"), got.body
    assert got.headers["content-type"] == "application/json" and got.headers["retry-after"]
    assert service.billing.balance("acme").held == 0
    assert service.submit(img).status == 202  # the same request, once the lock is gone


def test_reads_do_not_wait_for_a_held_write_lock(service):
    answer = service.submit(image(2)).json()
    with _LockedFile(service.settings.database_path):
        started = time.monotonic()
        got = service.wait(answer["thread_id"], timeout=0)  # one read
        assert time.monotonic() - started < 0.25
    assert got["thread_id"] == answer["thread_id"]


def test_a_busy_database_is_not_a_failed_attempt_of_the_thread(tmp_path):
    svc = Service(tmp_path / "svc", sqlite_busy_seconds=0.2, pipeline_paths=[SLOW])
    svc.conductor.start_sweeping()  # as the service's conductor does
    try:
        answer = svc.submit(image(3), {"adjustments": {}, "pipeline": "slow"}).json()
        with _LockedFile(svc.settings.database_path):
            time.sleep(1.5)  # a task ends meanwhile: neither its charge nor its record fit
        done = svc.wait(answer["thread_id"], timeout=30)  # the sweep runs it again
        assert done["status"] == "done", done
        charges = [e for e in svc.ledger.entries("acme")
                   if e["kind"] == "charge" and e["thread_id"] == answer["thread_id"]]
        assert len(charges) == len(done["tasks"])  # each task once
    finally:
        svc.close()


def test_a_failed_thread_insert_gives_the_reservation_back(service, monkeypatch):
    def busy(new, quota=None, also=None):
        raise DatabaseBusy("the database is busy; try again shortly")

    monkeypatch.setattr(service.store, "create_thread", busy)
    got = service.submit(image(4))
    assert (got.status, got.code) == (503, "database_busy")
    assert service.billing.balance("acme").held == 0


def test_a_client_that_leaves_mid_upload_is_one_log_line(service, caplog):
    img = image(5)
    body, ctype = multipart({"adjustments": {}}, img)
    sha = hashlib.sha256(img).hexdigest()
    head = (f"POST /shop/v1/submitted/{sha}/ HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Token {service.token} Domain acme\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with caplog.at_level(logging.INFO):
        with socket.create_connection(("127.0.0.1", service.port)) as s:
            s.sendall(head + body[: len(body) // 2])
            time.sleep(0.3)
        deadline = time.monotonic() + 5
        while not any("left before" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
            time.sleep(0.05)
    assert not any(r.exc_info for r in caplog.records)  # no traceback
    assert service.store.unfinished_threads() == []


def test_an_upload_over_the_decode_budget_waits_then_gets_503(tmp_path):
    svc = Service(tmp_path / "svc", decode_pixel_budget=10_000, decode_wait_seconds=0.3)
    try:
        with svc.api.decoding.hold(10_000):  # other uploads are decoding the whole budget
            started = time.monotonic()
            got = svc.submit(image(6))
            waited = time.monotonic() - started
        assert (got.status, got.code) == (503, "decode_busy"), got.body
        assert got.headers["retry-after"] == "2" and 0.3 <= waited < 3
        assert svc.billing.balance("acme").held == 0  # its reservation went back
        assert svc.submit(image(6)).status == 202  # room again: the same request goes in
    finally:
        svc.close()
