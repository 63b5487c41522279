"""How each command's result is shown: a table for people, JSON for scripts (``--json``),
through the one renderer (``render.py``). Results go to stdout; notes about them to stderr."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import typer

from .render import emit, emit_json, emit_table, short_time

TABLE_DEFAULT_LIMIT = 50
RUN_COLUMNS = [
    ("id", "RUN"),
    ("kind", "KIND"),
    ("profile", "PROFILE"),
    ("host", "HOST"),
    ("state", "STATE"),
    ("started", "STARTED (UTC)"),
    ("instance_id", "INSTANCE"),
    ("snapshot_id", "SNAPSHOT"),
    ("error", "ERROR"),
]
SNAPSHOT_COLUMNS = [
    ("id", "SNAPSHOT"),
    ("started", "STARTED (UTC)"),
    ("state", "STATE"),
    ("tier", "TIER"),
    ("size_gib", "SIZE (GiB)"),
    ("run_id", "RUN"),
]
REAP_COLUMNS = [
    ("resource", "RESOURCE"),
    ("state", "STATE"),
    ("run_id", "RUN"),
    ("action", "ACTION"),
    ("reason", "WHY"),
    ("volumes", "VOLUMES"),
]
DOCTOR_COLUMNS = [("check", "CHECK"), ("status", "STATUS"), ("detail", "DETAIL"), ("fix", "FIX")]


def _with_started(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "started": short_time(r["started_at"])} for r in rows]


def runs(rows: list[dict[str, Any]], *, as_json: bool) -> None:
    emit(rows if as_json else _with_started(rows), as_json=as_json, columns=RUN_COLUMNS)


def show(data: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        emit_json(data)
        return
    fields = [
        {"field": k, "value": v}
        for k, v in data.items()
        if k not in ("events", "stats", "warnings", "cost")
    ]
    fields += [
        {"field": k, "value": _snapshot_added(v) if k == "snapshot_added" else v}
        for k, v in data["stats"].items()
    ]
    fields += [{"field": f"cost.{k}", "value": v} for k, v in data["cost"].items()]
    fields += [{"field": "warning", "value": w} for w in data["warnings"]]
    emit(fields, as_json=False, columns=[("field", "FIELD"), ("value", "VALUE")])
    events = [{**e, "at": short_time(e["at"])} for e in data["events"]]
    emit_table(
        events,
        [
            ("at", "AT (UTC)"),
            ("to", "STATE"),
            ("seconds_in_state", "SECONDS"),
            ("detail", "DETAIL"),
        ],
        title="timeline",
    )


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def _snapshot_added(added: dict[str, Any]) -> str:
    """``stats.snapshot_added`` in words: how much, how counted, against which snapshot."""
    if added.get("added_bytes") is None:
        return str(added.get("note") or "not measured")
    against = added.get("compared_with")
    how = f"changed since {against}" if against else "all blocks of a first snapshot"
    return (
        f"{_mib(added['added_bytes'])}: {added['blocks']} blocks of "
        f"{added['block_size'] // 1024} KiB, {how} ({added['method']})"
    )


def reap(rows: list[dict[str, Any]], *, as_json: bool, acted: bool) -> None:
    emit(rows, as_json=as_json, columns=REAP_COLUMNS)
    if not acted and any(r["orphan"] for r in rows):
        typer.echo("dry run: nothing was changed; pass --yes to act", err=True)


def snapshots(rows: list[dict[str, Any]], *, as_json: bool) -> None:
    emit(rows if as_json else _with_started(rows), as_json=as_json, columns=SNAPSHOT_COLUMNS)


def prune(result: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        emit(result, as_json=True, columns=[])
    else:
        from rich.markup import escape  # an AWS error message may hold [brackets]

        rows = [
            {
                **r,
                "why": escape(
                    "; ".join(r["reasons"]) + (f"; {r['error']}" if r.get("error") else "")
                ),
            }
            for r in _with_started(result["snapshots"])
        ]
        emit(
            rows,
            as_json=False,
            columns=[*SNAPSHOT_COLUMNS[:4], ("action", "ACTION"), ("why", "WHY")],
        )
    archive = result.get("archive") or {}
    if archive.get("after_days") is not None or any(
        r.get("tier") == "archive" for r in result["snapshots"]
    ):
        typer.echo(f"archive tier: {archive['note']}", err=True)
    if result["dry_run"]:
        archiving = f" and archive {result['archived']}" if result.get("archived") else ""
        typer.echo(
            f"dry run ({result['policy']}): would delete {result['removed']}{archiving} of "
            f"{len(result['snapshots'])} snapshots; pass --yes to do it",
            err=True,
        )


def _money(value: float | None, digits: int = 2) -> str | None:
    if value is None:
        return None
    if 0 < abs(value) < 10**-digits:
        return f"${value:.2g}" if abs(value) < 1e-6 else f"${value:.{_digits(value)}f}"
    return f"${value:.{digits}f}"


def _digits(value: float) -> int:
    """Decimals that show two significant digits of a small amount: 0.000123 -> 6."""
    return max(0, 1 - math.floor(math.log10(abs(value))))


def _quantity(value: float, unit: str) -> str:
    """Two decimals, or three significant digits of a small quantity (0.00263 GiB-month)."""
    return f"{value:.2f} {unit}" if value == 0 or abs(value) >= 0.1 else f"{value:.3g} {unit}"


def cost(result: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        emit(result, as_json=True, columns=[])
        return
    from rich.markup import escape  # the table renders markup: "[prices]" would vanish

    rows = [
        {
            **i,
            "quantity": None if i["quantity"] is None else _quantity(i["quantity"], i["unit"]),
            "price": _money(i["unit_price_usd"], 4),
            "monthly": _money(i["monthly_usd"]),
            "basis": escape(i["basis"]),
        }
        for i in result["items"]
    ]
    rows.append({"item": "total", "monthly": _money(result["total_monthly_usd"])})
    emit(
        rows,
        as_json=False,
        columns=[
            ("item", "ITEM"),
            ("quantity", "QUANTITY"),
            ("price", "PRICE (USD)"),
            ("monthly", "PER MONTH"),
            ("basis", "BASIS"),
        ],
        title=escape(f"{result['profile']} ({result['region']})"),
    )
    modes = [
        {
            **m,
            "storage": f"{m['storage']} (this profile)" if m["used"] else m["storage"],
            "volume": _money(m["volume_usd"]),
            "snapshots": _money(m["snapshots_usd"]),
            "other": _money(m["instance_and_requests_usd"]),
            "monthly": _money(m["monthly_usd"]),
        }
        for m in result["modes"]
    ]
    emit_table(
        modes,
        [
            ("storage", "STORAGE"),
            ("volume", "VOLUME"),
            ("snapshots", "SNAPSHOTS"),
            ("other", "INSTANCE + REQUESTS"),
            ("monthly", "PER MONTH"),
            ("basis", "BASIS"),
        ],
        title="the same data under each storage mode",
    )
    notes = [f"prices: {result['prices']}", *result["notes"]]
    emit_table([{"note": escape(n)} for n in notes], [("note", "NOTE")])


def doctor(rows: list[dict[str, Any]], *, as_json: bool) -> None:
    emit(rows, as_json=as_json, columns=DOCTOR_COLUMNS)


def verify(run_id: str, found: list[str], *, as_json: bool) -> None:
    if as_json:
        emit_json({"run_id": run_id, "matches": not found, "differences": found})
        return
    for line in found:
        typer.echo(line)
    typer.echo(
        f"run {run_id}: " + (f"{len(found)} differences" if found else "the volume matches"),
        err=True,
    )
