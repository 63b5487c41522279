"""End to end: the real CLI, moto's server, real sshd instances, real ext4 volumes on loop
devices and real rsync. Results are checked with boto3 and by mounting the volume's image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import (
    EBS_BLOCK,
    Cli,
    assert_clean_after,
    changed_blocks,
    ec2_client,
    make_sample_tree,
    mounted_read_only,
    tree_digest,
)

pytestmark = pytest.mark.e2e


def test_init_then_backup_then_incremental(cli: Cli, sandbox: Any, tmp_path: Path) -> None:
    source = tmp_path / "home"
    source.mkdir()
    make_sample_tree(source)
    ec2 = ec2_client(sandbox)

    volume_id = cli(
        "init", "--profile", "e2e", "--az", "us-east-1a", "--size", "1", "--source", str(source)
    ).stdout.strip()
    assert volume_id.startswith("vol-")
    (init_run,) = cli.json("runs")
    assert (init_run["kind"], init_run["state"]) == ("init", "done")
    assert_clean_after(ec2, init_run["id"], volume_id)

    run_id = cli("run", "--profile", "e2e").stdout.strip()
    shown = cli.json("show", run_id)
    assert shown["state"] == "done" and shown["error"] is None
    assert shown["volume_id"] == volume_id and shown["host_key_source"] == "user-data"
    assert [e["to"] for e in shown["events"]][-3:] == ["terminated", "snapshotting", "done"]
    assert_clean_after(ec2, run_id, volume_id)

    snapshots = ec2.describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "tag:ec2backup:run-id", "Values": [run_id]}]
    )["Snapshots"]
    assert [s["SnapshotId"] for s in snapshots] == [shown["snapshot_id"]]
    assert snapshots[0]["VolumeId"] == volume_id

    with mounted_read_only(sandbox.volume_image(volume_id)) as mnt:
        assert tree_digest(mnt / "home") == tree_digest(source)

    stats = shown["stats"]
    # rsync's "total file size" counts regular files and the length of each symlink's target.
    total = sum(
        len(os.readlink(p)) if p.is_symlink() else p.stat().st_size
        for p in source.rglob("*")
        if p.is_symlink() or p.is_file()
    )
    assert stats["total_size"] == total
    assert stats["files_transferred"] == 5  # every regular file, the first time
    assert stats["bytes_sent"] >= total
    # A first snapshot is full: every block the volume holds (EBS direct APIs).
    first_added = stats["snapshot_added"]
    assert first_added["method"] == "ListSnapshotBlocks" and first_added["compared_with"] is None
    assert stats["snapshot_added_bytes"] >= total

    # Change a few bytes of the big file: rsync's delta transfer sends about that much.
    big = source / "photos" / "big.bin"
    with big.open("r+b") as f:
        f.seek(1_000_000)
        f.write(b"changed!")
    (source / "docs" / "notes.txt").unlink()

    second = cli("run", "--profile", "e2e").stdout.strip()
    shown2 = cli.json("show", second)
    assert shown2["state"] == "done"
    assert shown2["stats"]["files_transferred"] == 1
    assert shown2["stats"]["bytes_sent"] < 200_000, shown2["stats"]  # of a 3 MiB file
    # Written in place: the snapshot adds the changed blocks, not a new copy of the file, and
    # AWS's count is the one the two snapshot images give.
    added = shown2["stats"]["snapshot_added"]
    assert added["compared_with"] == shown["snapshot_id"], added
    assert added["block_size"] == EBS_BLOCK
    assert added["blocks"] == changed_blocks(
        sandbox.snapshot_image(shown["snapshot_id"]), sandbox.snapshot_image(shown2["snapshot_id"])
    )
    assert shown2["stats"]["snapshot_added_bytes"] < 3 * 2**20, added
    with mounted_read_only(sandbox.volume_image(volume_id)) as mnt:
        assert tree_digest(mnt / "home") == tree_digest(source)  # the deletion is mirrored
    assert_clean_after(ec2, second, volume_id)

    history = cli.json("runs")
    assert [r["id"] for r in history] == [second, run_id, init_run["id"]]
    table = cli("runs").stdout
    assert second in table and "done" in table
    timeline = cli("show", second).stdout
    assert "snapshotting" in timeline and "timeline" in timeline
    assert "(ListChangedBlocks)" in timeline


def test_bad_input_creates_nothing(cli: Cli, sandbox: Any, tmp_path: Path) -> None:
    ec2 = ec2_client(sandbox)
    before = len([i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]])
    config = tmp_path / "config.toml"
    config.write_text(
        '[profiles.bad]\nregion = "us-east-1"\navailability_zone = "us-east-1a"\n'
        'volume_id = "vol-00000000000000001"\n'
        f'sources = [{{ path = "{tmp_path}", dest = "x" }}]\n'
    )
    result = cli("run", "--profile", "bad", check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "vol-00000000000000001 does not exist" in result.stderr
    assert cli.json("runs") == []
    after = len([i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]])
    assert after == before
