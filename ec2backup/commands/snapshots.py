"""The profile's snapshots: listing them and pruning them with a retention policy.

Only snapshots tagged ``ec2backup:managed=true`` *and* ``ec2backup:profile=<name>`` are ever
looked at, so ``prune`` cannot touch a snapshot ec2backup did not make for that profile. The
state of each snapshot comes from DescribeSnapshots on every call: a ``pending`` snapshot is
shown as pending and never deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..config import Profile, load_profile
from ..core.retention import Policy, select, sort_newest_first
from ..core.tags import TAG_MANAGED, TAG_PROFILE, TAG_RUN_ID
from ..core.times import iso
from ..errors import Ec2BackupError, UserInputError
from ..ports import Ec2, Snapshot

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger(__name__)

__all__ = [
    "apply_profile_retention",
    "list_snapshots",
    "profile_snapshots",
    "prune",
    "prune_profile",
    "snapshot_row",
]


def _owner_tags(profile_name: str) -> dict[str, str]:
    return {TAG_MANAGED: "true", TAG_PROFILE: profile_name}


def _owned_by(tags: Mapping[str, str], profile_name: str) -> bool:
    return all(tags.get(k) == v for k, v in _owner_tags(profile_name).items())


def profile_snapshots(ec2: Ec2, profile_name: str, now: datetime | None = None) -> list[Snapshot]:
    """The profile's snapshots, newest first. The tag filter is checked again here: whatever
    the adapter returns, nothing outside the profile gets through."""
    found = ec2.find_snapshots(_owner_tags(profile_name))
    mine = [s for s in found if _owned_by(s.tags, profile_name)]
    return sort_newest_first(mine, now or datetime.now(UTC))


def snapshot_row(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "id": snapshot.id,
        "run_id": snapshot.tags.get(TAG_RUN_ID),
        "started_at": iso(snapshot.started_at),
        "size_gib": snapshot.size_gib,
        "state": snapshot.state,
        "volume_id": snapshot.volume_id or None,
    }


def list_snapshots(app: App, profile_name: str) -> list[dict[str, Any]]:
    """``ec2backup snapshots``: one row per snapshot, newest first, with its current state."""
    profile = load_profile(app.config_path, profile_name)
    ec2 = app.adapters.ec2(profile.region, None)
    return [snapshot_row(s) for s in profile_snapshots(ec2, profile.name)]


def policy_from_flags(
    keep_last: int | None = None,
    keep_daily: int | None = None,
    keep_weekly: int | None = None,
    keep_monthly: int | None = None,
) -> Policy:
    """The policy given on the command line; at least one rule above 0 is required."""
    values = {
        "--keep-last": keep_last,
        "--keep-daily": keep_daily,
        "--keep-weekly": keep_weekly,
        "--keep-monthly": keep_monthly,
    }
    for flag, value in values.items():
        if value is not None and value < 0:
            raise UserInputError(f"{flag} {value} is negative", hint="give a count of 0 or more")
    policy = Policy(*(v or 0 for v in values.values()))
    if policy.is_empty():
        raise UserInputError(
            "prune needs at least one rule above 0",
            hint="give --keep-last, --keep-daily, --keep-weekly or --keep-monthly",
        )
    return policy


def prune_profile(
    ec2: Ec2,
    profile_name: str,
    policy: Policy,
    *,
    yes: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Decide with ``policy`` and, with ``yes``, delete. A failed deletion does not stop the
    others: it is reported in its row (``action`` ``failed``) and counted in ``failed``."""
    if policy.is_empty():
        raise UserInputError("prune needs at least one rule above 0")
    now = now or datetime.now(UTC)
    snapshots = profile_snapshots(ec2, profile_name, now)
    keep, remove = select(snapshots, policy, now)
    removing = {s.id for s in remove}
    rows: list[dict[str, Any]] = []
    failed = 0
    for snapshot in snapshots:
        row = {**snapshot_row(snapshot), "action": "keep", "reasons": keep.get(snapshot.id, [])}
        if snapshot.id in removing:
            # select() never removes a pending snapshot; this guard holds whatever it does.
            assert snapshot.state != "pending", snapshot.id
            row["action"] = "remove"
            row["reasons"] = ["state error"] if snapshot.state == "error" else ["no rule keeps it"]
            if yes:
                try:
                    ec2.delete_snapshot(snapshot.id)
                    row["action"] = "deleted"
                except Ec2BackupError as exc:
                    failed += 1
                    row["action"] = "failed"
                    row["error"] = exc.one_line()
        rows.append(row)
    return {
        "profile": profile_name,
        "policy": policy.describe(),
        "dry_run": not yes,
        "kept": len(keep),
        "removed": sum(r["action"] in ("remove", "deleted") for r in rows),
        "failed": failed,
        "snapshots": rows,
    }


def prune(
    app: App,
    profile_name: str,
    policy: Policy,
    *,
    yes: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """``ec2backup prune``: dry run unless ``yes``."""
    profile = load_profile(app.config_path, profile_name)
    ec2 = app.adapters.ec2(profile.region, None)
    return prune_profile(ec2, profile.name, policy, yes=yes, now=now)


def apply_profile_retention(
    app: App, profile: Profile, now: datetime | None = None
) -> dict[str, Any] | None:
    """Apply the profile's ``retention`` table (deleting for real), for the engine to call
    after a successful run. Returns the prune result, or None when the profile has no
    retention. Never raises an ``Ec2BackupError``: the backup itself has succeeded, so a
    failure here is logged as a warning (and in the result's ``failed``), not raised."""
    if profile.retention is None:
        return None
    policy = Policy(**profile.retention.model_dump())
    try:
        ec2 = app.adapters.ec2(profile.region, None)
        result = prune_profile(ec2, profile.name, policy, yes=True, now=now)
    except Ec2BackupError as exc:
        log.warning("retention (%s) not applied: %s", policy.describe(), exc.one_line())
        return None
    deleted = [r["id"] for r in result["snapshots"] if r["action"] == "deleted"]
    if deleted:
        log.info("retention (%s): deleted %s", policy.describe(), ", ".join(deleted))
    for row in result["snapshots"]:
        if row["action"] == "failed":
            log.warning("retention: could not delete %s: %s", row["id"], row["error"])
    return result
