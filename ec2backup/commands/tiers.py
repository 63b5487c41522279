"""Snapshot tiers: which snapshots can be used now, archiving old ones (ModifySnapshotTier) as
retention says, and restoring an archived one for a while (RestoreSnapshotTier)."""

from __future__ import annotations

from datetime import UTC, datetime

from ..core.times import as_utc
from ..ports import Snapshot


def usable_now(snapshot: Snapshot, now: datetime | None = None) -> bool:
    """Whether a volume can be made from ``snapshot`` now: it is in the standard tier, or an
    archived one restored for a while that has not expired."""
    if snapshot.storage_tier != "archive":
        return True
    expiry = snapshot.restore_expiry
    return expiry is not None and as_utc(expiry) > (now or datetime.now(UTC))
