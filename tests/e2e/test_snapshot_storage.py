"""Snapshots-only storage end to end on the local cloud: no standing volume. init leaves only a
snapshot; each backup makes a volume from the latest snapshot, snapshots it and deletes it;
restore works from those snapshots; a run killed half-way is resumed or reaped; and after each,
boto3 finds no volume and no live instance of the profile."""

from __future__ import annotations

import os
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from ec2backup.core.states import RunKind, path
from tests.e2e.helpers import Cli, ec2_client, make_sample_tree, tree_digest

pytestmark = pytest.mark.e2e
LIVE = {"pending", "running", "stopping", "stopped", "shutting-down"}


def standing(ec2: Any, profile: str) -> dict[str, list[str]]:
    """What of the profile still stands in the cloud: volumes (any state but deleted) and
    instances that may still bill."""
    tag = [{"Name": "tag:ec2backup:profile", "Values": [profile]}]
    volumes = [v["VolumeId"] for v in ec2.describe_volumes(Filters=tag)["Volumes"]]
    instances = [
        i["InstanceId"]
        for r in ec2.describe_instances(Filters=tag)["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] in LIVE
    ]
    return {"volumes": volumes, "instances": instances}


def _snapshot_state(ec2: Any, snapshot_id: str) -> str:
    return str(ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"])


def test_snapshots_only_profile_backs_up_restores_and_leaves_nothing_standing(
    cli: Cli, sandbox: Any, tmp_path: Path
) -> None:
    ec2 = ec2_client(sandbox)
    source = tmp_path / "home"
    source.mkdir()
    make_sample_tree(source)
    nothing: dict[str, list[str]] = {"volumes": [], "instances": []}

    first = cli(
        "init", "--profile", "snaponly", "--az", "us-east-1a", "--size", "1",
        "--source", str(source),
        "--storage", "snapshots",
    ).stdout.strip()  # fmt: skip
    assert first.startswith("snap-")
    written = tomllib.loads((tmp_path / "config.toml").read_text())["profiles"]["snaponly"]
    assert written["storage"] == "snapshots" and "volume_id" not in written
    assert standing(ec2, "snaponly") == nothing
    (init_run,) = cli.json("runs")
    assert (init_run["kind"], init_run["state"], init_run["snapshot_id"]) == (
        RunKind.SNAPSHOT_INIT,
        "done",
        first,
    )

    run_id = cli("run", "--profile", "snaponly").stdout.strip()
    shown = cli.json("show", run_id)
    assert (shown["kind"], shown["state"]) == (RunKind.SNAPSHOT_BACKUP, "done")
    assert [e["to"] for e in shown["events"]] == [str(s) for s in path(RunKind.SNAPSHOT_BACKUP)]
    assert standing(ec2, "snaponly") == nothing  # its volume deleted, its instance terminated
    (snapshot,) = ec2.describe_snapshots(SnapshotIds=[shown["snapshot_id"]])["Snapshots"]
    assert snapshot["VolumeId"] == shown["volume_id"] and snapshot["Encrypted"]
    assert shown["stats"]["snapshot_added"]["compared_with"] == first

    # An incremental backup starts from that snapshot and adds what changed.
    with (source / "photos" / "big.bin").open("r+b") as f:
        f.seek(1_000_000)
        f.write(os.urandom(4096))
    second = cli("run", "--profile", "snaponly").stdout.strip()
    shown2 = cli.json("show", second)
    assert shown2["state"] == "done" and shown2["stats"]["files_transferred"] == 1
    assert shown2["stats"]["snapshot_added"]["compared_with"] == shown["snapshot_id"]
    assert shown2["stats"]["snapshot_added_bytes"] < 3 * 2**20
    assert standing(ec2, "snaponly") == nothing

    restored = tmp_path / "restored"
    cli("restore", "--run", second, "--to", str(restored))
    assert tree_digest(restored / "home") == tree_digest(source)
    assert standing(ec2, "snaponly") == nothing

    # Killed with its volume attached and mounted: resumed, it finishes and cleans up.
    killed = Cli(env={**cli.env, "EC2BACKUP_CRASH_AT": "before:sync"}, cwd=tmp_path)
    assert killed("run", "--profile", "snaponly", check=False).returncode != 0
    (crashed,) = [r for r in cli.json("runs") if r["state"] == "syncing"]
    assert crashed["volume_id"] in standing(ec2, "snaponly")["volumes"]  # with the root volume
    cli("resume", crashed["id"])
    assert cli.json("show", crashed["id"])["state"] == "done"
    assert standing(ec2, "snaponly") == nothing

    # Killed again and never resumed: reap ends the instance and deletes the run's volume.
    assert killed("run", "--profile", "snaponly", check=False).returncode != 0
    (abandoned,) = [r for r in cli.json("runs") if r["state"] == "syncing"]
    assert standing(ec2, "snaponly")["instances"]
    until = time.monotonic() + 60
    while standing(ec2, "snaponly") != nothing:
        # A volume still detaching from the ended instance goes at the next sweep.
        assert time.monotonic() < until, standing(ec2, "snaponly")
        cli("reap", "--yes")
        time.sleep(0.2)
    assert cli.json("show", abandoned["id"])["state"] == "failed"
    assert _snapshot_state(ec2, shown2["snapshot_id"]) == "completed"  # the backups stay
