"""One renderer for every listing: a rich table for people, ``--json`` for scripts.
Results go to stdout; everything else (logs, progress) goes to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


@dataclass(frozen=True)
class Column:
    """A table column that fits a terminal: ``priority`` 0 is always shown, and when the
    table is wider than the terminal the column with the highest priority goes first;
    ``shrink`` cuts its cells short (with an ellipsis) rather than drop it, down to
    ``SHRINK_MIN``. No cell of any column is ever folded across lines (ids stay whole)."""

    key: str
    header: str
    priority: int = 0
    shrink: bool = False


SHRINK_MIN = 10
ColumnSpec = tuple[str, str] | Column


def emit_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[ColumnSpec], title: str = ""
) -> None:
    """``columns``: ``Column``s, or (key in each row, header) for a column that may fold
    its cells (long prose such as doctor's fixes)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    if not console.is_terminal:
        # Piped or captured: no terminal width to respect, so never fold ids across lines.
        console = Console(width=max(console.width, 400))
    cells = [[_cell(row.get(_spec(c).key)) for c in columns] for row in rows]
    kept, widths = _fitting(columns, cells, console.width)
    table = Table(title=title or None, show_edge=False, header_style="bold")
    for i in kept:
        spec = columns[i]
        if isinstance(spec, Column):
            table.add_column(
                spec.header,
                no_wrap=True,
                overflow="ellipsis" if spec.shrink else "ignore",
                width=widths[i],
            )
        else:
            table.add_column(spec[1], overflow="fold")
    for row_cells in cells:
        # Text, not markup: a value like "[x]" must print as it is.
        table.add_row(*(Text(row_cells[i]) for i in kept))
    console.print(table)


def _spec(column: ColumnSpec) -> Column:
    return column if isinstance(column, Column) else Column(column[0], column[1])


def _fitting(
    columns: Sequence[ColumnSpec], cells: list[list[str]], width: int
) -> tuple[list[int], dict[int, int]]:
    """The indexes of the columns shown, and their widths: all that fit ``width``, dropping
    the highest priority first, shrinkable ones cut to what is left (a table's columns take
    their width plus 2 of padding, plus 1 between them)."""
    natural, least = {}, {}
    for i, column in enumerate(columns):
        spec = _spec(column)
        natural[i] = max([len(spec.header), *(len(r[i]) for r in cells)])
        least[i] = min(natural[i], SHRINK_MIN) if spec.shrink else natural[i]
    kept = list(range(len(columns)))

    def spare() -> int:
        return width - sum(least[i] + 2 for i in kept) - (len(kept) - 1)

    while spare() < 0:
        droppable = [i for i in kept if _spec(columns[i]).priority > 0]
        if not droppable:
            break
        kept.remove(max(droppable, key=lambda i: (_spec(columns[i]).priority, i)))
    widths = dict(least)
    left = max(spare(), 0)
    for i in kept:  # the room left goes to the shrinkable columns, in order
        grow = min(natural[i] - widths[i], left)
        widths[i] += grow
        left -= grow
    return kept, widths


def emit(data: Any, *, as_json: bool, columns: Sequence[ColumnSpec], title: str = "") -> None:
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
