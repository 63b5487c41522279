"""Snapshot tiers: which snapshots can be used now, archiving old ones (ModifySnapshotTier) as
retention says, and restoring an archived one for a while (RestoreSnapshotTier)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NoReturn

from ..core.retention import ARCHIVE_RESTORE_HOURS
from ..core.times import as_utc, iso
from ..errors import UserInputError
from ..ports import Ec2, Snapshot

# RestoreSnapshotTier's TemporaryRestoreDays: 1 to 180.
MAX_RESTORE_DAYS = 180


def usable_now(snapshot: Snapshot, now: datetime | None = None) -> bool:
    """Whether a volume can be made from ``snapshot`` now: it is in the standard tier, or an
    archived one restored for a while that has not expired."""
    if snapshot.storage_tier != "archive":
        return True
    expiry = snapshot.restore_expiry
    return expiry is not None and as_utc(expiry) > (now or datetime.now(UTC))


def start_tier_restore(ec2: Ec2, snapshot: Snapshot, profile_name: str, days: int) -> NoReturn:
    """An archived snapshot cannot be restored from until it is back in the standard tier:
    start a temporary restore (or find the one under way) and say how long it takes. Always
    raises: the copy itself can only start once that restore is done."""
    if not 1 <= days <= MAX_RESTORE_DAYS:
        raise UserInputError(
            f"--restore-days {days} is out of range", hint=f"give 1 to {MAX_RESTORE_DAYS} days"
        )
    status = ec2.snapshot_tiers([snapshot.id]).get(snapshot.id)
    again = (
        f"run this restore again once `ec2backup snapshots --profile {profile_name}` shows it "
        "restored"
    )
    if status is not None and (status.operation or "").endswith("restore-in-progress"):
        since = f" since {iso(status.started_at)}" if status.started_at else ""
        done = f", {status.progress}% done" if status.progress is not None else ""
        raise UserInputError(
            f"snapshot {snapshot.id} is being restored from the archive tier{since}{done}",
            hint=f"a restore from the archive takes up to {ARCHIVE_RESTORE_HOURS} hours; {again}",
        )
    ec2.restore_snapshot_tier(snapshot.id, days)
    raise UserInputError(
        f"snapshot {snapshot.id} is in the archive tier: started restoring it for {days} "
        f"day(s) (RestoreSnapshotTier)",
        hint=f"that takes up to {ARCHIVE_RESTORE_HOURS} hours, depending on its size; {again}",
    )
