"""In-memory stand-ins for the ports, for testing single steps and the engine's control flow.
Whole runs are tested against the local cloud (tests/e2e)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from ec2backup.core.tags import LIVE_INSTANCE_STATES
from ec2backup.errors import (
    CloudError,
    DeviceNotFoundError,
    InvalidResourceStateError,
    RemoteCommandError,
    RemoteError,
    SyncError,
)
from ec2backup.ports import (
    Attachment,
    BlockCount,
    DeviceContents,
    Difference,
    HostKey,
    IngressRule,
    Instance,
    LaunchSpec,
    Snapshot,
    SshTarget,
    SyncSpace,
    SyncStats,
    TierStatus,
    TreeFacts,
    Unmounted,
    Volume,
    VolumeModification,
)

_ids = itertools.count(1)


def another_host_key() -> HostKey:
    """A host key that is not the one any run gave its instance."""
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    keytype, blob = key.split()[:2]
    return keytype, blob


def host_key_in(user_data: str) -> str | None:
    """The ``ssh_keys.ed25519_public`` of a cloud-config user data (cloud-init installs it)."""
    import yaml

    data = yaml.safe_load(user_data) if user_data.startswith("#cloud-config") else None
    keys = data.get("ssh_keys") if isinstance(data, dict) else None
    return keys.get("ed25519_public") if isinstance(keys, dict) else None


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
    # The host keys the console shows; None: the instance's own (from its user data).
    console: list[HostKey] | None = None
    user_data: dict[str, str] = field(default_factory=dict)  # by instance id
    groups: dict[str, dict[str, str]] = field(default_factory=dict)  # security group -> tags
    rules: dict[str, IngressRule] = field(default_factory=dict)  # inbound rules by id
    # snapshot id -> (its last tier operation, when it started); when it was archived.
    tier_operations: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    archived_at: dict[str, datetime] = field(default_factory=dict)
    # Called before an action runs: lets a test make a call fail once.
    before: Callable[[str], None] = lambda _name: None
    modifications: dict[str, VolumeModification] = field(default_factory=dict)
    # Called once a modification gives the volume its new size (id, GiB): the instance's device.
    resized: Callable[[str, int], None] = lambda _volume_id, _gib: None

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

    def offered_instance_types(self, availability_zone: str, only: Sequence[str] = ()) -> set[str]:
        offered = {
            "t3.micro",
            "t3.small",
            "t3.nano",
            "t2.nano",
            "t2.micro",
            "t4g.micro",
            "t4g.small",
        }
        return offered & set(only) if only else offered

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
            root_device="/dev/sda1",  # as EC2 reports an Ubuntu AMI's
        )
        self.instances[instance.id] = instance
        self.user_data[instance.id] = spec.user_data
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

    def console_host_keys(self, instance_id: str) -> list[HostKey]:
        if self.console is not None:
            return list(self.console)
        key = host_key_in(self.user_data.get(instance_id, ""))  # what cloud-init installed
        return [(key.split()[0], key.split()[1])] if key else []

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
        group = "sg-0123456789abcdef0"
        self.groups.setdefault(group, dict(tags))
        if not any(r.group_id == group for r in self.rules.values()):
            self._add_rule(group, ssh_cidr, {})
        return group

    def _add_rule(self, group_id: str, cidr: str, tags: Mapping[str, str]) -> str:
        rule = IngressRule(_id("sgr"), group_id, "tcp", 22, 22, cidr, dict(tags))
        self.rules[rule.id] = rule
        return rule.id

    def security_group_tags(self, group_id: str) -> Mapping[str, str] | None:
        return self.groups.get(group_id)

    def ingress_rules(self, group_id: str) -> list[IngressRule]:
        return [r for r in self.rules.values() if r.group_id == group_id]

    def find_ingress_rules(self, tags: Mapping[str, str]) -> list[IngressRule]:
        return [r for r in self.rules.values() if all(r.tags.get(k) == v for k, v in tags.items())]

    def authorize_ssh(self, group_id: str, cidr: str, tags: Mapping[str, str]) -> str:
        self._call("authorize_ssh")
        for rule in self.ingress_rules(group_id):
            if rule.cidr == cidr:
                return rule.id
        return self._add_rule(group_id, cidr, tags)

    def revoke_ingress_rules(self, group_id: str, rule_ids: Sequence[str]) -> None:
        self._call("revoke_ingress_rules")
        for rule_id in rule_ids:
            self.rules.pop(rule_id, None)

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

    def archive_snapshot(self, snapshot_id: str) -> None:
        self._call("archive_snapshot")
        snapshot = self.snapshots[snapshot_id]
        if snapshot.state != "completed" or snapshot.storage_tier == "archive":
            raise InvalidResourceStateError(f"{snapshot_id} cannot be archived")
        self.snapshots[snapshot_id] = replace(snapshot, storage_tier="archive")
        self.tier_operations[snapshot_id] = ("archival-completed", datetime.now(UTC))

    def restore_snapshot_tier(self, snapshot_id: str, days: int) -> None:
        self._call("restore_snapshot_tier")
        if self.snapshots[snapshot_id].storage_tier != "archive":
            raise InvalidResourceStateError(f"{snapshot_id} is not archived")
        self.tier_operations[snapshot_id] = ("temporary-restore-in-progress", datetime.now(UTC))

    def snapshot_tiers(self, snapshot_ids: Sequence[str]) -> dict[str, TierStatus]:
        self._call("snapshot_tiers")
        found = {}
        for snapshot_id in snapshot_ids:
            snapshot = self.snapshots.get(snapshot_id)
            if snapshot is None:
                continue
            operation, at = self.tier_operations.get(snapshot_id, (None, None))
            found[snapshot_id] = TierStatus(
                snapshot_id,
                snapshot.storage_tier,
                operation=operation,
                started_at=at,
                archived_at=self.archived_at.get(snapshot_id, at if operation else None),
                restore_expiry=snapshot.restore_expiry,
            )
        return found

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

    def modify_volume_size(self, volume_id: str, size_gib: int) -> VolumeModification:
        self._call("modify_volume_size")
        volume = self.volumes[volume_id]
        if volume_id in self.modifications:  # EBS: one modification every 6 hours
            raise InvalidResourceStateError("the volume was modified less than 6 hours ago")
        if size_gib < volume.size_gib:
            raise InvalidResourceStateError("New size cannot be smaller than existing size")
        self.volumes[volume_id] = replace(volume, size_gib=size_gib)
        modification = VolumeModification(volume_id, "modifying", volume.size_gib, size_gib)
        self.modifications[volume_id] = modification
        return modification

    def get_volume_modification(self, volume_id: str) -> VolumeModification | None:
        self._call("get_volume_modification")
        return self.modifications.get(volume_id)

    def wait_volume_resized(self, volume_id: str, timeout: float) -> VolumeModification:
        self._call("wait_volume_resized")
        modification = replace(self.modifications[volume_id], state="optimizing", progress=10)
        self.modifications[volume_id] = modification
        self.resized(volume_id, modification.target_size_gib)
        return modification

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


@dataclass(frozen=True)
class FakeMount:
    device: str
    read_only: bool = False


@dataclass
class FakeInstanceHost:
    """The instance behind the ``InstanceHost`` port: the devices its attached volumes appear
    as, what they hold, its mounts, a leftover rsync and the space on the volume. ``calls``
    lists the operations in order, one per round trip."""

    devices: dict[str, str] = field(default_factory=dict)  # volume id -> device path
    contents: dict[str, DeviceContents] = field(default_factory=dict)  # device -> what it holds
    unreadable: set[str] = field(default_factory=set)  # devices whose probe fails
    mounts: dict[str, FakeMount] = field(default_factory=dict)  # mount point -> what is there
    mount_log: list[FakeMount] = field(default_factory=list)  # every mount, in order
    directories: set[str] = field(default_factory=set)
    leftover_rsync: bool = False  # an rsync of an earlier attempt, holding the mount busy
    rsync_stuck: bool = False  # a leftover rsync that outlives being killed
    held_open: bool = False  # something else than rsync holds the mount busy
    used: int = 0  # bytes already in the backup's destinations
    free: int = 10 * 2**30  # bytes free on the mounted volume
    files: dict[str, int] = field(default_factory=dict)  # destination -> files in it
    facts: TreeFacts = field(default_factory=TreeFacts)  # what tree_facts answers
    device_bytes: int = 11 * 2**30  # the attached volume's size, as the instance sees it
    filesystem_bytes: int = 11 * 2**30  # its filesystem's
    space_unreadable: bool = False
    hard_links: tuple[tuple[str, ...], ...] = ()  # groups of names of one inode
    removed: list[str] = field(default_factory=list)  # names remove_files removed
    rsync_needs_sudo: bool = True  # as for Ubuntu's login user
    calls: list[str] = field(default_factory=list)
    closed: bool = False
    idle_armed: list[int] = field(default_factory=list)  # every arm of the idle timer

    def attach(self, volume_id: str, device: str = "/dev/nvme1n1", holds: str | None = None) -> str:
        """Make ``volume_id`` appear as ``device``, holding a filesystem of type ``holds``."""
        self.devices[volume_id] = device
        if holds is not None:
            self.contents[device] = DeviceContents(filesystem=holds)
        return device

    def _call(self, *words: object) -> None:
        if self.closed:
            raise RemoteError("the SSH connection is closed")
        self.calls.append(" ".join(str(w) for w in words))

    def find_device(self, volume_id: str, attached_as: str, timeout: float) -> str:
        self._call("find_device", volume_id)
        if volume_id not in self.devices:
            raise DeviceNotFoundError(f"volume {volume_id} did not appear on the instance")
        return self.devices[volume_id]

    def device_contents(self, device: str) -> DeviceContents:
        self._call("device_contents", device)
        if device in self.unreadable:
            raise RemoteCommandError(f"could not tell what {device} holds", exit_status=8)
        return self.contents.get(device, DeviceContents())

    def make_filesystem(self, device: str, label: str) -> None:
        self._call("make_filesystem", device, label)
        self.contents[device] = DeviceContents(filesystem="ext4")

    def mounted_device(self, mount_point: str) -> str | None:
        self._call("mounted_device", mount_point)
        mount = self.mounts.get(mount_point)
        return mount.device if mount else None

    def mount(self, device: str, mount_point: str, *, read_only: bool) -> None:
        self._call("mount", device, mount_point, "ro" if read_only else "rw")
        # As mount's own probe decides: a filesystem, or nothing mounted.
        if self.contents.get(device, DeviceContents()).filesystem is None:
            raise RemoteCommandError(f"could not mount {device} on {mount_point}: wrong fs type")
        if mount_point in self.mounts:
            raise RemoteCommandError(f"could not mount {device} on {mount_point}: busy")
        self.mounts[mount_point] = FakeMount(device, read_only)
        self.mount_log.append(self.mounts[mount_point])

    def unmount(self, mount_point: str) -> Unmounted:
        self._call("unmount", mount_point)
        if mount_point not in self.mounts:
            return Unmounted.NOT_MOUNTED
        if self.leftover_rsync or self.held_open:
            return Unmounted.BUSY
        del self.mounts[mount_point]
        return Unmounted.DONE

    def _end_rsync(self) -> None:
        if self.rsync_stuck:
            raise RemoteCommandError("an earlier rsync on the instance did not end")
        self.leftover_rsync = False

    def end_rsync(self, timeout: float) -> None:
        self._call("end_rsync")
        self._end_rsync()

    def prepare_sync(
        self, mount_point: str, destinations: Sequence[str], rsync_timeout: float
    ) -> SyncSpace:
        self._call("prepare_sync", mount_point, *destinations)
        if mount_point not in self.mounts:
            raise InvalidResourceStateError(f"{mount_point} is not mounted on the instance")
        self._end_rsync()
        if self.space_unreadable:
            raise RemoteCommandError(f"could not read the free space of {mount_point}")
        self.directories.update(f"{mount_point}/{d}" for d in destinations)
        files = {d: self.files.get(d, 0) for d in destinations}
        return SyncSpace(
            used=self.used,
            free=self.free,
            device_bytes=self.device_bytes,
            filesystem_bytes=self.filesystem_bytes,
            files=files,
            hard_links=self.hard_links,
        )

    def grow_filesystem(self, mount_point: str) -> None:
        self._call("grow_filesystem", mount_point)
        if mount_point not in self.mounts or self.mounts[mount_point].read_only:
            raise InvalidResourceStateError(f"{mount_point} is not mounted read-write")
        self.free += self.device_bytes - self.filesystem_bytes
        self.filesystem_bytes = self.device_bytes

    def remove_files(self, paths: Sequence[str]) -> None:
        self._call("remove_files", *paths)
        self.removed += paths

    def tree_facts(self, root: str, paths: Sequence[str]) -> TreeFacts:
        self._call("tree_facts", root)
        return self.facts

    def is_directory(self, path: str) -> bool:
        self._call("is_directory", path)
        return self._is_directory(path)

    def _is_directory(self, path: str) -> bool:
        inside = any(d.startswith(f"{path}/") for d in self.directories)
        return path in self.directories or path in self.mounts or inside

    def list_directory(self, path: str, limit: int) -> list[str] | None:
        self._call("list_directory", path)
        if not self._is_directory(path):
            return None
        inside = sorted(
            d.removeprefix(f"{path}/").split("/")[0] + "/"
            for d in self.directories
            if d.startswith(f"{path}/")
        )
        return list(dict.fromkeys(inside))[:limit]

    def arm_idle_timer(self, seconds: int) -> None:
        self._call("arm_idle_timer", seconds)
        self.idle_armed.append(seconds)

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeConnector:
    host: FakeInstanceHost = field(default_factory=FakeInstanceHost)
    connects: int = 0
    pinned: dict[Path, list[HostKey]] = field(default_factory=dict)  # by known_hosts file

    def pin_host_keys(self, target: SshTarget, keys: Sequence[HostKey]) -> None:
        assert keys, "pinning nothing"
        self.pinned[target.known_hosts_path] = list(keys)

    def connect(self, target: SshTarget, deadline: float) -> FakeInstanceHost:
        path = target.known_hosts_path
        # A run of an earlier version pinned by writing the file itself.
        assert self.pinned.get(path) or path.exists(), "connect without a pinned key"
        self.connects += 1
        self.host.closed = False
        return self.host


@dataclass
class FakeSyncer:
    calls: list[tuple[Path, str]] = field(default_factory=list)
    remote_sudo: list[bool] = field(default_factory=list)  # what each call was told
    kwargs: list[dict[str, object]] = field(default_factory=list)  # each call's keywords
    exit_code: int = 0
    problems: tuple[str, ...] = ()  # rsync's lines about single files
    differences: list[Difference] = field(default_factory=list)  # what compare finds
    deletions: int = 0  # what a sync would delete now
    counted: list[str] = field(default_factory=list)  # remote dirs count_deletions was asked

    def check_available(self) -> None:
        pass

    def compare(
        self, source: Path, target: SshTarget, remote_dir: str, **kw: object
    ) -> list[Difference]:
        self.calls.append((source, remote_dir))
        self.remote_sudo.append(bool(kw.get("remote_sudo")))
        self.kwargs.append(dict(kw))
        return list(self.differences)

    def count_deletions(
        self, source: Path, target: SshTarget, remote_dir: str, **kw: object
    ) -> int:
        self.counted.append(remote_dir)
        return self.deletions

    def sync(self, source: Path, target: SshTarget, remote_dir: str, **kw: object) -> SyncStats:
        self.calls.append((source, remote_dir))
        self.remote_sudo.append(bool(kw.get("remote_sudo")))
        self.kwargs.append(dict(kw))
        if self.exit_code == 23:
            raise SyncError(
                f"rsync could not copy everything (exit code 23): {self.problems[0]}",
                rsync_exit=23,
                problems=list(self.problems),
            )
        return SyncStats(
            files_transferred=2,
            bytes_sent=100,
            total_size=1000,
            exit_code=self.exit_code,
            problems=self.problems,
            problem_count=len(self.problems),
        )


@dataclass
class FakeBlocks:
    """The EBS direct APIs over ``FakeEc2``'s snapshots: ``blocks`` holds, per snapshot id,
    block index -> contents; a comparison counts the blocks whose contents differ."""

    ec2: FakeEc2
    blocks: dict[str, dict[int, bytes]] = field(default_factory=dict)
    calls: list[tuple[str | None, str]] = field(default_factory=list)
    block_size: int = 512 * 1024

    def added_blocks(self, earlier_snapshot_id: str | None, snapshot_id: str) -> BlockCount:
        self.calls.append((earlier_snapshot_id, snapshot_id))
        for one in (earlier_snapshot_id, snapshot_id):
            if one is not None and self.ec2.snapshots[one].state != "completed":
                raise CloudError(f"ebs: the snapshot {one} is not completed")
        later = self.blocks.get(snapshot_id, {})
        earlier = self.blocks.get(earlier_snapshot_id or "", {})
        added = [i for i, data in later.items() if earlier.get(i) != data]
        return BlockCount(blocks=len(added), block_size=self.block_size, requests=1)
