"""The local cloud's EBS direct APIs (ListSnapshotBlocks, ListChangedBlocks), called with AWS's
own ``ebs`` client at the sandbox's endpoint and answered from its snapshot images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ec2backup.sandbox import Sandbox
from tests.sandbox.helpers import AZ, client, with_deadline

BLOCK = 512 * 1024


@pytest.fixture
def ebs(sandbox: Sandbox) -> Any:
    return client(sandbox, "ebs")


@pytest.fixture
def ec2(sandbox: Sandbox) -> Any:
    return client(sandbox, "ec2")


@pytest.fixture
def made(ec2: Any) -> Iterator[list[tuple[str, str]]]:
    """("volume" | "snapshot", id) of what a test made; deleted after it."""
    things: list[tuple[str, str]] = []
    yield things
    for kind, thing in reversed(things):
        try:
            if kind == "snapshot":
                ec2.delete_snapshot(SnapshotId=thing)
            else:
                ec2.delete_volume(VolumeId=thing)
        except ClientError:
            pass


def _volume(ec2: Any, made: list[tuple[str, str]], snapshot_id: str | None = None) -> str:
    extra = {"SnapshotId": snapshot_id} if snapshot_id else {}
    volume_id: str = ec2.create_volume(AvailabilityZone=AZ, Size=1, VolumeType="gp3", **extra)[
        "VolumeId"
    ]
    made.append(("volume", volume_id))
    return volume_id


def _write(image: Path, blocks: dict[int, bytes]) -> None:
    with image.open("r+b") as f:
        for index, data in blocks.items():
            f.seek(index * BLOCK + 4096)  # inside the block, not at its start
            f.write(data)


def _snapshot(ec2: Any, made: list[tuple[str, str]], volume_id: str) -> str:
    snapshot_id: str = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    made.append(("snapshot", snapshot_id))
    with_deadline(
        lambda: (
            ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"]
            == "completed"
        ),
        timeout=60,
    )
    return snapshot_id


def _all(call: Any, key: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every item of a listing, following NextToken; and how many pages it took."""
    items: list[dict[str, Any]] = []
    pages = 0
    while True:
        page = call(**params)
        pages += 1
        assert page["BlockSize"] == BLOCK and page["VolumeSize"] == 1
        items += page[key]
        if not page.get("NextToken"):
            return items, pages
        params["NextToken"] = page["NextToken"]


def test_snapshot_blocks_are_the_blocks_holding_data(
    sandbox: Sandbox, ec2: Any, ebs: Any, made: list[tuple[str, str]]
) -> None:
    volume_id = _volume(ec2, made)
    _write(sandbox.volume_image(volume_id), {0: b"boot", 3: b"three", 1500: b"far"})
    snapshot_id = _snapshot(ec2, made, volume_id)

    blocks, pages = _all(ebs.list_snapshot_blocks, "Blocks", SnapshotId=snapshot_id)

    assert [b["BlockIndex"] for b in blocks] == [0, 3, 1500]
    assert all(b["BlockToken"] for b in blocks)
    # A page looks at a window of indexes: here the second block is in the second page.
    assert pages == 2
    started = ebs.list_snapshot_blocks(SnapshotId=snapshot_id, StartingBlockIndex=2)
    assert [b["BlockIndex"] for b in started["Blocks"]] == [3]


def test_changed_blocks_are_those_whose_contents_differ(
    sandbox: Sandbox, ec2: Any, ebs: Any, made: list[tuple[str, str]]
) -> None:
    volume_id = _volume(ec2, made)
    image = sandbox.volume_image(volume_id)
    _write(image, {0: b"boot", 7: b"seven", 9: b"nine"})
    first = _snapshot(ec2, made, volume_id)
    _write(image, {7: b"SEVEN", 9: b"nine", 20: b"new"})  # 9 rewritten with the same bytes
    second = _snapshot(ec2, made, volume_id)

    changed, _ = _all(
        ebs.list_changed_blocks, "ChangedBlocks", FirstSnapshotId=first, SecondSnapshotId=second
    )

    assert [c["BlockIndex"] for c in changed] == [7, 20]
    by_index = {c["BlockIndex"]: c for c in changed}
    assert by_index[7]["FirstBlockToken"] and by_index[7]["SecondBlockToken"]
    assert "FirstBlockToken" not in by_index[20]  # not in the first snapshot


def test_a_volume_made_from_a_snapshot_continues_its_lineage(
    sandbox: Sandbox, ec2: Any, ebs: Any, made: list[tuple[str, str]]
) -> None:
    first_volume = _volume(ec2, made)
    _write(sandbox.volume_image(first_volume), {1: b"one"})
    base = _snapshot(ec2, made, first_volume)
    second_volume = _volume(ec2, made, base)
    _write(sandbox.volume_image(second_volume), {2: b"two"})
    middle = _snapshot(ec2, made, second_volume)
    third_volume = _volume(ec2, made, middle)
    _write(sandbox.volume_image(third_volume), {3: b"three"})
    last = _snapshot(ec2, made, third_volume)
    ec2.delete_snapshot(SnapshotId=middle)  # the lineage does not depend on it

    changed = ebs.list_changed_blocks(FirstSnapshotId=base, SecondSnapshotId=last)

    assert [c["BlockIndex"] for c in changed["ChangedBlocks"]] == [2, 3]


def test_snapshots_of_unrelated_volumes_cannot_be_compared(
    sandbox: Sandbox, ec2: Any, ebs: Any, made: list[tuple[str, str]]
) -> None:
    one = _snapshot(ec2, made, _volume(ec2, made))
    other = _snapshot(ec2, made, _volume(ec2, made))
    with pytest.raises(ClientError) as info:
        ebs.list_changed_blocks(FirstSnapshotId=one, SecondSnapshotId=other)
    error = info.value.response
    assert error["Error"]["Code"] == "ValidationException"
    assert error["Reason"] == "UNRELATED_SNAPSHOTS"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_an_unknown_snapshot_and_a_bad_page_token_are_refused(
    ec2: Any, ebs: Any, made: list[tuple[str, str]]
) -> None:
    with pytest.raises(ClientError) as info:
        ebs.list_snapshot_blocks(SnapshotId="snap-0123456789abcdef0")
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert info.value.response["Reason"] == "SNAPSHOT_NOT_FOUND"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    snapshot_id = _snapshot(ec2, made, _volume(ec2, made))
    with pytest.raises(ClientError) as info:
        ebs.list_snapshot_blocks(SnapshotId=snapshot_id, NextToken="Tm90QVRva2Vu")
    assert info.value.response["Reason"] == "INVALID_PAGE_TOKEN"


def test_an_archived_snapshot_cannot_be_read(
    ec2: Any, ebs: Any, made: list[tuple[str, str]]
) -> None:
    snapshot_id = _snapshot(ec2, made, _volume(ec2, made))
    ec2.modify_snapshot_tier(SnapshotId=snapshot_id, StorageTier="archive")
    with_deadline(
        lambda: (
            ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0].get("StorageTier")
            == "archive"
        ),
        timeout=60,
    )
    with pytest.raises(ClientError) as info:
        ebs.list_snapshot_blocks(SnapshotId=snapshot_id)
    assert info.value.response["Error"]["Code"] == "ValidationException"


def test_in_iam_mode_the_calls_are_signed_and_authorized_like_any_other(
    iam_sandbox: Sandbox,
) -> None:
    allowed = iam_sandbox.create_iam_user(
        "ebs-reader",
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["ebs:ListSnapshotBlocks"], "Resource": "*"}
            ],
        },
    )
    admin_ec2 = client(iam_sandbox, "ec2")
    volume_id = admin_ec2.create_volume(AvailabilityZone=AZ, Size=1, VolumeType="gp3")["VolumeId"]
    snapshot_id = admin_ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    try:
        with_deadline(
            lambda: (
                admin_ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"]
                == "completed"
            ),
            timeout=60,
        )
        reader = client(iam_sandbox, "ebs", keys=allowed)
        assert reader.list_snapshot_blocks(SnapshotId=snapshot_id, MaxResults=100)["Blocks"] == []
        with pytest.raises(ClientError) as info:
            reader.list_changed_blocks(FirstSnapshotId=snapshot_id, SecondSnapshotId=snapshot_id)
        assert info.value.response["Error"]["Code"] == "AccessDeniedException"
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    finally:
        admin_ec2.delete_snapshot(SnapshotId=snapshot_id)
        admin_ec2.delete_volume(VolumeId=volume_id)
