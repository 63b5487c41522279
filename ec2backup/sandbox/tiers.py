"""Snapshot tiers, kept as AWS keeps them: ModifySnapshotTier moves a completed snapshot to the
archive tier, RestoreSnapshotTier brings an archived one back (for some days, or for good), and
no volume is made from an archived snapshot that is not restored.

moto keeps the tier and does both at once. Here, as on AWS: only a completed snapshot in the
standard tier can be archived and only an archived one restored; both take ``tier_delay``
seconds (AWS: hours, up to 72 for a restore), with the ``*-in-progress`` statuses
DescribeSnapshotTierStatus shows meanwhile; a snapshot being archived can still be used, one
being restored cannot yet. The changes due are applied when a call looks at snapshots
(``settle``), under the cloud's lock."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses import EC2Response

from .state import CloudState, Original


def _now_like(moment: datetime) -> datetime:
    return datetime.now(UTC) if moment.tzinfo else datetime.now(UTC).replace(tzinfo=None)


def restored(snapshot: Any) -> bool:
    """An archived snapshot temporarily restored, and not expired."""
    expiry = snapshot.restore_expiry_time
    return expiry is not None and expiry > _now_like(expiry)


def usable(snapshot: Any) -> bool:
    return snapshot.storage_tier != "archive" or restored(snapshot)


class Tiers:
    def __init__(self, state: CloudState) -> None:
        self.state = state
        # snapshot id -> (operation, when due (time.monotonic()), restore days or None)
        self.due: dict[str, tuple[str, float, int | None]] = {}

    def settle(self) -> None:
        """Apply the archivals and restores whose time has come."""
        now = time.monotonic()
        for snapshot_id, (operation, due, days) in list(self.due.items()):
            if due > now:
                continue
            del self.due[snapshot_id]
            snapshot = self._find(snapshot_id)
            if snapshot is None:
                continue
            backend = snapshot.ec2_backend
            if operation == "archive":
                backend.modify_snapshot_tier(snapshot_id, "archive")
            else:
                backend.restore_snapshot_tier(
                    snapshot_id, temporary_restore_days=days, permanent_restore=days is None
                )

    def _find(self, snapshot_id: str) -> Any:
        from moto.ec2.models import ec2_backends

        for regions in ec2_backends.values():
            for backend in regions.values():
                if snapshot_id in backend.snapshots:
                    return backend.snapshots[snapshot_id]
        return None

    def modify_snapshot_tier(self, response: EC2Response, original: Original) -> ActionResult:
        self.settle()
        snapshot_id = response._get_param("SnapshotId")
        snapshot = response.ec2_backend.get_snapshot(snapshot_id)
        if snapshot.status != "completed":
            raise EC2ClientError(
                "IncorrectState",
                f"The snapshot '{snapshot_id}' is {snapshot.status}; only a completed snapshot "
                "can be archived.",
            )
        if snapshot.storage_tier == "archive" or snapshot_id in self.due:
            raise EC2ClientError(
                "IncorrectState", f"The snapshot '{snapshot_id}' is already archived or in transit."
            )
        delay = self.state.settings.tier_delay
        if delay <= 0:
            return original()
        started = utcnow()
        snapshot.last_tiering_start_time = started
        snapshot.last_tiering_progress = 0
        snapshot.last_tiering_operation_status = "archival-in-progress"
        snapshot.last_tiering_operation_status_detail = "Archival in progress"
        self.due[snapshot_id] = ("archive", time.monotonic() + delay, None)
        return ActionResult({"SnapshotId": snapshot_id, "TieringStartTime": started})

    def restore_snapshot_tier(self, response: EC2Response, original: Original) -> ActionResult:
        self.settle()
        snapshot_id = response._get_param("SnapshotId")
        days = response._get_param("TemporaryRestoreDays")
        permanent = bool(response._get_param("PermanentRestore", False))
        snapshot = response.ec2_backend.get_snapshot(snapshot_id)
        if snapshot.storage_tier != "archive":
            raise EC2ClientError(
                "IncorrectState", f"The snapshot '{snapshot_id}' is not in the archive tier."
            )
        if snapshot_id in self.due:
            raise EC2ClientError(
                "IncorrectState", f"The snapshot '{snapshot_id}' is already being restored."
            )
        if not permanent and days is None:
            raise EC2ClientError(
                "InvalidParameterCombination",
                "Specify TemporaryRestoreDays for a temporary restore, or PermanentRestore.",
            )
        delay = self.state.settings.tier_delay
        if delay <= 0:
            return original()
        started = utcnow()
        snapshot.restore_start_time = started
        snapshot.last_tiering_start_time = started
        snapshot.last_tiering_progress = 0
        snapshot.last_tiering_operation_status = (
            "permanent-restore-in-progress" if permanent else "temporary-restore-in-progress"
        )
        snapshot.restore_expiry_time = None
        self.due[snapshot_id] = ("restore", time.monotonic() + delay, None if permanent else days)
        result: dict[str, Any] = {
            "SnapshotId": snapshot_id,
            "RestoreStartTime": started,
            "IsPermanentRestore": permanent,
        }
        if not permanent:
            result["RestoreDuration"] = int(days)
        return ActionResult(result)

    def describe_snapshot_tier_status(
        self, response: EC2Response, original: Original
    ) -> ActionResult:
        """Settled first; and, as DescribeSnapshots with ``self``, only the account's own."""
        self.settle()
        result = original()
        statuses: Any = result.result["SnapshotTierStatuses"]  # type: ignore[index]
        mine = [s for s in statuses if s["OwnerId"] == response.current_account]
        return ActionResult({"SnapshotTierStatuses": mine})

    def check_source(self, response: EC2Response) -> None:
        """CreateVolume from an archived snapshot that is not restored is refused."""
        self.settle()
        snapshot_id = response._get_param("SnapshotId")
        if not snapshot_id:
            return
        snapshot = response.ec2_backend.snapshots.get(snapshot_id)
        if snapshot is not None and not usable(snapshot):
            raise EC2ClientError(
                "IncorrectState",
                f"The snapshot '{snapshot_id}' is in the archive tier. Restore it "
                "(RestoreSnapshotTier) before creating a volume from it.",
            )
