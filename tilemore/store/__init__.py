"""Durable records: task threads with their tasks, domains with their tokens, and the index
of failed tasks' errors.

The repositories are protocols; :func:`open_store` gives the embedded SQLite store
(:mod:`tilemore.store.sqlite`) or, when ``TILEMORE_DATABASE_URL`` names a server, the
PostgreSQL one (:mod:`tilemore.store.postgres`), and the API and the conductor do not notice.
:func:`tilemore.store.error_index.open_error_index` does the same for the :class:`ErrorIndex`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tilemore.errors import TilemoreError
from tilemore.settings_parts import DatabaseSettings

ThreadStatus = Literal["processing", "done", "failed", "canceled"]
TaskStatus = Literal["pending", "running", "done", "failed", "canceled", "skipped"]
FINISHED: tuple[str, ...] = ("done", "failed", "canceled")


@dataclass(frozen=True)
class NewThread:
    domain: str
    account: str
    idem_key: str
    pipeline: str
    fingerprint: str
    meta_parts: list[str]
    image_sha256: str
    input_key: str
    output_format: str
    envelope: dict[str, Any]
    tasks: list[tuple[str, str]]  # (task id, operator name), in graph order


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    operator: str
    status: TaskStatus
    started_at: float | None = None
    finished_at: float | None = None
    megapixels: float | None = None
    checkpoint_key: str | None = None
    error: str | None = None
    note: str | None = None  # why a skipped task did not run

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(frozen=True)
class ResultInfo:
    key: str
    sha256: str
    bytes: int
    content_type: str
    width: int
    height: int


@dataclass(frozen=True)
class ThreadRecord:
    id: str
    domain: str
    account: str
    idem_key: str
    status: ThreadStatus
    pipeline: str
    fingerprint: str
    meta_parts: list[str]
    image_sha256: str
    input_key: str
    output_format: str
    envelope: dict[str, Any]
    created_at: float
    updated_at: float
    finished_at: float | None = None
    result: ResultInfo | None = None
    error_code: str | None = None
    error_message: str | None = None
    qc: list[dict[str, Any]] = field(default_factory=list)
    cancel_requested: bool = False
    tasks: list[TaskRecord] = field(default_factory=list)
    trace_id: str | None = None  # the OpenTelemetry trace of its runs (32 hex digits)


# Writes another store on the same database adds to a thread's record, in the record's own
# transaction: called with that transaction's connection and the thread's id (the lifecycle
# references and dates a thread's blobs this way, without a commit of its own).
AlsoWrite = Callable[[Any, str], None]


class ThreadRepository(Protocol):
    def create_thread(self, new: NewThread, quota: Any = None,
                      also: AlsoWrite | None = None) -> tuple[ThreadRecord, bool]:
        """Insert the thread and its pending tasks in one transaction, unless a thread with
        the same idempotency key exists; return the thread and whether it is new. With a
        :class:`~tilemore.store.limits.ThreadQuota`, a new thread past it is refused.
        ``also`` runs in the same transaction when the thread is new."""

    def get_thread(self, thread_id: str) -> ThreadRecord | None: ...

    def get_thread_by_key(self, idem_key: str) -> ThreadRecord | None: ...

    def tasks_started(self, thread_id: str, task_ids: Sequence[str], at: float, *,
                      epoch: int | None = None) -> None:
        """Mark pending tasks ``running``: handed to the backend together, at ``at``."""

    def task_done(self, thread_id: str, task_id: str, started_at: float, finished_at: float,
                  megapixels: float, checkpoint_key: str | None, *,
                  epoch: int | None = None) -> None: ...

    def tasks_skipped(self, thread_id: str, reasons: dict[str, str], *,
                      epoch: int | None = None) -> None:
        """Mark pending tasks ``skipped`` (task id → why): a selector ruled them out."""

    def record_pipeline(self, fingerprint: str, name: str, path: str,
                        document: dict[str, Any]) -> None:
        """Keep a pipeline version's definition, once."""

    # Leases (tilemore.store.leases): claim_threads, claim_thread, renew_leases,
    # release_lease, backlog; and every write above takes ``epoch=`` to be fenced by one.

    def pipeline_version(self, fingerprint: str) -> tuple[str, str, dict[str, Any]] | None:
        """(name, path, document) of a kept pipeline version."""

    def set_qc(self, thread_id: str, qc: list[dict[str, Any]], *,
               epoch: int | None = None) -> None: ...

    def finish_thread(self, thread_id: str, result: ResultInfo, *,
                      qc: list[dict[str, Any]] | None = None,
                      epoch: int | None = None, also: AlsoWrite | None = None) -> None:
        """The thread is ``done`` with ``result`` (and QC's verdicts, when it has any);
        ``also`` runs in the same transaction (as in :meth:`fail_thread` and
        :meth:`mark_canceled`)."""

    def fail_thread(self, thread_id: str, code: str, message: str,
                    task_id: str | None = None, *, epoch: int | None = None,
                    also: AlsoWrite | None = None) -> None: ...

    def request_cancel(self, thread_id: str) -> None: ...

    def cancel_requested(self, thread_id: str) -> bool: ...

    def mark_canceled(self, thread_id: str, *, epoch: int | None = None,
                      also: AlsoWrite | None = None) -> None: ...

    def unfinished_threads(self) -> list[str]: ...

    def thread_counts(self) -> dict[str, int]:
        """How many threads the registry holds, by status (for the ``tilemore_threads``
        gauge)."""

    def set_trace_id(self, thread_id: str, trace_id: str, *,
                     epoch: int | None = None) -> None:
        """Remember the thread's OpenTelemetry trace, so its answer points to it."""


class UnknownScope(TilemoreError):
    code = "unknown_scope"
    status = 422


# What a token may do: ``submit`` (submit and cancel threads), ``read`` (threads, results,
# errors, balances and histories), ``billing`` (sub-accounts, their tokens, payments).
SCOPES: tuple[str, ...] = ("submit", "read", "billing")
MAX_SCOPES_TEXT = 200  # a scopes field, as sent, is parsed only up to this


def check_scopes(scopes: object) -> tuple[str, ...]:
    """``scopes`` as a list or a space-separated string, checked: known names only, at
    least one, in the canonical order. Anything else is :class:`UnknownScope` (HTTP 422)."""
    if isinstance(scopes, str):
        names = scopes[:MAX_SCOPES_TEXT + 1].split()
    elif isinstance(scopes, list | tuple) and len(scopes) <= len(SCOPES) * 4 and all(
            isinstance(s, str) for s in scopes):
        names = list(scopes)
    else:
        raise UnknownScope(f"scopes: a list of {', '.join(SCOPES)}, or one string of them "
                           "separated by spaces")
    unknown = sorted({n[:40] for n in names} - set(SCOPES))
    if unknown or not names:
        what = f"unknown scope '{unknown[0]}'" if unknown else "no scope given"
        raise UnknownScope(f"{what}; a token's scopes are {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in names)


@dataclass(frozen=True)
class TokenInfo:
    id: str
    domain: str
    created_at: float
    revoked_at: float | None
    account: str = ""  # the domain itself, or one of its sub-accounts
    scopes: tuple[str, ...] = SCOPES  # tokens made before scopes existed have all three


@dataclass(frozen=True)
class AccountInfo:
    """A domain's own account (``parent`` None) or a sub-account (``domain/name``)."""

    id: str
    domain: str
    parent: str | None
    name: str
    created_at: float


class TokenRepository(Protocol):
    def create_domain(self, name: str) -> bool: ...

    def domain_exists(self, name: str) -> bool: ...

    def issue_token(self, domain: str, account: str | None = None,
                    scopes: tuple[str, ...] = SCOPES) -> tuple[str, str]:
        """A new token for ``domain`` (or one of its sub-accounts) with ``scopes``: (token
        id, the secret, shown once)."""

    def create_subaccount(self, domain: str, name: str) -> tuple[AccountInfo, bool]: ...

    def account(self, account_id: str) -> AccountInfo | None: ...

    def subaccounts(self, domain: str) -> list[AccountInfo]: ...

    def revoke_token(self, token_id: str) -> bool: ...

    def find_token(self, secret: str) -> TokenInfo | None: ...

    def list_tokens(self, domain: str) -> list[TokenInfo]: ...


@dataclass(frozen=True)
class ErrorRecord:
    """One failed run of a task: a retried attempt (``final`` False) or the failure that
    ended its thread."""

    domain: str
    account: str
    thread_id: str
    task_id: str
    operator: str
    error_type: str  # the exception's class: ``ZeroDivisionError``, ``pkg.module.Error``
    message: str
    traceback: str
    attempt: int  # 1 for the first run
    final: bool
    at: float  # time.time()


@dataclass(frozen=True)
class ErrorHit:
    """A search result: the record, its relevance (higher is better) and a snippet with the
    matched words between ``«`` and ``»``."""

    id: int
    record: ErrorRecord
    score: float
    snippet: str


class ErrorIndex(Protocol):
    def record_error(self, error: ErrorRecord) -> None: ...

    def search_errors(self, query: str, *, domain: str | None, account: str | None = None,
                      thread_id: str | None = None, operator: str | None = None,
                      limit: int = 20) -> list[ErrorHit]:
        """The best matches of ``query`` (full-text), best first and newest first among
        equals, within ``domain`` (None: every domain) and the other filters given. A query
        the database cannot parse, an empty one or a limit out of range is
        :class:`~tilemore.errors.InvalidSearch`."""

    def close(self) -> None: ...


def open_store(db: DatabaseSettings) -> Any:
    """The configured store (``settings.db``); it implements both repositories. PostgreSQL
    when ``database_url`` is set (settings accept only ``postgresql://`` URLs there), else the
    embedded SQLite file."""
    if db.database_url:
        from tilemore.store.postgres import PostgresStore

        return PostgresStore(db.database_url)
    from tilemore.store.sqlite import SQLiteStore

    return SQLiteStore(db.database_path, db.sqlite_busy_seconds)
