"""The store of threads, tasks, domains, accounts and tokens, written once for both backends:
:class:`SQLStore` holds the SQL and the records; :mod:`tilemore.store.sqlite` and
:mod:`tilemore.store.postgres` give it a database. A record is written whole, in one
transaction, or not at all; idempotency is the database's UNIQUE constraint on the key."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from tilemore.errors import TilemoreError
from tilemore.store import (
    SCOPES,
    AccountInfo,
    AlsoWrite,
    NewThread,
    ResultInfo,
    TaskRecord,
    ThreadRecord,
    TokenInfo,
    check_scopes,
)
from tilemore.store.leases import LEASE_COLUMNS, Leases, fence
from tilemore.store.limits import LIMITS_SCHEMA, LimitStore, ThreadQuota
from tilemore.store.listing import LISTING_INDEXES, ThreadListing
from tilemore.store.webhooks import WEBHOOKS_SCHEMA, WebhookStore

Row = Any  # sqlite3.Row or psycopg's dict row: both read by column name

SCHEMA = """
CREATE TABLE IF NOT EXISTS domains (
    name TEXT PRIMARY KEY,
    created_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    domain TEXT NOT NULL REFERENCES domains(name),
    parent TEXT REFERENCES accounts(id),
    name TEXT NOT NULL,
    created_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    domain TEXT NOT NULL REFERENCES domains(name),
    account TEXT NOT NULL REFERENCES accounts(id),
    token_hash TEXT NOT NULL UNIQUE,
    created_at {real} NOT NULL,
    revoked_at {real},
    scopes TEXT NOT NULL DEFAULT 'submit read billing'
);
CREATE TABLE IF NOT EXISTS threads (
    id TEXT PRIMARY KEY,
    domain TEXT NOT NULL REFERENCES domains(name),
    account TEXT NOT NULL REFERENCES accounts(id),
    idem_key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('processing', 'done', 'failed', 'canceled')),
    pipeline TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    meta_parts TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    input_key TEXT NOT NULL,
    output_format TEXT NOT NULL,
    envelope TEXT NOT NULL,
    created_at {real} NOT NULL,
    updated_at {real} NOT NULL,
    finished_at {real},
    result TEXT,
    error_code TEXT,
    error_message TEXT,
    qc TEXT NOT NULL DEFAULT '[]',
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    trace_id TEXT
);
CREATE INDEX IF NOT EXISTS threads_unfinished ON threads(status) WHERE status = 'processing';
""" + LISTING_INDEXES + LIMITS_SCHEMA + WEBHOOKS_SCHEMA + """
CREATE TABLE IF NOT EXISTS pipeline_versions (
    fingerprint TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    document TEXT NOT NULL,
    created_at {real} NOT NULL
);
""" + """CREATE TABLE IF NOT EXISTS tasks (
    thread_id TEXT NOT NULL REFERENCES threads(id),
    task_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    operator TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'running', 'done', 'failed', 'canceled', 'skipped')),
    started_at {real},
    finished_at {real},
    megapixels {real},
    checkpoint_key TEXT,
    error TEXT,
    note TEXT,
    PRIMARY KEY (thread_id, task_id)
);
"""
# A thread's end gives its lease back in the same write: an ended thread is never claimed,
# and the conductor saves a transaction per thread.
_UNLEASED = ", lease_until = NULL, lease_owner = NULL"
TASK_STATUSES = "('pending', 'running', 'done', 'failed', 'canceled', 'skipped')"
# Columns of ``tasks`` in a database made before ``skipped`` was a status.
OLD_TASK_COLUMNS = ("thread_id, task_id, position, operator, status, started_at, finished_at,"
                    " megapixels, checkpoint_key, error")

# Columns added to a table after its first release: (table, column, type). A database made
# before then gets them when a process opens it (CREATE TABLE IF NOT EXISTS leaves an
# existing table as it was); each backend adds only what is missing.
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("threads", "trace_id", "TEXT"),
    # Tokens made before scopes keep all three (the column's default fills them in).
    ("tokens", "scopes", "TEXT NOT NULL DEFAULT 'submit read billing'"),
    *LEASE_COLUMNS,
)


def migrate_sqlite(db: Any) -> None:
    """Tasks may be ``skipped`` (a selector ruled the branch out): a file made before then has
    a CHECK without it, which SQLite cannot alter, so the table is rebuilt, once."""
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'tasks'").fetchone()[0]
    if "'skipped'" in sql:
        return
    db.execute("ALTER TABLE tasks RENAME TO tasks_before_skipped")
    db.execute(SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS tasks"):].format(
        real="REAL"))
    db.execute(f"INSERT INTO tasks ({OLD_TASK_COLUMNS}) SELECT {OLD_TASK_COLUMNS}"
               " FROM tasks_before_skipped")
    db.execute("DROP TABLE tasks_before_skipped")


def migrate_postgres(db: Any) -> None:
    """The same, where a CHECK can be replaced in place."""
    row = db.execute("SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint"
                     " WHERE conname = 'tasks_status_check'").fetchone()
    if row is not None and "skipped" in row["def" if isinstance(row, dict) else 0]:
        return
    db.execute("ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_status_check")
    db.execute(f"ALTER TABLE tasks ADD CONSTRAINT tasks_status_check CHECK (status IN"
               f" {TASK_STATUSES})")
    db.execute("ALTER TABLE tasks ADD COLUMN IF NOT EXISTS note TEXT")


class SQLStore(Leases, ThreadListing, LimitStore, WebhookStore):
    """Implements both :class:`ThreadRepository` and :class:`TokenRepository` over a
    database the subclass supplies (``_tx``, ``_read``, ``_query``)."""

    _tx: Callable[[], AbstractContextManager[Any]]
    _read: Callable[[], AbstractContextManager[Any]]
    _query: Callable[..., list[Any]]

    # -- domains and tokens ------------------------------------------------------------

    def create_domain(self, name: str) -> bool:
        with self._tx() as db:
            cur = db.execute("INSERT INTO domains VALUES (?, ?)"
                             " ON CONFLICT DO NOTHING", (name, time.time()))
            db.execute("INSERT INTO accounts VALUES (?, ?, NULL, ?, ?) ON CONFLICT DO NOTHING",
                       (name, name, name, time.time()))
            return cur.rowcount == 1

    def domain_exists(self, name: str) -> bool:
        return bool(self._query("SELECT 1 FROM domains WHERE name = ?", (name,)))

    def create_subaccount(self, domain: str, name: str) -> tuple[AccountInfo, bool]:
        """A customer of ``domain`` (subletting): its id is ``domain/name``."""
        account_id = f"{domain}/{name}"
        with self._tx() as db:
            cur = db.execute("INSERT INTO accounts VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                             (account_id, domain, domain, name, time.time()))
        info = self.account(account_id)
        assert info is not None
        return info, cur.rowcount == 1

    def account(self, account_id: str) -> AccountInfo | None:
        rows = self._query("SELECT * FROM accounts WHERE id = ?", (account_id,))
        return _account(rows[0]) if rows else None

    def subaccounts(self, domain: str) -> list[AccountInfo]:
        rows = self._query("SELECT * FROM accounts WHERE domain = ? AND parent IS NOT NULL"
                           " ORDER BY created_at", (domain,))
        return [_account(r) for r in rows]

    def issue_token(self, domain: str, account: str | None = None,
                    scopes: tuple[str, ...] = SCOPES) -> tuple[str, str]:
        scopes = check_scopes(scopes)
        account = account or domain
        info = self.account(account)
        if info is None or info.domain != domain:
            raise TilemoreError(f"no account '{account}' in domain '{domain}'",
                                code="unknown_account")
        token_id = "tok_" + secrets.token_hex(6)
        secret = "tm_" + secrets.token_urlsafe(32)
        with self._tx() as db:
            db.execute("INSERT INTO tokens (id, domain, account, token_hash, created_at,"
                       " scopes) VALUES (?, ?, ?, ?, ?, ?)",
                       (token_id, domain, account, _hash(secret), time.time(),
                        " ".join(scopes)))
        return token_id, secret

    def revoke_token(self, token_id: str) -> bool:
        with self._tx() as db:
            cur = db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                             (time.time(), token_id))
            return cur.rowcount == 1

    def find_token(self, secret: str) -> TokenInfo | None:
        rows = self._query("SELECT * FROM tokens WHERE token_hash = ?", (_hash(secret),))
        return _token(rows[0]) if rows else None

    def list_tokens(self, domain: str) -> list[TokenInfo]:
        rows = self._query("SELECT * FROM tokens WHERE domain = ? ORDER BY created_at", (domain,))
        return [_token(r) for r in rows]

    # -- threads -----------------------------------------------------------------------

    def create_thread(self, new: NewThread, quota: ThreadQuota | None = None,
                      also: AlsoWrite | None = None) -> tuple[ThreadRecord, bool]:
        now = time.time()
        thread_id = uuid.uuid4().hex
        with self._tx() as db:
            if quota is not None:  # 429 too_many_threads past the domain's or account's
                self._within_quota(db, new.domain, new.account, new.idem_key, quota)
            cur = db.execute(
                "INSERT INTO threads (id, domain, account, idem_key, status, pipeline,"
                " fingerprint, meta_parts, image_sha256, input_key, output_format, envelope,"
                " created_at, updated_at)"
                " VALUES (?, ?, ?, ?, 'processing', ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (idem_key) DO NOTHING",
                (thread_id, new.domain, new.account, new.idem_key, new.pipeline, new.fingerprint,
                 json.dumps(new.meta_parts), new.image_sha256, new.input_key,
                 new.output_format, json.dumps(new.envelope, sort_keys=True), now, now),
            )
            created = cur.rowcount == 1
            if created:
                db.executemany(
                    "INSERT INTO tasks (thread_id, task_id, position, operator, status)"
                    " VALUES (?, ?, ?, ?, 'pending')",
                    [(thread_id, t, i, op) for i, (t, op) in enumerate(new.tasks)],
                )
                if also is not None:
                    also(db, thread_id)
        record = self.get_thread_by_key(new.idem_key)
        assert record is not None
        return record, created

    def get_thread(self, thread_id: str) -> ThreadRecord | None:
        return self._thread("SELECT * FROM threads WHERE id = ?", thread_id)

    def statuses(self, thread_ids: Sequence[str]) -> dict[str, str]:
        """The status of each of ``thread_ids`` that exists, in one read: what an ingress's
        long polls ask together (:mod:`tilemore.api.waiting`)."""
        if not thread_ids:
            return {}
        marks = ", ".join("?" * len(thread_ids))
        rows = self._query(f"SELECT id, status FROM threads WHERE id IN ({marks})",
                           list(thread_ids))
        return {r["id"]: r["status"] for r in rows}

    def get_thread_by_key(self, idem_key: str) -> ThreadRecord | None:
        return self._thread("SELECT * FROM threads WHERE idem_key = ?", idem_key)

    def _thread(self, sql: str, arg: str) -> ThreadRecord | None:
        with self._read() as db:
            rows = db.execute(sql, (arg,)).fetchall()
            if not rows:
                return None
            tasks = db.execute("SELECT * FROM tasks WHERE thread_id = ? ORDER BY position",
                               (rows[0]["id"],)).fetchall()
        return _thread(rows[0], [_task(t) for t in tasks])

    def tasks_started(self, thread_id: str, task_ids: Sequence[str], at: float, *,
                      epoch: int | None = None) -> None:
        with self._tx() as db:  # one write for the tasks handed over together
            fence(db, thread_id, epoch)
            db.executemany("UPDATE tasks SET status = 'running', started_at = ? WHERE"
                           " thread_id = ? AND task_id = ? AND status = 'pending'",
                           [(at, thread_id, task_id) for task_id in task_ids])
            _touch(db, thread_id)

    def task_done(self, thread_id: str, task_id: str, started_at: float, finished_at: float,
                  megapixels: float, checkpoint_key: str | None, *,
                  epoch: int | None = None) -> None:
        with self._tx() as db:
            fence(db, thread_id, epoch)
            db.execute("UPDATE tasks SET status = 'done', started_at = ?, finished_at = ?,"
                       " megapixels = ?, checkpoint_key = ? WHERE thread_id = ? AND task_id = ?",
                       (started_at, finished_at, megapixels, checkpoint_key, thread_id, task_id))
            _touch(db, thread_id)

    def record_pipeline(self, fingerprint: str, name: str, path: str,
                        document: dict[str, Any]) -> None:
        """Keep a pipeline version's definition (once), so that threads accepted under it
        can finish on it after a newer one is deployed."""
        with self._tx() as db:
            db.execute("INSERT INTO pipeline_versions VALUES (?, ?, ?, ?, ?)"
                       " ON CONFLICT (fingerprint) DO NOTHING",
                       (fingerprint, name, path, json.dumps(document, sort_keys=True),
                        time.time()))

    def pipeline_version(self, fingerprint: str) -> tuple[str, str, dict[str, Any]] | None:
        """(name, path, document) of a recorded pipeline version."""
        rows = self._query("SELECT name, path, document FROM pipeline_versions"
                           " WHERE fingerprint = ?", (fingerprint,))
        if not rows:
            return None
        return rows[0]["name"], rows[0]["path"], json.loads(rows[0]["document"])

    def tasks_skipped(self, thread_id: str, reasons: dict[str, str], *,
                      epoch: int | None = None) -> None:
        """Branches a selector ruled out: they will not run (and are not charged)."""
        with self._tx() as db:
            fence(db, thread_id, epoch)
            db.executemany("UPDATE tasks SET status = 'skipped', note = ? WHERE thread_id = ?"
                           " AND task_id = ? AND status = 'pending'",
                           [(why[:500], thread_id, task) for task, why in reasons.items()])
            _touch(db, thread_id)

    def set_qc(self, thread_id: str, qc: list[dict[str, Any]], *,
               epoch: int | None = None) -> None:
        with self._tx() as db:
            fence(db, thread_id, epoch)
            db.execute("UPDATE threads SET qc = ? WHERE id = ?", (json.dumps(qc), thread_id))

    def finish_thread(self, thread_id: str, result: ResultInfo, *,
                      qc: list[dict[str, Any]] | None = None,
                      epoch: int | None = None, also: AlsoWrite | None = None) -> None:
        with self._tx() as db:  # the result and QC's verdicts in one write
            fence(db, thread_id, epoch)
            if qc is not None:
                db.execute("UPDATE threads SET qc = ? WHERE id = ?", (json.dumps(qc), thread_id))
            db.execute(f"UPDATE threads SET status = 'done', result = ?, finished_at = ?{_UNLEASED}"
                       " WHERE id = ? AND status = 'processing'",
                       (json.dumps(result.__dict__), time.time(), thread_id))
            _touch(db, thread_id)
            if also is not None:
                also(db, thread_id)

    def fail_thread(self, thread_id: str, code: str, message: str,
                    task_id: str | None = None, *, epoch: int | None = None,
                    also: AlsoWrite | None = None) -> None:
        with self._tx() as db:
            fence(db, thread_id, epoch)
            if task_id is not None:
                db.execute("UPDATE tasks SET status = 'failed', error = ?, finished_at = ?"
                           " WHERE thread_id = ? AND task_id = ?",
                           (message, time.time(), thread_id, task_id))
            db.execute("UPDATE tasks SET status = 'canceled' WHERE thread_id = ?"
                       " AND status IN ('pending', 'running')", (thread_id,))
            db.execute("UPDATE threads SET status = 'failed', error_code = ?, error_message = ?,"
                       f" finished_at = ?{_UNLEASED} WHERE id = ? AND status = 'processing'",
                       (code, message, time.time(), thread_id))
            _touch(db, thread_id)
            if also is not None:
                also(db, thread_id)

    def request_cancel(self, thread_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE threads SET cancel_requested = 1 WHERE id = ?"
                       " AND status = 'processing'", (thread_id,))
            _touch(db, thread_id)

    def cancel_requested(self, thread_id: str) -> bool:
        rows = self._query("SELECT cancel_requested FROM threads WHERE id = ?", (thread_id,))
        return bool(rows and rows[0]["cancel_requested"])

    def mark_canceled(self, thread_id: str, *, epoch: int | None = None,
                      also: AlsoWrite | None = None) -> None:
        with self._tx() as db:
            fence(db, thread_id, epoch)
            db.execute("UPDATE tasks SET status = 'canceled' WHERE thread_id = ?"
                       " AND status IN ('pending', 'running')", (thread_id,))
            db.execute(f"UPDATE threads SET status = 'canceled', finished_at = ?{_UNLEASED}"
                       " WHERE id = ? AND status = 'processing'", (time.time(), thread_id))
            _touch(db, thread_id)
            if also is not None:
                also(db, thread_id)

    def unfinished_threads(self) -> list[str]:
        rows = self._query("SELECT id FROM threads WHERE status = 'processing'"
                           " ORDER BY created_at")
        return [r["id"] for r in rows]

    def thread_counts(self) -> dict[str, int]:
        rows = self._query("SELECT status, COUNT(*) AS n FROM threads GROUP BY status")
        return {r["status"]: int(r["n"]) for r in rows}

    def set_trace_id(self, thread_id: str, trace_id: str, *,
                     epoch: int | None = None) -> None:
        # Not a state change: updated_at stays as it was.
        with self._tx() as db:
            fence(db, thread_id, epoch)
            db.execute("UPDATE threads SET trace_id = ? WHERE id = ?", (trace_id, thread_id))


def _hash(secret: str) -> str:
    # Tokens are 256 random bits: a plain SHA-256 is enough (no dictionary to guard against).
    return hashlib.sha256(secret.encode()).hexdigest()


def _touch(db: Any, thread_id: str) -> None:
    db.execute("UPDATE threads SET updated_at = ? WHERE id = ?", (time.time(), thread_id))


def _token(row: Row) -> TokenInfo:
    return TokenInfo(row["id"], row["domain"], row["created_at"], row["revoked_at"],
                     row["account"], tuple(row["scopes"].split()))


def _account(row: Row) -> AccountInfo:
    return AccountInfo(row["id"], row["domain"], row["parent"], row["name"], row["created_at"])


def _task(row: Row) -> TaskRecord:
    return TaskRecord(row["task_id"], row["operator"], row["status"], row["started_at"],
                      row["finished_at"], row["megapixels"], row["checkpoint_key"], row["error"],
                      row["note"])


def _thread(row: Row, tasks: list[TaskRecord]) -> ThreadRecord:
    result = json.loads(row["result"]) if row["result"] else None
    return ThreadRecord(
        id=row["id"], domain=row["domain"], account=row["account"], idem_key=row["idem_key"],
        status=row["status"],
        pipeline=row["pipeline"], fingerprint=row["fingerprint"],
        meta_parts=json.loads(row["meta_parts"]), image_sha256=row["image_sha256"],
        input_key=row["input_key"], output_format=row["output_format"],
        envelope=json.loads(row["envelope"]), created_at=row["created_at"],
        updated_at=row["updated_at"], finished_at=row["finished_at"],
        result=ResultInfo(**result) if result else None, error_code=row["error_code"],
        error_message=row["error_message"], qc=json.loads(row["qc"]),
        cancel_requested=bool(row["cancel_requested"]), tasks=tasks,
        trace_id=row["trace_id"],
    )
