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

import os
import socket
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..core.times import iso, utcnow
from ..fastpaths import SQLITE_RUNS, enabled
from .liveness import holder_alive
from .summary import ENDED_STATES, SUMMARY_COLUMNS, summary_row

__all__ = ["ENDED_STATES", "SCHEMA_HEAD", "list_runs_sqlite", "sqlite_file"]

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


def _driven(leases: list[tuple[Any, ...]]) -> set[str]:
    """Run ids whose lease a live process holds (the rule of ``liveness.holder_alive``)."""
    now, host, pid = utcnow(), socket.gethostname(), os.getpid()
    return {
        run_id
        for run_id, holder_host, holder_pid, heartbeat in leases
        if holder_alive(
            holder_host,
            int(holder_pid),
            datetime.fromisoformat(heartbeat).replace(tzinfo=UTC),
            now,
            host,
            pid,
        )
    }


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
            leases = conn.execute(
                "SELECT run_id, holder_host, holder_pid, heartbeat_at FROM leases"
            ).fetchall()
        finally:
            conn.close()
        driven = _driven(leases)
        return [summary_row(row, _iso, driven=row[0] in driven) for row in rows]
    except (sqlite3.Error, ValueError):
        return None
