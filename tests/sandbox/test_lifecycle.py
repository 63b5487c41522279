"""The local cloud's lifecycle as a user expects it: `start` never replaces a running sandbox
(and `env` prints its variables again), `stop` then `start` keeps volumes, snapshots, security
groups and their data with their ids, and `status` lists them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ec2backup.sandbox import Sandbox
from tests.conftest import sandbox_skip_reason
from tests.sandbox.helpers import AZ, client, with_deadline

pytestmark = pytest.mark.e2e
TAGS = [{"Key": "ec2backup:profile", "Value": "laptop"}, {"Key": "Name", "Value": "backup"}]


def sandbox_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ec2backup.sandbox", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Path]:
    reason = sandbox_skip_reason()
    if reason:
        pytest.skip(reason)
    directory = tmp_path / "cloud"
    yield directory
    sandbox_cli("stop", "--dir", str(directory))  # also when the test failed half-way


def test_start_on_a_running_sandbox_refuses_and_env_prints_its_variables(
    directory: Path,
) -> None:
    first = Sandbox.start(directory)
    again = sandbox_cli("start", "--dir", str(directory))
    assert again.returncode != 0 and again.stdout == ""
    (line,) = again.stderr.strip().splitlines()
    assert f"a sandbox already runs in {directory} (server pid {first.server_pid})" in line
    assert f'eval "$(ec2backup sandbox env --dir {directory})"' in line
    # The first one still serves, unchanged.
    assert Sandbox.open(directory).server_pid == first.server_pid
    client(first, "ec2").describe_volumes()

    env = sandbox_cli("env", "--dir", str(directory))
    assert env.returncode == 0, env.stderr
    printed = sandbox_cli("start", "--dir", str(directory))  # still refused: nothing changed
    assert printed.returncode != 0
    exported = dict(
        line.removeprefix("export ").split("=", 1) for line in env.stdout.strip().splitlines()
    )
    assert exported == first.env  # values without shell metacharacters: shlex left them bare

    first.stop()
    gone = sandbox_cli("env", "--dir", str(directory))
    assert gone.returncode == 1 and "no sandbox is running" in gone.stderr


def test_stop_then_start_keeps_volumes_snapshots_groups_and_their_data(directory: Path) -> None:
    sandbox = Sandbox.start(directory)
    ec2 = client(sandbox, "ec2")
    kept = ec2.create_volume(
        AvailabilityZone=AZ,
        Size=2,
        VolumeType="gp3",
        Encrypted=True,
        TagSpecifications=[{"ResourceType": "volume", "Tags": TAGS}],
    )["VolumeId"]
    with sandbox.volume_image(kept).open("r+b") as f:
        f.seek(2**30)
        f.write(b"written before the stop")
    snapshot = ec2.create_snapshot(
        VolumeId=kept,
        Description="nightly",
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": TAGS}],
    )["SnapshotId"]
    # A snapshot whose volume is gone: it stays too.
    gone = ec2.create_volume(AvailabilityZone=AZ, Size=1)["VolumeId"]
    orphan = ec2.create_snapshot(VolumeId=gone)["SnapshotId"]
    ec2.delete_volume(VolumeId=gone)
    ec2.modify_snapshot_tier(SnapshotId=orphan, StorageTier="archive")  # archived: it stays so
    with_deadline(
        lambda: (
            ec2.describe_snapshots(SnapshotIds=[orphan])["Snapshots"][0]["StorageTier"] == "archive"
        )
    )
    group = ec2.create_security_group(GroupName="ec2backup-laptop", Description="ssh")["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "127.0.0.0/8"}],
            }
        ],
    )
    before = ec2.describe_volumes(VolumeIds=[kept])["Volumes"][0]
    sandbox.stop()

    stopped = sandbox_cli("status", "--dir", str(directory))
    assert stopped.returncode == 1
    assert "volumes kept for the next `ec2backup sandbox start`: 1" in stopped.stdout
    assert f"  {kept} 2 GiB {AZ} backup" in stopped.stdout
    assert f"  {snapshot} of {kept} (2 GiB)" in stopped.stdout

    restarted = Sandbox.start(directory)
    ec2 = client(restarted, "ec2")
    (volume,) = ec2.describe_volumes(VolumeIds=[kept])["Volumes"]
    assert volume["State"] == "available" and volume["Attachments"] == []
    for key in ("Size", "AvailabilityZone", "VolumeType", "Encrypted", "CreateTime"):
        assert volume[key] == before[key], key
    assert sorted(volume["Tags"], key=str) == sorted(TAGS, key=str)
    assert [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]] == [kept]
    snapshots = {s["SnapshotId"]: s for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert set(snapshots) == {snapshot, orphan}
    assert snapshots[snapshot]["VolumeId"] == kept and snapshots[snapshot]["State"] == "completed"
    assert snapshots[snapshot]["Description"] == "nightly"
    assert sorted(snapshots[snapshot]["Tags"], key=str) == sorted(TAGS, key=str)
    assert snapshots[orphan]["VolumeId"] == gone
    assert (snapshots[orphan]["StorageTier"], snapshots[snapshot]["StorageTier"]) == (
        "archive",
        "standard",
    )
    (sg,) = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"]
    assert sg["GroupName"] == "ec2backup-laptop"
    assert [(p["FromPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in sg["IpPermissions"]] == [
        (22, ["127.0.0.0/8"])
    ]
    # The data: in the volume, and in a volume made from the snapshot now.
    with restarted.volume_image(kept).open("rb") as f:
        f.seek(2**30)
        assert f.read(23) == b"written before the stop"
    copy = ec2.create_volume(AvailabilityZone=AZ, SnapshotId=snapshot)["VolumeId"]
    with restarted.volume_image(copy).open("rb") as f:
        f.seek(2**30)
        assert f.read(23) == b"written before the stop"

    status = sandbox_cli("status", "--dir", str(directory))
    assert status.returncode == 0, status.stderr
    assert "volumes held: 2" in status.stdout and f"  {kept} 2 GiB {AZ} backup" in status.stdout
    assert "snapshots held: 2" in status.stdout
    restarted.stop()
