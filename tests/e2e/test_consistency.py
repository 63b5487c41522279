"""Eventual consistency: right after a create, EC2 may answer NotFound for the new id and leave
it out of tag-filtered listings. ec2backup waits through it and never starts a second instance
or volume because of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Cli, ec2_client, make_sample_tree, run_instances, tree_digest

pytestmark = pytest.mark.e2e
LAG = 3.0


def _volumes_of(ec2: Any, run_id: str) -> list[str]:
    found = ec2.describe_volumes(Filters=[{"Name": "tag:ec2backup:run-id", "Values": [run_id]}])
    return [v["VolumeId"] for v in found["Volumes"] if "ec2backup:role" in str(v.get("Tags"))]


def test_init_run_and_restore_wait_through_the_lag(
    cli: Cli, sandbox_faults: Any, tmp_path: Path
) -> None:
    sandbox_faults.configure_faults(consistency_lag=LAG)
    source = tmp_path / "home"
    source.mkdir()
    make_sample_tree(source)
    cli("init", "--profile", "c", "--az", "us-east-1a", "--size", "1", "--source", str(source))
    backup = cli("run", "--profile", "c").stdout.strip()
    restore = cli("restore", "--run", backup, "--to", str(tmp_path / "back")).stdout.strip()
    assert tree_digest(tmp_path / "back" / "home") == tree_digest(source)
    ec2 = ec2_client(sandbox_faults)
    runs = [r["id"] for r in cli.json("runs")]
    for run_id in runs:
        assert len(run_instances(ec2, run_id)) == 1, f"run {run_id} launched more than once"
    assert restore in runs


@pytest.mark.parametrize("point", ["called:run_instance", "recorded:instance_id"])
def test_a_resume_right_after_the_launch_finds_the_same_instance(
    cli: Cli, sandbox_faults: Any, tmp_path: Path, point: str
) -> None:
    source = tmp_path / "home"
    source.mkdir()
    (source / "a.txt").write_text("a\n")
    cli("init", "--profile", "r", "--az", "us-east-1a", "--size", "1", "--source", str(source))
    sandbox_faults.configure_faults(consistency_lag=LAG)
    crashed = subprocess.run(
        [sys.executable, "-m", "ec2backup", "run", "--profile", "r"],
        env={**os.environ, **cli.env, "EC2BACKUP_CRASH_AT": point},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    (run_id,) = [r["id"] for r in cli.json("runs") if r["kind"] == "backup"]
    cli("resume", run_id)  # at once: the instance is not visible yet
    assert cli.json("show", run_id)["state"] == "done"
    assert len(run_instances(ec2_client(sandbox_faults), run_id)) == 1
