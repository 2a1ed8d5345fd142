"""The collector's other rows: indexed task errors (``GET /errors``) and the webhook outbox's
deliveries, expired by age per domain. Part of the lifecycle store
(:class:`tilemore.store.lifecycle.LifecycleSQL`), which gives it ``NOW`` and ``_tx``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _domains(domain: str | None, besides: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """A WHERE clause's tail: one domain's rows, or every domain's but ``besides``."""
    if domain is not None:
        return " AND domain = ?", (domain,)
    if besides:
        return f" AND domain NOT IN ({', '.join('?' * len(besides))})", tuple(besides)
    return "", ()


class RecordsExpiry:
    NOW: str
    _tx: Any

    # -- the error index (tilemore.store.error_index) ----------------------------------------

    def expire_errors(self, before_seconds: float, limit: int, domain: str | None = None,
                      besides: Sequence[str] = ()) -> int:
        """Forget indexed task errors older than ``before_seconds`` (by the database's
        clock): ``domain``'s only, when named, or else those of every domain ``besides``
        these (the domains with a time of their own)."""
        where, args = _domains(domain, besides)
        with self._tx() as db:
            rows = db.execute(f"SELECT id FROM task_errors WHERE at <= {self.NOW} - ?{where}"
                              " ORDER BY at LIMIT ?", (before_seconds, *args, limit)).fetchall()
            self._delete_errors(db, [r["id"] for r in rows])
        return len(rows)

    def delete_domain_errors(self, domain: str, limit: int) -> int:
        with self._tx() as db:
            rows = db.execute("SELECT id FROM task_errors WHERE domain = ? LIMIT ?",
                              (domain, limit)).fetchall()
            self._delete_errors(db, [r["id"] for r in rows])
        return len(rows)

    def _delete_errors(self, db: Any, ids: list[int]) -> None:
        db.executemany("DELETE FROM task_errors WHERE id = ?", [(i,) for i in ids])

    # -- the webhook outbox (tilemore.store.webhooks) ---------------------------------------

    def expire_webhooks(self, before_seconds: float, limit: int, domain: str | None = None,
                        besides: Sequence[str] = ()) -> int:
        """Forget deliveries delivered or given up, made more than ``before_seconds`` ago,
        with their attempts; a pending one stays whatever its age. ``domain`` and
        ``besides`` as for :meth:`expire_errors`."""
        where, args = _domains(domain, besides)
        return self._delete_deliveries(
            f"status <> 'pending' AND created_at <= {self.NOW} - ?{where} ORDER BY created_at",
            (before_seconds, *args), limit)

    def delete_domain_webhooks(self, domain: str, limit: int) -> int:
        """A domain's deliveries, all of them (its data deleted on request)."""
        return self._delete_deliveries("domain = ?", (domain,), limit)

    def _delete_deliveries(self, where: str, args: tuple, limit: int) -> int:
        with self._tx() as db:
            ids = [(r["id"],) for r in db.execute(
                f"SELECT id FROM webhook_deliveries WHERE {where} LIMIT ?",
                (*args, limit)).fetchall()]
            db.executemany("DELETE FROM webhook_attempts WHERE delivery_id = ?", ids)
            db.executemany("DELETE FROM webhook_deliveries WHERE id = ?", ids)
        return len(ids)
