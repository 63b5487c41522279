"""The run's instance as named operations (the ``InstanceHost`` port), over one SSH connection.

Every operation is one command over SSH: a round trip, plus a sudo for the privileged ones
(~8 ms on the local cloud, more on AWS). Where no decision needs Python in between, one shell
script does the whole operation, and its own outcomes come back as exit statuses private to
this module, above the tools' own (umount's go up to 64, the others' to 2); they are turned
into typed results and the project's errors here and go no further.

Only this module decides sudo: when the login user is not root (``ubuntu`` on Ubuntu's AMIs),
privileged scripts run as ``sudo -n sh -c SCRIPT`` (``-n``: fail rather than wait for a
password nobody will type), and rsync's server is started the same way.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Sequence
from pathlib import Path

from ..core.deadman import arm_idle_script
from ..errors import (
    DeviceNotFoundError,
    InvalidResourceStateError,
    RemoteCommandError,
)
from ..ports import DeviceContents, HostKey, SshTarget, SyncSpace, TreeFacts, Unmounted
from .hostkeys import write_known_hosts
from .ssh import AsyncsshConnector, AsyncsshShell, CommandResult

NITRO_DEVICE = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{volume}"
POLL = 0.25  # seconds between looks, on the instance, while waiting for a device or an rsync
REMOVE_BATCH = 500  # names per rm command: far below the instance's ARG_MAX

# Exit statuses of this module's scripts.
_NOT_MOUNTED = 100
_RSYNC_LEFT = 101
_STILL_MOUNTED = 102
_NO_DEVICE = 103
_UNREADABLE = 104
_NO_PYTHON = 105
_NOT_A_DIRECTORY = 106

# The instance reads its side of verify's tree facts with the very code that reads the local
# side (Ubuntu's cloud images have python3: cloud-init is written in it).
TREEFACTS_SCRIPT = (Path(__file__).resolve().parent.parent / "treefacts.py").read_text()

q = shlex.quote


def privileged_command(script: str, user: str) -> str:
    """The command line that runs ``script`` as root for a login as ``user``."""
    if user == "root":
        return script
    return f"sudo -n sh -c {q(script)}"


def _is_mount(mount_point: str) -> str:
    """A test that succeeds when something is mounted on ``mount_point``."""
    return f"findmnt -n --mountpoint {q(mount_point)} >/dev/null"


def _polls(timeout: float) -> int:
    return max(1, math.ceil(timeout / POLL))


def _end_rsync_script(timeout: float) -> str:
    """A process killed mid-transfer leaves its rsync running (the local one until its next
    write, the instance's server longer). The instance is single-purpose and ours: end them,
    so two transfers never interleave and the volume can be unmounted. The wait until they
    are gone runs on the instance; a subshell, so that its exit ends only itself: 0 once no
    rsync is left, 1 if one outlives the wait."""
    return (
        "(pkill -KILL -x rsync; "
        f"for _ in $(seq {_polls(timeout)}); do pgrep -x rsync >/dev/null || exit 0; "
        f"sleep {POLL:g}; done; exit 1)"
    )


def _groups(records: str) -> tuple[tuple[str, ...], ...]:
    """find's NUL-terminated "inode path" records as groups of paths per inode (2 or more)."""
    by_inode: dict[str, list[str]] = {}
    for record in records.split("\0"):
        inode, _, path = record.partition(" ")
        if inode.isdigit() and path:
            by_inode.setdefault(inode, []).append(path)
    return tuple(tuple(sorted(p)) for p in by_inode.values() if len(p) > 1)


class SshInstanceHost:
    """``InstanceHost`` over an open asyncssh connection. Not thread-safe."""

    def __init__(self, shell: AsyncsshShell) -> None:
        self._shell = shell
        self._target = shell.target

    @property
    def rsync_needs_sudo(self) -> bool:
        return self._target.user != "root"

    # --- plumbing ---------------------------------------------------------------------------

    def _run(
        self, script: str, *, privileged: bool = False, input: str | None = None
    ) -> CommandResult:
        command = privileged_command(script, self._target.user) if privileged else script
        return self._shell.run(command, check=False, input=input)

    def _error(self, what: str, result: CommandResult | None = None) -> RemoteCommandError:
        detail = ""
        if result is not None:
            detail = result.stderr.strip() or f"exit status {result.exit_status}"
        return RemoteCommandError(
            f"{what}: {detail}" if detail else what,
            exit_status=result.exit_status if result is not None else None,
            resources={"host": self._target.host},
        )

    # --- devices ----------------------------------------------------------------------------

    def find_device(self, volume_id: str, attached_as: str, timeout: float) -> str:
        candidates = [
            NITRO_DEVICE.format(volume=volume_id.replace("-", "")),
            attached_as.replace("/dev/sd", "/dev/xvd"),
            attached_as,
        ]
        # readlink -e prints the device a name resolves to, and nothing for a missing name.
        probe = " || ".join(f"readlink -e {q(c)}" for c in candidates)
        script = (
            f"for _ in $(seq {_polls(timeout)}); do {probe} && exit 0; sleep {POLL:g}; done; "
            f"{probe} || exit {_NO_DEVICE}"
        )
        result = self._run(script)
        device = result.stdout.strip().splitlines()
        if result.exit_status == 0 and device and device[0].startswith("/dev/"):
            return device[0]
        if result.exit_status not in (0, _NO_DEVICE):
            raise self._error(f"could not look for volume {volume_id}'s device", result)
        raise DeviceNotFoundError(
            f"volume {volume_id} did not appear on the instance "
            f"(looked for {', '.join(candidates)})",
            resources={"host": self._target.host},
        )

    def device_contents(self, device: str) -> DeviceContents:
        # -p reads the device itself, never blkid's cache: a cache entry can describe whatever
        # last had that device name, and the format decision must not rest on it. blkid exits
        # 2 for "no signature" but also when it cannot open the device: hence the tests first.
        # Any other failure (an ambivalent probe, an I/O error) is an error, never "empty".
        d = q(device)
        script = f"[ -b {d} ] && [ -r {d} ] || exit {_UNREADABLE}\nblkid -p -o export {d}"
        result = self._run(script, privileged=True)
        if result.exit_status == 2:
            return DeviceContents()
        fields = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        if result.exit_status == _UNREADABLE:
            raise self._error(f"could not tell what {device} holds: not a readable block device")
        if result.exit_status != 0 or not (fields.get("TYPE") or fields.get("PTTYPE")):
            detail = result.stderr.strip() or result.stdout.strip() or "no output"
            raise self._error(
                f"could not tell what {device} holds (blkid -p exited {result.exit_status}: "
                f"{detail}); not touching it"
            )
        if fields.get("TYPE"):
            return DeviceContents(filesystem=fields["TYPE"])
        return DeviceContents(partition_table=fields["PTTYPE"])

    def make_filesystem(self, device: str, label: str) -> None:
        result = self._run(f"mkfs.ext4 -q -L {q(label)} {q(device)}", privileged=True)
        if result.exit_status != 0:
            raise self._error(f"could not make a filesystem on {device}", result)

    # --- mounts -----------------------------------------------------------------------------

    def mounted_device(self, mount_point: str) -> str | None:
        script = (
            f"src=$(findmnt -n -o SOURCE --mountpoint {q(mount_point)}) || exit {_NOT_MOUNTED}\n"
            'readlink -e "$src" || printf "%s\\n" "$src"'
        )
        result = self._run(script)
        if result.exit_status == _NOT_MOUNTED:
            return None
        if result.exit_status != 0:
            raise self._error(f"could not tell what is mounted on {mount_point}", result)
        return result.stdout.strip() or None

    def mount(self, device: str, mount_point: str, *, read_only: bool) -> None:
        # mount probes the device with libblkid and refuses one with no filesystem (or with
        # more than one signature: "more filesystems detected") without writing to it.
        # noload: a read-only mount does not even replay the journal.
        options = "-o ro,noload " if read_only else ""
        result = self._run(
            f"mkdir -p {q(mount_point)} && mount {options}{q(device)} {q(mount_point)}",
            privileged=True,
        )
        if result.exit_status != 0:
            raise self._error(f"could not mount {device} on {mount_point}", result)

    def unmount(self, mount_point: str) -> Unmounted:
        # One round trip: not mounted is done already; else unmount and confirm. No `sync`
        # first: umount writes back everything of that filesystem before it returns, and a
        # global sync would only flush the instance's root disk too.
        script = "\n".join(
            [
                f"{_is_mount(mount_point)} || exit {_NOT_MOUNTED}",
                f"umount {q(mount_point)} || exit $?",
                f"{_is_mount(mount_point)} && exit {_STILL_MOUNTED}",
                "exit 0",
            ]
        )
        result = self._run(script, privileged=True)
        if result.exit_status == 0:
            return Unmounted.DONE
        if result.exit_status == _NOT_MOUNTED:
            return Unmounted.NOT_MOUNTED
        if result.exit_status == _STILL_MOUNTED:
            raise self._error(f"{mount_point} is still mounted after umount")
        if "busy" in result.stderr:
            return Unmounted.BUSY
        raise self._error(f"umount {mount_point} failed", result)

    # --- transfers --------------------------------------------------------------------------

    def end_rsync(self, timeout: float) -> None:
        if self._run(_end_rsync_script(timeout), privileged=True).exit_status != 0:
            raise self._error("an earlier rsync on the instance did not end")

    def prepare_sync(
        self, mount_point: str, destinations: Sequence[str], rsync_timeout: float
    ) -> SyncSpace:
        # du counts the blocks in use (a copy keeps a file's holes: its data is what it
        # takes); it exits non-zero for a destination that does not exist yet: 0 bytes there,
        # and find counts nothing there. Then the device's size and its filesystem's (a grown
        # volume has room to grow into). find prints a dot per entry that is not a directory,
        # so a name holding a newline counts once. The destinations are created next (empty
        # directories: harmless if the space check then refuses the copy). Last, the
        # hard-linked files, NUL-terminated "inode path" records after the numbers: du has
        # just walked the same trees, so this walk is cached.
        dests = " ".join(q(f"{mount_point}/{d}") for d in destinations)
        counts = [
            f"find {q(f'{mount_point}/{d}')} -mindepth 1 ! -type d -printf . 2>/dev/null | wc -c"
            for d in destinations
        ]
        script = "\n".join(
            [
                f"{_is_mount(mount_point)} || exit {_NOT_MOUNTED}",
                f"{_end_rsync_script(rsync_timeout)} || exit {_RSYNC_LEFT}",
                # printf "%.0f": mawk (Debian's and Ubuntu's awk) prints 3e+09 for 3 GB.
                f"du -s -B1 {dests} 2>/dev/null "
                """| awk '{t += $1} END {printf "%.0f\\n", t}'""",
                f"df -B1 --output=avail {q(mount_point)} | tail -n 1",
                f"src=$(findmnt -n -o SOURCE --mountpoint {q(mount_point)})",
                'dev=$(blockdev --getsize64 "$src")',
                'fs=$(tune2fs -l "$src" 2>/dev/null | awk -F: '
                """'/^Block count/ {c = $2} /^Block size/ {b = $2} END {printf "%.0f", c * b}')""",
                'case "$fs" in ""|0) fs=$dev ;; esac',  # not ext*: nothing to grow
                'echo "$dev"; echo "$fs"',
                *counts,
                f"mkdir -p {dests}",
                f"find {dests} -xdev -type f -links +1 -printf '%i %p\\0'",
            ]
        )
        result = self._run(script, privileged=True)
        if result.exit_status == _NOT_MOUNTED:
            raise InvalidResourceStateError(
                f"{mount_point} is not mounted on the instance; refusing to copy onto its "
                "root disk",
                resources={"host": self._target.host},
            )
        if result.exit_status == _RSYNC_LEFT:
            raise self._error("an earlier rsync on the instance did not end")
        if result.exit_status != 0:
            raise self._error(f"could not create the destinations {dests}", result)
        head = 4 + len(destinations)  # used, free, device, filesystem, a count per destination
        parts = result.stdout.split("\n", head)
        numbers = [n.strip() for n in parts[:head]]
        links = parts[head] if len(parts) > head else ""
        if len(numbers) != head or not all(n.isdigit() for n in numbers):
            raise self._error(
                f"could not read the free space of {mount_point} on the instance "
                f"(got {' '.join(numbers)!r})"
            )
        files = dict(zip(destinations, (int(n) for n in numbers[4:]), strict=True))
        return SyncSpace(
            used=int(numbers[0]),
            free=int(numbers[1]),
            device_bytes=int(numbers[2]),
            filesystem_bytes=int(numbers[3]),
            files=files,
            hard_links=_groups(links),
        )

    def grow_filesystem(self, mount_point: str) -> None:
        script = (
            f"src=$(findmnt -n -o SOURCE --mountpoint {q(mount_point)}) || exit {_NOT_MOUNTED}\n"
            'resize2fs "$src"'
        )
        result = self._run(script, privileged=True)
        if result.exit_status == _NOT_MOUNTED:
            raise InvalidResourceStateError(
                f"{mount_point} is not mounted on the instance; nothing to grow",
                resources={"host": self._target.host},
            )
        if result.exit_status != 0:
            raise self._error(f"could not grow the filesystem on {mount_point}", result)

    def remove_files(self, paths: Sequence[str]) -> None:
        for start in range(0, len(paths), REMOVE_BATCH):
            names = " ".join(q(p) for p in paths[start : start + REMOVE_BATCH])
            result = self._run(f"rm -f -- {names}", privileged=True)
            if result.exit_status != 0:
                raise self._error("could not remove files on the volume", result)

    def tree_facts(self, root: str, paths: Sequence[str]) -> TreeFacts:
        script = (
            f"command -v python3 >/dev/null || exit {_NO_PYTHON}\n"
            f"exec python3 -c {q(TREEFACTS_SCRIPT)} {q(root)}"
        )
        result = self._run(script, privileged=True, input=json.dumps(list(paths)))
        if result.exit_status == _NO_PYTHON:
            raise self._error(
                "verify reads the copy's hard links and holes with python3, which the "
                "instance does not have (choose an AMI with python3, such as Ubuntu's)"
            )
        if result.exit_status != 0:
            raise self._error(f"could not read the tree {root} on the instance", result)
        try:
            found = json.loads(result.stdout)
            return TreeFacts(
                groups=tuple(tuple(group) for group in found["groups"]),
                holes={path: (size, data) for path, (size, data) in found["holes"].items()},
                facts={path: (inode, data) for path, (inode, data) in found["facts"].items()},
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise self._error(
                f"could not read the facts of {root} from the instance: {exc}"
            ) from exc

    def is_directory(self, path: str) -> bool:
        result = self._run(f"test -d {q(path)}", privileged=True)
        if result.exit_status not in (0, 1):
            raise self._error(f"could not look at {path}", result)
        return result.exit_status == 0

    def list_directory(self, path: str, limit: int) -> list[str] | None:
        # find -printf: one entry per line, "d name" for a directory; names with a line break
        # are rare enough here (a hint in an error message) to be shown split.
        script = (
            f"[ -d {q(path)} ] || exit {_NOT_A_DIRECTORY}\n"
            f"find {q(path)} -mindepth 1 -maxdepth 1 -printf '%y %f\\n' | LC_ALL=C sort -k2 "
            f"| head -n {int(limit)}"
        )
        result = self._run(script, privileged=True)
        if result.exit_status == _NOT_A_DIRECTORY:
            return None
        if result.exit_status != 0:
            raise self._error(f"could not list {path}", result)
        entries = []
        for line in result.stdout.splitlines():
            kind, _, name = line.partition(" ")
            entries.append(name + "/" if kind == "d" else name)
        return entries

    def arm_idle_timer(self, seconds: int) -> None:
        result = self._run(arm_idle_script(seconds), privileged=True)
        if result.exit_status != 0:
            raise self._error("could not arm the instance's idle timer (systemd-run)", result)

    def close(self) -> None:
        self._shell.close()

    def __enter__(self) -> SshInstanceHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SshInstanceConnector:
    """``InstanceConnector`` over SSH (``AsyncsshConnector``: retries, pinned host keys)."""

    def __init__(self, ssh: AsyncsshConnector | None = None) -> None:
        self._ssh = ssh or AsyncsshConnector()

    def pin_host_keys(self, target: SshTarget, keys: Sequence[HostKey]) -> None:
        write_known_hosts(target.known_hosts_path, target.host, target.port, keys)

    def connect(self, target: SshTarget, deadline: float) -> SshInstanceHost:
        return SshInstanceHost(self._ssh.connect(target, deadline))
