"""A snapshots-only init killed (SIGKILL) right before its profile step: its first snapshot
exists and no profile names it yet. `resume` finishes it: the profile is written and the next
`run` backs up from that snapshot. `resume --clean` ends it: no volume, no profile entry and no
snapshot of it are left. Checked with boto3 and the config file, not with ec2backup."""

from __future__ import annotations

import signal
import tomllib
from pathlib import Path
from typing import Any

import pytest

from ec2backup.core.states import WRITE_PROFILE, RunKind
from tests.e2e.helpers import Cli, ec2_client, make_sample_tree
from tests.e2e.test_snapshot_storage import standing

pytestmark = pytest.mark.e2e
NOTHING: dict[str, list[str]] = {"volumes": [], "instances": []}


def killed_before_profile(cli: Cli, profile: str, tmp_path: Path) -> str:
    """`init --storage snapshots` killed at ``before:write_profile``; its run id."""
    source = tmp_path / "home"
    source.mkdir()
    make_sample_tree(source)
    killed = Cli(env={**cli.env, "EC2BACKUP_CRASH_AT": WRITE_PROFILE.before}, cwd=cli.cwd)
    crashed = killed(
        "init", "--profile", profile, "--az", "us-east-1a", "--size", "1",
        "--source", str(source), "--storage", "snapshots",
        check=False,
    )  # fmt: skip
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    (run,) = [r for r in cli.json("runs") if r["kind"] == RunKind.SNAPSHOT_INIT]
    assert run["state"] == "writing_profile"
    assert profile not in profiles(tmp_path)
    return str(run["id"])


def profiles(tmp_path: Path) -> dict[str, Any]:
    config = tmp_path / "config.toml"
    return tomllib.loads(config.read_text()).get("profiles", {}) if config.exists() else {}


def snapshots_of(ec2: Any, run_id: str) -> list[str]:
    found = ec2.describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "tag:ec2backup:run-id", "Values": [run_id]}]
    )["Snapshots"]
    return [s["SnapshotId"] for s in found]


def test_resumed_it_writes_its_profile_and_the_next_run_backs_up(
    cli: Cli, sandbox: Any, tmp_path: Path
) -> None:
    ec2 = ec2_client(sandbox)
    profile = "spinit-resumed"
    init_id = killed_before_profile(cli, profile, tmp_path)
    (first,) = snapshots_of(ec2, init_id)

    cli("resume", init_id)
    assert cli.json("show", init_id)["state"] == "done"
    written = profiles(tmp_path)[profile]
    assert written["storage"] == "snapshots" and "volume_id" not in written
    assert standing(ec2, profile) == NOTHING  # its work volume deleted, its instance ended

    backup = cli("run", "--profile", profile).stdout.strip()
    shown = cli.json("show", backup)
    assert (shown["kind"], shown["state"]) == (RunKind.SNAPSHOT_BACKUP, "done")
    assert shown["stats"]["snapshot_added"]["compared_with"] == first
    assert standing(ec2, profile) == NOTHING


def test_resume_clean_leaves_no_volume_no_profile_entry_and_no_snapshot(
    cli: Cli, sandbox: Any, tmp_path: Path
) -> None:
    ec2 = ec2_client(sandbox)
    profile = "spinit-cleaned"
    init_id = killed_before_profile(cli, profile, tmp_path)
    assert len(snapshots_of(ec2, init_id)) == 1
    assert standing(ec2, profile)["volumes"]  # its work volume, still there

    cli("resume", init_id, "--clean")
    assert cli.json("show", init_id)["state"] == "aborted"
    assert profile not in profiles(tmp_path)
    assert snapshots_of(ec2, init_id) == []
    assert standing(ec2, profile) == NOTHING
