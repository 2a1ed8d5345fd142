"""The embedded store: :class:`~tilemore.store.sql.SQLStore` on one SQLite file (see
:mod:`tilemore.store.sqlite_db` for how the file is shared between processes)."""

from __future__ import annotations

from pathlib import Path

from tilemore.store.sql import ADDED_COLUMNS, SCHEMA, SQLStore, migrate_sqlite
from tilemore.store.sqlite_db import SQLiteDatabase


class SQLiteStore(SQLStore, SQLiteDatabase):
    """Implements both :class:`ThreadRepository` and :class:`TokenRepository`."""

    def __init__(self, path: Path | str, busy_seconds: float = 5.0) -> None:
        SQLiteDatabase.__init__(self, path, SCHEMA, ADDED_COLUMNS, busy_seconds,
                                migrate=migrate_sqlite)
