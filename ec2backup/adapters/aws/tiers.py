"""The snapshot-tier calls of ``Boto3Ec2`` (ModifySnapshotTier, RestoreSnapshotTier,
DescribeSnapshotTierStatus), kept apart from the client module's other calls."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ...ports import TierStatus
from .convert import _batches, _when

if TYPE_CHECKING:
    from mypy_boto3_ec2.client import EC2Client

# A Describe filter takes at most 200 values.
FILTER_VALUES_BATCH = 200


class SnapshotTierCalls:
    """Mixed into ``Boto3Ec2``: the client and the error translation are its own."""

    if TYPE_CHECKING:
        _client: EC2Client

        def _errors(
            self, action: str, resources: Mapping[str, str] | None = None
        ) -> AbstractContextManager[None]: ...

    def archive_snapshot(self, snapshot_id: str) -> None:
        with self._errors("ec2:ModifySnapshotTier", {"snapshot": snapshot_id}):
            self._client.modify_snapshot_tier(SnapshotId=snapshot_id, StorageTier="archive")

    def restore_snapshot_tier(self, snapshot_id: str, days: int) -> None:
        with self._errors("ec2:RestoreSnapshotTier", {"snapshot": snapshot_id}):
            self._client.restore_snapshot_tier(SnapshotId=snapshot_id, TemporaryRestoreDays=days)

    def snapshot_tiers(self, snapshot_ids: Sequence[str]) -> dict[str, TierStatus]:
        found: dict[str, TierStatus] = {}
        for batch in _batches(list(dict.fromkeys(snapshot_ids)), FILTER_VALUES_BATCH):
            with self._errors("ec2:DescribeSnapshotTierStatus"):
                pages = self._client.get_paginator("describe_snapshot_tier_status").paginate(
                    Filters=[{"Name": "snapshot-id", "Values": batch}]
                )
                for page in pages:
                    for raw in page.get("SnapshotTierStatuses", ()):
                        status = _tier_status(raw)
                        found[status.snapshot_id] = status
        return found


def _tier_status(raw: Mapping[str, Any]) -> TierStatus:
    progress = raw.get("LastTieringProgress")
    return TierStatus(
        snapshot_id=raw["SnapshotId"],
        tier=raw.get("StorageTier") or "standard",
        operation=raw.get("LastTieringOperationStatus"),
        progress=int(progress) if progress is not None else None,
        started_at=_when(raw.get("LastTieringStartTime")),
        archived_at=_when(raw.get("ArchivalCompleteTime")),
        restore_expiry=_when(raw.get("RestoreExpiryTime")),
    )
