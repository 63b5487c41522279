"""The whole job as an IAM user holding docs/iam-policy.json exactly as documented, on the local
cloud's IAM mode: every call authorized for each resource it touches, with the condition keys
the Service Authorization Reference lists for it, as AWS does. tests/test_iam_policy.py checks
the policy's action set against the code and lints it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import (
    Cli,
    ec2_client,
    make_sample_tree,
    mounted_read_only,
    run_instances,
    tree_digest,
)

pytestmark = pytest.mark.e2e
DOCUMENTED = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "iam-policy.json").read_text()
)
POLICY = DOCUMENTED


def cli_as(sandbox: Any, keys: dict[str, str], tmp_path: Path) -> Cli:
    env = {
        **sandbox.env,
        **keys,
        "EC2BACKUP_CONFIG": str(tmp_path / "config.toml"),
        "EC2BACKUP_DB": f"sqlite:///{tmp_path / 'ec2backup.db'}",
        "EC2BACKUP_DATA_DIR": str(tmp_path / "data"),
    }
    return Cli(env=env, cwd=tmp_path)


def test_init_and_run_with_only_the_documented_policy(iam_sandbox: Any, tmp_path: Path) -> None:
    keys = iam_sandbox.create_iam_user("ec2backup-least", POLICY)
    cli = cli_as(iam_sandbox, keys, tmp_path)
    source = tmp_path / "home"
    source.mkdir()
    make_sample_tree(source)
    volume_id = cli(
        "init", "--profile", "i", "--az", "us-east-1a", "--size", "1", "--source", str(source)
    ).stdout.strip()
    run_id = cli("run", "--profile", "i").stdout.strip()
    shown = cli.json("show", run_id)
    assert shown["state"] == "done"
    # Growing the volume (ModifyVolume on a volume tagged ours, DescribeVolumesModifications).
    assert cli("grow", "--profile", "i", "--size", "2").stdout == f"{volume_id} 2 GiB\n"
    # Measured with the EBS direct APIs the policy grants.
    assert shown["stats"]["snapshot_added_bytes"], shown["stats"]["snapshot_added"]
    with mounted_read_only(iam_sandbox.volume_image(volume_id)) as mnt:
        assert tree_digest(mnt / "home") == tree_digest(source)


def test_a_missing_permission_is_one_line_naming_the_action(
    iam_sandbox: Any, tmp_path: Path
) -> None:
    policy = json.loads(json.dumps(POLICY))
    for statement in policy["Statement"]:
        actions = statement["Action"]
        if isinstance(actions, list) and "ec2:TerminateInstances" in actions:
            actions.remove("ec2:TerminateInstances")
    keys = iam_sandbox.create_iam_user("ec2backup-no-terminate", policy)
    cli = cli_as(iam_sandbox, keys, tmp_path)
    source = tmp_path / "home"
    source.mkdir()
    (source / "a").write_text("a")
    result = cli(
        "init",
        "--profile",
        "i",
        "--az",
        "us-east-1a",
        "--size",
        "1",
        "--source",
        str(source),
        check=False,
    )
    assert result.returncode == 5, result.stderr
    assert "Traceback" not in result.stderr
    lines = [  # without the log records (INFO/WARNING lines and their continuations)
        ln
        for ln in result.stderr.splitlines()
        if not ln.startswith(("INFO", "WARNING", "ERROR", " "))
    ]
    assert len(lines) == 1 and lines[0].startswith("ec2backup: error: "), result.stderr
    assert "not authorized to call ec2:TerminateInstances" in lines[0] and "grant" in lines[0]
    # The run is recorded, failed at the step it could not do, and offers resume; its
    # instance stays for an administrator (or reap) to end: ours, tagged, and reported.
    (run,) = cli.json("runs")
    assert (run["kind"], run["state"]) == ("init", "failed")
    assert f"ec2backup resume {run['id']}" in lines[0]
    ec2 = ec2_client(iam_sandbox)  # the administrator
    (instance,) = run_instances(ec2, run["id"])
    assert instance["State"]["Name"] == "running"
    assert {t["Key"]: t["Value"] for t in instance["Tags"]}["ec2backup:managed"] == "true"
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])


def test_a_launch_the_policy_denies_by_condition_is_refused_and_nothing_is_made(
    iam_sandbox: Any, tmp_path: Path
) -> None:
    """The documented policy, with launches allowed only for t2.nano: init of a t3.micro
    profile is refused by IAM (its dry run) before it makes a volume or a security group."""
    policy = json.loads(json.dumps(POLICY))
    (launch,) = [
        s for s in policy["Statement"] if s["Sid"] == "LaunchOnlyTaggedInstancesWithImdsv2"
    ]
    launch["Condition"]["StringEquals"]["ec2:InstanceType"] = "t2.nano"
    keys = iam_sandbox.create_iam_user("ec2backup-nano-only", policy)
    cli = cli_as(iam_sandbox, keys, tmp_path)
    source = tmp_path / "home"
    source.mkdir()
    (source / "a").write_text("a")
    admin = ec2_client(iam_sandbox)
    before = _everything(admin)
    result = cli(
        "init", "--profile", "n", "--az", "us-east-1a", "--size", "1", "--source", str(source),
        check=False,
    )  # fmt: skip
    assert result.returncode == 5, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("ec2backup: error: ")]
    assert "not authorized to call ec2:RunInstances on arn:aws:ec2:us-east-1:" in line
    assert ":instance/* (UnauthorizedOperation)" in line
    assert _everything(admin) == before, "something was created"
    assert cli.json("runs") == []
    # The same user may launch what the condition allows.
    (tmp_path / "config.toml").unlink(missing_ok=True)
    cli("init", "--profile", "n", "--az", "us-east-1a", "--size", "1", "--source", str(source),
        "--instance-type", "t2.nano")  # fmt: skip


def _everything(ec2: Any) -> tuple[set[str], set[str], set[str]]:
    instances = {
        i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
    }
    volumes = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    groups = {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    return instances, volumes, groups


# Loaded by every Python process the test starts (PYTHONPATH): appends "service:Operation" for
# each API call botocore makes (paginators and waiters included; retries are one call) to the
# file named by EC2BACKUP_TEST_CALLS.
RECORDER = """
import os

_calls = os.environ.get("EC2BACKUP_TEST_CALLS")
if _calls:
    import botocore.client

    _make_api_call = botocore.client.BaseClient._make_api_call

    def _recording(self, operation_name, api_params):
        with open(_calls, "a") as f:
            f.write(f"{self.meta.service_model.signing_name}:{operation_name}\\n")
        return _make_api_call(self, operation_name, api_params)

    botocore.client.BaseClient._make_api_call = _recording
"""

# In the policy, never sent as a call of their own:
NOT_CALLED = {
    # tags go in the create calls' TagSpecifications, which AWS authorises as ec2:CreateTags
    "ec2:CreateTags",
}


def _policy_actions() -> set[str]:
    actions: set[str] = set()
    for statement in DOCUMENTED["Statement"]:
        action = statement["Action"]
        actions |= {action} if isinstance(action, str) else set(action)
    return actions


def test_every_call_the_commands_send_is_in_the_policy(iam_sandbox: Any, tmp_path: Path) -> None:
    """Every command, run as a user holding only the policy, with each AWS call recorded:
    no call outside the policy, and no action in the policy that nothing calls (but
    NOT_CALLED, explained there). Two backups (the second's growth: ListChangedBlocks), and
    the first archived and restored from the archive, so that every call is made."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(RECORDER)
    calls = tmp_path / "calls.txt"
    keys = iam_sandbox.create_iam_user("ec2backup-recorded", POLICY)
    cli = cli_as(iam_sandbox, keys, tmp_path)
    cli = Cli(
        env={
            **cli.env,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(hook), os.environ.get("PYTHONPATH")) if p
            ),
            "EC2BACKUP_TEST_CALLS": str(calls),
        },
        cwd=tmp_path,
    )
    source = tmp_path / "home"
    source.mkdir()
    make_sample_tree(source)
    # A profile name of its own: init then creates its security group (not reuses one).
    cli("init", "--profile", "rec", "--az", "us-east-1a", "--size", "1", "--source", str(source))
    assert calls.exists(), "the recorder did not load"
    first = cli("run", "--profile", "rec").stdout.strip()
    before = tree_digest(source)
    (source / "docs" / "later.txt").write_text("a second backup\n")
    # From another address than init's: the run adds its SSH rule (tagged) and revokes it.
    with iam_sandbox.configured(client_address="198.51.100.20"):
        second = cli("run", "--profile", "rec").stdout.strip()
    # The second snapshot's growth is counted against the first (ListChangedBlocks).
    added = cli.json("show", second)["stats"]["snapshot_added"]
    assert added.get("method") == "ListChangedBlocks" and added["added_bytes"], added
    cli("verify", "--profile", "rec")
    cli("restore", "--live", "--profile", "rec", "--to", str(tmp_path / "live"))
    assert tree_digest(tmp_path / "live" / "home") == tree_digest(source)
    cli("snapshots", "--profile", "rec")
    # The first snapshot to the archive (ModifySnapshotTier; never the newest), then restored
    # from it: the first restore starts its restore from the archive (DescribeSnapshotTierStatus,
    # RestoreSnapshotTier), which the sandbox ends at once (tier_delay 0); the second copies.
    cli("prune", "--profile", "rec", "--keep-last", "2", "--archive-after-days", "0", "--yes")
    restored = tmp_path / "restored"
    asked = cli("restore", "--run", first, "--to", str(restored), check=False)
    assert asked.returncode == 2 and "RestoreSnapshotTier" in asked.stderr, asked.stderr
    cli("restore", "--run", first, "--to", str(restored))
    assert tree_digest(restored / "home") == before
    cli("prune", "--profile", "rec", "--keep-last", "1", "--yes")
    cli("grow", "--profile", "rec", "--size", "2")  # ModifyVolume, DescribeVolumesModifications
    cli("reap", "--yes")
    cli("cost", "--profile", "rec")
    doctor = cli("doctor", "--profile", "rec", "--json", check=False)
    assert doctor.returncode in (0, 3), doctor.stderr  # its checks are not the point here
    recorded = set(calls.read_text().split())
    policy = _policy_actions()
    assert recorded - policy == set(), "calls the policy does not allow"
    assert policy - recorded == NOT_CALLED, "actions in the policy that no command used"
