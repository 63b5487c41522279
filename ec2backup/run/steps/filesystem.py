"""The volume's filesystem on the instance: found, made (init only), mounted and unmounted."""

from __future__ import annotations

import shlex
import time

from ...errors import (
    DeviceNotFoundError,
    Ec2BackupError,
    InvalidResourceStateError,
    RemoteCommandError,
    UnformattedVolumeError,
)
from ...ports import (
    RemoteShell,
)
from ..context import StepContext
from .attachment import DEVICE_NAME
from .instance import instance_alive
from .session import _command_error, _sudo, remote

NITRO_DEVICE = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{volume}"
DEVICE_TIMEOUT = 60.0
POLL = 0.25


def try_unmount(ctx: StepContext, deadline_seconds: float) -> str:
    """Force-clean's unmount: only if the instance is alive and answers SSH in time with the
    host key already pinned for this run. Never blocks the cleanup for long."""
    if not instance_alive(ctx) or not ctx.run.ssh_address:
        return "instance not running: nothing to unmount"
    if not (ctx.known_hosts.exists() and ctx.known_hosts.stat().st_size > 0):
        return "no pinned host key: did not log in to unmount"
    try:
        if ctx.shell is None:
            ctx.shell = ctx.connector.connect(
                ctx.ssh_target(), time.monotonic() + deadline_seconds, trust_on_first_use=False
            )
        return ensure_unmounted(ctx)
    except Ec2BackupError as exc:
        ctx.close_shell()
        message = f"could not unmount ({exc.message}); detaching anyway"
        ctx.run.warnings = [*ctx.run.warnings, message]
        ctx.recorder.save()
        return message


def find_device(ctx: StepContext, shell: RemoteShell) -> str:
    """The attached volume's block device as the instance shows it, waiting for it to appear."""
    assert ctx.run.volume_id is not None
    candidates = [
        NITRO_DEVICE.format(volume=ctx.run.volume_id.replace("-", "")),
        DEVICE_NAME.replace("/dev/sd", "/dev/xvd"),
        DEVICE_NAME,
    ]
    probe = " || ".join(f"readlink -e {shlex.quote(c)}" for c in candidates)
    deadline = time.monotonic() + DEVICE_TIMEOUT
    while True:
        result = shell.run(f"{probe} || true", check=False)
        device = result.stdout.strip().splitlines()
        if device and device[0].startswith("/dev/"):
            return device[0]
        if time.monotonic() >= deadline:
            raise DeviceNotFoundError(
                f"volume {ctx.run.volume_id} did not appear on the instance "
                f"(looked for {', '.join(candidates)})",
                run_id=ctx.run.id,
                resources=ctx.resources(),
            )
        time.sleep(POLL)


def _findmnt(mount_point: str) -> str:
    """Prints what is mounted on ``mount_point``; exits non-zero if nothing is."""
    return f"findmnt -n -o SOURCE --mountpoint {shlex.quote(mount_point)}"


def _mounted_source(shell: RemoteShell, mount_point: str) -> str | None:
    result = shell.run(_findmnt(mount_point), check=False)
    if result.exit_status != 0:
        return None
    return result.stdout.strip() or None


def _filesystem_type(ctx: StepContext, shell: RemoteShell, device: str) -> str:
    """What the device holds: a filesystem type ("ext4"), "partition table (gpt)", or "" for
    nothing at all, the only answer that lets ``init`` format it.

    ``-p`` reads the device itself, never blkid's cache: a cache entry (trusted for up to 200 s)
    can describe whatever last had that device name, and the format decision must not rest on
    it. blkid exits 2 when it finds no signature; any other failure (an ambivalent probe, an
    I/O error) is an error, never "empty".
    """
    result = shell.run(f"blkid -p -o export {shlex.quote(device)}", sudo=_sudo(ctx), check=False)
    if result.exit_status == 2:
        return ""
    fields = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    if result.exit_status != 0 or not (fields.get("TYPE") or fields.get("PTTYPE")):
        raise RemoteCommandError(
            f"could not tell what {device} holds (blkid -p exited {result.exit_status}: "
            f"{result.stderr.strip() or result.stdout.strip() or 'no output'}); not touching it",
            exit_status=result.exit_status,
            run_id=ctx.run.id,
            resources=ctx.resources(),
        )
    if fields.get("TYPE"):
        return fields["TYPE"]
    return f"partition table ({fields['PTTYPE']})"


def ensure_formatted(ctx: StepContext) -> str:
    shell = remote(ctx)
    device = find_device(ctx, shell)
    existing = _filesystem_type(ctx, shell, device)
    if existing:
        return f"{device} already has a {existing} filesystem; left as it is"
    shell.run(f"mkfs.ext4 -q -L ec2backup {shlex.quote(device)}", sudo=_sudo(ctx))
    return f"made ext4 on {device}"


def ensure_mounted(ctx: StepContext, *, read_only: bool = False) -> str:
    shell = remote(ctx)
    mount_point = ctx.profile.mount_point
    device = find_device(ctx, shell)
    source = _mounted_source(shell, mount_point)
    if source is not None:
        real = shell.run(f"readlink -e {shlex.quote(source)}", check=False).stdout.strip()
        if real == device:
            return f"{device} already mounted on {mount_point}"
        raise InvalidResourceStateError(
            f"{mount_point} on the instance is already a mount of {source}",
            run_id=ctx.run.id,
            hint="choose another mount_point in the profile",
            resources=ctx.resources(),
        )
    q = shlex.quote
    # Read-only for restore and verify: noload also skips replaying the journal, so not one
    # block of the volume is written.
    options = "-o ro,noload " if read_only else ""
    # mount probes the device with libblkid and refuses one with no filesystem (or with more
    # than one signature: "more filesystems detected") without writing to it; blkid runs only
    # to say why a mount failed. One sudo round trip fewer on every run.
    result = shell.run(
        f"mkdir -p {q(mount_point)} && mount {options}{q(device)} {q(mount_point)}",
        sudo=_sudo(ctx),
        check=False,
    )
    if result.exit_status != 0:
        if not _filesystem_type(ctx, shell, device):
            raise UnformattedVolumeError(
                f"volume {ctx.run.volume_id} has no filesystem",
                run_id=ctx.run.id,
                hint="create the volume with `ec2backup init`; a backup never formats a volume",
                resources=ctx.resources(),
            )
        raise _command_error(ctx, f"could not mount {device} on {mount_point}", result)
    return f"{device} mounted on {mount_point}" + (" read-only" if read_only else "")


def _require_mounted(ctx: StepContext, shell: RemoteShell) -> None:
    if _mounted_source(shell, ctx.profile.mount_point) is None:
        raise InvalidResourceStateError(
            f"{ctx.profile.mount_point} is not mounted on the instance",
            run_id=ctx.run.id,
            resources=ctx.resources(),
        )


LEFTOVER_RSYNC_SECONDS = 30

# Exit statuses of our own scripts on the instance, above any of the tools' own (umount's go
# up to 64, the others' to 2).
_NOT_MOUNTED = 100
_RSYNC_LEFT = 101
_STILL_MOUNTED = 102


def _end_rsync_script() -> str:
    """A process killed mid-transfer leaves its rsync running (the local one until its next
    write, the instance's server longer). The instance is single-purpose and ours: end them,
    so two transfers never interleave and the volume can be unmounted. The wait until they are
    gone runs on the instance; a subshell, so that its exit ends only itself: 0 once no rsync
    is left, 1 if one outlives the wait."""
    polls = int(LEFTOVER_RSYNC_SECONDS / POLL)
    return (
        "(pkill -KILL -x rsync; "
        f"for _ in $(seq {polls}); do pgrep -x rsync >/dev/null || exit 0; sleep {POLL:g}; done; "
        "exit 1)"
    )


def _leftover_rsync_error(ctx: StepContext) -> RemoteCommandError:
    return RemoteCommandError(
        "an earlier rsync on the instance did not end", run_id=ctx.run.id, resources=ctx.resources()
    )


def end_leftover_rsync(ctx: StepContext, shell: RemoteShell) -> None:
    if shell.run(_end_rsync_script(), sudo=_sudo(ctx), check=False).exit_status != 0:
        raise _leftover_rsync_error(ctx)


def ensure_unmounted(ctx: StepContext) -> str:
    shell = remote(ctx)
    mount_point = ctx.profile.mount_point
    q = shlex.quote(mount_point)
    mounted = f"{_findmnt(mount_point)} >/dev/null"
    # One round trip: not mounted is done already; else unmount and confirm. No `sync`
    # first: umount writes back everything of that filesystem before it returns, and a
    # global sync would only flush the instance's root disk too.
    script = "\n".join(
        [
            f"{mounted} || exit 0",
            f"umount {q} || exit $?",
            f"{mounted} && exit {_STILL_MOUNTED}",
            "exit 0",
        ]
    )
    result = shell.run(script, sudo=_sudo(ctx), check=False)
    status = result.exit_status
    if status != 0 and "busy" in result.stderr:
        # Held by an rsync of a crashed earlier attempt: end it and try once more.
        end_leftover_rsync(ctx, shell)
        shell.run(f"umount {q}", sudo=_sudo(ctx))
        status = _STILL_MOUNTED if _mounted_source(shell, mount_point) is not None else 0
    if status == _STILL_MOUNTED:
        raise RemoteCommandError(
            f"{mount_point} is still mounted after umount",
            run_id=ctx.run.id,
            resources=ctx.resources(),
        )
    if status != 0:
        raise _command_error(ctx, f"umount {mount_point} failed", result)
    return f"{mount_point} unmounted"
