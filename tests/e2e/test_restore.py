"""Restore and verify, end to end against the local cloud."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import (
    Cli,
    assert_clean_after,
    ec2_client,
    make_sample_tree,
    superblock,
    tree_digest,
)

pytestmark = pytest.mark.e2e


def restore_volumes(ec2: Any) -> list[dict[str, Any]]:
    found = ec2.describe_volumes(Filters=[{"Name": "tag:ec2backup:role", "Values": ["restore"]}])[
        "Volumes"
    ]
    return [v for v in found if v["State"] not in ("deleting", "deleted")]


def test_backup_change_verify_and_restore(cli: Cli, sandbox: Any, tmp_path: Path) -> None:
    ec2 = ec2_client(sandbox)
    source = tmp_path / "home"
    source.mkdir()
    make_sample_tree(source)
    volume_id = cli(
        "init", "--profile", "r", "--az", "us-east-1a", "--size", "1", "--source", str(source)
    ).stdout.strip()
    backup = cli("run", "--profile", "r").stdout.strip()
    original = tmp_path / "original"
    shutil.copytree(source, original, symlinks=True)
    # Verify and restore --live mount the backup itself: read-only, not one block written.
    image = sandbox.volume_image(volume_id)
    sealed = superblock(image)

    matched = cli("verify", "--profile", "r", check=False)
    assert matched.returncode == 0, matched.stderr
    assert matched.stdout == "" and "matches" in matched.stderr

    # Change a file without changing its size or time (only a checksum sees it), delete one.
    notes = source / "docs" / "notes.txt"
    stat = notes.stat()
    notes.write_text("REMEMBER THE MILK\n")
    os.utime(notes, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # to the nanosecond, as compared
    (source / "photos" / "small.bin").unlink()
    differs = cli("verify", "--profile", "r", "--json", check=False)
    assert differs.returncode == 1
    report = json.loads(differs.stdout)
    assert report["matches"] is False
    # In words, one line per path; deleting the file changed its directory's time too.
    assert dict(d.split(": ", 1) for d in report["differences"]) == {
        "home/docs/notes.txt": "contents differ",
        "home/photos/": "modification time differs",
        "home/photos/small.bin": "only on the volume (not in the source)",
    }, report["differences"]
    assert superblock(image) == sealed

    restored = tmp_path / "restored"
    restore_run = cli("restore", "--run", backup, "--to", str(restored)).stdout.strip()
    assert tree_digest(restored / "home") == tree_digest(original)
    shown = cli.json("show", restore_run)
    assert shown["state"] == "done" and shown["kind"] == "restore"
    assert shown["volume_id"] != volume_id  # a temporary volume from the snapshot...
    assert restore_volumes(ec2) == []  # ...deleted afterwards
    (live,) = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    assert live["State"] == "available" and not live["Attachments"]
    instances = ec2.describe_instances(
        Filters=[{"Name": "tag:ec2backup:run-id", "Values": [restore_run]}]
    )["Reservations"]
    assert {i["State"]["Name"] for r in instances for i in r["Instances"]} == {"terminated"}

    only_docs = tmp_path / "only-docs"
    cli("restore", "--run", backup, "--path", "home/docs", "--to", str(only_docs))
    assert tree_digest(only_docs) == tree_digest(original / "docs")

    from_live = tmp_path / "from-live"
    live_run = cli("restore", "--live", "--profile", "r", "--to", str(from_live)).stdout.strip()
    assert tree_digest(from_live / "home") == tree_digest(original)
    assert cli.json("show", live_run)["volume_id"] == volume_id
    assert_clean_after(ec2, live_run, volume_id)
    assert superblock(image) == sealed


def test_restore_bad_input(cli: Cli, sandbox: Any, tmp_path: Path) -> None:
    result = cli("restore", "--to", str(tmp_path / "x"), check=False)
    assert result.returncode == 2 and "exactly one of --run, --snapshot or --live" in result.stderr
    result = cli(
        "restore",
        "--snapshot",
        "snap-0000000000000000f",
        "--profile",
        "nope",
        "--to",
        str(tmp_path / "x"),
        check=False,
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert cli.json("runs") == []


def test_restore_right_after_a_backup_waits_for_the_pending_snapshot(
    cli: Cli, sandbox_faults: Any, tmp_path: Path
) -> None:
    """On AWS a snapshot stays pending for minutes and EC2 refuses it as a volume's source
    (IncorrectState) meanwhile: the restore waits, showing its progress, then proceeds."""
    source = tmp_path / "home"
    source.mkdir()
    (source / "a.txt").write_text("restored after the snapshot completed\n")
    cli("init", "--profile", "s", "--az", "us-east-1a", "--size", "1", "--source", str(source))
    sandbox_faults.configure_faults(snapshot_delay=4.0)
    backup = cli("run", "--profile", "s").stdout.strip()
    (snapshot,) = ec2_client(sandbox_faults).describe_snapshots(
        Filters=[{"Name": "tag:ec2backup:run-id", "Values": [backup]}]
    )["Snapshots"]
    assert snapshot["State"] == "pending"  # the backup did not wait for it
    result = cli("restore", "--run", backup, "--to", str(tmp_path / "back"))
    assert f"snapshot {snapshot['SnapshotId']} is pending" in result.stderr
    assert tree_digest(tmp_path / "back" / "home") == tree_digest(source)
