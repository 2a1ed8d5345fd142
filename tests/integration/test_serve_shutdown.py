"""SIGTERM (how Kubernetes and systemd stop a service) and Ctrl-C stop `tilemore serve` in
order: the HTTP port closes first, the thread in flight stays recorded, the process exits 0
within the grace without a native stack dump, and the next start on the same data folder
finishes the thread, charging each task once."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
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

pytestmark = pytest.mark.slow

REPO = Path(__file__).parents[2]
SLOW = Path(__file__).parents[1] / "data" / "slow.yaml"
GRACE = Settings().shutdown_grace_seconds  # the default is what is tested
DUMPS = ("Fatal Python error", "*** SIGTERM received", "Traceback", "Stack (most recent")


class Serve:
    """``tilemore serve`` on its own local Ray (no RAY_ADDRESS), in its own process group so
    that whatever it leaves behind can be found, and output kept in files (no pipe to drain)."""

    def __init__(self, data_dir: Path, port: int, name: str, grace: float = GRACE) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TILEMORE_")}
        env |= {"RAY_ADDRESS": "", "TILEMORE_DATA_DIR": str(data_dir),
                "TILEMORE_PORT": str(port), "TILEMORE_PIPELINE_PATHS": str(SLOW),
                "TILEMORE_SHUTDOWN_GRACE_SECONDS": str(grace)}
        self.out, self.err = data_dir / f"{name}.out", data_dir / f"{name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-u", "-m", "tilemore.cli", "serve"],
                                         env=env, stdout=out, stderr=err, cwd=REPO,
                                         start_new_session=True)
        deadline = time.monotonic() + 180
        while "Ctrl-C stops" not in self.stdout():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"tilemore serve did not start:\n{self.stdout()}"
                                   f"{self.stderr()}")
            time.sleep(0.2)
        self.address = self.stdout().split("Ray: ", 1)[1].split()[0]

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def stop(self, sig: signal.Signals, port: int) -> tuple[int, float, bool]:
        """Send ``sig`` to the main process only (as Kubernetes does to a container's first
        process); return its exit status, the seconds it took, and whether the port refused
        connections while the process was still running."""
        started = time.monotonic()
        self.proc.send_signal(sig)
        refused_while_up = False
        while self.proc.poll() is None and time.monotonic() - started < GRACE + 10:
            refused_while_up |= not accepts(port) and self.proc.poll() is None
            time.sleep(0.05)
        rc = self.proc.wait(timeout=max(1, GRACE + 10 - (time.monotonic() - started)))
        return rc, time.monotonic() - started, refused_while_up

    def leftovers(self, timeout: float = 15) -> list[str]:
        """Live (not zombie) processes still in its group once ``timeout`` has passed."""
        deadline = time.monotonic() + timeout
        while (left := group_members(self.proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    def kill(self) -> None:
        """Clean-up: SIGKILL the whole group, whatever state it is in."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def group_members(pgid: int) -> list[str]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, fields = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:]
        state, _, pgrp = fields.split()[:3]
        if int(pgrp) == pgid and state != "Z":
            found.append(f"{stat.parent.name} {name}")
    return found


def charges(data_dir: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(Settings(data_dir=data_dir).database_path) as db:
        return db.execute("SELECT thread_id, task_id FROM ledger WHERE kind = 'charge' "
                          "ORDER BY thread_id, task_id").fetchall()


def test_sigterm_stops_in_order_and_the_thread_in_flight_resumes(ray_session, tmp_path):
    port = free_port()
    first = Serve(tmp_path, port, "first")
    try:
        assert first.address != ray_session  # its own cluster: stopping it spares ours
        token = (tmp_path / "demo-token").read_text().strip()
        auth = {"Authorization": f"Token {token} Domain demo"}
        img = encode(photo(64, 48), "PNG")
        body, ctype = multipart({"adjustments": {}, "pipeline": "slow"}, img)
        reply = http("POST", f"http://127.0.0.1:{port}/demo/submitted/"
                     f"{hashlib.sha256(img).hexdigest()}/", body,
                     {"Content-Type": ctype, **auth})
        assert reply.status == 202, reply.body
        tid = reply.json()["thread_id"]
        store = SQLiteStore(Settings(data_dir=tmp_path).database_path)
        deadline = time.monotonic() + 60  # stop it mid-run: decoded, spinning
        while not any(t.status == "done" for t in store.get_thread(tid).tasks):
            assert time.monotonic() < deadline, store.get_thread(tid)
            time.sleep(0.05)

        rc, took, refused = first.stop(signal.SIGTERM, port)
        left = first.leftovers()
    finally:
        first.kill()
    out, err = first.stdout(), first.stderr()
    assert rc == 0, out + err
    assert took < GRACE, took
    assert refused, "the HTTP port kept accepting connections until the process ended"
    assert not [d for d in DUMPS if d in err + out], err
    assert f"1 thread(s) in flight resume on the next start: {tid}" in out, out
    assert not left, f"processes outlived tilemore serve: {left}"
    rec = store.get_thread(tid)
    assert rec.status == "processing"
    done_before = {t.task_id: t for t in rec.tasks if t.status == "done"}
    assert done_before and len(done_before) < len(rec.tasks)

    # Same data folder: it picks the thread up. Its grace is too short for Serve to stop in
    # order, so this stop takes the watchdog's way out: exit 0 all the same, nothing left over.
    second = Serve(tmp_path, port, "second", grace=2)
    try:
        deadline = time.monotonic() + 120
        while store.get_thread(tid).status == "processing" and time.monotonic() < deadline:
            time.sleep(0.2)
        rec = store.get_thread(tid)
        assert rec.status == "done", rec
        for task_id, task in done_before.items():  # finished work was not redone
            assert next(t for t in rec.tasks if t.task_id == task_id) == task
        rc, took, _ = second.stop(signal.SIGINT, port)  # Ctrl-C: the same handler
        left = second.leftovers()
    finally:
        second.kill()
    out, err = second.stdout(), second.stderr()
    assert rc == 0 and took < 2, out + err
    assert "exiting now" in out and "no thread in flight" in out, out
    assert not [d for d in DUMPS if d in err + out], err
    assert not left, f"processes outlived tilemore serve: {left}"
    assert charges(tmp_path) == sorted((tid, t.task_id) for t in rec.tasks)  # each once
