"""Reap of an orphan as AWS lets it: the instance's root volume (tagged by the launch, like the
instance) is never detached (EC2 refuses that for a running instance) and goes with the
termination; the backup volume is detached and left available."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Cli, ec2_client, run_instances

pytestmark = pytest.mark.e2e


def test_reap_ends_an_orphan_and_its_root_volume_goes_with_it(
    cli: Cli, sandbox: Any, tmp_path: Path
) -> None:
    source = tmp_path / "home"
    source.mkdir()
    (source / "a.txt").write_text("a\n")
    volume_id = cli(
        "init", "--profile", "o", "--az", "us-east-1a", "--size", "1", "--source", str(source)
    ).stdout.strip()
    crashed = subprocess.run(
        [sys.executable, "-m", "ec2backup", "run", "--profile", "o"],
        env={**os.environ, **cli.env, "EC2BACKUP_CRASH_AT": "after:attach"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    (run_id,) = [r["id"] for r in cli.json("runs") if r["kind"] == "backup"]
    ec2 = ec2_client(sandbox)
    (instance,) = run_instances(ec2, run_id)
    root_device = instance["RootDeviceName"]
    (root,) = [
        m["Ebs"]["VolumeId"]
        for m in instance["BlockDeviceMappings"]
        if m["DeviceName"] == root_device
    ]
    tags = ec2.describe_volumes(VolumeIds=[root])["Volumes"][0].get("Tags", [])
    assert {"Key": "ec2backup:managed", "Value": "true"} in tags  # reap sees it as ours

    Path(cli.env["EC2BACKUP_DB"].removeprefix("sqlite:///")).unlink()  # the database is lost
    cli("reap", "--yes", "--region", "us-east-1")

    (after,) = run_instances(ec2, run_id)
    assert after["State"]["Name"] in ("shutting-down", "terminated")
    remaining = {v["VolumeId"]: v for v in ec2.describe_volumes()["Volumes"]}
    assert root not in remaining  # deleted with the instance (DeleteOnTermination)
    assert remaining[volume_id]["State"] == "available" and not remaining[volume_id]["Attachments"]
