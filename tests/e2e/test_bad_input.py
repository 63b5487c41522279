"""Every bad input a user can give: one line that names the problem and the fix, a non-zero
exit, nothing created in the cloud and nothing lost in the database. docs/errors.md lists the
same cases (a test checks that every case id is there)."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Cli, ec2_client, mounted_read_only, tree_digest
from tests.sandbox.helpers import with_deadline

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class World:
    """One profile with a real, formatted volume, shared by the cases."""

    sandbox: Any
    root: Path
    volume_id: str
    source: Path
    ec2: Any
    done_run: str  # the init run of the shared volume, finished; in root/ec2backup.db

    def profile(self, **fields: object) -> str:
        values: dict[str, object] = {
            "region": "us-east-1",
            "availability_zone": "us-east-1a",
            "volume_id": self.volume_id,
            "sources": [{"path": str(self.source), "dest": "home"}],
            **fields,
        }
        body = "\n".join(f"{k} = {_toml(v)}" for k, v in values.items() if v is not None)
        return f"[profiles.p]\n{body}\n"


def _toml(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        items = []
        for item in value:
            if isinstance(item, dict):
                items.append("{ " + ", ".join(f'{k} = "{v}"' for k, v in item.items()) + " }")
            else:
                items.append(_toml(item))
        return "[" + ", ".join(items) + "]"
    return str(value)


@pytest.fixture(scope="module")
def world(sandbox: Any, tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("bad-input")
    source = root / "home"
    source.mkdir()
    (source / "a.txt").write_text("a\n")
    cli = Cli(env={**sandbox.env, **_paths(root)}, cwd=root)
    volume_id = cli(
        "init", "--profile", "init", "--az", "us-east-1a", "--size", "1", "--source", str(source)
    ).stdout.strip()
    ((done_run,),) = _query(root, "SELECT id FROM runs WHERE state = 'done'")
    return World(sandbox, root, volume_id, source, ec2_client(sandbox), done_run)


def _paths(root: Path) -> dict[str, str]:
    return {
        "EC2BACKUP_CONFIG": str(root / "config.toml"),
        "EC2BACKUP_DB": f"sqlite:///{root / 'ec2backup.db'}",
        "EC2BACKUP_DATA_DIR": str(root / "data"),
    }


@dataclass
class Case:
    id: str
    args: list[str]
    code: int
    words: str  # in the one error line
    fix: str  # also in that line: the fix
    config: Callable[[World], str] | None = None
    setup: Callable[[World, Path, dict[str, str]], None] = lambda w, d, env: None
    creates_run: bool = False  # the run is recorded (it failed after checks passed)
    settings: dict[str, Any] = field(default_factory=dict)  # local-cloud faults for the case
    resumable: bool = False  # the line offers `ec2backup resume`; without the fault, it finishes
    xfail: str = ""  # a known bug: the reason (strict, so the test flips when it is fixed)
    todo: str = ""  # for docs/errors.md, when the message has no hint after "; "
    after: Callable[[World, Path], None] | None = None  # more checks, once the command ended


def _launch_foreign(w: World, d: Path, env: dict[str, str]) -> None:
    """Attach the profile's volume to an instance that is not ec2backup's."""
    ami = w.sandbox.default_ami_id
    volume = w.ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    inst = w.ec2.run_instances(
        ImageId=ami, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": "us-east-1a"}
    )["Instances"][0]["InstanceId"]
    w.ec2.get_waiter("instance_running").wait(InstanceIds=[inst], WaiterConfig={"Delay": 1})
    w.ec2.attach_volume(VolumeId=volume, InstanceId=inst, Device="/dev/sdf")
    (d / "config.toml").write_text(w.profile(volume_id=volume))


def _subnet_without_internet(w: World, d: Path, env: dict[str, str]) -> None:
    """A VPC of its own with no internet gateway: its subnet routes nowhere outside."""
    vpc = w.ec2.create_vpc(CidrBlock="10.251.0.0/16")["Vpc"]["VpcId"]
    subnet = w.ec2.create_subnet(
        VpcId=vpc, CidrBlock="10.251.1.0/24", AvailabilityZone="us-east-1a"
    )
    (d / "config.toml").write_text(w.profile(subnet_id=subnet["Subnet"]["SubnetId"]))


def _volume_elsewhere(w: World, d: Path, env: dict[str, str]) -> None:
    volume = w.ec2.create_volume(AvailabilityZone="us-east-1b", Size=1)["VolumeId"]
    (d / "config.toml").write_text(w.profile(volume_id=volume))


def _unformatted_volume(w: World, d: Path, env: dict[str, str]) -> None:
    """A volume made outside ec2backup (no `init`): blank, no filesystem on it."""
    volume = w.ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    (d / "config.toml").write_text(w.profile(volume_id=volume))


def _big_source(size: int, **fields: object) -> Callable[[World, Path, dict[str, str]], None]:
    def setup(w: World, d: Path, env: dict[str, str]) -> None:
        big = d / "big"
        big.mkdir()
        with (big / "sparse.bin").open("wb") as f:  # sparse: no disk used here
            f.truncate(size)
        sources = [{"path": str(big), "dest": "big"}]
        (d / "config.toml").write_text(w.profile(sources=sources, **fields))

    return setup


def _two_sources(dest_a: str, dest_b: str) -> Callable[[World], str]:
    def config(w: World) -> str:
        other = w.root / "other"
        other.mkdir(exist_ok=True)
        sources = [{"path": str(w.source), "dest": dest_a}, {"path": str(other), "dest": dest_b}]
        return w.profile(sources=sources)

    return config


GUARD_FILES = [f"photo-{i}.jpg" for i in range(4)]


def _backed_up_then(dest: str, remove: Callable[[Path], None]) -> Callable[..., None]:
    """A source of four files backed up to ``dest`` (the profile keeps one snapshot), then
    ``remove`` applied to it: what the next run must not mirror."""

    def setup(w: World, d: Path, env: dict[str, str]) -> None:
        source = d / "photos"
        source.mkdir()
        for name in GUARD_FILES:
            (source / name).write_text(name)
        (d / "config.toml").write_text(
            w.profile(sources=[{"path": str(source), "dest": dest}], retention={"keep_last": 1})
        )
        subprocess.run(
            [sys.executable, "-m", "ec2backup", "run", "--profile", "p"],
            env=env, cwd=d, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        remove(source)

    return setup


def _volume_of(size: int, modified: str = "") -> Callable[[World, Path, dict[str, str]], None]:
    """The profile's volume: a new one of ``size`` GiB; ``modified="completed"``: grown by 1 GiB
    a moment ago, that modification over."""

    def setup(w: World, d: Path, env: dict[str, str]) -> None:
        volume = w.ec2.create_volume(
            AvailabilityZone="us-east-1a",
            Size=size,
            TagSpecifications=[
                {"ResourceType": "volume", "Tags": [{"Key": "ec2backup:managed", "Value": "true"}]}
            ],
        )["VolumeId"]
        if modified == "completed":
            w.ec2.modify_volume(VolumeId=volume, Size=size + 1)
            with_deadline(lambda: _modification_state(w.ec2, volume) == "completed", timeout=30)
        (d / "config.toml").write_text(w.profile(volume_id=volume))

    return setup


def _emptied(source: Path) -> None:
    """As an unmounted drive's mount point looks: there, and empty."""
    for child in source.iterdir():
        child.unlink()


def _mostly_deleted(source: Path) -> None:
    for name in GUARD_FILES[1:]:
        (source / name).unlink()


def _copy_intact(dest: str) -> Callable[[World, Path], None]:
    def check(w: World, d: Path) -> None:
        with mounted_read_only(w.sandbox.volume_image(w.volume_id)) as mnt:
            assert sorted(p.name for p in (mnt / dest).iterdir()) == GUARD_FILES

    return check


def _modification_state(ec2: Any, volume_id: str) -> str:
    (latest,) = ec2.describe_volumes_modifications(VolumeIds=[volume_id])["VolumesModifications"]
    return str(latest["ModificationState"])


def _no_tool(kind: str) -> Callable[[World, Path, dict[str, str]], None]:
    def setup(w: World, d: Path, env: dict[str, str]) -> None:
        bin_dir = d / "bin"
        bin_dir.mkdir()
        if kind == "openrsync":
            script = bin_dir / "rsync"
            script.write_text("#!/bin/sh\necho 'openrsync: protocol version 29'\n")
            script.chmod(0o755)
            (bin_dir / "ssh").symlink_to("/usr/bin/ssh")
        elif kind == "ssh":  # rsync 3.x is there, the OpenSSH client is not
            (bin_dir / "rsync").symlink_to("/usr/bin/rsync")
        env["PATH"] = str(bin_dir)

    return setup


def _no_credentials(w: World, d: Path, env: dict[str, str]) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    (d / "empty").write_text("")
    env["AWS_SHARED_CREDENTIALS_FILE"] = env["AWS_CONFIG_FILE"] = str(d / "empty")


def _copy_db(w: World, d: Path, env: dict[str, str]) -> None:
    """This case's database holds the finished init run of the shared volume."""
    import shutil

    shutil.copy(w.root / "ec2backup.db", d / "ec2backup.db")


def _schema(version: str) -> Callable[[World, Path, dict[str, str]], None]:
    def setup(w: World, d: Path, env: dict[str, str]) -> None:
        subprocess.run(
            [sys.executable, "-m", "ec2backup", "runs"], env=env, capture_output=True, check=True
        )
        with sqlite3.connect(d / "ec2backup.db") as conn:
            conn.execute("UPDATE alembic_version SET version_num = ?", (version,))

    return setup


def _corrupt(w: World, d: Path, env: dict[str, str]) -> None:
    (d / "ec2backup.db").write_bytes(b"\x00not a database" * 256)


def _existing_profile(w: World, d: Path, env: dict[str, str]) -> None:
    (d / "config.toml").write_text(w.profile())


# A new profile's init in the shared volume's zone; each case adds its source and its mistake.
INIT_Q = ("init", "--profile", "q", "--az", "us-east-1a", "--size", "1")

CASES = [
    Case("config-missing", ["run", "--profile", "p"], 2, "file not found", "ec2backup init"),
    Case(
        "config-malformed",
        ["run", "--profile", "p"],
        2,
        "not valid TOML",
        "config",
        config=lambda w: "[profiles.p\n",
    ),
    Case(
        "profile-unknown",
        ["run", "--profile", "nope"],
        2,
        "unknown profile 'nope'",
        "pass --profile",
        config=lambda w: w.profile(),
    ),
    Case(
        "field-unknown",
        ["run", "--profile", "p"],
        2,
        "field 'regoin'",
        "docs/configuration.md",
        config=lambda w: w.profile().replace("region", "regoin", 1),
        todo="fix the field's name (the reference lists every field)",
    ),
    Case(
        "az-not-in-region",
        ["run", "--profile", "p"],
        2,
        "not in region",
        "set availability_zone to a zone of us-east-1 (e.g. us-east-1a)",
        config=lambda w: w.profile(availability_zone="eu-west-1a"),
    ),
    Case(
        "volume-id-missing",
        ["run", "--profile", "p"],
        2,
        "field 'volume_id'",
        "ec2backup init",
        config=lambda w: w.profile(volume_id=None),
    ),
    Case(
        "source-missing",
        ["run", "--profile", "p"],
        2,
        "does not exist",
        "create it",
        config=lambda w: w.profile(sources=[{"path": "/no/such/dir", "dest": "x"}]),
    ),
    Case(
        "source-relative",
        ["run", "--profile", "p"],
        2,
        "must be an absolute path",
        "sources[0].path",
        config=lambda w: w.profile(sources=[{"path": "rel", "dest": "x"}]),
        todo="write the source's absolute path",
    ),
    Case(
        "dest-escapes",
        ["run", "--profile", "p"],
        2,
        "without '..'",
        "sources[0].dest",
        config=lambda w: w.profile(sources=[{"path": "/tmp", "dest": "../x"}]),
        todo="make dest a relative path without '..'",
    ),
    Case(
        "dest-same",
        ["run", "--profile", "p"],
        2,
        "both copy to 'home'",
        "give each source a dest of its own",
        config=_two_sources("home", "home"),
    ),
    Case(
        "dest-nested",
        ["run", "--profile", "p"],
        2,
        "copies to 'home/other', inside 'home'",
        "give each source a dest of its own",
        config=_two_sources("home", "home/other"),
    ),
    Case(
        "max-delete-percent-range",
        ["run", "--profile", "p"],
        2,
        "field 'max_delete_percent'",
        "less than or equal to 100",
        config=lambda w: w.profile(max_delete_percent=150),
        todo="give a percentage from 0 to 100",
    ),
    Case(
        "source-emptied",
        ["run", "--profile", "p"],
        2,
        "is empty but its copy on the volume (guard-empty) holds 4 files",
        "--allow-deletions",
        setup=_backed_up_then("guard-empty", _emptied),
        creates_run=True,
        after=_copy_intact("guard-empty"),
    ),
    Case(
        "deletions-over-limit",
        ["run", "--profile", "p"],
        2,
        "would delete 3 of the 4 files in its copy (guard-limit, 75%)",
        "--allow-deletions",
        setup=_backed_up_then("guard-limit", _mostly_deleted),
        creates_run=True,
        after=_copy_intact("guard-limit"),
    ),
    Case(
        "volume-unknown",
        ["run", "--profile", "p"],
        2,
        "vol-00000000000000001 does not exist",
        "check the volume id",
        config=lambda w: w.profile(volume_id="vol-00000000000000001"),
    ),
    Case(
        "volume-other-az",
        ["run", "--profile", "p"],
        2,
        "is in us-east-1b",
        'set availability_zone = "us-east-1b"',
        setup=_volume_elsewhere,
    ),
    Case(
        "volume-unformatted",
        ["run", "--profile", "p"],
        5,
        "has no filesystem",
        "ec2backup init",
        setup=_unformatted_volume,
        creates_run=True,
    ),
    Case(
        "volume-attached-elsewhere",
        ["run", "--profile", "p"],
        2,
        "is attached to instance",
        "which ec2backup did not launch; detach it there first",
        setup=_launch_foreign,
    ),
    Case(
        "data-larger-than-volume",
        ["run", "--profile", "p"],
        2,
        "more than volume",
        "grow the volume",
        setup=_big_source(2 * 2**30),
    ),
    Case(
        "data-larger-than-free-space",
        ["run", "--profile", "p"],
        2,
        "need about",
        "grow the volume",
        setup=_big_source(int(0.94 * 2**30)),
        creates_run=True,
    ),
    Case(
        "rsync-missing",
        ["run", "--profile", "p"],
        3,
        "rsync",
        "apt install rsync",
        config=lambda w: w.profile(),
        setup=_no_tool("none"),
    ),
    Case(
        "ssh-missing",
        ["run", "--profile", "p"],
        3,
        "ssh is not installed",
        "apt install openssh-client",
        config=lambda w: w.profile(),
        setup=_no_tool("ssh"),
    ),
    Case(
        "openrsync",
        ["run", "--profile", "p"],
        3,
        "openrsync",
        "install rsync",
        config=lambda w: w.profile(),
        setup=_no_tool("openrsync"),
    ),
    Case(
        "ami-missing",
        ["run", "--profile", "p"],
        5,
        "ami-0000000000000dead",
        "check the AMI id and the region",
        config=lambda w: w.profile(ami="ami-0000000000000dead"),
    ),
    Case(
        "instance-type-unknown",
        ["run", "--profile", "p"],
        2,
        "instance type 't3.mega' does not exist in us-east-1",
        "describe-instance-types",
        config=lambda w: w.profile(instance_type="t3.mega"),
    ),
    Case(
        "ami-architecture",
        ["run", "--profile", "p"],
        2,
        "is x86_64, but instance type t4g.micro runs arm64",
        "choose an AMI and instance types of one architecture",
        config=lambda w: w.profile(ami=w.sandbox.default_ami_id, instance_type="t4g.micro"),
    ),
    Case(
        "subnet-no-internet-route",
        ["run", "--profile", "p"],
        2,
        "has no route to the internet",
        "add a 0.0.0.0/0 route to an internet gateway",
        setup=_subnet_without_internet,
    ),
    Case(
        "init-type-not-offered",
        ["init", "--profile", "q", "--az", "us-east-1e", "--size", "1", "--source", "/tmp"],
        2,
        "t3.micro is not offered in us-east-1e; offered there: t2.nano",
        "describe-instance-type-offerings",
    ),
    Case(
        "no-credentials",
        ["run", "--profile", "p"],
        5,
        "no AWS credentials",
        "aws configure",
        config=lambda w: w.profile(),
        setup=_no_credentials,
    ),
    Case(
        "no-capacity",
        ["run", "--profile", "p"],
        5,
        "no capacity in us-east-1a for t3.micro",
        "fallback_instance_types",
        config=lambda w: w.profile(),
        creates_run=True,
        settings={"no_capacity": ("t3.micro",)},
        resumable=True,
    ),
    Case(
        "instance-quota",
        ["run", "--profile", "p"],
        5,
        "quota",
        "quota increase",
        config=lambda w: w.profile(),
        creates_run=True,
        settings={"instance_limit": 0},
        resumable=True,
    ),
    Case("run-unknown", ["resume", "20991231T000000Z-000000"], 2, "no run", "ec2backup runs"),
    Case(
        "resume-finished",
        ["resume", "{done_run}"],
        2,
        "is already done; there is nothing to resume",
        "start a new one with `ec2backup run`",
        setup=_copy_db,
        todo="nothing: the run is finished; start a new one with `ec2backup run`",
    ),
    Case(
        "clean-finished",
        ["resume", "--clean", "{done_run}"],
        2,
        "is already done; there is nothing to clean up",
        "start a new one",
        setup=_copy_db,
        todo="nothing: the run is finished; start a new one with `ec2backup run`",
    ),
    Case("show-unknown", ["show", "nope"], 2, "no run 'nope'", "ec2backup runs"),
    Case(
        "db-newer-schema",
        ["runs"],
        4,
        "newer than this ec2backup",
        "upgrade ec2backup",
        setup=_schema("9999_future"),
    ),
    Case(
        "db-corrupt",
        ["runs"],
        4,
        "not a valid ec2backup database",
        "move the file aside",
        setup=_corrupt,
    ),
    Case(
        "init-size",
        ["init", "--profile", "q", "--az", "us-east-1a", "--size", "0", "--source", "/tmp"],
        2,
        "--size 0 is out of range",
        "from 1 to 16384",
    ),
    Case(
        "init-source-missing",
        [*INIT_Q, "--source", "/no/such"],
        2,
        "source directory /no/such does not exist",
        "create it or fix the path",
    ),
    Case(
        "init-allow-ssh-from-bad",
        [*INIT_Q, "--source", "/tmp", "--allow-ssh-from", "everywhere"],
        2,
        "--allow-ssh-from 'everywhere' is not an address or network",
        "give e.g. 203.0.113.7",
    ),
    Case(
        "init-ami-missing",
        [*INIT_Q, "--source", "/tmp", "--ami", "ami-0000000000000dead"],
        5,
        "AMI not found",
        "check the AMI id and the region",
    ),
    Case(
        "init-profile-exists",
        ["init", "--profile", "p", "--az", "us-east-1a", "--size", "1", "--source", "/tmp"],
        2,
        "already exists",
        "choose another --profile",
        setup=_existing_profile,
    ),
    Case(
        "init-az-is-region",
        ["init", "--profile", "q", "--az", "us-east-1", "--size", "1", "--source", "/tmp"],
        2,
        "--az us-east-1 is a region, not an availability zone",
        "give one of its zones, e.g. --az us-east-1a",
    ),
    Case(
        "init-source-file",
        [*INIT_Q, "--source", "notes.txt"],
        2,
        "notes.txt is a file, not a directory",
        "give the directory to back up",
        setup=lambda w, d, env: (d / "notes.txt").write_text("a file\n") and None,
    ),
    Case(
        "data-larger-than-auto-grow",
        ["run", "--profile", "p"],
        2,
        "even grown to auto_grow_max_gib (2 GiB)",
        "raise auto_grow_max_gib",
        setup=_big_source(3 * 2**30, auto_grow_max_gib=2),
    ),
    Case(
        "metrics-file-relative",
        ["run", "--profile", "p"],
        2,
        "field 'metrics_file': must be an absolute path",
        "/var/lib/node_exporter/ec2backup.prom",
        config=lambda w: w.profile(metrics_file="ec2backup.prom"),
        todo="give the file's absolute path",
    ),
    Case(
        "metrics-file-not-prom",
        ["run", "--profile", "p"],
        2,
        "field 'metrics_file': must end in .prom",
        "node_exporter's textfile collector reads only those",
        config=lambda w: w.profile(metrics_file="/var/lib/node_exporter/ec2backup.txt"),
        todo="name the file NAME.prom",
    ),
    Case(
        "hook-empty",
        ["run", "--profile", "p"],
        2,
        "field 'on_failure': is empty",
        "give a shell command, or leave the field out",
        config=lambda w: w.profile(on_failure=" "),
    ),
    Case(
        "grow-shrink",
        ["grow", "--profile", "p", "--size", "1"],
        2,
        "is 2 GiB: EBS volumes cannot shrink",
        "give --size above 2",
        setup=_volume_of(2),
    ),
    Case(
        "grow-size",
        ["grow", "--profile", "p", "--size", "20000"],
        2,
        "--size 20000 is out of range",
        "from 1 to 16384",
        config=lambda w: w.profile(),
    ),
    Case(
        "grow-too-soon",
        ["grow", "--profile", "p", "--size", "4"],
        5,
        "the volume was modified less than 6 hours ago",
        "grow it again once those 6 hours are over",
        setup=_volume_of(1, modified="completed"),
    ),
    Case(
        "restore-path-missing",
        ["restore", "--live", "--profile", "p", "--path", "home/nope", "--to", "/tmp/x"],
        2,
        "the backup has no directory 'home/nope'",
        "nothing of it is left in the cloud",
        config=lambda w: w.profile(),
        creates_run=True,
    ),
    Case("reap-duration", ["reap", "--older-than", "2 hours"], 2, "is not a duration", "e.g. 90s"),
    Case(
        "restore-nothing",
        ["restore", "--to", "/tmp/x"],
        2,
        "say what to restore from",
        "exactly one of",
    ),
]


def _document(
    case_id: str, command: str, code: int, line: str, tmp: Path, *, todo: str = "", bug: str = ""
) -> None:
    """With ERRORS_DOC set, record the message as it appeared (scripts/errors_doc.py).
    ``todo``: what to do, when the message has no hint part (it is prescriptive itself);
    ``bug``: the case is a known bug (xfail)."""
    path = os.environ.get("ERRORS_DOC")
    if path:
        import json

        line = line.replace(str(tmp), "DIR")
        row = {"id": case_id, "command": command, "code": code, "line": line, "todo": todo}
        with open(path, "a") as f:
            f.write(json.dumps({**row, "bug": bug}) + "\n")


def _cloud(ec2: Any) -> tuple[set[str], set[str], set[str], set[str]]:
    """Live instances, volumes, snapshots and security groups, as boto3 sees them."""
    instances = {
        i["InstanceId"]
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] not in ("terminated", "shutting-down")
    }
    volumes = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    snapshots = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    groups = {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    return instances, volumes, snapshots, groups


def _query(d: Path, sql: str) -> list[tuple[Any, ...]]:
    db = d / "ec2backup.db"
    if not db.exists():
        return []
    try:
        conn = sqlite3.connect(db)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return []


def _runs(d: Path) -> list[tuple[str, str]]:
    """Every run and its state: what "nothing lost in the database" compares."""
    return [(str(i), str(s)) for i, s in _query(d, "SELECT id, state FROM runs ORDER BY id")]


def _error_lines(stderr: str) -> list[str]:
    """stderr without ec2backup's log records (INFO/WARNING lines and their continuations)."""
    return [
        ln for ln in stderr.splitlines() if not ln.startswith(("INFO", "WARNING", "ERROR", " "))
    ]


def _params(cases: list[Case]) -> list[Any]:
    return [
        pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)])
        if c.xfail
        else pytest.param(c, id=c.id)
        for c in cases
    ]


@pytest.mark.parametrize("case", _params(CASES))
def test_bad_input(case: Case, world: World, tmp_path: Path) -> None:
    env = {**os.environ, **world.sandbox.env, **_paths(tmp_path)}
    if case.config:
        (tmp_path / "config.toml").write_text(case.config(world))
    case.setup(world, tmp_path, env)
    args = [a.replace("{done_run}", world.done_run) for a in case.args]
    before_cloud = _cloud(world.ec2)
    before_runs = _runs(tmp_path)
    with world.sandbox.configured(**case.settings):
        result = subprocess.run(
            [sys.executable, "-m", "ec2backup", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
    lines = _error_lines(result.stderr)
    assert result.returncode == case.code, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ec2backup: error: ")
    _document(
        case.id,
        " ".join(case.args).replace("{done_run}", "RUN_ID"),
        result.returncode,
        # The shared world's directory (its source, "home") reads as the test's own.
        lines[0].replace(world.done_run, "RUN_ID").replace(str(world.root), "DIR"),
        tmp_path,
        todo=case.todo,
        bug=case.xfail,
    )
    assert case.words in lines[0] and case.fix in lines[0], lines[0]
    instances, volumes, snapshots, groups = _cloud(world.ec2)
    assert instances <= before_cloud[0], "an instance was left running"
    assert snapshots == before_cloud[2]
    assert groups == before_cloud[3], "a security group was created"
    if not case.creates_run:
        assert volumes <= before_cloud[1]
        assert _runs(tmp_path) == before_runs  # nothing recorded, nothing lost
        return
    (run_id, state), *more = sorted(set(_runs(tmp_path)) - set(before_runs))
    assert more == [] and state in ("failed", "aborted")
    assert (f"`ec2backup resume {run_id}` to continue" in lines[0]) == case.resumable, lines[0]
    if case.after is not None:
        case.after(world, tmp_path)
    if case.resumable:  # the fault is gone: the recorded run finishes where it stopped
        cli = Cli(env={**world.sandbox.env, **_paths(tmp_path)}, cwd=tmp_path)
        assert cli("resume", run_id).stdout.strip() == run_id
        assert cli.json("show", run_id)["state"] == "done"


def test_no_capacity_with_fallback_types_launches_the_next_type(
    world: World, tmp_path: Path
) -> None:
    cli = Cli(env={**world.sandbox.env, **_paths(tmp_path)}, cwd=tmp_path)
    (tmp_path / "config.toml").write_text(world.profile(fallback_instance_types=["t3a.micro"]))
    with world.sandbox.configured(no_capacity=("t3.micro",)):
        run_id = cli("run", "--profile", "p").stdout.strip()
    shown = cli.json("show", run_id)
    assert shown["state"] == "done" and shown["cost"]["instance_type"] == "t3a.micro"
    assert any("no capacity for t3.micro" in w for w in shown["warnings"])


def test_allow_deletions_mirrors_an_emptied_source(world: World, tmp_path: Path) -> None:
    """What the guard's message offers: the same run with --allow-deletions goes through and
    the copy is emptied, as asked."""
    env = {**os.environ, **world.sandbox.env, **_paths(tmp_path)}
    _backed_up_then("guard-allowed", _emptied)(world, tmp_path, env)
    cli = Cli(env={**world.sandbox.env, **_paths(tmp_path)}, cwd=tmp_path)
    refused = cli("run", "--profile", "p", check=False)
    assert refused.returncode == 2 and "--allow-deletions" in refused.stderr
    run_id = cli("run", "--profile", "p", "--allow-deletions").stdout.strip()
    assert cli.json("show", run_id)["state"] == "done"
    with mounted_read_only(world.sandbox.volume_image(world.volume_id)) as mnt:
        assert list((mnt / "guard-allowed").iterdir()) == []


def test_init_gives_sources_sharing_a_folder_name_destinations_of_their_own(
    world: World, tmp_path: Path
) -> None:
    """Two folders named alike would copy onto each other: init names them apart, says so,
    and the backup keeps both."""
    sources = [tmp_path / "a" / "docs", tmp_path / "b" / "docs"]
    for i, source in enumerate(sources):
        source.mkdir(parents=True)
        (source / "mine.txt").write_text(f"{i}\n")
    cli = Cli(env={**world.sandbox.env, **_paths(tmp_path)}, cwd=tmp_path)
    args = [*INIT_Q, "--source", str(sources[0]), "--source", str(sources[1])]
    made = cli(*args)
    assert "share a folder name" in made.stderr
    assert f"{sources[0]} -> 'a-docs'" in made.stderr and f"{sources[1]} -> 'b-docs'" in made.stderr
    volume_id = made.stdout.strip()
    cli("run", "--profile", "q")
    with mounted_read_only(world.sandbox.volume_image(volume_id)) as mnt:
        assert (mnt / "a-docs" / "mine.txt").read_text() == "0\n"
        assert (mnt / "b-docs" / "mine.txt").read_text() == "1\n"


def test_database_locked(world: World, tmp_path: Path) -> None:
    env = {**os.environ, **world.sandbox.env, **_paths(tmp_path)}
    (tmp_path / "config.toml").write_text(world.profile())
    subprocess.run(
        [sys.executable, "-m", "ec2backup", "runs"], env=env, check=True, capture_output=True
    )
    # Another writer holds the database (WAL lets readers through; a run must write).
    holder = sqlite3.connect(tmp_path / "ec2backup.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    before = _cloud(world.ec2)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "ec2backup", "run", "--profile", "p"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 4, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "is locked by another process" in result.stderr and "wait for" in result.stderr
    assert _cloud(world.ec2)[0] <= before[0] and _runs(tmp_path) == []
    _document("database-locked", "run --profile p", 4, result.stderr.strip(), tmp_path)


def test_a_snapshots_only_init_refuses_a_profile_entry_it_did_not_write(
    world: World, tmp_path: Path
) -> None:
    """Killed before its profile step; meanwhile the file got an entry of that name that is
    not the one this init writes. `resume` refuses in one line and leaves it as it is."""
    cli = Cli(env={**world.sandbox.env, **_paths(tmp_path)}, cwd=tmp_path)
    killed = Cli(env={**cli.env, "EC2BACKUP_CRASH_AT": "before:write_profile"}, cwd=tmp_path)
    init = (
        *("init", "--profile", "spinit-differs", "--az", "us-east-1a", "--size", "1"),
        *("--source", str(world.source), "--storage", "snapshots"),
    )
    assert killed(*init, check=False).returncode == -signal.SIGKILL
    ((run_id,),) = _query(tmp_path, "SELECT id FROM runs WHERE state = 'writing_profile'")
    config = tmp_path / "config.toml"
    theirs = (
        '[profiles.spinit-differs]\nregion = "us-east-1"\navailability_zone = "us-east-1a"\n'
        'storage = "snapshots"\nexcludes = ["*.tmp"]\n'
    )
    config.write_text(theirs)
    before = _cloud(world.ec2)
    result = cli("resume", run_id, check=False)
    lines = _error_lines(result.stderr)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    assert f"config {config}, profile 'spinit-differs': differs from the profile this" in lines[0]
    assert f"end this init with `ec2backup resume {run_id} --clean`" in lines[0]
    _document(
        "snapshot-init-profile-differs",
        "resume RUN_ID",
        2,
        lines[0].replace(run_id, "RUN_ID"),
        tmp_path,
    )
    assert config.read_text() == theirs
    after = _cloud(world.ec2)
    assert after[0] <= before[0] and after[1] <= before[1] and after[2] == before[2]
    # Ended as the line says: the entry it did not write stays, with the snapshot it may use.
    cli("resume", run_id, "--clean")
    assert config.read_text() == theirs
    assert cli.json("show", run_id)["state"] == "aborted"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_local_disk_full(world: World, tmp_path: Path, tiny_disk: Path) -> None:
    env = {**os.environ, **world.sandbox.env, **_paths(tiny_disk)}
    (tiny_disk / "config.toml").write_text(world.profile())
    subprocess.run(
        [sys.executable, "-m", "ec2backup", "runs"], env=env, check=True, capture_output=True
    )
    filler = tiny_disk / "filler"
    with pytest.raises(OSError), filler.open("wb") as f:
        while True:
            f.write(b"x" * 4096)
            f.flush()
    before = _cloud(world.ec2)
    result = subprocess.run(
        [sys.executable, "-m", "ec2backup", "run", "--profile", "p"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 4, result.stderr
    assert len(lines) == 1 and "disk is full" in lines[0] and "free some disk space" in lines[0]
    _document("local-disk-full", "run --profile p", 4, lines[0], tiny_disk)
    assert _cloud(world.ec2)[0] <= before[0] and _runs(tiny_disk) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_run_is_recorded_and_resumable(
    world: World, tmp_path: Path, sig: signal.Signals
) -> None:
    env = {**os.environ, **world.sandbox.env, **_paths(tmp_path)}
    (tmp_path / "config.toml").write_text(world.profile())
    # The signal arrives once the run is `syncing` (committed), from the process itself at
    # that point, exactly as a user's kill or Ctrl-C is delivered: deterministic, no race.
    env["EC2BACKUP_CRASH_AT"] = "before:sync"
    env["EC2BACKUP_CRASH_SIGNAL"] = "INT" if sig == signal.SIGINT else "TERM"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ec2backup", "run", "--profile", "p"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    ((run_id, state),) = _runs(tmp_path)
    assert state == "failed"
    last = err.strip().splitlines()[-1]
    name = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
    assert f"interrupted by {name}" in last and f"ec2backup resume {run_id}" in last
    # The run released its instance before it exited: nothing is left billing, and the
    # message says so with the one command that continues the run.
    assert f"[run {run_id}: nothing of it is left running; " in last
    assert f"`ec2backup resume {run_id}` to continue" in last
    assert not [
        i
        for r in world.ec2.describe_instances(
            Filters=[{"Name": "tag:ec2backup:run-id", "Values": [run_id]}]
        )["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] in ("pending", "running", "stopping", "stopped")
    ], "the interrupted run left an instance"
    _document(
        "ctrl-c" if sig == signal.SIGINT else "sigterm", "run --profile p", 130, last, tmp_path
    )
    cli = Cli(env={**world.sandbox.env, **_paths(tmp_path)}, cwd=tmp_path)
    cli("resume", run_id)
    shown = cli.json("show", run_id)
    assert shown["state"] == "done" and shown["failed_from"] == "syncing"


def test_every_case_is_documented() -> None:
    doc = (ROOT / "docs" / "errors.md").read_text()
    ids = [c.id for c in CASES] + [
        "database-locked",
        "local-disk-full",
        "ctrl-c",
        "sigterm",
        "no-capacity-fallback",
        "init-no-public-address",
        "expired-credentials",
        "file-unreadable",
    ]
    missing = [i for i in ids if not re.search(rf"`{re.escape(i)}`", doc)]
    assert missing == []
    assert len(ids) >= 25


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory an unprivileged user can reach (pytest's own tmp dirs are root-only)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="ec2backup-nobody-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_source_unreadable(world: World, shared_dir: Path) -> None:
    """Run as an unprivileged user (root reads everything) against a directory it cannot read."""
    home = shared_dir / "as-nobody"
    home.mkdir()
    home.chmod(0o777)
    secret = shared_dir / "secret"
    secret.mkdir(mode=0o700)
    (secret / "x").write_text("x")
    (home / "config.toml").write_text(world.profile(sources=[{"path": str(secret), "dest": "s"}]))
    env = {**os.environ, **world.sandbox.env, **_paths(home), "HOME": str(home)}
    before = _cloud(world.ec2)
    result = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "ec2backup",
            "run",
            "--profile",
            "p",
        ],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and f"source directory {secret} is not readable" in lines[0]
    assert "run as a user who can read it" in lines[0]
    assert _cloud(world.ec2)[0] <= before[0] and _runs(home) == []
    _document("source-unreadable", "run --profile p", 2, lines[0], shared_dir)


def test_a_file_it_cannot_read_is_named(world: World, shared_dir: Path) -> None:
    """An unprivileged user's backup of a directory holding a file only root can read: the
    run fails naming that file (rsync's own line, not "see previous errors"), `show` lists
    it and says what a non-root copy does not keep; resume --clean ends the run."""
    home = shared_dir / "as-nobody"
    home.mkdir()
    home.chmod(0o777)
    source = shared_dir / "mixed"
    source.mkdir()
    (source / "readable.txt").write_text("anyone\n")
    (source / "secret.txt").write_text("root only\n")
    (source / "secret.txt").chmod(0o600)
    (home / "config.toml").write_text(
        world.profile(sources=[{"path": str(source), "dest": "as-nobody"}])
    )
    env = {**os.environ, **world.sandbox.env, **_paths(home), "HOME": str(home)}
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

    def ec2backup(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*nobody, sys.executable, "-m", "ec2backup", *args],
            env=env, cwd=home, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    result = ec2backup("run", "--profile", "p")
    lines = _error_lines(result.stderr)
    assert result.returncode == 7, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f'send_files failed to open "{source}/secret.txt": Permission denied' in lines[0]
    assert "exclude them" in lines[0]
    ((run_id, _state),) = _runs(home)
    _document(
        "file-unreadable", "run --profile p", 7, lines[0].replace(run_id, "RUN_ID"), shared_dir
    )
    shown = json.loads(ec2backup("show", run_id, "--json").stdout)
    assert any(f"{source}/secret.txt" in w and "Permission denied" in w for w in shown["warnings"])
    assert any("not root" in w and "trusted.*" in w for w in shown["warnings"])
    cleaned = ec2backup("resume", run_id, "--clean")
    assert cleaned.returncode == 0, cleaned.stderr
    assert json.loads(ec2backup("show", run_id, "--json").stdout)["state"] == "aborted"


def test_files_that_change_during_the_copy_are_warnings(world: World, tmp_path: Path) -> None:
    """A log written to all through a (slowed) copy: the run succeeds and names it."""
    import threading
    import time

    source = tmp_path / "busy"
    source.mkdir()
    (source / "big.bin").write_bytes(os.urandom(2 * 2**20))
    log = source / "app.log"
    log.write_text("start\n")
    (tmp_path / "config.toml").write_text(
        world.profile(
            sources=[{"path": str(source), "dest": "busy"}], rsync_args=["--bwlimit=1000"]
        )
    )
    stop = threading.Event()

    def write_log() -> None:
        with log.open("a") as f:
            while not stop.wait(0.05):
                f.write(f"{time.time()}\n")
                f.flush()

    writer = threading.Thread(target=write_log)
    writer.start()
    try:
        cli = Cli(env={**world.sandbox.env, **_paths(tmp_path)}, cwd=tmp_path)
        run_id = cli("run", "--profile", "p").stdout.strip()
    finally:
        stop.set()
        writer.join()
    shown = cli.json("show", run_id)
    assert shown["state"] == "done"
    changed = [w for w in shown["warnings"] if "changed while the backup ran" in w]
    assert changed == [
        "changed while the backup ran, the copy may hold an earlier version or a mix: "
        f"{source}/app.log"
    ]


@pytest.fixture
def silent_proxy() -> Iterator[str]:
    """An HTTP proxy that accepts connections and never answers: checkip.amazonaws.com is
    unreachable the slow way (the local cloud has no internet, and DNS may fail or hang)."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


def test_init_without_a_reachable_checkip(world: World, tmp_path: Path, silent_proxy: str) -> None:
    """No --allow-ssh-from: init asks checkip.amazonaws.com for this host's address, gives up
    after its 5 s timeout, and says to pass the flag; no security group, volume or run."""
    import time

    env = {**os.environ, **world.sandbox.env, **_paths(tmp_path)}
    env.pop("EC2BACKUP_CHECKIP_URL")  # the local cloud's lookup: ask AWS's, unreachable here
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)  # the local cloud's endpoint is http://127.0.0.1: never proxied
    env["HTTPS_PROXY"] = env["https_proxy"] = silent_proxy
    args = list(INIT_Q)
    args += ["--source", str(world.source)]
    before = _cloud(world.ec2)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "ec2backup", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    lines = _error_lines(result.stderr)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    assert lines[0].startswith("ec2backup: error: cannot find this host's public address")
    assert "pass --allow-ssh-from" in lines[0]
    assert 5 <= elapsed < 60, f"checkip's timeout is 5 s; init took {elapsed:.1f} s"
    _document(
        "init-no-public-address", " ".join(args[:-2]) + " --source DIR", 2, lines[0], tmp_path
    )
    after = _cloud(world.ec2)
    assert after[1:] == before[1:] and after[0] <= before[0]
    assert _runs(tmp_path) == [] and not (tmp_path / "config.toml").exists()


def test_expired_credentials(iam_sandbox: Any, tmp_path: Path) -> None:
    """A key AWS no longer accepts (here: deleted, in the local cloud that enforces IAM; an
    expired session token gets the same kind of answer, AuthFailure/ExpiredToken)."""
    import boto3

    keys = iam_sandbox.create_iam_user(
        "ec2backup-expired",
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        },
    )
    admin = iam_sandbox.env
    boto3.client(
        "iam",
        endpoint_url=admin["AWS_ENDPOINT_URL"],
        region_name=admin["AWS_DEFAULT_REGION"],
        aws_access_key_id=admin["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=admin["AWS_SECRET_ACCESS_KEY"],
    ).delete_access_key(UserName="ec2backup-expired", AccessKeyId=keys["AWS_ACCESS_KEY_ID"])
    source = tmp_path / "home"
    source.mkdir()
    (tmp_path / "config.toml").write_text(
        "[profiles.p]\n"
        'region = "us-east-1"\n'
        'availability_zone = "us-east-1a"\n'
        'volume_id = "vol-0123456789abcdef0"\n'
        f'sources = [{{ path = "{source}", dest = "home" }}]\n'
    )
    env = {**os.environ, **admin, **keys, **_paths(tmp_path)}
    ec2 = ec2_client(iam_sandbox)  # the administrator's view
    before = _cloud(ec2)
    result = subprocess.run(
        [sys.executable, "-m", "ec2backup", "run", "--profile", "p"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = _error_lines(result.stderr)
    assert result.returncode == 5, result.stderr
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    assert "AWS rejected the credentials (AuthFailure" in lines[0]
    assert "refresh or configure AWS credentials" in lines[0]
    _document("expired-credentials", "run --profile p", 5, lines[0], tmp_path)
    assert _cloud(ec2) == before and _runs(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_from_outside_while_syncing(
    world: World, tmp_path: Path, sig: signal.Signals
) -> None:
    """The signal as a user's terminal (Ctrl-C) or systemd (stop) sends it: to the whole
    process group, ssh and rsync included, at whatever moment of the transfer the database
    shows `syncing`. rsync is slowed down (--bwlimit) so that the transfer lasts seconds."""
    import time

    source = tmp_path / "slow"
    source.mkdir()
    (source / "blob.bin").write_bytes(os.urandom(4 * 2**20))
    env = {**os.environ, **world.sandbox.env, **_paths(tmp_path)}
    (tmp_path / "config.toml").write_text(
        world.profile(
            sources=[{"path": str(source), "dest": "slow"}], rsync_args=["--bwlimit=1000"]
        )
    )
    # The database exists before the run: this test's plain sqlite3 reader does not see what
    # a WAL writer puts into a database file that was empty when the reader opened it.
    subprocess.run(
        [sys.executable, "-m", "ec2backup", "runs"], env=env, check=True, capture_output=True
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ec2backup", "run", "--profile", "p"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell job has
    )
    try:
        deadline = time.monotonic() + 120
        while [s for _, s in _runs(tmp_path)] != ["syncing"]:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"never syncing: {_runs(tmp_path)}"
            time.sleep(0.05)
        os.killpg(proc.pid, sig)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    ((run_id, state),) = _runs(tmp_path)
    assert state == "failed"
    lines = _error_lines(err)
    name = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
    assert len(lines) == 1, err
    assert f"interrupted by {name}" in lines[0] and f"ec2backup resume {run_id}" in lines[0]
    cli = Cli(env={**world.sandbox.env, **_paths(tmp_path)}, cwd=tmp_path)
    shown = cli.json("show", run_id)
    assert shown["failed_from"] == "syncing" and name in (shown["error"] or "")
    cli("resume", run_id)
    shown = cli.json("show", run_id)
    assert shown["state"] == "done" and shown["failed_from"] == "syncing"
    with mounted_read_only(world.sandbox.volume_image(world.volume_id)) as mnt:
        assert tree_digest(mnt / "slow") == tree_digest(source)
