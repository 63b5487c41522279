"""The crash matrix: SIGKILL ec2backup at every crash point, then recover three ways.

Crash points: just before and just after the side effect of every backup step, between a cloud
call and the recording of its result (both from ``core.states.crash_points``), and 10 random
instants during rsync. Recoveries, each
from a fresh crash at that point: ``resume``; ``resume --clean``; ``reap --yes`` with the
database deleted. After each, boto3 (not ec2backup) checks: no instance of ours pending,
running, stopping or stopped; the volume available and unattached; at most one snapshot with
the run's id (exactly one after a resume); after a resume, the files on the volume (its image
mounted read-only) identical to the source.

Each outcome is appended to ``$CRASH_MATRIX_RESULTS`` (JSON lines) when set;
``scripts/reliability_report.py`` turns that into docs/reliability.md (`make crash-matrix`).
"""

from __future__ import annotations

import hashlib
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

from ec2backup.core.states import RunKind, crash_points
from tests.e2e.helpers import Cli, ec2_client, mounted_read_only, tree_digest

pytestmark = pytest.mark.e2e

# `make crash-matrix` runs every cell; `make test` (CI) runs every crash point of every kind
# once, with fewer instants in rsync and, for init, restore, verify and snapshots-only init,
# one recovery per point (taking turns), so that it stays a few minutes long.
FULL = os.environ.get("CRASH_MATRIX_FULL") == "1"
RSYNC_INSTANTS = 10 if FULL else 3

# Every crash point a backup passes, as the state machine declares them, then instants in rsync.
POINTS = [*crash_points(RunKind.BACKUP), *(f"rsync-{i}" for i in range(RSYNC_INSTANTS))]
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


def _our_live_instances(ec2: Any, profile: str = "m") -> list[str]:
    pages = ec2.describe_instances(
        Filters=[
            {"Name": "tag:ec2backup:managed", "Values": ["true"]},
            # This matrix's own profile: other tests share the local cloud.
            {"Name": "tag:ec2backup:profile", "Values": [profile]},
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


def _record(
    point: str,
    recovery: str,
    state: str | None,
    outcome: str,
    seconds: float,
    kind: str = "backup",
) -> None:
    path = os.environ.get("CRASH_MATRIX_RESULTS")
    if path:
        with open(path, "a") as f:
            f.write(
                json.dumps(
                    {
                        "kind": kind,
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
        if crashed_in == "done" and recovery != "reap":
            # Killed after its last event: nothing is left to do, and resume says so.
            assert run_id is not None
            args = ["resume", run_id, *(["--clean"] if recovery == "clean" else [])]
            refused = bench.cli(*args, check=False)
            assert refused.returncode != 0 and "nothing to" in refused.stderr, refused.stderr
            assert "Traceback" not in refused.stderr
            assert bench.cli.json("show", run_id)["state"] == "done"
        elif recovery == "resume":
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
            if recovery == "resume" or (crashed_in == "done" and recovery == "clean"):
                assert len(snapshots) == 1
        if recovery == "resume" or (crashed_in == "done" and recovery == "clean"):
            with mounted_read_only(bench.sandbox.volume_image(bench.volume_id)) as mnt:
                assert tree_digest(mnt / "source") == tree_digest(bench.source)
        outcome = "pass"
    finally:
        _record(point, recovery, crashed_in, outcome, seconds or time.monotonic() - started)


# --- init, restore, verify, snapshots-only init; a kill of resume itself --------------------

OTHER_KINDS = (RunKind.INIT, RunKind.RESTORE, RunKind.VERIFY, RunKind.SNAPSHOT_INIT)
INIT_KINDS = (RunKind.INIT, RunKind.SNAPSHOT_INIT)
OTHER_RECOVERIES = ("resume", "clean", "next")  # next: the same command again, which heals
OTHER_POINTS = [(kind, point) for kind in OTHER_KINDS for point in crash_points(kind)]
OTHER_CELLS = [
    (kind, point, recovery)
    for i, (kind, point) in enumerate(OTHER_POINTS)
    for recovery in (OTHER_RECOVERIES if FULL else (OTHER_RECOVERIES[i % 3],))
]
FINISHED = ("done", "aborted")


@dataclass
class Kinds:
    """A second profile ("k", small data) with one snapshot, for the other kinds' cells."""

    cli: Cli
    root: Path
    source: Path
    volume_id: str
    snapshot_id: str
    ec2: Any
    sandbox: Any


@pytest.fixture(scope="module")
def kinds(sandbox: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kinds]:
    from tests.e2e.helpers import make_sample_tree

    root = tmp_path_factory.mktemp("matrix-kinds")
    source = root / "source"
    source.mkdir()
    make_sample_tree(source)
    cli = Cli(env={**sandbox.env, **_paths(root)}, cwd=root)
    volume_id = cli(
        "init", "--profile", "k", "--az", "us-east-1a", "--size", "1", "--source", str(source)
    ).stdout.strip()
    backup = cli("run", "--profile", "k").stdout.strip()
    snapshot_id = cli.json("show", backup)["snapshot_id"]
    yield Kinds(cli, root, source, volume_id, snapshot_id, ec2_client(sandbox), sandbox)


def _latest_of(root: Path, kind: str) -> tuple[str, str] | None:
    with sqlite3.connect(root / "ec2backup.db") as conn:
        row = conn.execute(
            "SELECT id, state FROM runs WHERE kind = ? ORDER BY created_at DESC LIMIT 1", (kind,)
        ).fetchone()
    return (row[0], row[1]) if row else None


def _command(kinds: Kinds, kind: RunKind, cell: str) -> list[str]:
    if kind in INIT_KINDS:
        return [
            *("init", "--profile", cell, "--az", "us-east-1a", "--size", "1"),
            *("--source", str(kinds.source)),
            *(("--storage", "snapshots") if kind == RunKind.SNAPSHOT_INIT else ()),
        ]
    if kind == RunKind.RESTORE:
        to = kinds.root / "restored" / cell
        return ["restore", "--snapshot", kinds.snapshot_id, "--profile", "k", "--to", str(to)]
    return ["verify", "--profile", "k"]


def _run_volumes(ec2: Any, run_id: str) -> list[dict[str, Any]]:
    found = ec2.describe_volumes(Filters=[{"Name": "tag:ec2backup:run-id", "Values": [run_id]}])
    return [v for v in found["Volumes"] if v["State"] not in ("deleting", "deleted")]


def _profile_entry(kinds: Kinds, profile: str) -> dict[str, Any] | None:
    import tomllib

    config = tomllib.loads((kinds.root / "config.toml").read_text())
    entry = config.get("profiles", {}).get(profile)
    return dict(entry) if entry is not None else None


def _profile_volume(kinds: Kinds, profile: str) -> str | None:
    entry = _profile_entry(kinds, profile)
    return entry.get("volume_id") if entry else None


def _check_released(kinds: Kinds, profiles: list[str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        live = [i for p in profiles for i in _our_live_instances(kinds.ec2, p)]
        free = _volume_free(kinds.ec2, kinds.volume_id)
        if not live and free:
            return
        assert time.monotonic() < deadline, f"left behind: instances {live}, volume free: {free}"
        time.sleep(0.1)


@pytest.mark.parametrize(("kind", "point", "recovery"), OTHER_CELLS)
def test_crash_other_kinds_then_recover(
    kinds: Kinds, kind: RunKind, point: str, recovery: str
) -> None:
    cell = "i" + hashlib.sha1(f"{kind}{point}{recovery}".encode()).hexdigest()[:10]
    args = _command(kinds, kind, cell)
    env = {**os.environ, **kinds.cli.env, "EC2BACKUP_CRASH_AT": point}
    crashed = subprocess.run(
        [sys.executable, "-m", "ec2backup", *args],
        env=env,
        cwd=kinds.root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    latest = _latest_of(kinds.root, kind)
    assert latest is not None
    run_id, crashed_in = latest
    started = time.monotonic()
    outcome, seconds = "fail", None
    try:
        if recovery == "next":
            again = kinds.cli(*args, check=False)
            if kind in INIT_KINDS and crashed_in == "done":
                # The profile exists: a second init of it is refused, touching nothing.
                assert again.returncode == 2 and "already exists" in again.stderr, again.stderr
            else:
                assert again.returncode == 0, again.stderr
                if crashed_in not in FINISHED:
                    assert f"healed run {run_id} ({kind}, abandoned in" in again.stderr
        elif crashed_in in FINISHED:  # killed after its last event: nothing is left to do
            refused = kinds.cli(
                "resume", run_id, *(["--clean"] if recovery == "clean" else []), check=False
            )
            assert refused.returncode != 0 and "Traceback" not in refused.stderr
        else:
            kinds.cli("resume", run_id, *(["--clean"] if recovery == "clean" else []))
        seconds = time.monotonic() - started
        state = kinds.cli.json("show", run_id)["state"]
        if recovery == "resume" or crashed_in == "done":
            assert state == "done"
        else:
            assert state == "aborted" or (recovery == "next" and crashed_in == "done")

        _check_released(kinds, ["k", cell])
        volumes = _run_volumes(kinds.ec2, run_id)
        if kind == RunKind.INIT:
            if state == "done":  # the profile names the volume it made, ready for backups
                assert [v["VolumeId"] for v in volumes] == [_profile_volume(kinds, cell)]
                assert volumes[0]["State"] == "available"
            else:  # nothing left: no volume, no profile entry (a next init made its own)
                assert volumes == []
                new = _profile_volume(kinds, cell)
                assert (new is not None) == (recovery == "next")
        elif kind == RunKind.SNAPSHOT_INIT:
            assert volumes == []  # its work volume deleted, whatever the recovery
            entry = _profile_entry(kinds, cell)
            if state == "done":  # the profile written, with the first snapshot to start from
                assert entry is not None and entry["storage"] == "snapshots"
                assert len(_snapshots_of(kinds.ec2, run_id)) == 1
            else:  # nothing left: no profile entry, no snapshot (a next init made its own)
                assert _snapshots_of(kinds.ec2, run_id) == []
                assert (entry is not None) == (recovery == "next")
        else:
            assert [v for v in volumes if v["VolumeId"] != kinds.volume_id] == []  # no temporary
        if kind == RunKind.RESTORE and state == "done":
            restored = kinds.root / "restored" / cell / "source"
            assert tree_digest(restored) == tree_digest(kinds.source)
        outcome = "pass"
    finally:
        took = seconds or time.monotonic() - started
        _record(point, recovery, crashed_in, outcome, took, kind=str(kind))


@pytest.mark.parametrize("point", ["after:sync", "before:snapshot"])
def test_a_killed_resume_is_resumed(kinds: Kinds, point: str) -> None:
    """A backup killed once, then its `resume` killed too: the next `resume` finishes it."""
    env = {**os.environ, **kinds.cli.env}
    first = subprocess.run(
        [sys.executable, "-m", "ec2backup", "run", "--profile", "k"],
        env={**env, "EC2BACKUP_CRASH_AT": "after:mount"},
        cwd=kinds.root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == -signal.SIGKILL, first.stderr
    latest = _latest_of(kinds.root, "backup")
    assert latest is not None and latest[1] == "mounting"
    run_id = latest[0]
    started = time.monotonic()
    outcome = "fail"
    try:
        resumed = subprocess.run(
            [sys.executable, "-m", "ec2backup", "resume", run_id],
            env={**env, "EC2BACKUP_CRASH_AT": point},
            cwd=kinds.root,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert resumed.returncode == -signal.SIGKILL, resumed.stderr
        kinds.cli("resume", run_id)
        assert kinds.cli.json("show", run_id)["state"] == "done"
        _check_released(kinds, ["k"])
        assert len(_snapshots_of(kinds.ec2, run_id)) == 1
        with mounted_read_only(kinds.sandbox.volume_image(kinds.volume_id)) as mnt:
            assert tree_digest(mnt / "source") == tree_digest(kinds.source)
        outcome = "pass"
    finally:
        _record(
            f"resume killed at {point}", "resume", "mounting", outcome, time.monotonic() - started
        )
