"""`doctor`: each check passes and fails for the right reason, with the fix; cloud checks run
against in-process moto; the command exits 3 when anything fails."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from ec2backup.adapters.aws.account import Boto3Account
from ec2backup.adapters.aws.client import Boto3Ec2
from ec2backup.adapters.rsync import RsyncSyncer
from ec2backup.commands import doctor
from ec2backup.commands.doctor import Check, check_database, run_checks
from ec2backup.db.sqlite_runs import SCHEMA_HEAD
from ec2backup.db.store import open_store
from ec2backup.errors import ToolMissingError
from tests.fakes import FakeSyncer

REGION = "us-east-1"
AZ = "us-east-1a"


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.check: c for c in checks}


def executable(directory: Path, name: str, script: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# --- database ---------------------------------------------------------------------------------


def test_database_missing_is_fine_and_not_created(tmp_path: Path) -> None:
    check = check_database(f"sqlite:///{tmp_path / 'none.db'}")
    assert check.status == "pass" and "created on first use" in check.detail
    assert not (tmp_path / "none.db").exists()


def test_database_current(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    open_store(url).close()
    check = check_database(url)
    assert check.status == "pass" and f"schema {SCHEMA_HEAD} (current)" in check.detail


def set_revision(path: Path, revision: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))


def test_database_older_schema_is_upgraded_on_next_use(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    open_store(url).close()
    set_revision(tmp_path / "db.sqlite", "0001_initial")
    check = check_database(url)
    assert check.status == "pass"
    assert f"schema 0001_initial; upgraded to {SCHEMA_HEAD}" in check.detail
    # Looking did not upgrade it.
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (
            "0001_initial",
        )


def test_database_newer_schema_fails(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    open_store(url).close()
    set_revision(tmp_path / "db.sqlite", "0099_future")
    check = check_database(url)
    assert check.status == "fail" and "newer than this ec2backup knows" in check.detail
    assert check.fix and "upgrade ec2backup" in check.fix


def test_database_garbage_fails(tmp_path: Path) -> None:
    (tmp_path / "db.sqlite").write_bytes(b"\x00garbage" * 512)
    check = check_database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert check.status == "fail" and "not a usable ec2backup database" in check.detail
    assert check.fix and "move the file aside" in check.fix


def test_database_of_something_else_fails(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "other.db") as conn:
        conn.execute("CREATE TABLE notes (x)")
    check = check_database(f"sqlite:///{tmp_path / 'other.db'}")
    assert check.status == "fail" and "no ec2backup schema" in check.detail


def test_database_empty_file_is_fine(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    assert check_database(f"sqlite:///{tmp_path / 'empty.db'}").status == "pass"


def test_database_bad_url(tmp_path: Path) -> None:
    check = check_database("not a url")
    assert check.status == "fail" and "not a database URL" in check.detail


# --- local tools ----------------------------------------------------------------------------


def test_rsync_missing_or_openrsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    check = doctor.check_rsync(RsyncSyncer())
    assert check.status == "fail" and "rsync is not installed" in check.detail
    assert check.fix and "install rsync" in check.fix

    executable(tmp_path, "ssh", "exit 0\n")
    executable(tmp_path, "rsync", "echo 'openrsync: protocol version 29'\n")
    check = doctor.check_rsync(RsyncSyncer())
    assert check.status == "fail" and "openrsync" in check.detail

    executable(tmp_path, "rsync", "echo 'rsync  version 3.2.7  protocol version 31'\n")
    check = doctor.check_rsync(RsyncSyncer())
    assert check.status == "pass", check


def test_ssh_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    check = doctor.check_ssh()
    assert check.status == "fail" and check.fix and "openssh" in check.fix.lower()
    executable(tmp_path, "ssh", "exit 0\n")
    assert doctor.check_ssh().status == "pass"


# --- config -----------------------------------------------------------------------------------

GOOD = '[profiles.p]\nregion = "us-east-1"\navailability_zone = "us-east-1a"\n'
# Two sources that would each wipe the other's copy: once a valid profile, now a config error.
SAME_DEST = (
    GOOD + 'sources = [{ path = "/home/a/docs", dest = "docs" }, '
    '{ path = "/home/b/docs", dest = "docs" }]\n'
)


@pytest.mark.parametrize(
    ("text", "profile", "status", "words"),
    [
        (None, None, "pass", "does not exist yet"),  # a fresh install, before `init`
        (None, "p", "fail", "file not found"),  # but a profile was asked for
        ("[profiles.p]\nregion = 1\n", None, "fail", "field 'region'"),
        (GOOD, None, "pass", "1 profile(s)"),
        (GOOD, "p", "pass", "'p' is valid"),
        (GOOD, "q", "fail", "unknown profile 'q'"),
        ("[prices]\nvolume_gb_month = -1\n", None, "fail", "prices.volume_gb_month"),
        ("[profiles\n", None, "fail", "not valid TOML"),
        (SAME_DEST, "p", "fail", "/home/a/docs and /home/b/docs both copy to 'docs'"),
        (SAME_DEST, None, "fail", "/home/a/docs and /home/b/docs both copy to 'docs'"),
    ],
)  # fmt: skip
def test_config(
    tmp_path: Path, text: str | None, profile: str | None, status: str, words: str
) -> None:
    path = tmp_path / "config.toml"
    if text is not None:
        path.write_text(text)
    check, _ = doctor.check_config(path, profile)
    assert check.status == status and words in check.detail, check


# --- everything, against moto --------------------------------------------------------------


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    # ssh "installed": the tools are checked elsewhere; here the cloud is.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(bin_dir, "ssh", "exit 0\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.raw: Any = boto3.client("ec2", region_name=REGION)
        images = self.raw.describe_images(
            Owners=["amazon"], Filters=[{"Name": "name", "Values": ["al2023-ami-*"]}]
        )["Images"]
        self.ami = images[0]["ImageId"]
        self.volume = self.raw.create_volume(AvailabilityZone=AZ, Size=4)["VolumeId"]
        self.group = self.raw.create_security_group(GroupName="g", Description="d")["GroupId"]
        self.config = tmp_path / "config.toml"
        self.db = f"sqlite:///{tmp_path / 'db.sqlite'}"

    def write(self, **fields: Any) -> None:
        values = {
            "region": REGION,
            "availability_zone": AZ,
            "volume_id": self.volume,
            "ami": self.ami,
            "security_group_ids": [self.group],
            **fields,
        }
        lines = [f"{k} = {json.dumps(v)}" for k, v in values.items() if v is not None]
        self.config.write_text("[profiles.p]\n" + "\n".join(lines) + "\n")

    def run(self, profile: str | None = "p") -> dict[str, Check]:
        return by_name(
            run_checks(
                config_path=self.config,
                db_url=self.db,
                profile_name=profile,
                ec2_factory=lambda region: Boto3Ec2(region, poll_interval=0.001),
                account_factory=lambda region: Boto3Account(region, boto3.session.Session()),
                syncer=FakeSyncer(),
            )
        )


@pytest.fixture
def world(aws_env: None, tmp_path: Path) -> Iterator[World]:
    with mock_aws():
        yield World(tmp_path)


def test_all_pass(world: World) -> None:
    world.write()
    checks = world.run()
    assert list(checks) == [
        "config",
        "rsync",
        "ssh",
        "database",
        "credentials",
        "region",
        "volume",
        "ami",
        "security groups",
    ]
    assert {c.status for c in checks.values()} == {"pass"}, checks
    assert "account 123456789012" in checks["credentials"].detail
    assert world.volume in checks["volume"].detail and "available" in checks["volume"].detail
    assert not (world.tmp_path / "db.sqlite").exists()  # doctor created nothing


def test_without_a_profile_only_local_checks_and_credentials(world: World) -> None:
    world.write()
    checks = world.run(profile=None)
    assert list(checks) == ["config", "rsync", "ssh", "database", "credentials"]


def test_volume_in_another_az(world: World) -> None:
    other = world.raw.create_volume(AvailabilityZone="us-east-1b", Size=1)["VolumeId"]
    world.write(volume_id=other)
    check = world.run()["volume"]
    assert check.status == "fail" and "is in us-east-1b" in check.detail
    assert check.fix == 'set availability_zone = "us-east-1b"'


def test_volume_attached(world: World) -> None:
    instance = world.raw.run_instances(
        ImageId=world.ami, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": AZ}
    )["Instances"][0]["InstanceId"]
    world.raw.attach_volume(VolumeId=world.volume, InstanceId=instance, Device="/dev/sdh")
    world.write()
    check = world.run()["volume"]
    assert check.status == "fail" and f"attached to instance {instance}" in check.detail
    assert check.fix and "reap" in check.fix


@pytest.mark.parametrize(
    ("fields", "name", "words", "fix"),
    [
        ({"volume_id": "vol-0123456789abcdef0"}, "volume", "does not exist", "volume id"),
        ({"volume_id": None}, "volume", "has no volume_id", "ec2backup init"),
        ({"ami": "ami-0123456789abcdef0"}, "ami", "AMI not found", "region"),
        ({"ami": "/no/such/parameter"}, "ami", "SSM parameter", "parameter name"),
        (
            {"security_group_ids": ["sg-0123456789abcdef0"]},
            "security groups",
            "not found in the region: sg-0123456789abcdef0",
            "security_group_ids",
        ),
    ],
)
def test_cloud_failures_come_with_the_fix(
    world: World, fields: dict[str, Any], name: str, words: str, fix: str
) -> None:
    world.write(**fields)
    checks = world.run()
    check = checks[name]
    assert check.status == "fail" and words in check.detail, check
    assert check.fix and fix in check.fix
    assert [c.check for c in checks.values() if c.status == "fail"] == [name]


def test_no_security_groups_is_fine(world: World) -> None:
    world.write(security_group_ids=None)
    check = world.run()["security groups"]
    assert check.status == "pass" and "default" in check.detail


def test_unknown_region_skips_the_rest(world: World) -> None:
    world.write(region="us-east-9", availability_zone="us-east-9a")
    checks = world.run()
    assert checks["region"].status == "fail" and "not an AWS region" in checks["region"].detail
    assert [checks[n].status for n in ("volume", "ami", "security groups")] == ["skip"] * 3


def test_bad_credentials_skip_the_cloud_checks(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.write()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(world.tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(world.tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    checks = world.run()
    assert checks["credentials"].status == "fail"
    assert "no AWS credentials" in checks["credentials"].detail
    assert checks["credentials"].fix and "aws configure" in checks["credentials"].fix
    assert {checks[n].status for n in ("region", "volume", "ami", "security groups")} == {"skip"}


def test_an_invalid_profile_skips_the_cloud_checks(world: World) -> None:
    world.config.write_text("[profiles.p]\nregion = 'nowhere'\n")
    checks = world.run()
    assert checks["config"].status == "fail"
    assert {checks[n].status for n in ("region", "volume", "ami", "security groups")} == {"skip"}


def test_a_missing_tool_fails_its_line_only(world: World) -> None:
    world.write()

    class Missing(FakeSyncer):
        def check_available(self) -> None:
            raise ToolMissingError("rsync is not installed", hint="install rsync 3.x")

    checks = by_name(
        run_checks(
            config_path=world.config,
            db_url=world.db,
            profile_name="p",
            ec2_factory=lambda region: Boto3Ec2(region),
            account_factory=lambda region: Boto3Account(region, boto3.session.Session()),
            syncer=Missing(),
        )
    )
    assert checks["rsync"] == Check("rsync", "fail", "rsync is not installed", "install rsync 3.x")
    assert [c.check for c in checks.values() if c.failed] == ["rsync"]


# --- the command --------------------------------------------------------------------------------


def test_cli_exits_3_and_prints_json(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "EC2BACKUP_CONFIG": str(tmp_path / "missing.toml"),
        "EC2BACKUP_DB": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # refuses at once: credentials fail
        "AWS_MAX_ATTEMPTS": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "ec2backup", "doctor", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3, result.stderr
    rows = {r["check"]: r for r in json.loads(result.stdout)}
    assert rows["config"]["status"] == "pass" and "does not exist yet" in rows["config"]["detail"]
    assert rows["credentials"]["status"] == "fail"
    assert rows["database"]["status"] == "pass"
    assert not (tmp_path / "db.sqlite").exists()
