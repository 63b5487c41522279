"""Restore end to end on the local cloud: ``--path`` copies that sub-tree and nothing else,
from a snapshot and from the live volume, among neighbours whose names share its prefix; and
a restore killed after deleting its temporary volume resumes to ``done`` (the volume already
gone is success)."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Cli, ec2_client, tree_digest

pytestmark = pytest.mark.e2e


def make_neighbours(root: Path) -> None:
    """``docs`` and, around it, what a sloppy match of "docs" would also take."""
    (root / "docs" / "deep" / "er").mkdir(parents=True)
    (root / "docs" / "notes.txt").write_text("the sub-tree\n")
    (root / "docs" / "deep" / "er" / "leaf.bin").write_bytes(os.urandom(20_000))
    (root / "docs" / "deep" / "x").write_text("deep\n")
    (root / "docs" / "deep" / "x").chmod(0o640)
    (root / "docs-old").mkdir()
    (root / "docs-old" / "notes.txt").write_text("a sibling sharing the prefix\n")
    (root / "docsx.txt").write_text("a file sharing the prefix\n")
    (root / "photos" / "docs").mkdir(parents=True)
    (root / "photos" / "docs" / "inner.txt").write_text("the same name elsewhere\n")
    (root / "top.txt").write_text("the top\n")


def test_restore_path_copies_only_that_sub_tree(cli: Cli, sandbox: Any, tmp_path: Path) -> None:
    source = tmp_path / "home"
    source.mkdir()
    make_neighbours(source)
    cli("init", "--profile", "p", "--az", "us-east-1a", "--size", "1", "--source", str(source))
    backup = cli("run", "--profile", "p").stdout.strip()

    from_snapshot = tmp_path / "from-snapshot"
    cli("restore", "--run", backup, "--path", "home/docs", "--to", str(from_snapshot))
    assert tree_digest(from_snapshot) == tree_digest(source / "docs")

    from_live = tmp_path / "from-live"
    cli("restore", "--live", "--profile", "p", "--path", "home/docs/deep", "--to", str(from_live))
    assert tree_digest(from_live) == tree_digest(source / "docs" / "deep")

    # A path the backup does not hold: bad input, found on the instance, which is ended at
    # once with the temporary volume; the message says what is there instead.
    ec2 = ec2_client(sandbox)
    typo = cli(
        "restore",
        "--run",
        backup,
        "--path",
        "home/docz",
        "--to",
        str(tmp_path / "typo"),
        check=False,
    )
    assert typo.returncode == 2, typo.stderr
    (line,) = [ln for ln in typo.stderr.splitlines() if ln.startswith("ec2backup: error:")]
    assert "the backup has no directory 'home/docz'" in line
    assert "under 'home' it holds: docs/, docs-old/, docsx.txt, photos/, top.txt" in line
    assert "nothing of it is left in the cloud" in line and "to continue" not in line
    (failed,) = [r for r in cli.json("runs") if r["kind"] == "restore" and r["state"] != "done"]
    shown = cli.json("show", failed["id"])
    assert shown["state"] == "aborted"
    instances = ec2.describe_instances(
        Filters=[{"Name": "tag:ec2backup:run-id", "Values": [failed["id"]]}]
    )["Reservations"]
    assert {i["State"]["Name"] for r in instances for i in r["Instances"]} == {"terminated"}
    gone = ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [shown["volume_id"]]}])
    assert [v for v in gone["Volumes"] if v["State"] not in ("deleting", "deleted")] == []
    assert not (tmp_path / "typo").exists()

    # Killed once its temporary volume is deleted, before that is recorded: the resumed step
    # finds the volume gone, and that is success.
    killed = replace(cli, env={**cli.env, "EC2BACKUP_CRASH_AT": "after:delete_volume"})
    again = tmp_path / "again"
    result = killed(
        "restore", "--run", backup, "--path", "home/docs", "--to", str(again), check=False
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    (run,) = [r for r in cli.json("runs") if r["state"] == "deleting_volume"]
    temporary = cli.json("show", run["id"])["volume_id"]
    found = ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [temporary]}])
    assert [v for v in found["Volumes"] if v["State"] != "deleted"] == []
    cli("resume", run["id"])
    assert cli.json("show", run["id"])["state"] == "done"
    assert tree_digest(again) == tree_digest(source / "docs")
