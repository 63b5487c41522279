"""The crash matrix: SIGKILL ec2backup at every crash point, then recover three ways.

Crash points: just before and just after the side effect of every backup step, between a cloud
call and the recording of its result, and 10 random instants during rsync. Recoveries, each
from a fresh crash at that point: ``resume``; ``resume --clean``; ``reap --yes`` with the
database deleted. After each, boto3 (not ec2backup) checks: no instance of ours pending,
running, stopping or stopped; the volume available and unattached; at most one snapshot with
the run's id (exactly one after a resume); after a resume, the files on the volume (its image
mounted read-only) identical to the source.

Each outcome is appended to ``$CRASH_MATRIX_RESULTS`` (JSON lines) when set;
``scripts/reliability_report.py`` turns that into docs/reliability.md (`make crash-matrix`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Cli, ec2_client, mounted_read_only, tree_digest

pytestmark = pytest.mark.e2e

STEPS = ("launch", "attach", "mount", "sync", "unmount", "detach", "terminate", "snapshot")
POINTS = [
    *(f"{when}:{step}" for step in STEPS for when in ("before", "after")),
    "called:run_instance",
    "recorded:instance_id",
    "called:create_snapshot",
    *(f"rsync-{i}" for i in range(10)),
]
RECOVERIES = ("resume", "clean", "reap")
LIVE = {"pending", "running", "stopping", "stopped"}
SEED = 20261128


@dataclass
class Bench:
    cli: Cli
    root: Path
    source: Path
    volume_id: str
    ec2: Any
    sandbox: Any


@pytest.fixture(scope="module")
def bench(sandbox: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    root = tmp_path_factory.mktemp("matrix")
    source = root / "source"
    source.mkdir()
    rng = random.Random(SEED)
    for i in range(40):
        (source / f"d{i % 4}").mkdir(exist_ok=True)
        (source / f"d{i % 4}" / f"f{i}.bin").write_bytes(rng.randbytes(500_000))
    cli = Cli(env={**sandbox.env, **_paths(root)}, cwd=root)
    volume_id = cli(
        "init", "--profile", "m", "--az", "us-east-1a", "--size", "1", "--source", str(source)
    ).stdout.strip()
    # Slow rsync down so that random instants land inside the transfer.
    config = root / "config.toml"
    config.write_text(config.read_text() + 'rsync_args = ["--bwlimit=4000"]\n')
    yield Bench(cli, root, source, volume_id, ec2_client(sandbox), sandbox)


def _paths(root: Path) -> dict[str, str]:
    return {
        "EC2BACKUP_CONFIG": str(root / "config.toml"),
        "EC2BACKUP_DB": f"sqlite:///{root / 'ec2backup.db'}",
        "EC2BACKUP_DATA_DIR": str(root / "data"),
    }


def _latest_run(root: Path) -> tuple[str, str] | None:
    db = root / "ec2backup.db"
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT id, state FROM runs WHERE kind = 'backup' ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
    return (row[0], row[1]) if row else None


def _crash(bench: Bench, point: str) -> tuple[str | None, str | None]:
    """Start a backup and SIGKILL it at ``point``; return (run id, state it was left in)."""
    before = _latest_run(bench.root)
    env = {**os.environ, **bench.cli.env}
    if not point.startswith("rsync-"):
        env["EC2BACKUP_CRASH_AT"] = point
    proc = subprocess.Popen(
        [sys.executable, "-m", "ec2backup", "run", "--profile", "m"],
        env=env,
        cwd=bench.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if point.startswith("rsync-"):
        # 8 MB changed at 4 MB/s: the transfer takes about 2 s.
        delay = random.Random(f"{SEED}-{point}").uniform(0.05, 1.5)
        deadline = time.monotonic() + 120
        while (
            (latest := _latest_run(bench.root)) is None
            or latest == before
            or latest[1] != "syncing"
        ):
            assert proc.poll() is None, (
                f"run ended before syncing: {proc.stderr.read() if proc.stderr else ''}"
            )
            assert time.monotonic() < deadline, "the run never reached syncing"
            time.sleep(0.02)
        time.sleep(delay)  # the experiment: kill at a chosen instant, not a wait for an event
        assert proc.poll() is None, f"the run ended before the chosen instant ({delay:.2f}s)"
        proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}, not a crash: {stderr}"
    latest = _latest_run(bench.root)
    if latest is None or latest == before:
        return None, None
    return latest


def _source_changes(bench: Bench, point: str, recovery: str) -> None:
    # Give rsync real work for the instants inside the transfer: rewrite some files, with new
    # content for every cell (the same content twice would leave nothing to transfer).
    rng = random.Random(f"{SEED}-{point}-{recovery}-data")
    for i in rng.sample(range(40), 16):
        (bench.source / f"d{i % 4}" / f"f{i}.bin").write_bytes(rng.randbytes(500_000))


def _our_live_instances(ec2: Any) -> list[str]:
    pages = ec2.describe_instances(
        Filters=[
            {"Name": "tag:ec2backup:managed", "Values": ["true"]},
            # This matrix's own profile: other tests share the local cloud.
            {"Name": "tag:ec2backup:profile", "Values": ["m"]},
            {"Name": "instance-state-name", "Values": sorted(LIVE)},
        ]
    )
    return [i["InstanceId"] for r in pages["Reservations"] for i in r["Instances"]]


def _volume_free(ec2: Any, volume_id: str) -> bool:
    (volume,) = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    return volume["State"] == "available" and not volume["Attachments"]


def _snapshots_of(ec2: Any, run_id: str) -> list[str]:
    found = ec2.describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "tag:ec2backup:run-id", "Values": [run_id]}]
    )["Snapshots"]
    return [s["SnapshotId"] for s in found]


def _record(point: str, recovery: str, state: str | None, outcome: str, seconds: float) -> None:
    path = os.environ.get("CRASH_MATRIX_RESULTS")
    if path:
        with open(path, "a") as f:
            f.write(
                json.dumps(
                    {
                        "point": point,
                        "recovery": recovery,
                        "crashed_in": state,
                        "outcome": outcome,
                        "seconds": round(seconds, 2),
                    }
                )
                + "\n"
            )


@pytest.mark.parametrize("recovery", RECOVERIES)
@pytest.mark.parametrize("point", POINTS)
def test_crash_then_recover(bench: Bench, point: str, recovery: str) -> None:
    if point.startswith("rsync-"):
        _source_changes(bench, point, recovery)
    run_id, crashed_in = _crash(bench, point)
    started = time.monotonic()
    outcome, seconds = "fail", None
    try:
        if recovery == "resume":
            assert run_id is not None, "a crashed backup always leaves its run recorded"
            bench.cli("resume", run_id)
            assert bench.cli.json("show", run_id)["state"] == "done"
        elif recovery == "clean":
            assert run_id is not None
            bench.cli("resume", run_id, "--clean")
            assert bench.cli.json("show", run_id)["state"] == "aborted"
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{bench.root / 'ec2backup.db'}{suffix}").unlink(missing_ok=True)
            bench.cli("reap", "--yes", "--region", "us-east-1")
        seconds = time.monotonic() - started

        # Independent checks, with boto3. Detaching completes asynchronously, as on AWS.
        deadline = time.monotonic() + 30
        while _our_live_instances(bench.ec2) or not _volume_free(bench.ec2, bench.volume_id):
            assert time.monotonic() < deadline, (
                f"left behind: instances {_our_live_instances(bench.ec2)}, "
                f"volume free: {_volume_free(bench.ec2, bench.volume_id)}"
            )
            time.sleep(0.1)
        if run_id is not None:
            snapshots = _snapshots_of(bench.ec2, run_id)
            assert len(snapshots) <= 1, snapshots
            if recovery == "resume":
                assert len(snapshots) == 1
        if recovery == "resume":
            with mounted_read_only(bench.sandbox.volume_image(bench.volume_id)) as mnt:
                assert tree_digest(mnt / "source") == tree_digest(bench.source)
        outcome = "pass"
    finally:
        _record(point, recovery, crashed_in, outcome, seconds or time.monotonic() - started)
