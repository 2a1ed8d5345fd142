"""Typed views of the API's answers. Each keeps the answer it came from in ``raw`` (fields
the service adds later are there before the SDK names them), and ``obj["field"]`` reads it,
as the SDK's earlier dict answers did."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any


class _Raw:
    raw: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)


@dataclass(frozen=True)
class ResultInfo:
    """Where a finished thread's output is and what it is (not the bytes)."""

    url: str
    content_type: str
    bytes: int
    sha256: str
    width: int
    height: int

    @classmethod
    def of(cls, d: dict[str, Any]) -> ResultInfo:
        return cls(d["url"], d["content_type"], int(d.get("bytes") or 0), d["sha256"],
                   d["width"], d["height"])


@dataclass(frozen=True)
class Thread(_Raw):
    """A thread as the service last answered: ``status`` is ``processing``, ``done``,
    ``failed`` or ``canceled`` (``needs-file`` only inside ``create``)."""

    id: str
    status: str
    pipeline: str | None
    meta: dict[str, Any]
    created_at: str | None
    finished_at: str | None
    credits_charged: str | None
    result: ResultInfo | None
    error: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def thread_id(self) -> str:
        return self.id

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "canceled")

    @classmethod
    def of(cls, d: dict[str, Any]) -> Thread:
        result = d.get("result")
        return cls(d["thread_id"], d["status"], d.get("pipeline"), d.get("meta") or {},
                   d.get("created_at"), d.get("finished_at"), d.get("credits_charged"),
                   ResultInfo.of(result) if isinstance(result, dict) else None,
                   d.get("error"), d)


@dataclass(frozen=True)
class ThreadPage:
    """One page of ``list()``: ``next_cursor`` is None on the last."""

    threads: list[Thread]
    next_cursor: str | None


@dataclass
class Result:
    """A finished thread's output: in memory (``data``) or in the file ``path``."""

    thread_id: str
    content_type: str
    sha256: str
    width: int
    height: int
    credits_charged: str | None
    answer: dict[str, Any] = field(repr=False, default_factory=dict)
    path: Path | None = None
    _data: bytes | None = field(default=None, repr=False)

    @property
    def data(self) -> bytes:
        """The bytes (read from ``path`` when the result went to a file)."""
        if self._data is not None:
            return self._data
        assert self.path is not None
        return self.path.read_bytes()

    @property
    def thread(self) -> Thread:
        return Thread.of(self.answer)

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.part")
        if self._data is None and self.path is not None:
            with self.path.open("rb") as src, tmp.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        else:
            tmp.write_bytes(self.data)
        tmp.replace(path)  # never half a file at `path`
        return path

    def stream(self) -> io.BufferedIOBase:
        if self._data is None and self.path is not None:
            return self.path.open("rb")
        return io.BytesIO(self.data)


@dataclass(frozen=True)
class Balance(_Raw):
    account: str
    balance: Decimal
    held: Decimal
    available: Decimal
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, d: dict[str, Any]) -> Balance:
        return cls(d["account"], Decimal(d["balance"]), Decimal(d["held"]),
                   Decimal(d["available"]), d)


@dataclass(frozen=True)
class HistoryDay(_Raw):
    """One day of the abbreviated history (the latest 31 days)."""

    date: str
    amount_when_day_started: Decimal
    transaction_total: Decimal
    traced_total: Decimal
    ordered_total: Decimal
    applied_commitment_bonus: Decimal
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, d: dict[str, Any]) -> HistoryDay:
        return cls(d["date"], Decimal(d["amount_when_day_started"]),
                   Decimal(d["transaction_total"]), Decimal(d["traced_total"]),
                   Decimal(d["ordered_total"]), Decimal(d["applied_commitment_bonus"]), d)


@dataclass(frozen=True)
class Operation(_Raw):
    """One entry of the detailed history (today or yesterday): a charge, hold, order…"""

    seq: int
    kind: str
    amount: Decimal
    balance_after: Decimal
    thread_id: str | None
    task_id: str | None
    operator: str | None
    megapixels: float | None
    reference: str | None
    at: Any
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, d: dict[str, Any]) -> Operation:
        return cls(d["seq"], d["kind"], Decimal(d["amount"]), Decimal(d["balance_after"]),
                   d.get("thread_id"), d.get("task_id"), d.get("operator"), d.get("megapixels"),
                   d.get("reference"), d.get("at"), d)


@dataclass(frozen=True)
class SubAccount(_Raw):
    name: str
    account: str
    balance: Decimal | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, d: dict[str, Any]) -> SubAccount:
        bal = d.get("balance")
        return cls(d["name"], d["account"], None if bal is None else Decimal(bal), d)


@dataclass(frozen=True)
class Token(_Raw):
    """A sub-account's new token: ``token`` is shown once, keep it."""

    account: str
    token_id: str
    token: str
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, d: dict[str, Any]) -> Token:
        return cls(d["account"], d["token_id"], d["token"], d)


@dataclass(frozen=True)
class Payment(_Raw):
    """A payment recorded for a sub-account (credits moved from the domain)."""

    payment_id: str
    amount: Decimal
    account: str
    replayed: bool
    balance: Decimal
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, d: dict[str, Any]) -> Payment:
        return cls(d["payment_id"], Decimal(d["amount"]), d["account"], bool(d["replayed"]),
                   Decimal(d["balance"]), d)
