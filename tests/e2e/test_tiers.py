"""Snapshot tiers end to end: prune archives the kept older snapshots (never the newest) and
states the archive's terms; a restore from an archived snapshot starts its restore from the
archive and says how long that takes, and works once it is done."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Cli, ec2_client, make_sample_tree, tree_digest

pytestmark = pytest.mark.e2e


def _tiers(cli: Cli) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in cli.json("snapshots", "--profile", "t")}


def test_archive_and_restore_from_the_archive(
    cli: Cli, sandbox_faults: Any, tmp_path: Path
) -> None:
    source = tmp_path / "home"
    source.mkdir()
    make_sample_tree(source)
    cli("init", "--profile", "t", "--az", "us-east-1a", "--size", "1", "--source", str(source))
    first = cli.json("show", cli("run", "--profile", "t").stdout.strip())
    before = tree_digest(source)
    (source / "docs" / "later.txt").write_text("written after the first backup\n")
    second = cli.json("show", cli("run", "--profile", "t").stdout.strip())
    old, new = first["snapshot_id"], second["snapshot_id"]

    pruned = cli("prune", "--profile", "t", "--keep-last", "5", "--archive-after-days", "0",
                 "--yes")  # fmt: skip
    assert "90 days" in pruned.stderr and "72 hours" in pruned.stderr
    tiers = _tiers(cli)
    assert (tiers[old]["tier"], tiers[new]["tier"]) == ("archive", "standard")
    assert (
        ec2_client(sandbox_faults).describe_snapshots(SnapshotIds=[old])["Snapshots"][0][
            "StorageTier"
        ]
        == "archive"
    )
    # Its growth was measured before it went: the direct APIs cannot read it now.
    assert cli.json("show", first["id"])["stats"]["snapshot_added_bytes"]

    sandbox_faults.configure_faults(tier_delay=3.0)
    restored = tmp_path / "restored"
    asked = cli("restore", "--snapshot", old, "--profile", "t", "--to", str(restored),
                check=False)  # fmt: skip
    assert asked.returncode == 2, asked.stderr
    assert "started restoring it for 1 day(s)" in asked.stderr and "72 hours" in asked.stderr
    again = cli("restore", "--snapshot", old, "--profile", "t", "--to", str(restored),
                check=False)  # fmt: skip
    assert again.returncode == 2 and "is being restored from the archive" in again.stderr
    assert not restored.exists()  # nothing copied, no instance launched

    deadline = time.monotonic() + 60
    while not _tiers(cli)[old]["restored_until"]:
        assert time.monotonic() < deadline, _tiers(cli)[old]
        time.sleep(0.5)
    cli("restore", "--snapshot", old, "--profile", "t", "--to", str(restored))
    assert tree_digest(restored / "home") == before
