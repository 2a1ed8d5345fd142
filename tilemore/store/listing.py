"""Listing a domain's threads, newest first, a page at a time (``GET /threads``).

Pages are keyset pages: a page ends at a (created_at, id) position and the next one starts
strictly after it, so threads created meanwhile never shift a page or repeat one, and a page
costs the same however deep it is (an index on (domain, created_at, id) serves it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from tilemore.store import ThreadRecord

LISTING_INDEXES = """
CREATE INDEX IF NOT EXISTS threads_listing ON threads(domain, created_at, id);
CREATE INDEX IF NOT EXISTS threads_listing_account ON threads(account, created_at, id);
"""


@dataclass(frozen=True)
class ThreadFilter:
    """Which of a domain's threads to list. ``account``: one account's only (a sub-account
    sees nothing else); ``meta_parts``: threads whose meta parts include every one of these;
    ``since``: created at or after (unix seconds); ``after``: the (created_at, id) where the
    previous page ended."""

    domain: str
    account: str | None = None
    status: str | None = None
    meta_parts: Sequence[str] = ()
    since: float | None = None
    after: tuple[float, str] | None = None


def _like_part(part: str) -> str:
    # Meta parts are stored as a JSON list; a part (letters, digits, . _ ~ -) appears in it
    # as "part". LIKE's own wildcards (_ and %) and its escape are escaped.
    escaped = part.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f'%"{escaped}"%'


class ThreadListing:
    """Mixed into :class:`~tilemore.store.sql.SQLStore`."""

    _read: Callable[[], AbstractContextManager[Any]]

    def list_threads(self, where: ThreadFilter, limit: int) -> list[ThreadRecord]:
        """At most ``limit`` threads, newest first (ties: highest id first), with their tasks,
        read from one snapshot."""
        from tilemore.store.sql import _task, _thread

        sql = ["SELECT * FROM threads WHERE domain = ?"]
        args: list[Any] = [where.domain]
        if where.account is not None:
            sql.append("AND account = ?")
            args.append(where.account)
        if where.status is not None:
            sql.append("AND status = ?")
            args.append(where.status)
        for part in where.meta_parts:
            sql.append("AND meta_parts LIKE ? ESCAPE '\\'")
            args.append(_like_part(part))
        if where.since is not None:
            sql.append("AND created_at >= ?")
            args.append(where.since)
        if where.after is not None:
            at, thread_id = where.after
            sql.append("AND (created_at < ? OR (created_at = ? AND id < ?))")
            args += [at, at, thread_id]
        sql.append("ORDER BY created_at DESC, id DESC LIMIT ?")
        args.append(limit)
        with self._read() as db:
            rows = db.execute(" ".join(sql), args).fetchall()
            if not rows:
                return []
            ids = [r["id"] for r in rows]
            tasks: dict[str, list[Any]] = {i: [] for i in ids}
            marks = ", ".join("?" * len(ids))
            for t in db.execute(f"SELECT * FROM tasks WHERE thread_id IN ({marks})"
                                " ORDER BY thread_id, position", ids).fetchall():
                tasks[t["thread_id"]].append(_task(t))
        return [_thread(r, tasks[r["id"]]) for r in rows]
