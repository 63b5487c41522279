"""The crash matrix once more, with the local cloud as slow and as forgetful as AWS: its
timing at AWS's typical delays (boot, SSH ready after cloud-final, attach, detach, terminate,
snapshot; scaled by TIMING_SCALE, same order, see docs/aws.md) and a consistency lag (new ids
answer NotFound, tag filters miss them). ec2backup is SIGKILLed at instants spread over a
backup's timeline (measured from one run first), then recovered three ways as in
test_crash_matrix.py; each recovery must end with nothing of ours live, the volume free, at
most one snapshot of the run (one after a resume) and, after a resume, the data on the volume.

The checks list instances and snapshots without a tag filter (filtering here), so what the
lag hides from ec2backup is not hidden from them. ``reap`` works from tags alone (the database
is deleted first), and no tag shows an instance younger than the lag: that recovery starts
once every instance of ours shows by tag, as a reap run later (from cron) would find it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Cli, ec2_client, mounted_read_only, tree_digest
from tests.e2e.test_crash_matrix import RECOVERIES, SEED, _latest_run, _paths, _record

pytestmark = pytest.mark.e2e

TIMING_SCALE = 0.1
CONSISTENCY_LAG = 2.0
INSTANTS = 6
LIVE = {"pending", "running", "stopping", "stopped"}


@dataclass
class Timeline:
    cli: Cli
    root: Path
    source: Path
    volume_id: str
    ec2: Any
    sandbox: Any
    run_seconds: float  # one backup, start of the command to its exit


@pytest.fixture(scope="module")
def timeline(sandbox: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Timeline]:
    root = tmp_path_factory.mktemp("timeline")
    source = root / "source"
    source.mkdir()
    rng = random.Random(SEED)
    for i in range(12):
        (source / f"f{i}.bin").write_bytes(rng.randbytes(200_000))
    cli = Cli(env={**sandbox.env, **_paths(root)}, cwd=root)
    with sandbox.configured(
        timing="aws", timing_scale=TIMING_SCALE, consistency_lag=CONSISTENCY_LAG
    ):
        volume_id = cli(
            "init", "--profile", "a", "--az", "us-east-1a", "--size", "1", "--source", str(source)
        ).stdout.strip()
        started = time.monotonic()
        cli("run", "--profile", "a")
        yield Timeline(
            cli, root, source, volume_id, ec2_client(sandbox), sandbox, time.monotonic() - started
        )


def _ours(ec2: Any, states: set[str]) -> list[str]:
    """This bench's instances in ``states``, from an unfiltered listing (the lag hides nothing
    there)."""
    found = []
    for reservation in ec2.describe_instances()["Reservations"]:
        for instance in reservation["Instances"]:
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
            if tags.get("ec2backup:profile") == "a" and instance["State"]["Name"] in states:
                found.append(instance["InstanceId"])
    return found


def _shown_by_tag(ec2: Any) -> bool:
    """Every live instance of ours shows in a tag-filtered listing too."""
    by_tag = ec2.describe_instances(
        Filters=[
            {"Name": "tag:ec2backup:profile", "Values": ["a"]},
            {"Name": "instance-state-name", "Values": sorted(LIVE)},
        ]
    )["Reservations"]
    shown = {i["InstanceId"] for r in by_tag for i in r["Instances"]}
    return set(_ours(ec2, LIVE)) <= shown


def _snapshots_of(ec2: Any, run_id: str) -> list[str]:
    return [
        s["SnapshotId"]
        for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
        if {"Key": "ec2backup:run-id", "Value": run_id} in s.get("Tags", [])
    ]


def _volume_free(ec2: Any, volume_id: str) -> bool:
    (volume,) = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    return volume["State"] == "available" and not volume["Attachments"]


def _crash_at(bench: Timeline, seconds: float) -> tuple[str | None, str | None, bool]:
    """Start a backup and SIGKILL it ``seconds`` after it started; return (run id, state it
    was left in, whether it was killed rather than finished)."""
    before = _latest_run(bench.root)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ec2backup", "run", "--profile", "a"],
        env={**os.environ, **bench.cli.env},
        cwd=bench.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        proc.wait(timeout=seconds)  # the experiment: a chosen instant, not an event
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    killed = proc.returncode == -signal.SIGKILL
    assert killed or proc.returncode == 0, f"exit {proc.returncode}: {stderr}"
    latest = _latest_run(bench.root)
    if latest is None or latest == before:
        return None, None, killed
    return latest[0], latest[1], killed


@pytest.mark.parametrize("recovery", RECOVERIES)
@pytest.mark.parametrize("instant", range(INSTANTS))
def test_crash_at_an_instant_then_recover(timeline: Timeline, instant: int, recovery: str) -> None:
    bench = timeline
    rng = random.Random(f"{SEED}-timeline-{instant}-{recovery}")
    for i in rng.sample(range(12), 4):  # something to sync each time
        (bench.source / f"f{i}.bin").write_bytes(rng.randbytes(200_000))
    # Spread over the run's timeline, short of its end (runs vary).
    at = bench.run_seconds * (0.05 + 0.8 * (instant + rng.random()) / INSTANTS)
    run_id, crashed_in, killed = _crash_at(bench, at)
    point = f"t={at:.1f}s of {bench.run_seconds:.1f}s"
    started = time.monotonic()
    outcome = "fail"
    try:
        # Killed before the run was recorded (its first instants): nothing was made, nothing
        # is to be recovered, and the checks below must find it so.
        if recovery == "resume" and run_id is not None:
            if killed:
                bench.cli("resume", run_id)
            assert bench.cli.json("show", run_id)["state"] == "done"
        elif recovery == "clean" and run_id is not None:
            if killed:
                bench.cli("resume", run_id, "--clean")
                assert bench.cli.json("show", run_id)["state"] == "aborted"
        elif recovery == "reap":
            deadline = time.monotonic() + 60
            while not _shown_by_tag(bench.ec2):
                assert time.monotonic() < deadline, "instances never showed by tag"
                time.sleep(0.1)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{bench.root / 'ec2backup.db'}{suffix}").unlink(missing_ok=True)
            bench.cli("reap", "--yes", "--region", "us-east-1")

        deadline = time.monotonic() + 60
        while _ours(bench.ec2, LIVE) or not _volume_free(bench.ec2, bench.volume_id):
            assert time.monotonic() < deadline, (
                f"left behind: instances {_ours(bench.ec2, LIVE)}, "
                f"volume free: {_volume_free(bench.ec2, bench.volume_id)}"
            )
            time.sleep(0.1)
        if run_id is not None:
            launched = [
                i
                for i in _ours(bench.ec2, LIVE | {"shutting-down", "terminated"})
                if {"Key": "ec2backup:run-id", "Value": run_id} in _instance_tags(bench.ec2, i)
            ]
            assert len(launched) <= 1, launched  # never a second instance for one run
            snapshots = _snapshots_of(bench.ec2, run_id)
            assert len(snapshots) <= 1, snapshots
            if recovery == "resume":
                assert len(snapshots) == 1
        if recovery == "resume" and run_id is not None:
            with mounted_read_only(bench.sandbox.volume_image(bench.volume_id)) as mnt:
                assert tree_digest(mnt / "source") == tree_digest(bench.source)
        outcome = "pass"
    finally:
        _record(point, f"{recovery} (aws timing)", crashed_in, outcome, time.monotonic() - started)


def _instance_tags(ec2: Any, instance_id: str) -> list[dict[str, str]]:
    (reservation,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return list(reservation["Instances"][0].get("Tags", []))
