"""kill -9 the whole service while threads run, start it again: every accepted thread reaches
`done`, finished tasks that kept a checkpoint are not redone, and no record is half-written."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.images import encode, photo
from support.service_harness import free_port, http, multipart

from tilemore.settings import Settings
from tilemore.store.sqlite import SQLiteStore

DATA = Path(__file__).parents[1] / "data"
THREADS = 4


REPO = Path(__file__).parents[2]


def start(data_dir: Path, port: int,
          extra: dict[str, str] | None = None) -> tuple[subprocess.Popen, str, str]:
    """Start ``tilemore serve``; return the process, its Ray address and its banner."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS",
                                                                       "TILEMORE_"))}
    env |= {"TILEMORE_DATA_DIR": str(data_dir), "TILEMORE_PORT": str(port),
            "TILEMORE_PIPELINE_PATHS": str(DATA / "slow.yaml")} | (extra or {})
    proc = subprocess.Popen([sys.executable, "-m", "tilemore.cli", "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True,  # its own process group: Ray and all
                            cwd=REPO)
    lines: list[str] = []
    address = ""
    deadline = time.monotonic() + 180
    for line in proc.stdout:
        lines.append(line)
        if "Ray: " in line:
            address = line.rsplit("Ray: ", 1)[1].strip()
        if line.startswith("Ctrl-C stops"):
            return proc, address, "".join(lines)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError("tilemore serve did not start:\n" + "".join(lines))


def kill9(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_kill_9_and_restart(ray_session, tmp_path):
    port = free_port()
    proc, address, _ = start(tmp_path, port)
    assert address != ray_session  # its own cluster, so kill -9 takes all of it down
    token = (tmp_path / "demo-token").read_text().strip()
    auth = {"Authorization": f"Token {token} Domain demo"}
    try:
        ids = submit_threads(port, auth, seed=0)
        store = SQLiteStore(Settings(data_dir=tmp_path).database_path)
        until_some_work_is_done(store, ids)  # kill once some work is done, not all
    finally:
        kill9(proc)

    before = {tid: store.get_thread(tid) for tid in ids}
    done_before = {(tid, t.task_id): t for tid, rec in before.items() for t in rec.tasks
                   if t.status == "done"}
    assert done_before and any(r.status == "processing" for r in before.values())
    with sqlite3.connect(Settings(data_dir=tmp_path).database_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == THREADS * 4

    proc, _, banner = start(tmp_path, port)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if all(store.get_thread(tid).status == "done" for tid in ids):
                break
            time.sleep(0.2)
        after = {tid: store.get_thread(tid) for tid in ids}
        assert {r.status for r in after.values()} == {"done"}
        for (tid, task_id), task in done_before.items():
            again = next(t for t in after[tid].tasks if t.task_id == task_id)
            if task.checkpoint_key:  # stored: never redone
                assert again == task, f"{task_id} of {tid} ran again"
            else:  # too cheap to store (a decode): run again if a task left reads it
                assert again.status == "done", again
        # the spinning stages (1 s each) cost more than a put: each one stored
        assert all(t.checkpoint_key for t in done_before.values() if t.operator == "spin")
        got = http("GET", f"http://127.0.0.1:{port}/threads/{ids[0]}", headers=auth).json()
        assert got["status"] == "done" and got["result"]["bytes"] > 0
        # The banner's curl example works when pasted (in the repository's folder).
        lines = banner.splitlines()
        start_at = next(i for i, line in enumerate(lines) if line.strip().startswith("IMG="))
        script = "\n".join(line.strip() for line in lines[start_at:start_at + 5])
        pasted = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True,
                                text=True, timeout=60)
        answer = json.loads(pasted.stdout)
        assert answer["status"] == "processing" and answer["pipeline"] == "denoised", pasted
    finally:
        kill9(proc)


def until_some_work_is_done(store, ids: list[str]) -> None:
    """Wait until a few tasks are done — not all, so the loss comes mid-run."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        tasks = [t for tid in ids for t in store.get_thread(tid).tasks]
        if sum(t.status == "done" for t in tasks) >= THREADS + 2:
            return
        time.sleep(0.05)


def submit_threads(port: int, auth: dict[str, str], seed: int) -> list[str]:
    ids = []
    for i in range(THREADS):
        img = encode(photo(64 + i, 48 + seed), "PNG")
        body, ctype = multipart({"adjustments": {}, "pipeline": "slow"}, img)
        reply = http("POST", f"http://127.0.0.1:{port}/demo/submitted/"
                     f"{hashlib.sha256(img).hexdigest()}/", body, {"Content-Type": ctype, **auth})
        assert reply.status == 202, reply.body
        ids.append(reply.json()["thread_id"])
    return ids


def test_a_new_head_resumes_every_thread_from_postgres_and_s3(postgres_dsn, tmp_path):
    """The whole cluster — head and all — is lost mid-run. A new one, on a new machine (a
    fresh data folder) but the same PostgreSQL and S3, resumes every unfinished thread; every
    thread completes, and no task is charged twice."""
    import boto3
    import psycopg
    from support.moto_s3 import CREDENTIALS, moto_server
    from support.postgres import drop_schema, fresh_schema

    from tilemore.billing.ledger import open_ledger
    from tilemore.store import open_store

    schema, dsn = fresh_schema(postgres_dsn)
    try:
        with moto_server() as endpoint:
            keys = {k.lower(): v for k, v in CREDENTIALS.items() if k != "AWS_DEFAULT_REGION"}
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                         **keys).create_bucket(Bucket="tilemore")
            shared = CREDENTIALS | {
                "TILEMORE_DATABASE_URL": dsn, "TILEMORE_BLOB_STORE": "s3",
                "TILEMORE_S3_ENDPOINT": endpoint, "TILEMORE_S3_BUCKET": "tilemore",
                "TILEMORE_S3_REGION": "us-east-1"}
            settings = Settings(database_url=dsn)
            port = free_port()
            proc, _, _ = start(tmp_path / "head-1", port, shared)
            token = (tmp_path / "head-1" / "demo-token").read_text().strip()
            auth = {"Authorization": f"Token {token} Domain demo"}
            try:
                ids = submit_threads(port, auth, seed=7)
                with open_store(settings.db) as store:
                    until_some_work_is_done(store, ids)  # lose the head then
            finally:
                kill9(proc)
            with open_store(settings.db) as store:
                assert any(store.get_thread(tid).status == "processing" for tid in ids)

            proc, _, _ = start(tmp_path / "head-2", port, shared)  # nothing local carried over
            try:
                with open_store(settings.db) as store:
                    deadline = time.monotonic() + 180
                    while time.monotonic() < deadline:
                        if all(store.get_thread(tid).status == "done" for tid in ids):
                            break
                        time.sleep(0.2)
                    assert {store.get_thread(tid).status for tid in ids} == {"done"}
                    tasks = {tid: [t.task_id for t in store.get_thread(tid).tasks]
                             for tid in ids}
            finally:
                kill9(proc)
            with open_ledger(settings.db) as ledger:
                assert ledger.verify().ok
            with psycopg.connect(dsn) as conn:  # every charge, as the ledger holds it
                rows = conn.execute("SELECT thread_id, task_id FROM ledger"
                                    " WHERE kind = 'charge'").fetchall()
            assert sorted(rows) == sorted((tid, t) for tid in ids for t in tasks[tid])
    finally:
        drop_schema(postgres_dsn, schema)


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch):
    monkeypatch.delenv("TILEMORE_RAY_ADDRESS", raising=False)
