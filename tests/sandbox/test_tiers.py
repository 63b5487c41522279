"""Snapshot tiers in the local cloud: archived only when completed, no volume from an archived
snapshot until it is restored, restores that take their time, the account's own statuses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ec2backup.sandbox import Sandbox
from tests.sandbox.helpers import AZ, client, with_deadline


@pytest.fixture
def snapshot(sandbox_faults: Sandbox) -> Iterator[tuple[Any, str]]:
    ec2 = client(sandbox_faults, "ec2")
    volume_id = ec2.create_volume(AvailabilityZone=AZ, Size=1, VolumeType="gp3")["VolumeId"]
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    with_deadline(lambda: _describe(ec2, snapshot_id)["State"] == "completed", timeout=60)
    yield ec2, snapshot_id
    ec2.delete_snapshot(SnapshotId=snapshot_id)
    ec2.delete_volume(VolumeId=volume_id)


def _describe(ec2: Any, snapshot_id: str) -> dict[str, Any]:
    found: dict[str, Any] = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    return found


def _status(ec2: Any, snapshot_id: str) -> dict[str, Any]:
    statuses = ec2.describe_snapshot_tier_status(
        Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}]
    )["SnapshotTierStatuses"]
    (status,) = statuses
    return dict(status)


def _code(call: Any, **params: Any) -> str:
    with pytest.raises(ClientError) as info:
        call(**params)
    return str(info.value.response["Error"]["Code"])


def test_archive_then_restore_for_a_day_each_taking_its_time(
    sandbox_faults: Sandbox, snapshot: tuple[Any, str]
) -> None:
    ec2, snapshot_id = snapshot
    sandbox_faults.configure_faults(tier_delay=1.0)
    create = {"AvailabilityZone": AZ, "VolumeType": "gp3", "SnapshotId": snapshot_id}
    assert _code(ec2.restore_snapshot_tier, SnapshotId=snapshot_id, TemporaryRestoreDays=1) == (
        "IncorrectState"  # not archived
    )

    ec2.modify_snapshot_tier(SnapshotId=snapshot_id, StorageTier="archive")
    assert _status(ec2, snapshot_id)["LastTieringOperationStatus"] == "archival-in-progress"
    assert _describe(ec2, snapshot_id).get("StorageTier") == "standard"  # still usable
    with_deadline(lambda: _describe(ec2, snapshot_id).get("StorageTier") == "archive")
    assert _code(ec2.create_volume, **create) == "IncorrectState"

    answer = ec2.restore_snapshot_tier(SnapshotId=snapshot_id, TemporaryRestoreDays=1)
    assert answer["RestoreDuration"] == 1 and not answer["IsPermanentRestore"]
    assert _status(ec2, snapshot_id)["LastTieringOperationStatus"] == (
        "temporary-restore-in-progress"
    )
    assert _code(ec2.create_volume, **create) == "IncorrectState"  # not yet
    with_deadline(lambda: "RestoreExpiryTime" in _describe(ec2, snapshot_id))
    volume_id = ec2.create_volume(**create)["VolumeId"]
    ec2.delete_volume(VolumeId=volume_id)


def test_only_the_accounts_own_snapshots_have_a_tier_status(
    sandbox: Sandbox, snapshot: tuple[Any, str]
) -> None:
    ec2, snapshot_id = snapshot
    statuses = ec2.describe_snapshot_tier_status()["SnapshotTierStatuses"]
    assert snapshot_id in {s["SnapshotId"] for s in statuses}
    assert {s["OwnerId"] for s in statuses} == {"123456789012"}
