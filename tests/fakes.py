"""In-memory stand-ins for the ports, for testing single steps and the engine's control flow.
Whole runs are tested against the local cloud (tests/e2e)."""

from __future__ import annotations

import itertools
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from ec2backup.core.tags import LIVE_INSTANCE_STATES
from ec2backup.errors import RemoteCommandError
from ec2backup.ports import (
    Attachment,
    CommandResult,
    Instance,
    LaunchSpec,
    Snapshot,
    SshTarget,
    SyncStats,
    Volume,
)

_ids = itertools.count(1)


def console_with_host_key() -> str:
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    return (
        "[   5.1] cloud-init[812]: boot\n-----BEGIN SSH HOST KEY KEYS-----\n"
        f"{key} root@ip-10-0-0-1\n-----END SSH HOST KEY KEYS-----\n"
    )


def _id(prefix: str) -> str:
    return f"{prefix}-{next(_ids):017x}"


@dataclass
class FakeEc2:
    az: str = "us-east-1a"
    instances: dict[str, Instance] = field(default_factory=dict)
    volumes: dict[str, Volume] = field(default_factory=dict)
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    terminate_answer: str = "shutting-down"  # the state TerminateInstances answers with
    console: str = field(default_factory=lambda: console_with_host_key())
    # Called before an action runs: lets a test make a call fail once.
    before: Callable[[str], None] = lambda _name: None

    def _call(self, name: str) -> None:
        self.calls.append(name)
        self.before(name)

    def add_volume(self, az: str | None = None, **kw: object) -> Volume:
        volume = Volume(
            id=_id("vol"), state="available", availability_zone=az or self.az, size_gib=1
        )
        volume = replace(volume, **kw)  # type: ignore[arg-type]
        self.volumes[volume.id] = volume
        return volume

    def resolve_image(self, ami: str) -> str:
        if ami.startswith("ami-"):
            return ami
        return "ami-0a4b0c0d0e0f00000" if "/arm64/" in ami else "ami-0123456789abcdef0"

    def image_architecture(self, image_id: str) -> str:
        return "arm64" if image_id.startswith("ami-0a4") else "x86_64"

    def instance_type_architectures(
        self, instance_types: Sequence[str]
    ) -> dict[str, tuple[str, ...]]:
        graviton = ("t4g.", "m7g.", "c7g.", "m6g.")
        return {
            t: ("arm64",) if t.startswith(graviton) else ("i386", "x86_64")
            for t in instance_types
            if t.count(".") == 1
        }

    def offered_instance_types(self, availability_zone: str) -> set[str]:
        return {"t3.micro", "t3.small", "t3.nano", "t2.nano", "t2.micro", "t4g.micro", "t4g.small"}

    def check_launch(self, spec: LaunchSpec) -> None:
        self._call("check_launch")

    def default_subnet(self, availability_zone: str) -> str | None:
        return f"subnet-{availability_zone}"

    def subnet_routes_to_internet(self, subnet_id: str) -> bool:
        return True

    def run_instance(self, spec: LaunchSpec) -> Instance:
        self._call("run_instance")
        if spec.client_token in self.tokens:
            return self.instances[self.tokens[spec.client_token]]
        instance = Instance(
            id=_id("i"),
            state="pending",
            availability_zone=spec.availability_zone,
            public_ip=f"127.0.1.{len(self.instances) + 2}",
            tags=dict(spec.tags),
        )
        self.instances[instance.id] = instance
        self.tokens[spec.client_token] = instance.id
        return instance

    def get_instance(self, instance_id: str) -> Instance | None:
        return self.instances.get(instance_id)

    def find_instances(
        self, tags: Mapping[str, str], states: Sequence[str] = LIVE_INSTANCE_STATES
    ) -> list[Instance]:
        return [
            i
            for i in self.instances.values()
            if i.state in states and all(i.tags.get(k) == v for k, v in tags.items())
        ]

    def terminate_instance(self, instance_id: str) -> str | None:
        self._call("terminate_instance")
        instance = self.instances.get(instance_id)
        if instance is None:
            return None
        self.instances[instance_id] = replace(instance, state="terminated")
        for volume in list(self.volumes.values()):
            if volume.attachment_to(instance_id):
                self.volumes[volume.id] = replace(volume, attachments=(), state="available")
        return self.terminate_answer

    def terminate_instances(self, instance_ids: Sequence[str]) -> None:
        self._call("terminate_instances")
        for instance_id in instance_ids:
            self.terminate_instance(instance_id)

    def get_console_output(self, instance_id: str) -> str:
        return self.console

    def get_volume(self, volume_id: str) -> Volume | None:
        return self.volumes.get(volume_id)

    def find_volumes(self, tags: Mapping[str, str]) -> list[Volume]:
        self._call("find_volumes")
        return [
            v for v in self.volumes.values() if all(v.tags.get(k) == t for k, t in tags.items())
        ]

    def create_volume(
        self,
        availability_zone: str,
        size_gib: int,
        tags: Mapping[str, str],
        client_token: str,
        volume_type: str = "gp3",
        encrypted: bool = True,
        snapshot_id: str | None = None,
    ) -> Volume:
        self._call("create_volume")
        if client_token in self.tokens:
            return self.volumes[self.tokens[client_token]]
        volume = self.add_volume(az=availability_zone, size_gib=size_gib, tags=dict(tags))
        self.tokens[client_token] = volume.id
        return volume

    def attach_volume(self, volume_id: str, instance_id: str, device: str) -> None:
        self._call("attach_volume")
        volume = self.volumes[volume_id]
        assert not volume.attachments, "attach of an attached volume"
        self.volumes[volume_id] = replace(
            volume, state="in-use", attachments=(Attachment(instance_id, device, "attached"),)
        )

    def detach_volume(self, volume_id: str, instance_id: str, force: bool = False) -> None:
        self._call("detach_volume")
        self.volumes[volume_id] = replace(
            self.volumes[volume_id], state="available", attachments=()
        )

    def create_snapshot(
        self, volume_id: str, description: str, tags: Mapping[str, str]
    ) -> Snapshot:
        self._call("create_snapshot")
        snapshot = Snapshot(
            id=_id("snap"),
            state="completed",
            volume_id=volume_id,
            started_at=datetime.now(UTC),
            tags=dict(tags),
        )
        self.snapshots[snapshot.id] = snapshot
        return snapshot

    def ensure_security_group(self, name: str, ssh_cidr: str, tags: Mapping[str, str]) -> str:
        self._call("ensure_security_group")
        return "sg-0123456789abcdef0"

    def delete_volume(self, volume_id: str) -> None:
        self._call("delete_volume")
        self.volumes.pop(volume_id, None)

    def get_snapshot(self, snapshot_id: str) -> Snapshot | None:
        return self.snapshots.get(snapshot_id)

    def delete_snapshot(self, snapshot_id: str) -> None:
        self._call("delete_snapshot")
        self.snapshots.pop(snapshot_id, None)

    def missing_security_groups(self, group_ids: Sequence[str]) -> list[str]:
        return []

    def find_snapshots(self, tags: Mapping[str, str]) -> list[Snapshot]:
        return [
            s for s in self.snapshots.values() if all(s.tags.get(k) == v for k, v in tags.items())
        ]

    def wait_instance_running(self, instance_id: str, timeout: float) -> Instance:
        instance = replace(self.instances[instance_id], state="running")
        self.instances[instance_id] = instance
        return instance

    def wait_volume_available(self, volume_id: str, timeout: float) -> Volume:
        return self.volumes[volume_id]

    def wait_volume_attached(self, volume_id: str, instance_id: str, timeout: float) -> Volume:
        volume = self.volumes[volume_id]
        assert volume.attachment_to(instance_id) is not None
        return volume

    def wait_snapshot_completed(
        self,
        snapshot_id: str,
        timeout: float,
        on_progress: Callable[[Snapshot], None] = lambda _s: None,
    ) -> Snapshot:
        self._call("wait_snapshot_completed")
        snapshot = replace(self.snapshots[snapshot_id], state="completed", progress="100%")
        self.snapshots[snapshot_id] = snapshot
        return snapshot

    def wait_instance_terminated(self, instance_id: str, timeout: float) -> None:
        self._call("wait_instance_terminated")
        assert self.instances[instance_id].state == "terminated"


@dataclass
class FakeHost:
    """What the instance's shell sees: devices, filesystems and mounts."""

    devices: set[str] = field(default_factory=set)
    filesystems: dict[str, str] = field(default_factory=dict)
    mounts: dict[str, str] = field(default_factory=dict)  # mount point -> device
    commands: list[str] = field(default_factory=list)
    used: int = 0  # bytes already in the backup's destinations
    free: int = 10 * 2**30  # bytes free on the mounted volume
    rsync_stuck: bool = False  # an rsync that outlives pkill
    rsync_running: bool = False  # a leftover rsync holding the mount until pkill ends it
    df_output: str | None = None  # what df prints instead of the free bytes


@dataclass
class FakeShell:
    host: FakeHost

    def run(self, command: str, *, sudo: bool = False, check: bool = True) -> CommandResult:
        self.host.commands.append(("sudo " if sudo else "") + command)
        result = self._script(command, sudo) if "\n" in command else self._run(command, sudo)
        if check and result.exit_status != 0:
            raise RemoteCommandError(f"{command} failed", exit_status=result.exit_status)
        return result

    def _script(self, script: str, sudo: bool) -> CommandResult:
        """A script of one statement per line, each optionally ending in `|| exit N` or
        `&& exit N` (N may be `$?`), as the steps write them."""
        stdout, last = "", CommandResult(0, "", "")
        for line in script.splitlines():
            match = re.fullmatch(r"(.*?) (\|\||&&) exit (\S+)", line)
            body = match.group(1) if match else line
            last = self._run(body, sudo)
            if not re.search(r"(^|\s)>/dev/null", body):
                stdout += last.stdout
            if match and (match.group(2) == "||") == (last.exit_status != 0):
                code = match.group(3)
                status = last.exit_status if code == "$?" else int(code)
                return CommandResult(status, stdout, last.stderr)
        return CommandResult(last.exit_status, stdout, last.stderr)

    def _run(self, command: str, sudo: bool) -> CommandResult:
        ok = CommandResult(0, "", "")
        if command == "exit 0":
            return ok
        words = shlex.split(command.replace("||", " || ").replace("&&", " && "))
        words[0] = words[0].lstrip("(")  # a subshell
        if words[0] == "readlink":
            for i, word in enumerate(words):
                if word == "-e" and words[i + 1] in self.host.devices:
                    return CommandResult(0, words[i + 1] + "\n", "")
            return CommandResult(0, "", "")
        if words[0] == "du":
            return CommandResult(0, f"{self.host.used}\n", "")
        if words[0] == "df":
            free = self.host.free if self.host.df_output is None else self.host.df_output
            return CommandResult(0, f"{free}\n", "")
        if words[0] == "pgrep":
            return CommandResult(1, "", "")
        if words[0] == "findmnt":
            device = self.host.mounts.get(words[words.index("--mountpoint") + 1])
            return CommandResult(0, device + "\n", "") if device else CommandResult(1, "", "")
        if words[0] == "blkid":  # blkid -p -o export DEVICE
            fs = self.host.filesystems.get(words[-1])
            if fs is None:
                return CommandResult(2, "", "")
            if fs.startswith("!"):  # a probe that fails, e.g. "!8" ambivalent result
                return CommandResult(int(fs[1:]), "", "blkid: ambivalent result")
            key = "PTTYPE" if fs in ("gpt", "dos") else "TYPE"
            return CommandResult(0, f"DEVNAME={words[-1]}\n{key}={fs}\n", "")
        if not sudo:
            return CommandResult(1, "", "permission denied")
        if words[0] == "pkill":  # then waits on the instance until no rsync is left
            if self.host.rsync_stuck:
                return CommandResult(1, "", "")
            self.host.rsync_running = False
            return ok
        if words[0] == "mkfs.ext4":
            self.host.filesystems[words[-1]] = "ext4"
        elif words[0] == "mkdir" and "mount" in words:
            fs = self.host.filesystems.get(words[-2], "!")
            if fs.startswith("!") or fs in ("gpt", "dos"):  # as mount's own probe decides
                return CommandResult(32, "", f"mount: {words[-1]}: wrong fs type")
            self.host.mounts[words[-1]] = words[-2]
        elif words[0] == "umount":
            if self.host.rsync_running:
                return CommandResult(32, "", f"umount: {words[-1]}: target is busy.")
            self.host.mounts.pop(words[-1], None)
        return ok

    def close(self) -> None:
        pass


@dataclass
class FakeConnector:
    host: FakeHost = field(default_factory=FakeHost)
    connects: int = 0

    def connect(self, target: SshTarget, deadline: float, *, trust_on_first_use: bool) -> FakeShell:
        self.connects += 1
        return FakeShell(self.host)


@dataclass
class FakeSyncer:
    calls: list[tuple[Path, str]] = field(default_factory=list)
    exit_code: int = 0

    def check_available(self) -> None:
        pass

    def compare(self, source: Path, target: SshTarget, remote_dir: str, **kw: object) -> list[str]:
        self.calls.append((source, remote_dir))
        return []

    def sync(self, source: Path, target: SshTarget, remote_dir: str, **kw: object) -> SyncStats:
        self.calls.append((source, remote_dir))
        return SyncStats(
            files_transferred=2, bytes_sent=100, total_size=1000, exit_code=self.exit_code
        )
