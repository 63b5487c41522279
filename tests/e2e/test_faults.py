"""Runs that meet a hostile cloud: throttling, 5xx, lost responses, latency and slow state
changes; SSH connections cut during rsync; an instance that ends itself (dead-man's switch)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import (
    Cli,
    assert_clean_after,
    ec2_client,
    make_sample_tree,
    mounted_read_only,
    tree_digest,
)

pytestmark = pytest.mark.e2e


def init(cli: Cli, tmp_path: Path, extra: str = "") -> tuple[str, Path]:
    source = tmp_path / "home"
    source.mkdir()
    make_sample_tree(source)
    volume_id = cli(
        "init", "--profile", "f", "--az", "us-east-1a", "--size", "1", "--source", str(source)
    ).stdout.strip()
    if extra:
        config = tmp_path / "config.toml"
        config.write_text(config.read_text() + extra)
    return volume_id, source


def snapshots_of(ec2: Any, run_id: str) -> list[str]:
    found = ec2.describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "tag:ec2backup:run-id", "Values": [run_id]}]
    )["Snapshots"]
    return [s["SnapshotId"] for s in found]


def test_a_run_rides_through_throttling_errors_lost_responses_and_delays(
    cli: Cli, sandbox: Any, tmp_path: Path
) -> None:
    volume_id, source = init(cli, tmp_path)
    with sandbox.configured(
        throttle_rate=0.15,
        error_rate=0.1,
        lost_response_rate=0.05,
        latency=0.02,
        fault_seed=7,
        boot_delay=1.5,
        attach_delay=0.5,
        detach_delay=0.5,
        terminate_delay=1.0,
    ):
        run_id = cli("run", "--profile", "f", timeout=600).stdout.strip()
    shown = cli.json("show", run_id)
    assert shown["state"] == "done", shown
    ec2 = ec2_client(sandbox)
    assert_clean_after(ec2, run_id, volume_id)
    assert len(snapshots_of(ec2, run_id)) == 1  # a lost CreateSnapshot response made no twin
    instances = ec2.describe_instances(
        Filters=[{"Name": "tag:ec2backup:run-id", "Values": [run_id]}]
    )["Reservations"]
    assert sum(len(r["Instances"]) for r in instances) == 1  # ClientToken: one launch
    with mounted_read_only(sandbox.volume_image(volume_id)) as mnt:
        assert tree_digest(mnt / "home") == tree_digest(source)


def test_ssh_cut_during_rsync_is_retried_and_the_data_ends_identical(
    cli: Cli, sandbox: Any, tmp_path: Path
) -> None:
    # Slow the copy so that the cut lands inside rsync.
    volume_id, source = init(cli, tmp_path, 'rsync_args = ["--bwlimit=2000"]\n')
    (source / "photos" / "more.bin").write_bytes(b"\x01" * 3_000_000)
    with sandbox.configured(cut_ssh_after=0.5, cut_ssh_on="rsync"):
        run_id = cli("run", "--profile", "f", timeout=600).stdout.strip()
    shown = cli.json("show", run_id)
    assert shown["state"] == "done"
    assert any(w.startswith("sync retried after") for w in shown["warnings"]), shown["warnings"]
    assert_clean_after(ec2_client(sandbox), run_id, volume_id)
    with mounted_read_only(sandbox.volume_image(volume_id)) as mnt:
        assert tree_digest(mnt / "home") == tree_digest(source)


def test_the_dead_mans_switch_ends_an_abandoned_instance_and_resume_relaunches(
    cli: Cli, sandbox: Any, tmp_path: Path
) -> None:
    volume_id, source = init(cli, tmp_path, "instance_idle_minutes = 1\n")
    ec2 = ec2_client(sandbox)
    crashing = Cli(env={**cli.env, "EC2BACKUP_CRASH_AT": "after:mount"}, cwd=cli.cwd)
    # One minute of the instance's timers lasts 4 s here: long enough to reach the crash point.
    with sandbox.configured(minute_seconds=4.0):
        assert crashing("run", "--profile", "f", check=False).returncode == -9
        (run,) = [r for r in cli.json("runs") if r["kind"] == "backup"]
        assert run["state"] == "mounting"
        instance_id = run["instance_id"]
        # No ec2backup process is alive now: nobody re-arms the instance's idle timer.
        deadline = time.monotonic() + 30
        while True:
            (res,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
            if res["Instances"][0]["State"]["Name"] in ("shutting-down", "terminated"):
                break
            assert time.monotonic() < deadline, "the instance never ended itself"
            time.sleep(0.2)
    cli("resume", run["id"])
    shown = cli.json("show", run["id"])
    assert shown["state"] == "done"
    events = [e["to"] for e in shown["events"]]
    assert "launching" in events[events.index("mounting") + 1 :]  # relaunched
    assert shown["instance_id"] != instance_id
    assert_clean_after(ec2, run["id"], volume_id)
    with mounted_read_only(sandbox.volume_image(volume_id)) as mnt:
        assert tree_digest(mnt / "home") == tree_digest(source)
