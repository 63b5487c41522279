"""The run history: what `ec2backup runs` and `show` read. Kept apart from the commands that
drive runs, so that these import neither pydantic nor the cloud and SSH libraries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.states import ENDED_STATES
from ..core.times import iso
from ..db.models import Run
from ..errors import ConfigError

if TYPE_CHECKING:
    from .app import App


def run_summary(run: Run, *, driven: bool) -> dict[str, Any]:
    """A run's row. ``driven``: a live process holds the run's lease. A run that is neither
    over nor driven is ``abandoned``: its process died (a crash, kill -9), and it stays in the
    state it was in until `ec2backup resume` (or reap) takes it on."""
    return {
        "id": run.id,
        "kind": run.kind,
        "profile": run.profile,
        "host": run.host,
        "state": run.state,
        "started_at": iso(run.created_at),
        "finished_at": iso(run.finished_at),
        "instance_id": run.instance_id,
        "volume_id": run.volume_id,
        "snapshot_id": run.snapshot_id,
        "error": run.error,
        "abandoned": run.state not in ENDED_STATES and not driven,
    }


def list_runs(
    app: App, profile: str | None = None, limit: int | None = None, host: str | None = None
) -> list[dict[str, Any]]:
    """The runs of every host sharing this database, newest first; ``host`` / ``profile``
    narrow them down."""
    from ..db.leases import live_leases

    driven = live_leases(app.store)
    with app.store.session() as session:
        runs = app.store.list_runs(session, profile=profile, host=host, limit=limit)
        return [run_summary(r, driven=r.id in driven) for r in runs]


def show_run(app: App, run_id: str) -> dict[str, Any]:
    from ..db.leases import live_leases

    driven = live_leases(app.store)
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
            **run_summary(run, driven=run.id in driven),
            "failed_from": run.failed_from,
            "host": run.host,
            "ssh_address": run.ssh_address,
            "host_key_source": run.host_key_source,
            "warnings": list(run.warnings or []),
            "stats": {
                "files_transferred": run.files_transferred,
                "bytes_sent": run.bytes_sent,
                "total_size": run.total_size,
            },
            "cost": _run_cost(app, run),
            "events": timeline,
        }


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
