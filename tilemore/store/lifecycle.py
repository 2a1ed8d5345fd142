"""What threads keep, and until when: references from threads to blobs, each thread's expiry
dates, and the queries the collector removes expired data with.

Every time here is the database's clock (:attr:`LifecycleSQL.NOW`), never a process's: nodes
whose clocks disagree still agree on what has expired.

Tables (beside the threads, in the same database; no foreign keys, so a batch of expired
records goes in a few statements):

- ``blobs``: one row per stored blob the service relies on: its kind, size, and when it was
  last *pinned* (``touched_at``). A writer pins a blob before it puts it.
- ``blob_refs``: (thread, kind, key), with ``expires_at`` (NULL: while the thread needs it).
- ``thread_expiry``: when a thread ended and when its result, input, retry window and record
  expire.

The put/delete race rule: a blob is removed only when no live reference names it and it was
pinned longer ago than its grace period; the row is locked while the blob is removed, so a
pin at that moment waits, then finds the row gone, inserts it again and its put writes the
bytes again. A put that finds the blob still stored refreshes it in the store, and the
collector's delete leaves a blob refreshed since it chose it (:meth:`BlobStore.delete`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tilemore.settings_parts import DatabaseSettings
from tilemore.store.postgres_db import PostgresDatabase
from tilemore.store.records_expiry import RecordsExpiry
from tilemore.store.sqlite_db import SQLiteDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    bytes BIGINT NOT NULL DEFAULT 0,
    touched_at {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS blobs_touched ON blobs(touched_at);
CREATE TABLE IF NOT EXISTS blob_refs (
    thread_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    domain TEXT NOT NULL,
    expires_at {real},
    PRIMARY KEY (thread_id, kind, key)
);
CREATE INDEX IF NOT EXISTS blob_refs_key ON blob_refs(key);
CREATE INDEX IF NOT EXISTS blob_refs_expiry ON blob_refs(expires_at);
CREATE TABLE IF NOT EXISTS thread_expiry (
    thread_id TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    status TEXT NOT NULL,
    ended_at {real} NOT NULL,
    result_until {real},
    input_until {real},
    retry_until {real},
    record_until {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS thread_expiry_record ON thread_expiry(record_until);
"""

FINISHED = ("done", "failed", "canceled")


@dataclass(frozen=True)
class Ttl:
    """Seconds each thing a thread leaves is kept after the thread ended (one domain's)."""

    results: float
    inputs: float
    records: float
    retry: float  # a failed or canceled thread may be run again this long; its checkpoints stay


@dataclass(frozen=True)
class ThreadExpiry:
    thread_id: str
    status: str
    ended_at: float
    result_until: float | None
    input_until: float | None
    retry_until: float | None
    record_until: float
    now: float  # the database's clock when this was read

    @property
    def result_expired(self) -> bool:
        return self.result_until is not None and self.result_until <= self.now

    @property
    def input_expired(self) -> bool:
        return self.input_until is not None and self.input_until <= self.now

    @property
    def retry_closed(self) -> bool:
        return self.retry_until is None or self.retry_until <= self.now


@dataclass(frozen=True)
class Removed:
    """A blob the collector removed (or, in a dry run, would remove)."""

    key: str
    kind: str
    bytes: int


def _now_sql(db: Any, now: str) -> float:
    row = db.execute(f"SELECT {now} AS now").fetchone()
    return float(row["now"])


class LifecycleSQL(RecordsExpiry):
    """Written once for both databases; ``NOW`` is the dialect's clock in seconds since the
    epoch, ``LOCK`` what locks the rows a collection removes."""

    NOW: str
    LOCK: str = ""
    ROW_LOCK: str = ""  # PostgreSQL: rows a statement re-checks stay as seen until commit
    _tx: Any
    _read: Any
    _query: Any

    def db_now(self) -> float:
        with self._tx() as db:
            return _now_sql(db, self.NOW)

    # -- references ------------------------------------------------------------------------

    def _pin(self, db: Any, key: str, kind: str, size: int) -> None:
        db.execute(f"INSERT INTO blobs (key, kind, bytes, touched_at) VALUES (?, ?, ?, {self.NOW})"
                   f" ON CONFLICT (key) DO UPDATE SET touched_at = {self.NOW},"
                   " bytes = CASE WHEN blobs.bytes > 0 THEN blobs.bytes ELSE excluded.bytes END",
                   (key, kind, size))

    def pin(self, key: str, kind: str, size: int = 0) -> None:
        """Before a put: the collector leaves the blob alone for its grace period, time for
        the writer to put it and reference it."""
        with self._tx() as db:
            self._pin(db, key, kind, size)

    def add_refs(self, refs: Iterable[tuple[str, str, str, str, int]]) -> None:
        """(thread id, domain, kind, key, bytes): live references (each pins its blob). A
        reference that had an expiry date set loses it (the thread needs it again)."""
        refs = list(refs)
        if not refs:
            return
        with self._tx() as db:
            self.add_refs_in(db, refs)

    def add_refs_in(self, db: Any, refs: Iterable[tuple[str, str, str, str, int]]) -> None:
        """:meth:`add_refs` in a transaction of the caller's (the thread record's own)."""
        for thread_id, domain, kind, key, size in refs:
            self._pin(db, key, kind, size)
            db.execute("INSERT INTO blob_refs (thread_id, kind, key, domain, expires_at)"
                       " VALUES (?, ?, ?, ?, NULL) ON CONFLICT (thread_id, kind, key)"
                       " DO UPDATE SET expires_at = NULL",
                       (thread_id, kind, key, domain))

    def refs(self, thread_id: str) -> list[tuple[str, str, float | None]]:
        """(kind, key, expires_at) of one thread's references."""
        rows = self._query("SELECT kind, key, expires_at FROM blob_refs WHERE thread_id = ?"
                           " ORDER BY kind, key", (thread_id,))
        return [(r["kind"], r["key"], r["expires_at"]) for r in rows]

    # -- a thread's end, and its expiry ----------------------------------------------------

    def thread_ended(self, thread_id: str, domain: str, status: str, ttl: Ttl,
                     refs: Sequence[tuple[str, str, int]] = ()) -> ThreadExpiry:
        """Date what the thread leaves: checkpoints at once when ``done``, else when its retry
        window closes; input, result and record after their time to live. ``refs``: (kind,
        key, bytes) the thread uses and may not have referenced yet (its checkpoints: a
        running thread's are referenced only here, in this one transaction). Called again (a
        retried thread ending again), it dates them from the new end."""
        with self._tx() as db:
            return self.thread_ended_in(db, thread_id, domain, status, ttl, refs)

    def date_end(self, thread_id: str, domain: str, status: str, ttl: Ttl,
                 sizes: dict[str, int] | None = None) -> ThreadExpiry:
        """Reference what the thread's record names (input, checkpoints, result; ``sizes``
        by key where known) and date it, in one transaction."""
        with self._tx() as db:
            return self.date_end_in(db, thread_id, domain, status, ttl, sizes)

    def date_end_in(self, db: Any, thread_id: str, domain: str, status: str, ttl: Ttl,
                    sizes: dict[str, int] | None = None) -> ThreadExpiry:
        """:meth:`date_end` in a transaction of the caller's (the record's end)."""
        refs = [(kind, key, (sizes or {}).get(key, 0))
                for kind, key in self.thread_blobs_in(db, thread_id)]
        return self.thread_ended_in(db, thread_id, domain, status, ttl, refs)

    def thread_ended_in(self, db: Any, thread_id: str, domain: str, status: str, ttl: Ttl,
                        refs: Sequence[tuple[str, str, int]] = ()) -> ThreadExpiry:
        """:meth:`thread_ended` in a transaction of the caller's (the record's end)."""
        for kind, key, size in refs:
            self._pin(db, key, kind, size)
            db.execute("INSERT INTO blob_refs (thread_id, kind, key, domain, expires_at)"
                       " VALUES (?, ?, ?, ?, NULL) ON CONFLICT (thread_id, kind, key)"
                       " DO NOTHING", (thread_id, kind, key, domain))
        now = _now_sql(db, self.NOW)
        done = status == "done"
        result_until = now + ttl.results if done else None
        retry_until = None if done else now + ttl.retry
        input_until = now + ttl.inputs
        keep = max(ttl.results if done else 0.0, ttl.inputs, 0.0 if done else ttl.retry)
        record_until = now + max(ttl.records, keep)
        db.execute("INSERT INTO thread_expiry VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                   " ON CONFLICT (thread_id) DO UPDATE SET status = excluded.status,"
                   " ended_at = excluded.ended_at, result_until = excluded.result_until,"
                   " input_until = excluded.input_until, retry_until = excluded.retry_until,"
                   " record_until = excluded.record_until",
                   (thread_id, domain, status, now, result_until, input_until, retry_until,
                    record_until))
        checkpoints_until = now if done else retry_until
        for kind, until in (("checkpoint", checkpoints_until), ("input", input_until),
                            ("result", result_until if done else now)):
            db.execute("UPDATE blob_refs SET expires_at = ? WHERE thread_id = ? AND kind = ?",
                       (until, thread_id, kind))
        return ThreadExpiry(thread_id, status, now, result_until, input_until, retry_until,
                            record_until, now)

    def expiry(self, thread_id: str) -> ThreadExpiry | None:
        """The thread's dates, read with the database's clock (None: running, or ended before
        lifecycles were recorded)."""
        with self._read() as db:
            row = db.execute(f"SELECT *, {self.NOW} AS now FROM thread_expiry"
                             " WHERE thread_id = ?", (thread_id,)).fetchone()
        if row is None:
            return None
        return ThreadExpiry(row["thread_id"], row["status"], row["ended_at"],
                            row["result_until"], row["input_until"], row["retry_until"],
                            row["record_until"], float(row["now"]))

    def reopen(self, thread_id: str, input_key: str) -> bool:
        """Run a failed or canceled thread again: its unfinished tasks pending again, its
        references live again, its expiry dates gone, all in one transaction. False when it
        may not run again (not failed or canceled, its retry window closed, its input gone):
        the caller says why."""
        with self._tx() as db:
            row = db.execute(f"SELECT *, {self.NOW} AS now FROM thread_expiry"
                             " WHERE thread_id = ?", (thread_id,)).fetchone()
            status = db.execute("SELECT status FROM threads WHERE id = ?",
                                (thread_id,)).fetchone()
            if row is None or status is None or status["status"] not in ("failed", "canceled"):
                return False
            closed = row["retry_until"] is None or row["retry_until"] <= float(row["now"])
            if closed or not self._input_held(db, thread_id, input_key):
                return False
            db.execute("UPDATE tasks SET status = 'pending', started_at = NULL,"
                       " finished_at = NULL, error = NULL WHERE thread_id = ? AND status IN"
                       " ('pending', 'running', 'failed', 'canceled')", (thread_id,))
            db.execute("UPDATE threads SET status = 'processing', error_code = NULL,"
                       " error_message = NULL, finished_at = NULL, cancel_requested = 0,"
                       f" updated_at = {self.NOW}, lease_until = NULL, lease_owner = NULL"
                       " WHERE id = ?", (thread_id,))
            db.execute("DELETE FROM thread_expiry WHERE thread_id = ?", (thread_id,))
            db.execute("UPDATE blob_refs SET expires_at = NULL WHERE thread_id = ?",
                       (thread_id,))
            return True

    def supersede(self, thread_id: str, idem_key: str) -> None:
        """A done thread whose result expired gives up its idempotency key: the same request
        then makes a new thread (charged again); this record stays, readable by its id."""
        with self._tx() as db:
            db.execute("UPDATE threads SET idem_key = ? WHERE id = ? AND idem_key = ?",
                       (f"{idem_key}~{thread_id}", thread_id, idem_key))

    def _input_held(self, db: Any, thread_id: str, key: str) -> bool:
        """The thread still references its input, and the blob has not been removed."""
        row = db.execute(
            "SELECT 1 FROM blob_refs r JOIN blobs b ON b.key = r.key WHERE r.thread_id = ?"
            f" AND r.kind = 'input' AND r.key = ? AND (r.expires_at IS NULL OR"
            f" r.expires_at > {self.NOW})", (thread_id, key)).fetchone()
        return row is not None

    # -- collection ------------------------------------------------------------------------

    def collectable(self, db: Any, limit: int, grace: float, checkpoint_grace: float,
                    keys: Sequence[str] | None = None, lock: bool = True) -> list[Removed]:
        """Blobs no live reference names, pinned longer ago than their grace."""
        only = f" AND b.key IN ({', '.join('?' * len(keys))})" if keys else ""
        rows = db.execute(
            "SELECT b.key, b.kind, b.bytes FROM blobs b WHERE b.touched_at <="
            f" {self.NOW} - CASE WHEN b.kind = 'checkpoint' THEN ? ELSE ? END"
            " AND NOT EXISTS (SELECT 1 FROM blob_refs r WHERE r.key = b.key AND"
            f" (r.expires_at IS NULL OR r.expires_at > {self.NOW})){only}"
            f" ORDER BY b.touched_at LIMIT ?{self.LOCK if lock else ''}",
            (checkpoint_grace, grace, *(keys or ()), limit)).fetchall()
        return [Removed(r["key"], r["kind"], int(r["bytes"])) for r in rows]

    def collect_blobs(self, remove: Any, limit: int, grace: float, checkpoint_grace: float,
                      keys: Sequence[str] | None = None,
                      dry_run: bool = False) -> tuple[list[Removed], list[Removed]]:
        """Remove up to ``limit`` collectable blobs through ``remove(chosen) -> gone keys`` while
        their rows are locked; forget the rows of those gone. Returns (removed, kept: the
        store refused them, or they were put again meanwhile)."""
        if dry_run:
            with self._read() as db:
                return self.collectable(db, limit, grace, checkpoint_grace, keys, False), []
        with self._tx() as db:
            chosen = self.collectable(db, limit, grace, checkpoint_grace, keys)
            if not chosen:
                return [], []
            gone = set(remove(chosen))
            removed = [b for b in chosen if b.key in gone]
            db.executemany("DELETE FROM blobs WHERE key = ?", [(b.key,) for b in removed])
            db.executemany("DELETE FROM blob_refs WHERE key = ? AND expires_at IS NOT NULL",
                           [(b.key,) for b in removed])
        return removed, [b for b in chosen if b.key not in gone]

    def expired_records(self, limit: int, domain: str | None = None) -> list[tuple[str, str]]:
        """(thread id, domain) of threads whose record expired (all of a ``domain``'s
        ended threads, when one is named: its data deleted on request)."""
        if domain is not None:
            return [(r["id"], domain) for r in self._query(
                "SELECT id FROM threads WHERE domain = ? AND status <> 'processing' LIMIT ?",
                (domain, limit))]
        rows = self._query(f"SELECT thread_id, domain FROM thread_expiry WHERE record_until <="
                           f" {self.NOW} ORDER BY record_until LIMIT ?", (limit,))
        return [(r["thread_id"], r["domain"]) for r in rows]

    def delete_records(self, thread_ids: Sequence[str]) -> int:
        """Forget these threads whole: tasks, references, dates and the record (never the
        ledger, which lives elsewhere and names them only by id)."""
        if not thread_ids:
            return 0
        with self._tx() as db:
            # Again, under lock: a thread run again meanwhile (a retry) is not forgotten.
            marks = ", ".join("?" * len(thread_ids))
            ended = [r["id"] for r in db.execute(
                f"SELECT id FROM threads WHERE id IN ({marks}) AND status <> 'processing'"
                f"{self.ROW_LOCK}", tuple(thread_ids)).fetchall()]
            gone = set(thread_ids) - {r["id"] for r in db.execute(
                f"SELECT id FROM threads WHERE id IN ({marks})", tuple(thread_ids)).fetchall()}
            args = [(t,) for t in [*ended, *gone]]
            db.executemany("DELETE FROM blob_refs WHERE thread_id = ?", args)
            db.executemany("DELETE FROM tasks WHERE thread_id = ?", args)
            db.executemany("DELETE FROM thread_expiry WHERE thread_id = ?", args)
            db.executemany("DELETE FROM threads WHERE id = ? AND status <> 'processing'", args)
        return len(ended)

    def drop_expired_refs(self, limit: int) -> int:
        """Forget references past their date (the blobs themselves go by collect_blobs)."""
        with self._tx() as db:
            rows = db.execute(f"SELECT thread_id, kind, key FROM blob_refs WHERE expires_at <="
                              f" {self.NOW} LIMIT ?", (limit,)).fetchall()
            db.executemany("DELETE FROM blob_refs WHERE thread_id = ? AND kind = ? AND key = ?",
                           [(r["thread_id"], r["kind"], r["key"]) for r in rows])
        return len(rows)

    def unrecorded_ends(self, limit: int) -> list[tuple[str, str, str]]:
        """(thread id, domain, status) of ended threads with no dates yet: those that ended
        before lifecycles were recorded, or whose end was not dated (a crash in between)."""
        rows = self._query(
            "SELECT t.id, t.domain, t.status FROM threads t WHERE t.status <> 'processing'"
            " AND NOT EXISTS (SELECT 1 FROM thread_expiry e WHERE e.thread_id = t.id)"
            " LIMIT ?", (limit,))
        return [(r["id"], r["domain"], r["status"]) for r in rows]

    def thread_blobs(self, thread_id: str) -> list[tuple[str, str]]:
        """(kind, key) of what a thread record names: its input, checkpoints and result."""
        with self._read() as db:
            return self.thread_blobs_in(db, thread_id)

    @staticmethod
    def thread_blobs_in(db: Any, thread_id: str) -> list[tuple[str, str]]:
        """:meth:`thread_blobs`, read in a transaction of the caller's."""
        row = db.execute("SELECT input_key, result FROM threads WHERE id = ?",
                         (thread_id,)).fetchone()
        if row is None:
            return []
        tasks = db.execute("SELECT checkpoint_key FROM tasks WHERE thread_id = ? AND"
                           " checkpoint_key IS NOT NULL", (thread_id,)).fetchall()
        out = [("input", row["input_key"])]
        out += [("checkpoint", t["checkpoint_key"]) for t in tasks]
        if row["result"]:
            out.append(("result", json.loads(row["result"])["key"]))
        return out

    def known(self, keys: Sequence[str]) -> set[str]:
        """Which of these keys the database knows (a row in ``blobs``, or named by a
        thread record)."""
        if not keys:
            return set()
        marks = ", ".join("?" * len(keys))
        rows = self._query(f"SELECT key FROM blobs WHERE key IN ({marks})"
                           " UNION SELECT input_key AS key FROM threads WHERE input_key IN"
                           f" ({marks}) UNION SELECT checkpoint_key AS key FROM tasks WHERE"
                           f" checkpoint_key IN ({marks})", (*keys, *keys, *keys))
        return {r["key"] for r in rows}

    # -- usage -----------------------------------------------------------------------------

    def usage(self, domain: str | None = None) -> list[dict[str, Any]]:
        """Per domain and kind: blobs its live references name, and their bytes (a blob two
        domains share counts for each); plus its thread records."""
        where = " AND r.domain = ?" if domain else ""
        args = (domain,) if domain else ()
        rows = self._query(
            "SELECT r.domain, r.kind, COUNT(DISTINCT r.key) AS blobs, COALESCE(SUM(b.bytes), 0)"
            " AS bytes FROM (SELECT DISTINCT domain, kind, key FROM blob_refs WHERE"
            f" expires_at IS NULL OR expires_at > {self.NOW}) r JOIN blobs b ON b.key = r.key"
            f" WHERE 1 = 1{where} GROUP BY r.domain, r.kind ORDER BY r.domain, r.kind", args)
        threads = self._query("SELECT domain, COUNT(*) AS n FROM threads"
                              f"{' WHERE domain = ?' if domain else ''} GROUP BY domain", args)
        out: dict[str, dict[str, Any]] = {
            r["domain"]: {"domain": r["domain"], "threads": int(r["n"]), "blobs": {}}
            for r in threads}
        for r in rows:
            entry = out.setdefault(r["domain"], {"domain": r["domain"], "threads": 0,
                                                 "blobs": {}})
            entry["blobs"][r["kind"]] = {"count": int(r["blobs"]), "bytes": int(r["bytes"])}
        return [out[d] for d in sorted(out)]

    def stored_bytes(self) -> dict[str, int]:
        """Bytes of every blob the database knows, by kind (the storage gauge)."""
        rows = self._query("SELECT kind, COALESCE(SUM(bytes), 0) AS n FROM blobs GROUP BY kind")
        return {r["kind"]: int(r["n"]) for r in rows}


class SQLiteLifecycle(LifecycleSQL, SQLiteDatabase):
    NOW = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, path: Path | str, busy_seconds: float = 5.0) -> None:
        SQLiteDatabase.__init__(self, path, SCHEMA, busy_seconds=busy_seconds)

    def _delete_errors(self, db: Any, ids: list[int]) -> None:
        # The full-text index holds its own copy of each row (external content): told first.
        cols = "error_type, message, traceback, operator, task_id"
        db.executemany(f"INSERT INTO task_errors_fts (task_errors_fts, rowid, {cols})"
                       f" SELECT 'delete', id, {cols} FROM task_errors WHERE id = ?",
                       [(i,) for i in ids])
        super()._delete_errors(db, ids)


class PostgresLifecycle(LifecycleSQL, PostgresDatabase):
    NOW = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"
    LOCK = " FOR UPDATE OF b SKIP LOCKED"  # two collectors take different blobs
    ROW_LOCK = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        PostgresDatabase.__init__(self, url, SCHEMA)


def open_lifecycle_store(db: DatabaseSettings) -> LifecycleSQL:
    """Beside the threads (``settings.db``): PostgreSQL when ``database_url`` is set, else
    the SQLite file."""
    if db.database_url:
        return PostgresLifecycle(db.database_url)
    return SQLiteLifecycle(db.database_path, db.sqlite_busy_seconds)
