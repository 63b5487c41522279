"""The profile's snapshots: listing them and pruning them with a retention policy.

Only snapshots tagged ``ec2backup:managed=true`` *and* ``ec2backup:profile=<name>`` are ever
looked at, so ``prune`` cannot touch a snapshot ec2backup did not make for that profile. The
state of each snapshot comes from DescribeSnapshots on every call: a ``pending`` snapshot is
shown as pending and never deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..config import Profile, load_profile
from ..core.retention import (
    ARCHIVE_MINIMUM_DAYS,
    ARCHIVE_RESTORE_HOURS,
    Policy,
    select,
    to_archive,
)
from ..core.tags import TAG_RUN_ID
from ..core.times import as_utc, iso
from ..errors import Ec2BackupError, UserInputError
from ..ports import Ec2, Snapshot
from .owned import profile_snapshots

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


def snapshot_row(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "id": snapshot.id,
        "run_id": snapshot.tags.get(TAG_RUN_ID),
        "started_at": iso(snapshot.started_at),
        "size_gib": snapshot.size_gib,
        "state": snapshot.state,
        "tier": snapshot.storage_tier,
        "restored_until": iso(snapshot.restore_expiry),
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
    archive_after_days: int | None = None,
    before_archive: Callable[[Snapshot], None] | None = None,
) -> dict[str, Any]:
    """Decide with ``policy`` and, with ``yes``, delete; with ``archive_after_days``, move the
    kept snapshots that old to the archive tier (``before_archive`` is called first for each:
    an archived snapshot can no longer be read through the EBS direct APIs). A failed deletion
    or archival does not stop the others: it is reported in its row (``action`` ``failed``)
    and counted in ``failed``."""
    if policy.is_empty():
        raise UserInputError("prune needs at least one rule above 0")
    now = now or datetime.now(UTC)
    snapshots = profile_snapshots(ec2, profile_name, now)
    keep, remove = select(snapshots, policy, now)
    removing = {s.id for s in remove}
    archiving = (
        {s.id for s in to_archive(snapshots, keep, archive_after_days, now)}
        if archive_after_days is not None
        else set()
    )
    archived_at = _archived_at(ec2, [s for s in remove if s.storage_tier == "archive"])
    rows: list[dict[str, Any]] = []
    failed = 0
    for snapshot in snapshots:
        row = {**snapshot_row(snapshot), "action": "keep", "reasons": keep.get(snapshot.id, [])}
        if snapshot.id in removing:
            # select() never removes a pending snapshot; this guard holds whatever it does.
            assert snapshot.state != "pending", snapshot.id
            row["action"] = "remove"
            row["reasons"] = ["state error"] if snapshot.state == "error" else ["no rule keeps it"]
            if snapshot.id in archived_at:
                row["reasons"].append(_early_deletion(archived_at[snapshot.id], now))
            if yes:
                try:
                    ec2.delete_snapshot(snapshot.id)
                    row["action"] = "deleted"
                except Ec2BackupError as exc:
                    failed += 1
                    row["action"] = "failed"
                    row["error"] = exc.one_line()
        elif snapshot.id in archiving:
            row["action"] = "archive"
            row["reasons"] = [*row["reasons"], f"older than {archive_after_days} days: archive"]
            if yes:
                try:
                    if before_archive is not None:
                        before_archive(snapshot)
                    ec2.archive_snapshot(snapshot.id)
                    row["action"] = "archived"
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
        "archived": sum(r["action"] in ("archive", "archived") for r in rows),
        "failed": failed,
        "archive": archive_terms(archive_after_days),
        "snapshots": rows,
    }


def archive_terms(archive_after_days: int | None) -> dict[str, Any]:
    """What archiving means, for prune's and cost's output."""
    return {
        "after_days": archive_after_days,
        "minimum_days": ARCHIVE_MINIMUM_DAYS,
        "restore_hours": ARCHIVE_RESTORE_HOURS,
        "note": f"an archived snapshot is billed for at least {ARCHIVE_MINIMUM_DAYS} days "
        "(deleted or restored for good sooner, the remaining days are billed), and restoring "
        f"one for use takes up to {ARCHIVE_RESTORE_HOURS} hours",
    }


def _archived_at(ec2: Ec2, archived: list[Snapshot]) -> dict[str, datetime]:
    if not archived:
        return {}
    statuses = ec2.snapshot_tiers([s.id for s in archived])
    return {i: t.archived_at for i, t in statuses.items() if t.archived_at is not None}


def _early_deletion(archived: datetime, now: datetime) -> str:
    held = (now - as_utc(archived)).days
    if held >= ARCHIVE_MINIMUM_DAYS:
        return f"archived {held} days ago"
    return (
        f"archived {held} days ago: deleting it now bills the remaining "
        f"{ARCHIVE_MINIMUM_DAYS - held} of the archive's {ARCHIVE_MINIMUM_DAYS} minimum days"
    )


def prune(
    app: App,
    profile_name: str,
    policy: Policy,
    *,
    yes: bool = False,
    now: datetime | None = None,
    archive_after_days: int | None = None,
) -> dict[str, Any]:
    """``ec2backup prune``: dry run unless ``yes``."""
    profile = load_profile(app.config_path, profile_name)
    ec2 = app.adapters.ec2(profile.region, None)
    return prune_profile(
        ec2,
        profile.name,
        policy,
        yes=yes,
        now=now,
        archive_after_days=archive_after_days,
        before_archive=lambda snapshot: _measure_full(app, profile, snapshot),
    )


def _measure_full(app: App, profile: Profile, snapshot: Snapshot) -> None:
    """An archived snapshot is stored whole and billed so: its full size is measured (all its
    blocks) while it can still be read, and recorded on its run for ``cost``."""
    from .growth import fill_in, record_full_size

    fill_in(app, profile)  # its growth too: ListChangedBlocks cannot read it once archived
    record_full_size(app, profile, snapshot)


def apply_profile_retention(
    app: App, profile: Profile, now: datetime | None = None
) -> dict[str, Any] | None:
    """Apply the profile's ``retention`` table (deleting for real), for the engine to call
    after a successful run. Returns the prune result, or None when the profile has no
    retention. Never raises an ``Ec2BackupError``: the backup itself has succeeded, so a
    failure here is logged as a warning (and in the result's ``failed``), not raised."""
    if profile.retention is None:
        return None
    policy = Policy(**profile.retention.model_dump(exclude={"archive_after_days"}))
    try:
        ec2 = app.adapters.ec2(profile.region, None)
        result = prune_profile(
            ec2,
            profile.name,
            policy,
            yes=True,
            now=now,
            archive_after_days=profile.retention.archive_after_days,
            before_archive=lambda snapshot: _measure_full(app, profile, snapshot),
        )
    except Ec2BackupError as exc:
        log.warning("retention (%s) not applied: %s", policy.describe(), exc.one_line())
        return None
    deleted = [r["id"] for r in result["snapshots"] if r["action"] == "deleted"]
    if deleted:
        log.info("retention (%s): deleted %s", policy.describe(), ", ".join(deleted))
    archived = [r["id"] for r in result["snapshots"] if r["action"] == "archived"]
    if archived:
        log.info("retention: archived %s (%s)", ", ".join(archived), result["archive"]["note"])
    for row in result["snapshots"]:
        if row["action"] == "failed":
            log.warning("retention: could not delete %s: %s", row["id"], row["error"])
    return result
