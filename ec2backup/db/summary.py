"""The row of a run that `ec2backup runs` lists and `show` starts with, defined once for both
readers: the store's (``commands/history.run_summary``, from the ORM object) and the standard
library's (``db/sqlite_runs.py``, from a SELECT of the same columns). Imports nothing of the
project, nor SQLAlchemy: the sqlite3 reader exists to avoid loading it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

# (key in the row, column of the runs table), in the row's order.
SUMMARY_FIELDS: tuple[tuple[str, str], ...] = (
    ("id", "id"),
    ("kind", "kind"),
    ("profile", "profile"),
    ("host", "host"),
    ("state", "state"),
    ("started_at", "created_at"),
    ("finished_at", "finished_at"),
    ("instance_id", "instance_id"),
    ("volume_id", "volume_id"),
    ("snapshot_id", "snapshot_id"),
    ("error", "error"),
)
SUMMARY_COLUMNS = tuple(column for _, column in SUMMARY_FIELDS)
# Columns holding a time, shown as ISO 8601 text with its UTC offset (or None).
TIME_COLUMNS = frozenset({"created_at", "finished_at"})


def summary_row(values: Sequence[Any], iso: Callable[[Any], str | None]) -> dict[str, Any]:
    """The row from the values of ``SUMMARY_COLUMNS``, in that order; ``iso`` turns what the
    reader holds for a time column into its text."""
    return {
        key: iso(value) if column in TIME_COLUMNS else value
        for (key, column), value in zip(SUMMARY_FIELDS, values, strict=True)
    }
