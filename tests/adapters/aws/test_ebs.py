"""Boto3SnapshotBlocks against the local cloud's EBS direct APIs, through the trimmed models:
counts across pages (empty ones included), blocks the later snapshot no longer holds, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest

from ec2backup.adapters.aws.botomodel import botocore_session
from ec2backup.adapters.aws.ebs import Boto3SnapshotBlocks
from ec2backup.errors import CloudError, ResourceNotFoundError
from tests.sandbox.helpers import AZ, client, with_deadline

BLOCK = 512 * 1024


@pytest.fixture
def blocks(sandbox_env: dict[str, str], model_cache: Path) -> Boto3SnapshotBlocks:
    session = boto3.session.Session(
        botocore_session=botocore_session(model_cache),
        region_name=sandbox_env["AWS_DEFAULT_REGION"],
    )
    return Boto3SnapshotBlocks(sandbox_env["AWS_DEFAULT_REGION"], session, run_id="r1")


def _snapshot(ec2: Any, volume_id: str) -> str:
    snapshot_id: str = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    with_deadline(
        lambda: (
            ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"]
            == "completed"
        ),
        timeout=60,
    )
    return snapshot_id


def _write(image: Path, blocks: dict[int, bytes]) -> None:
    with image.open("r+b") as f:
        for index, data in blocks.items():
            f.seek(index * BLOCK)
            f.write(data)


def test_counts_what_a_snapshot_adds_across_every_page(
    sandbox: Any, blocks: Boto3SnapshotBlocks
) -> None:
    ec2 = client(sandbox, "ec2")
    volume_id = ec2.create_volume(AvailabilityZone=AZ, Size=1, VolumeType="gp3")["VolumeId"]
    image = sandbox.volume_image(volume_id)
    try:
        # Blocks far apart: the sandbox lists them over several pages, some of them empty.
        _write(image, {0: b"a", 1: b"b", 1200: b"c", 2000: b"d"})
        first = _snapshot(ec2, volume_id)
        _write(image, {1: b"B", 2000: b"\0", 1900: b"e"})  # one changed, one zeroed, one new
        second = _snapshot(ec2, volume_id)

        full = blocks.added_blocks(None, first)
        added = blocks.added_blocks(first, second)

        assert (full.blocks, full.block_size, full.bytes) == (4, BLOCK, 4 * BLOCK)
        assert full.requests >= 2
        # The zeroed block is a change the later snapshot does not store: not counted.
        assert added.blocks == 2
        with pytest.raises(ResourceNotFoundError):
            blocks.added_blocks(None, "snap-0123456789abcdef0")
        with pytest.raises(CloudError, match="ValidationException"):
            other = ec2.create_volume(AvailabilityZone=AZ, Size=1, VolumeType="gp3")["VolumeId"]
            try:
                blocks.added_blocks(first, _snapshot(ec2, other))
            finally:
                ec2.delete_volume(VolumeId=other)
    finally:
        ec2.delete_volume(VolumeId=volume_id)
