"""The small interfaces the run and the commands drive, and the plain values they return.

The engine (``run/engine.py``) and the steps (``run/steps/``) only see these.
``adapters/aws/`` implements ``Ec2`` with boto3, ``adapters/host.py`` implements
``InstanceConnector`` and ``InstanceHost`` over SSH (asyncssh, ``adapters/ssh.py``) and
``adapters/rsync.py`` implements ``Syncer`` with the system rsync. Tests pass fakes for single
steps and the real adapters against the local cloud for whole runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from .core.tags import LIVE_INSTANCE_STATES


@dataclass(frozen=True)
class Instance:
    id: str
    state: str  # pending | running | shutting-down | terminated | stopping | stopped
    availability_zone: str
    public_ip: str | None = None
    private_ip: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    launch_time: datetime | None = None
    # The device of its root volume (/dev/sda1): never detached from a running instance, and
    # deleted with it (the AMI's DeleteOnTermination).
    root_device: str | None = None


@dataclass(frozen=True)
class Attachment:
    instance_id: str
    device: str
    state: str  # attaching | attached | detaching | detached | busy


@dataclass(frozen=True)
class Volume:
    id: str
    state: str  # creating | available | in-use | deleting | deleted | error
    availability_zone: str
    size_gib: int
    attachments: tuple[Attachment, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    encrypted: bool = False

    def attachment_to(self, instance_id: str) -> Attachment | None:
        return next((a for a in self.attachments if a.instance_id == instance_id), None)


@dataclass(frozen=True)
class Snapshot:
    id: str
    state: str  # pending | completed | error
    volume_id: str
    started_at: datetime | None = None
    size_gib: int | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    progress: str | None = None  # "40%" while pending
    storage_tier: str = "standard"  # standard | archive
    # Until when an archived snapshot is temporarily restored (readable, usable), if it is.
    restore_expiry: datetime | None = None


@dataclass(frozen=True)
class TierStatus:
    """A snapshot's tier and its last move between tiers (DescribeSnapshotTierStatus)."""

    snapshot_id: str
    tier: str  # standard | archive
    # archival-in-progress, archival-completed, temporary-restore-in-progress, ... or None
    operation: str | None = None
    progress: int | None = None  # percent
    started_at: datetime | None = None  # of the last operation
    archived_at: datetime | None = None  # when its archival completed
    restore_expiry: datetime | None = None


@dataclass(frozen=True)
class VolumeModification:
    """A change of a volume's size (ModifyVolume): ``modifying`` -> ``optimizing`` ->
    ``completed`` (or ``failed``). The new size can be used from ``optimizing`` on."""

    volume_id: str
    state: str  # modifying | optimizing | completed | failed
    original_size_gib: int
    target_size_gib: int
    progress: int = 0  # percent
    started_at: datetime | None = None

    @property
    def usable(self) -> bool:
        """The volume has its new size: the filesystem can grow into it."""
        return self.state in ("optimizing", "completed")


@dataclass(frozen=True)
class IngressRule:
    """One inbound rule of a security group (IPv4 CIDR rules; others have ``cidr`` None)."""

    id: str
    group_id: str
    protocol: str  # tcp | udp | icmp | -1 (all)
    from_port: int | None
    to_port: int | None
    cidr: str | None
    tags: Mapping[str, str] = field(default_factory=dict)

    def admits_ssh_from(self, address: str) -> bool:
        """Whether this rule lets TCP port 22 in from ``address`` (an IPv4 address)."""
        import ipaddress

        if self.cidr is None:
            return False
        try:
            inside = ipaddress.ip_address(address) in ipaddress.ip_network(self.cidr, strict=False)
        except ValueError:
            return False
        if self.protocol == "-1":
            return inside
        ports = self.from_port is not None and self.to_port is not None
        in_range = ports and self.from_port <= 22 <= self.to_port  # type: ignore[operator]
        return inside and self.protocol == "tcp" and bool(in_range)


@dataclass(frozen=True)
class LaunchSpec:
    image_id: str
    instance_type: str
    availability_zone: str
    client_token: str  # <= 64 ASCII characters; same token -> same instance
    tags: Mapping[str, str]
    user_data: str = ""
    security_group_ids: Sequence[str] = ()
    subnet_id: str | None = None


class Ec2(Protocol):
    """The EC2 calls a run makes. ``get_*`` return None for an id that does not exist;
    ``wait_*`` poll quickly and raise ``WaitTimeoutError`` after ``timeout`` seconds."""

    def resolve_image(self, ami: str) -> str: ...
    def image_architecture(self, image_id: str) -> str:
        """``x86_64`` or ``arm64`` (EC2's names)."""
        ...

    def instance_type_architectures(
        self, instance_types: Sequence[str]
    ) -> dict[str, tuple[str, ...]]:
        """The architectures each type supports; types EC2 does not know are left out."""
        ...

    def offered_instance_types(self, availability_zone: str, only: Sequence[str] = ()) -> set[str]:
        """The types offered in the zone, of ``only`` if given, else all of them."""
        ...

    def check_launch(self, spec: LaunchSpec) -> None:
        """A dry run of ``run_instance(spec)``: raises what IAM would refuse, creates nothing."""
        ...

    def run_instance(self, spec: LaunchSpec) -> Instance: ...
    def get_instance(self, instance_id: str) -> Instance | None: ...
    def find_instances(
        self, tags: Mapping[str, str], states: Sequence[str] = LIVE_INSTANCE_STATES
    ) -> list[Instance]: ...
    def terminate_instance(self, instance_id: str) -> str | None: ...
    def console_host_keys(self, instance_id: str) -> list[HostKey]:
        """The host keys cloud-init printed on the instance's console (its last complete
        block), each checked to decode as the type it claims; [] while none are printed."""
        ...

    def get_volume(self, volume_id: str) -> Volume | None: ...
    def find_volumes(self, tags: Mapping[str, str]) -> list[Volume]: ...
    def create_volume(
        self,
        availability_zone: str,
        size_gib: int,
        tags: Mapping[str, str],
        client_token: str,
        volume_type: str = "gp3",
        encrypted: bool = True,
        snapshot_id: str | None = None,
    ) -> Volume: ...
    def delete_volume(self, volume_id: str) -> None: ...
    def attach_volume(self, volume_id: str, instance_id: str, device: str) -> None: ...
    def detach_volume(self, volume_id: str, instance_id: str, force: bool = False) -> None: ...

    def create_snapshot(
        self, volume_id: str, description: str, tags: Mapping[str, str]
    ) -> Snapshot: ...
    def find_snapshots(self, tags: Mapping[str, str]) -> list[Snapshot]: ...
    def get_snapshot(self, snapshot_id: str) -> Snapshot | None: ...
    def ensure_security_group(self, name: str, ssh_cidr: str, tags: Mapping[str, str]) -> str: ...

    # SSH from where this host is now (commands/access.py): rules added per run, tagged.
    def security_group_tags(self, group_id: str) -> Mapping[str, str] | None:
        """The group's tags; None if it does not exist."""
        ...

    def ingress_rules(self, group_id: str) -> list[IngressRule]:
        """The group's inbound rules."""
        ...

    def find_ingress_rules(self, tags: Mapping[str, str]) -> list[IngressRule]:
        """Inbound rules of any group carrying all ``tags``."""
        ...

    def authorize_ssh(self, group_id: str, cidr: str, tags: Mapping[str, str]) -> str:
        """Add a rule letting TCP 22 in from ``cidr``, tagged in the same call; its id. An
        identical rule already there is success (its id)."""
        ...

    def revoke_ingress_rules(self, group_id: str, rule_ids: Sequence[str]) -> None:
        """Remove these inbound rules; rules (or a group) already gone are success."""
        ...

    def wait_instance_running(self, instance_id: str, timeout: float) -> Instance: ...
    def wait_volume_available(self, volume_id: str, timeout: float) -> Volume: ...
    def wait_volume_attached(self, volume_id: str, instance_id: str, timeout: float) -> Volume: ...
    def wait_instance_terminated(self, instance_id: str, timeout: float) -> None: ...
    def wait_snapshot_completed(
        self,
        snapshot_id: str,
        timeout: float,
        on_progress: Callable[[Snapshot], None] = lambda _s: None,
    ) -> Snapshot:
        """Wait until the snapshot is ``completed`` (a volume can be made from it then);
        ``on_progress`` sees it at every poll while it is pending."""
        ...

    # Batch calls for reap and prune, and read-only checks for doctor.
    def terminate_instances(self, instance_ids: Sequence[str]) -> None:
        """Terminate many instances (at most 1000 per call); unknown ids are success."""
        ...

    def delete_snapshot(self, snapshot_id: str) -> None:
        """Delete a snapshot; one that is already gone is success."""
        ...

    # Growing a volume (``ec2backup grow``, ``auto_grow_max_gib``).
    def modify_volume_size(self, volume_id: str, size_gib: int) -> VolumeModification:
        """ModifyVolume to ``size_gib``. AWS allows one modification per volume every 6
        hours and none while one is under way; a smaller size is refused."""
        ...

    def get_volume_modification(self, volume_id: str) -> VolumeModification | None:
        """The volume's latest modification, or None if it was never modified."""
        ...

    def wait_volume_resized(self, volume_id: str, timeout: float) -> VolumeModification:
        """Wait until the latest modification is ``usable`` (``optimizing`` or
        ``completed``); ``WaitTimeoutError`` after ``timeout`` s, ``CloudError`` if failed."""
        ...

    def missing_security_groups(self, group_ids: Sequence[str]) -> list[str]:
        """Those of ``group_ids`` that do not exist in the region."""
        ...

    def default_subnet(self, availability_zone: str) -> str | None:
        """The default VPC's subnet in the zone, if there is one."""
        ...

    def subnet_routes_to_internet(self, subnet_id: str) -> bool:
        """Whether the subnet routes 0.0.0.0/0 to an internet gateway."""
        ...

    # Snapshot tiers (retention's archive_after_days, restore of an archived snapshot).
    def archive_snapshot(self, snapshot_id: str) -> None:
        """Move a completed snapshot to the archive tier (ModifySnapshotTier)."""
        ...

    def restore_snapshot_tier(self, snapshot_id: str, days: int) -> None:
        """Restore an archived snapshot to the standard tier for ``days`` days."""
        ...

    def snapshot_tiers(self, snapshot_ids: Sequence[str]) -> dict[str, TierStatus]:
        """The tier status of each of ``snapshot_ids`` (those that exist)."""
        ...


@dataclass(frozen=True)
class BlockCount:
    """Blocks of a snapshot, as the EBS direct APIs list them."""

    blocks: int
    block_size: int  # bytes: 524,288 on EBS
    requests: int  # API calls the listing took (pages)

    @property
    def bytes(self) -> int:
        return self.blocks * self.block_size


class SnapshotBlocks(Protocol):
    """The EBS direct APIs that read snapshots. Snapshots must be completed and in the
    standard tier; errors are the project's (``CloudError`` and its subclasses)."""

    def added_blocks(self, earlier_snapshot_id: str | None, snapshot_id: str) -> BlockCount:
        """The blocks ``snapshot_id`` stores that ``earlier_snapshot_id`` (of the same
        lineage) does not hold as they are: ListChangedBlocks, counting the blocks the later
        snapshot has. Without an earlier snapshot, every block it holds (ListSnapshotBlocks):
        a first snapshot is a full one."""
        ...


class Account(Protocol):
    """The account-level probes ``ec2backup doctor`` makes (read-only)."""

    region: str

    def caller_identity(self) -> dict[str, str]:
        """STS GetCallerIdentity: ``account`` and ``arn``; raises if the credentials fail."""
        ...

    def region_status(self) -> str | None:
        """None for a region no partition knows; else its opt-in status."""
        ...


HostKey = tuple[str, str]  # (key type, base64 of the public key blob)


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str
    key_path: Path  # private key, mode 0600
    known_hosts_path: Path  # the pinned host keys: nothing else is ever accepted
    port: int = 22


@dataclass(frozen=True)
class DeviceContents:
    """What a block device holds, as the signatures on the device itself say."""

    filesystem: str | None = None  # "ext4", "xfs", ...
    partition_table: str | None = None  # "gpt", "dos"

    @property
    def empty(self) -> bool:
        """Nothing at all: the only contents that let ``init`` make a filesystem."""
        return self.filesystem is None and self.partition_table is None

    def __str__(self) -> str:
        if self.filesystem:
            return self.filesystem
        if self.partition_table:
            return f"partition table ({self.partition_table})"
        return "nothing"


class Unmounted(StrEnum):
    """What ``InstanceHost.unmount`` found and did."""

    DONE = "unmounted"
    NOT_MOUNTED = "not mounted"  # nothing to do
    BUSY = "busy"  # something holds the filesystem open; still mounted, nothing changed


@dataclass(frozen=True)
class SyncSpace:
    used: int  # bytes already in the destinations (blocks in use; 0 for new ones)
    free: int  # bytes free on the mounted volume
    # Per destination, the entries in it that are not directories (0 for a new one): what a
    # mirror could delete.
    files: Mapping[str, int] = field(default_factory=dict)
    device_bytes: int = 0  # the block device's size
    filesystem_bytes: int = 0  # the filesystem's size (blocks times block size)
    # Regular files in the destinations that share an inode, as groups of their paths (each
    # group one inode, two names or more): what writing in place writes through.
    hard_links: tuple[tuple[str, ...], ...] = ()

    @property
    def room_to_grow(self) -> int:
        """Bytes the device has beyond its filesystem (after the volume was grown)."""
        return max(self.device_bytes - self.filesystem_bytes, 0)


@dataclass(frozen=True)
class TreeFacts:
    """What a tree holds beyond what rsync compares (``treefacts.py`` reads it): paths are
    relative to the tree's root (``str`` of the file system's bytes, ``surrogateescape``)."""

    groups: tuple[tuple[str, ...], ...] = ()  # regular files that are one inode, each sorted
    holes: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # path -> size, data
    # For the paths asked about that are regular files: path -> (inode "dev:ino", data bytes).
    facts: Mapping[str, tuple[str, int]] = field(default_factory=dict)


class InstanceHost(Protocol):
    """The run's instance, as named operations over one open session.

    Privileged operations run as root whatever the login user (the adapter alone decides how).
    Failures raise the project's errors: ``RemoteCommandError`` for an operation the instance
    refused, a plain ``RemoteError`` for a lost connection (the engine retries the step).
    Outcomes a step decides on are returned as values.
    """

    @property
    def rsync_needs_sudo(self) -> bool:
        """Whether rsync's server on the instance must be started with ``sudo -n`` (the
        login user is not root): what ``Syncer``'s ``remote_sudo`` should say."""
        ...

    def find_device(self, volume_id: str, attached_as: str, timeout: float) -> str:
        """The block device (``/dev/nvme1n1``) of the volume attached as ``attached_as``
        (``/dev/sdf``): its Nitro name under /dev/disk/by-id, else its xvd or sd name, waiting
        up to ``timeout`` seconds for one to appear. Raises ``DeviceNotFoundError``."""
        ...

    def device_contents(self, device: str) -> DeviceContents:
        """What ``device`` holds, read from the device itself, never from a cache. A probe
        that fails or is ambiguous raises ``RemoteCommandError``: never "empty"."""
        ...

    def make_filesystem(self, device: str, label: str) -> None:
        """Make an ext4 filesystem labelled ``label`` on ``device``."""
        ...

    def mounted_device(self, mount_point: str) -> str | None:
        """What is mounted on ``mount_point`` (its source, resolved to the device path when
        it is one), or None."""
        ...

    def mount(self, device: str, mount_point: str, *, read_only: bool) -> None:
        """Create ``mount_point`` and mount ``device`` on it. ``read_only`` mounts with
        ``ro,noload``: not one block of the device is written, not even a journal replay.
        ``RemoteCommandError`` if mount refuses (no filesystem, more than one signature)."""
        ...

    def unmount(self, mount_point: str) -> Unmounted:
        """Unmount ``mount_point`` and confirm it is no longer a mount (umount writes back
        the filesystem's data before it returns). ``BUSY``: still mounted, held open."""
        ...

    def end_rsync(self, timeout: float) -> None:
        """End every rsync on the instance (one a killed earlier attempt left) and wait up
        to ``timeout`` seconds until none is left; ``RemoteCommandError`` if one stays."""
        ...

    def prepare_sync(
        self, mount_point: str, destinations: Sequence[str], rsync_timeout: float
    ) -> SyncSpace:
        """Everything a copy onto the volume needs, in one round trip and in this order:
        ``mount_point`` must be a mount (else ``InvalidResourceStateError``: a copy would
        fill the instance's root disk; nothing is touched); a leftover rsync is ended as by
        ``end_rsync``; the bytes already in the destinations (directories under
        ``mount_point``) and free on the volume, and the sizes of the device and of its
        filesystem, are measured, and the files in each destination counted; the destinations
        are created; their hard-linked files are listed (``SyncSpace.hard_links``)."""
        ...

    def grow_filesystem(self, mount_point: str) -> None:
        """Grow the filesystem mounted on ``mount_point`` to the size of its device, online
        (resize2fs); one already that size is left as it is."""
        ...

    def remove_files(self, paths: Sequence[str]) -> None:
        """Remove these names (regular files, as root); one already gone is success."""
        ...

    def tree_facts(self, root: str, paths: Sequence[str]) -> TreeFacts:
        """The hard-link groups under ``root`` on the instance (seen as root), and the facts
        of ``paths`` (relative to it). ``RemoteCommandError`` if the instance cannot say."""
        ...

    def is_directory(self, path: str) -> bool:
        """Whether ``path`` is a directory on the instance (seen as root)."""
        ...

    def list_directory(self, path: str, limit: int) -> list[str] | None:
        """The names in directory ``path`` (seen as root), sorted, at most ``limit``, each
        directory's with a trailing ``/``; None if ``path`` is not a directory."""
        ...

    def arm_idle_timer(self, seconds: int) -> None:
        """(Re)arm the instance's dead-man's switch (``core/deadman.py``): it powers itself
        off ``seconds`` from now unless armed again before. ``RemoteCommandError`` if the
        instance's systemd refused."""
        ...

    def close(self) -> None:
        """End the session. Safe to call twice."""
        ...


class InstanceConnector(Protocol):
    def pin_host_keys(self, target: SshTarget, keys: Sequence[HostKey]) -> None:
        """Make ``keys`` the only host keys accepted for ``target`` (its known_hosts file,
        replaced atomically, mode 0600). An empty list is refused: pinning nothing is not a
        pin."""
        ...

    def connect(self, target: SshTarget, deadline: float) -> InstanceHost:
        """Connect, retrying refused/reset connections and not-yet-installed keys until
        ``deadline`` (a ``time.monotonic()`` value). The host must present a key pinned in
        ``target.known_hosts_path`` (``HostKeyError`` otherwise, and when nothing is pinned:
        no key is ever trusted on first use)."""
        ...


@dataclass(frozen=True)
class SyncStats:
    files_transferred: int
    bytes_sent: int
    total_size: int
    exit_code: int  # 0, or 24 (some source files vanished: recorded as a warning)
    # What rsync said about single files ("file has vanished: ..."), in its words.
    problems: tuple[str, ...] = ()
    problem_count: int = 0  # all of them, when there were more than ``problems`` holds

    entries: int = 0  # what rsync's file list held: files, directories, links


@dataclass(frozen=True)
class Difference:
    """One path that is not the same in the source and in its copy, and how, in words
    ("permissions differ", "missing on the volume", "hard link split")."""

    path: str  # relative to the copy's root, as rsync shows names ("" for the root itself)
    what: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.path or '.'}: {', '.join(self.what)}"


@dataclass(frozen=True)
class TransferNote:
    """What the person watching a run is told around one rsync run (``StepContext.on_transfer``):
    before it, its ``label`` and, when known, the bytes its source holds; after it succeeded,
    its ``stats``."""

    label: str
    expected_bytes: int | None = None
    stats: SyncStats | None = None


class Syncer(Protocol):
    def check_available(self) -> None:
        """Raise ``ToolMissingError`` if rsync or ssh is missing or rsync is openrsync."""
        ...

    def sync(
        self,
        source: Path,
        target: SshTarget,
        remote_dir: str,
        *,
        excludes: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        remote_sudo: bool = False,
        on_progress: Callable[[str], None] | None = None,
        pull: bool = False,
    ) -> SyncStats:
        """Mirror ``source``'s contents into ``remote_dir``, every file as it is (contents,
        owners and groups by number, modes, times to the nanosecond, hard links, ACLs,
        extended attributes, holes, devices, FIFOs; deletions mirrored); with ``pull``, copy
        ``remote_dir``'s contents into ``source`` just as faithfully (a restore: nothing
        local is deleted). ``extra_args`` (the profile's ``rsync_args``) are passed where
        they apply. Raises ``SyncError`` for any exit but 0 and 24; its ``problems`` are
        rsync's lines naming the files it could not copy."""
        ...

    def compare(
        self,
        source: Path,
        target: SshTarget,
        remote_dir: str,
        *,
        excludes: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        remote_sudo: bool = False,
        checksum: bool = True,
        only: Sequence[str] | None = None,
    ) -> list[Difference]:
        """What differs between ``source`` and ``remote_dir`` (a dry run: nothing changes):
        contents (by checksum, unless ``checksum`` is off: then by size and time), owner,
        group, mode, times, ACLs, extended attributes, hard links split on the copy, paths
        missing on either side; [] when they match. ``only``: just these relative paths."""
        ...

    def count_deletions(
        self,
        source: Path,
        target: SshTarget,
        remote_dir: str,
        *,
        excludes: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        remote_sudo: bool = False,
    ) -> int:
        """How many non-directories a ``sync`` now would delete from ``remote_dir`` (a dry
        run: nothing changes)."""
        ...
