"""The run history: what `ec2backup runs` and `show` read. Kept apart from the commands that
drive runs, so that these import neither pydantic nor the cloud and SSH libraries; `show`
reaches AWS only to measure a backup's snapshot growth that is not recorded yet
(commands/growth.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.times import iso
from ..db.models import Run
from ..db.summary import SUMMARY_COLUMNS, summary_row
from ..errors import ConfigError

if TYPE_CHECKING:
    from .app import App


def run_summary(run: Run) -> dict[str, Any]:
    """The run's row in `ec2backup runs` (the same keys as ``db/sqlite_runs.py`` gives)."""
    return summary_row([getattr(run, column) for column in SUMMARY_COLUMNS], iso)


def list_runs(
    app: App, profile: str | None = None, limit: int | None = None, host: str | None = None
) -> list[dict[str, Any]]:
    """The runs of every host sharing this database, newest first; ``host`` / ``profile``
    narrow them down."""
    with app.store.session() as session:
        runs = app.store.list_runs(session, profile=profile, host=host, limit=limit)
        return [run_summary(r) for r in runs]


def show_run(app: App, run_id: str) -> dict[str, Any]:
    note = _fill_in_growth(app, run_id)
    with app.store.session() as session:
        run = app.store.get_run(session, run_id)
        events = list(run.events)
        timeline = []
        for i, ev in enumerate(events):
            until = events[i + 1].at if i + 1 < len(events) else run.finished_at
            seconds = (until - ev.at).total_seconds() if until else None
            timeline.append(
                {
                    "from": ev.from_state,
                    "to": ev.to_state,
                    "at": iso(ev.at),
                    "detail": ev.detail,
                    "seconds_in_state": seconds,
                }
            )
        return {
            **run_summary(run),
            "failed_from": run.failed_from,
            "host": run.host,
            "ssh_address": run.ssh_address,
            "host_key_source": run.host_key_source,
            "warnings": list(run.warnings or []),
            "stats": {
                "files_transferred": run.files_transferred,
                "bytes_sent": run.bytes_sent,
                "total_size": run.total_size,
                **_growth(run, note),
            },
            "cost": _run_cost(app, run),
            "events": timeline,
        }


def _fill_in_growth(app: App, run_id: str) -> str | None:
    """A backup whose snapshot's growth is not recorded yet is measured now (this is the one
    case in which `show` reaches AWS). Returns why it is still not measured, if it is not."""
    from ..core.states import BACKUP_KINDS, RunState

    with app.store.session() as session:
        run = app.store.get_run(session, run_id)
        wanted = (
            run.kind in BACKUP_KINDS
            and run.state == RunState.DONE
            and run.snapshot_id is not None
            and "added_bytes" not in (run.snapshot_stats or {})
            and "profile" in (run.config or {})
        )
        profile_data = dict(run.config["profile"]) if wanted else None
    if profile_data is None:
        return None
    from ..config import Profile
    from .growth import fill_in

    return fill_in(app, Profile.model_validate(profile_data), [run_id]).get(run_id)


def _growth(run: Run, note: str | None) -> dict[str, Any]:
    from ..core.states import BACKUP_KINDS

    if run.kind not in BACKUP_KINDS:
        return {}
    from .growth import added_row

    added = added_row(run.snapshot_stats, run.snapshot_id, note)
    return {"snapshot_added_bytes": added.get("added_bytes"), "snapshot_added": added}


def _run_cost(app: App, run: Run) -> dict[str, Any]:
    """Instance time (from the event log) and its estimated price."""
    from ..core.billing import DEFAULT_PRICES, run_cost
    from .cost import load_prices

    try:
        prices = load_prices(app.config_path)
    except ConfigError:
        prices = DEFAULT_PRICES  # a broken price table must not hide the run
    instance_type = run.config.get("instance_type") or run.config.get("profile", {}).get(
        "instance_type"
    )
    if not instance_type:  # a run recorded without its configuration
        return {
            "instance_type": None,
            "instance_seconds": None,
            "billed_seconds": None,
            "usd": None,
        }
    cost = run_cost(run.events, instance_type, prices)
    return {
        "instance_type": cost.instance_type,
        "instance_seconds": round(cost.instance_seconds, 1),
        "billed_seconds": round(cost.billed_seconds, 1),
        "usd": None if cost.usd is None else round(cost.usd, 6),
    }
