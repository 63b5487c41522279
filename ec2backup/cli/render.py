"""One renderer for every listing: a rich table for people, ``--json`` for scripts.
Results go to stdout; everything else (logs, progress) goes to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def emit_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], title: str = ""
) -> None:
    """``columns``: (key in each row, header)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title or None, show_edge=False, header_style="bold")
    for _key, header in columns:
        table.add_column(header, overflow="fold")
    for row in rows:
        # Text, not markup: a value like "[x]" must print as it is.
        table.add_row(*(Text(_cell(row.get(key))) for key, _header in columns))
    console = Console()
    if not console.is_terminal:
        # Piped or captured: no terminal width to respect, so never fold ids across lines.
        console = Console(width=max(console.width, 400))
    console.print(table)


def emit(data: Any, *, as_json: bool, columns: Sequence[tuple[str, str]], title: str = "") -> None:
    if as_json:
        emit_json(data)
    else:
        emit_table(data if isinstance(data, list) else [data], columns, title)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        # Seconds read well to a tenth; a cost of a fraction of a cent must not show as 0.0.
        return f"{value:.1f}" if value == 0 or abs(value) >= 0.1 else f"{value:.3g}"
    return str(value)


def short_time(iso: str | None) -> str | None:
    """``2026-11-28T04:15:00.123+00:00`` -> ``2026-11-28 04:15:00``."""
    return iso[:19].replace("T", " ") if iso else None
