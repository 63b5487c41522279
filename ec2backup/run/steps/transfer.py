"""Copying: the backup's sync onto the volume, restore's pull from it, verify's compare."""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path

from ...errors import (
    InsufficientSpaceError,
    InvalidResourceStateError,
    RemoteCommandError,
    SyncError,
)
from ...ports import (
    RemoteShell,
)
from ..context import StepContext
from .filesystem import (
    _NOT_MOUNTED,
    _RSYNC_LEFT,
    _end_rsync_script,
    _findmnt,
    _leftover_rsync_error,
    _require_mounted,
)
from .session import _command_error, _sudo, remote

log = logging.getLogger(__name__)


def ensure_pulled(ctx: StepContext) -> str:
    shell = remote(ctx)
    run = ctx.run
    _require_mounted(ctx, shell)
    subpath = run.config.get("path") or ""
    remote_dir = ctx.profile.mount_point + (f"/{subpath}" if subpath else "")
    if shell.run(f"test -d {shlex.quote(remote_dir)}", sudo=_sudo(ctx), check=False).exit_status:
        raise RemoteCommandError(
            f"the backup has no directory {subpath!r}",
            run_id=run.id,
            resources=ctx.resources(),
            hint="list what it holds with `ec2backup restore --path ''` into a scratch directory",
        )
    stats = ctx.syncer.sync(
        Path(run.config["to"]),
        ctx.ssh_target(),
        remote_dir,
        remote_sudo=_sudo(ctx),
        on_progress=ctx.progress,
        pull=True,
    )
    run.files_transferred, run.bytes_sent, run.total_size = (
        stats.files_transferred,
        stats.bytes_sent,
        stats.total_size,
    )
    ctx.recorder.save()
    return f"{stats.files_transferred} files restored into {run.config['to']}"


MAX_RECORDED_DIFFERENCES = 200


def ensure_compared(ctx: StepContext) -> str:
    shell = remote(ctx)
    run, profile = ctx.run, ctx.profile
    _require_mounted(ctx, shell)
    differences: list[str] = []
    for source in profile.sources:
        lines = ctx.syncer.compare(
            source.path,
            ctx.ssh_target(),
            f"{profile.mount_point}/{source.dest}",
            excludes=profile.excludes,
            remote_sudo=_sudo(ctx),
        )
        differences += [f"{source.dest}: {line}" for line in lines]
    shown = [f"differs: {d}" for d in differences[:MAX_RECORDED_DIFFERENCES]]
    if len(differences) > MAX_RECORDED_DIFFERENCES:
        shown.append(f"differs: ... and {len(differences) - MAX_RECORDED_DIFFERENCES} more")
    run.warnings = [*run.warnings, *shown]
    run.files_transferred = len(differences)  # for verify: the number of differences
    ctx.recorder.save()
    return f"{len(differences)} differences" if differences else "the volume matches the sources"


def tree_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root`` (not following symlinks), walked without
    keeping per-file state. Excludes are not applied: an estimate on the safe side."""
    total, stack = 0, [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return total


def prepare_sync(ctx: StepContext, shell: RemoteShell) -> tuple[int, int]:
    """Everything the copy needs on the instance, in one round trip (each command is an RTT
    plus a sudo on AWS), in this order: the mount point must be a mount, or the copy would
    fill the instance's root disk; an rsync left by a killed earlier attempt is ended; then
    the bytes already in the destinations and the bytes free on the volume are printed (du
    exits non-zero for a destination that does not exist yet: 0 bytes there); and the
    destinations are created (empty directories: harmless if the space check then refuses the
    copy). Returns (used, free)."""
    profile = ctx.profile
    q = shlex.quote
    dests = " ".join(q(f"{profile.mount_point}/{s.dest}") for s in profile.sources)
    script = "\n".join(
        [
            f"{_findmnt(profile.mount_point)} >/dev/null || exit {_NOT_MOUNTED}",
            f"{_end_rsync_script()} || exit {_RSYNC_LEFT}",
            f"du -s -B1 --apparent-size {dests} 2>/dev/null "
            "| awk '{t += $1} END {print t + 0}'",
            f"df -B1 --output=avail {q(profile.mount_point)} | tail -n 1",
            f"mkdir -p {dests}",
        ]
    )
    result = shell.run(script, sudo=_sudo(ctx), check=False)
    if result.exit_status == _NOT_MOUNTED:
        raise InvalidResourceStateError(
            f"{profile.mount_point} is not mounted on the instance; refusing to copy onto its "
            "root disk",
            run_id=ctx.run.id,
            resources=ctx.resources(),
        )
    if result.exit_status == _RSYNC_LEFT:
        raise _leftover_rsync_error(ctx)
    if result.exit_status != 0:
        raise _command_error(ctx, f"could not create the destinations {dests}", result)
    numbers = result.stdout.split()
    if len(numbers) != 2 or not all(n.isdigit() for n in numbers):
        raise RemoteCommandError(
            f"could not read the free space of {profile.mount_point} on the instance "
            f"(got {' '.join(numbers)!r})",
            run_id=ctx.run.id,
            resources=ctx.resources(),
        )
    used, free = (int(n) for n in numbers)
    return used, free


def check_free_space(ctx: StepContext, used: int, free: int) -> None:
    """Before rsync: what the sources add to the volume must fit in its free space."""
    local = sum(tree_bytes(source.path) for source in ctx.profile.sources)
    need = local - used
    if need > free:
        raise InsufficientSpaceError(
            f"the sources need about {_gib(need)} more on volume {ctx.run.volume_id}, "
            f"which has {_gib(free)} free",
            run_id=ctx.run.id,
            resources=ctx.resources(),
            hint="grow the volume (aws ec2 modify-volume, then resize2fs) or exclude some data",
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def ensure_synced(ctx: StepContext) -> str:
    shell = remote(ctx)
    run, profile = ctx.run, ctx.profile
    check_free_space(ctx, *prepare_sync(ctx, shell))
    totals = {"files": 0, "sent": 0, "size": 0}
    for source in profile.sources:
        remote_dir = f"{profile.mount_point}/{source.dest}"
        log.info("run %s: copying %s to %s", run.id, source.path, remote_dir)
        try:
            stats = ctx.syncer.sync(
                source.path,
                ctx.ssh_target(),
                remote_dir,
                excludes=profile.excludes,
                extra_args=profile.rsync_args,
                remote_sudo=_sudo(ctx),
                on_progress=ctx.progress,
            )
        except SyncError as exc:
            exc.run_id = run.id
            exc.resources.update(ctx.resources())
            raise
        if stats.exit_code == 24:
            run.warnings = [*run.warnings, f"{source.path}: some files vanished during the copy"]
        totals["files"] += stats.files_transferred
        totals["sent"] += stats.bytes_sent
        totals["size"] += stats.total_size
    run.files_transferred = totals["files"]
    run.bytes_sent = totals["sent"]
    run.total_size = totals["size"]
    ctx.recorder.save()
    return f"{totals['files']} files, {totals['sent']} bytes sent, {totals['size']} bytes in all"
