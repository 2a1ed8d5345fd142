"""The database a test runs on: the embedded SQLite file, or a fresh PostgreSQL schema.

Tests take the ``backend`` fixture (``tests/conftest.py``) and run once per backend; they open
stores and ledgers through it, so both are closed (and the schema dropped) afterwards.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from support.postgres import drop_schema, fresh_schema
from tilemore.billing.ledger import Ledger, open_ledger
from tilemore.settings import Settings
from tilemore.store import open_store
from tilemore.store.error_index import ErrorIndexSQL, open_error_index

NAMES = ("sqlite", "postgres")


class Backend:
    @classmethod
    def of(cls, request: Any, root: Path) -> Backend:
        """The backend a fixture parametrised over :data:`NAMES` asks for (PostgreSQL on the
        session's server)."""
        dsn = request.getfixturevalue("postgres_dsn") if request.param == "postgres" else None
        return cls(request.param, root, dsn)

    def __init__(self, name: str, root: Path, server_dsn: str | None = None) -> None:
        self.name, self.root, self._server = name, root, server_dsn
        self.schema: str | None = None
        self.url: str | None = None
        if name == "postgres":
            assert server_dsn is not None
            self.schema, self.url = fresh_schema(server_dsn)
        self._opened: list[Any] = []
        self._siblings: list[Backend] = []
        # What the database raises when a constraint or trigger refuses a write.
        self.integrity_error: type[Exception] = (
            psycopg.IntegrityError if self.url else sqlite3.IntegrityError)

    def __repr__(self) -> str:
        return f"Backend({self.name})"

    @property
    def env(self) -> dict[str, str]:
        """The TILEMORE_* variables that point the CLI at this database."""
        return {"TILEMORE_DATA_DIR": str(self.root), "TILEMORE_DATABASE_URL": self.url or ""}

    def settings(self, **values: Any) -> Settings:
        return Settings(data_dir=self.root, database_url=self.url, **values)

    def store(self) -> Any:
        return self._keep(open_store(self.settings().db))

    def ledger(self, clock: Callable[[], float] = time.time) -> Ledger:
        return self._keep(open_ledger(self.settings().db, clock))

    def errors(self) -> ErrorIndexSQL:
        return self._keep(open_error_index(self.settings().db))

    def sibling(self) -> Backend:
        """Another, empty database of the same kind (hypothesis runs many examples in one
        test)."""
        other = Backend(self.name, self.root / uuid.uuid4().hex[:8], self._server)
        self._siblings.append(other)
        return other

    def execute(self, sql: str) -> None:
        """Raw SQL from outside Tilemore (someone with the database), committed."""
        if self.url:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(sql)
            return
        db = sqlite3.connect(self.root / "tilemore.db")
        try:
            db.execute(sql)
            db.commit()
        finally:
            db.close()

    def table_text(self, table: str) -> str:
        """Every row of ``table`` as text: what someone reading the database would see."""
        sql = f"SELECT * FROM {table}"
        if self.url:
            with psycopg.connect(self.url) as conn:
                return repr(conn.execute(sql).fetchall())
        db = sqlite3.connect(self.root / "tilemore.db")
        try:
            return repr(db.execute(sql).fetchall())
        finally:
            db.close()

    def drop_trigger_sql(self, name: str) -> str:
        return f"DROP TRIGGER {name}" + (" ON ledger" if self.url else "")

    def close(self) -> None:
        for sibling in self._siblings:
            sibling.close()
        for opened in self._opened:
            opened.close()
        if self.schema and self._server:
            drop_schema(self._server, self.schema)

    def _keep(self, opened: Any) -> Any:
        self._opened.append(opened)
        return opened
