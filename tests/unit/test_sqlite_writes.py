"""Writers on one SQLite file (tilemore.store.sqlite_db): the stores of a process share one
write lock, and a write waits for another process's only as long as that one holds it."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from tilemore.errors import DatabaseBusy
from tilemore.store.sqlite_db import SQLiteDatabase

SCHEMA = "CREATE TABLE IF NOT EXISTS {table} (v INTEGER);"


def open_db(path, table: str = "a", busy_seconds: float = 5.0) -> SQLiteDatabase:
    return SQLiteDatabase(path, SCHEMA.replace("{table}", table), busy_seconds=busy_seconds)


class OtherProcess:
    """Another process's write transaction (its own connection, as another process has)."""

    def __init__(self, path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def hold(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.db.execute("ROLLBACK")


def test_the_stores_of_a_process_on_one_file_share_its_write_lock(tmp_path):
    path = tmp_path / "one.db"
    a, b, other = open_db(path, "a"), open_db(path, "b"), open_db(tmp_path / "two.db")
    assert a._lock is b._lock  # noqa: SLF001 - what the stores queue on
    assert a._lock is not other._lock  # noqa: SLF001


def test_a_write_goes_through_as_soon_as_another_process_lets_go(tmp_path):
    path = tmp_path / "one.db"
    db = open_db(path)
    other = OtherProcess(path)
    waits = []
    for _ in range(5):
        other.hold()
        threading.Timer(0.02, other.release).start()
        started = time.monotonic()
        with db._tx() as tx:  # noqa: SLF001 - the write under test
            tx.execute("INSERT INTO a VALUES (1)")
        waits.append(time.monotonic() - started)
    # held 20 ms: SQLite's own handler tries at 1, 3, 8, 18, then 33 ms
    assert min(waits) >= 0.019 and sorted(waits)[2] < 0.027, waits
    assert db._query("SELECT COUNT(*) AS n FROM a")[0]["n"] == 5  # noqa: SLF001


def test_a_lock_held_past_busy_seconds_is_database_busy_and_nothing_is_written(tmp_path):
    path = tmp_path / "one.db"
    db = open_db(path, busy_seconds=0.2)
    other = OtherProcess(path)
    other.hold()
    started = time.monotonic()
    with pytest.raises(DatabaseBusy), db._tx() as tx:  # noqa: SLF001
        tx.execute("INSERT INTO a VALUES (1)")
    assert 0.2 <= time.monotonic() - started < 1.0
    other.release()
    assert db._query("SELECT COUNT(*) AS n FROM a")[0]["n"] == 0  # noqa: SLF001


def test_a_write_waiting_in_this_process_gives_up_after_busy_seconds_too(tmp_path):
    path = tmp_path / "one.db"
    a, b = open_db(path, "a", busy_seconds=0.2), open_db(path, "b", busy_seconds=0.2)
    entered, leave = threading.Event(), threading.Event()

    def long_write() -> None:
        with a._tx():  # noqa: SLF001
            entered.set()
            leave.wait(5)

    holder = threading.Thread(target=long_write)
    holder.start()
    entered.wait(5)
    try:
        with pytest.raises(DatabaseBusy), b._tx():  # noqa: SLF001
            pass
    finally:
        leave.set()
        holder.join()
    with b._tx() as tx:  # noqa: SLF001 - and once it is over, it goes through
        tx.execute("INSERT INTO b VALUES (1)")
