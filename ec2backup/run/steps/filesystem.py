"""The volume's filesystem on the instance: found, made (init only), mounted and unmounted."""

from __future__ import annotations

import time

from ...errors import (
    Ec2BackupError,
    InvalidResourceStateError,
    RemoteCommandError,
    UnformattedVolumeError,
)
from ...ports import InstanceHost, Unmounted
from ..context import StepContext
from .attachment import DEVICE_NAME
from .instance import instance_alive
from .session import attributed, connect, pin_host_key

DEVICE_TIMEOUT = 60.0  # how long the attached volume may take to appear on the instance
LEFTOVER_RSYNC_SECONDS = 30.0  # how long an rsync of a killed earlier attempt may take to end
FILESYSTEM_LABEL = "ec2backup"


def try_unmount(ctx: StepContext, deadline_seconds: float) -> str:
    """Force-clean's unmount: only if the instance is alive and answers SSH in time with the
    host key already pinned for this run. Never blocks the cleanup for long."""
    if not instance_alive(ctx) or not ctx.run.ssh_address:
        return "instance not running: nothing to unmount"
    try:
        if ctx.host is None:
            pin_host_key(ctx)
            ctx.host = ctx.connector.connect(ctx.ssh_target(), time.monotonic() + deadline_seconds)
        return ensure_unmounted(ctx)
    except Ec2BackupError as exc:
        ctx.close_host()
        message = f"could not unmount ({exc.message}); detaching anyway"
        ctx.run.warnings = [*ctx.run.warnings, message]
        ctx.recorder.save()
        return message


def find_device(ctx: StepContext, host: InstanceHost) -> str:
    """The attached volume's block device as the instance shows it, waiting for it to appear."""
    assert ctx.run.volume_id is not None
    return host.find_device(ctx.run.volume_id, DEVICE_NAME, DEVICE_TIMEOUT)


def ensure_formatted(ctx: StepContext) -> str:
    host = connect(ctx)
    with attributed(ctx):
        device = find_device(ctx, host)
        # The format decision reads the device first: there, guessing wrong destroys data.
        existing = host.device_contents(device)
        if not existing.empty:
            return f"{device} already has a {existing} filesystem; left as it is"
        host.make_filesystem(device, FILESYSTEM_LABEL)
    return f"made ext4 on {device}"


def ensure_mounted(ctx: StepContext, *, read_only: bool = False) -> str:
    mount_point = ctx.profile.mount_point
    host = connect(ctx)
    with attributed(ctx):
        device = find_device(ctx, host)
        source = host.mounted_device(mount_point)
        if source == device:
            return f"{device} already mounted on {mount_point}"
        if source is not None:
            raise InvalidResourceStateError(
                f"{mount_point} on the instance is already a mount of {source}",
                run_id=ctx.run.id,
                hint="choose another mount_point in the profile",
                resources=ctx.resources(),
            )
        # No probe before mounting (one sudo round trip fewer on every run): mount refuses a
        # device with no filesystem without writing to it; the probe only says why it did.
        try:
            host.mount(device, mount_point, read_only=read_only)
        except RemoteCommandError as exc:
            if host.device_contents(device).empty:
                raise UnformattedVolumeError(
                    f"volume {ctx.run.volume_id} has no filesystem",
                    run_id=ctx.run.id,
                    hint="create the volume with `ec2backup init`; a backup never formats a volume",
                    resources=ctx.resources(),
                ) from exc
            raise
    return f"{device} mounted on {mount_point}" + (" read-only" if read_only else "")


def require_mounted(ctx: StepContext, host: InstanceHost) -> None:
    if host.mounted_device(ctx.profile.mount_point) is None:
        raise InvalidResourceStateError(
            f"{ctx.profile.mount_point} is not mounted on the instance",
            run_id=ctx.run.id,
            resources=ctx.resources(),
        )


def ensure_unmounted(ctx: StepContext) -> str:
    mount_point = ctx.profile.mount_point
    host = connect(ctx)
    with attributed(ctx):
        outcome = host.unmount(mount_point)
        if outcome is Unmounted.BUSY:
            # Held by an rsync of a crashed earlier attempt: end it and try once more.
            host.end_rsync(LEFTOVER_RSYNC_SECONDS)
            outcome = host.unmount(mount_point)
        if outcome is Unmounted.BUSY:
            raise RemoteCommandError(
                f"{mount_point} is still busy after the leftover rsync ended",
                run_id=ctx.run.id,
                resources=ctx.resources(),
            )
    return f"{mount_point} unmounted"
