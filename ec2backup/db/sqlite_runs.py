"""`ec2backup runs` straight from a SQLite file, without SQLAlchemy.

Importing SQLAlchemy and its ORM costs ~0.2 s, half the 0.4 s budget of `ec2backup runs`
(docs/performance.md). For the common case (the default SQLite file, already at the newest
schema) this module reads the runs with the standard library's sqlite3. Anything else (another
database, a file that does not exist yet, an older or newer schema, any SQLite error) returns
None, and the caller opens the store as usual, which creates or upgrades the database and reports
errors. tests/db/test_sqlite_runs.py checks that both paths give the same rows.
``EC2BACKUP_NO_FASTPATHS`` (``fastpaths.SQLITE_RUNS``) makes it return None always.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from ..core.times import iso
from ..fastpaths import SQLITE_RUNS, enabled
from .summary import SUMMARY_COLUMNS, summary_row

# The newest migration. Checked against the migrations directory by the tests, so opening an
# up-to-date database needs no Alembic import.
SCHEMA_HEAD = "0004_snapshot_stats"


def sqlite_file(url: str) -> Path | None:
    """The file of a plain ``sqlite:///PATH`` URL (no driver, no query string), else None."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or "?" in url:
        return None
    database = url.removeprefix(prefix)
    # "~" is left to the store: SQLAlchemy's SQLite driver does not expand it.
    if not database or database == ":memory:" or database.startswith("~"):
        return None
    return Path(database)


def _iso(stored: str | None) -> str | None:
    # SQLAlchemy keeps UTC as naive "YYYY-MM-DD HH:MM:SS.ffffff" text (models.UTCDateTime).
    if stored is None:
        return None
    return iso(datetime.fromisoformat(stored))


def list_runs_sqlite(
    url: str, *, profile: str | None = None, host: str | None = None, limit: int | None = None
) -> list[dict[str, Any]] | None:
    """history.list_runs's rows read with sqlite3, or None where this path does not apply."""
    path = sqlite_file(url)
    if path is None or not path.is_file() or not enabled(SQLITE_RUNS):
        return None
    query = f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM runs"
    where, params = [], []
    for column, value in (("profile", profile), ("host", host)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if where:
        query += " WHERE " + " AND ".join(where)
    query += " ORDER BY created_at DESC, id DESC"
    if limit:
        query += f" LIMIT {int(limit)}"
    try:
        conn = sqlite3.connect(path, timeout=5.0)
        try:
            head = conn.execute("SELECT version_num FROM alembic_version").fetchall()
            if head != [(SCHEMA_HEAD,)]:
                return None
            rows = conn.execute(query, params).fetchall()
        finally:
            conn.close()
        return [summary_row(row, _iso) for row in rows]
    except (sqlite3.Error, ValueError):
        return None
