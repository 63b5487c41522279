"""Copying: the backup's sync onto the volume, restore's pull from it, verify's compare."""

from __future__ import annotations

import logging
from pathlib import Path

from ...adapters.rsync_output import plain_difference
from ...errors import NotInBackupError
from ...ports import InstanceHost, TransferNote
from ..context import StepContext
from .filesystem import require_mounted
from .session import attributed, connect
from .space import make_room, source_sizes

log = logging.getLogger(__name__)


def ensure_pulled(ctx: StepContext) -> str:
    run = ctx.run
    subpath = (run.config.get("path") or "").strip("/")
    mount_point = ctx.profile.mount_point
    remote_dir = mount_point + (f"/{subpath}" if subpath else "")
    host = connect(ctx)
    with attributed(ctx):
        require_mounted(ctx, host)
        if subpath and not host.is_directory(remote_dir):
            raise NotInBackupError(
                f"the backup has no directory {subpath!r}",
                run_id=run.id,
                resources=ctx.resources(),
                hint=_what_is_there(host, mount_point, subpath),
            )
    ctx.on_transfer(TransferNote(subpath or "restore"))
    stats = ctx.syncer.sync(
        Path(run.config["to"]),
        ctx.ssh_target(),
        remote_dir,
        # The filesystem's own lost+found is no part of the backup.
        excludes=() if subpath else ("/lost+found",),
        remote_sudo=host.rsync_needs_sudo,
        on_progress=ctx.progress,
        pull=True,
    )
    ctx.on_transfer(TransferNote(subpath or "restore", stats=stats))
    run.files_transferred, run.bytes_sent, run.total_size = (
        stats.files_transferred,
        stats.bytes_sent,
        stats.total_size,
    )
    ctx.recorder.save()
    return f"{stats.files_transferred} files restored into {run.config['to']}"


def _what_is_there(host: InstanceHost, mount_point: str, subpath: str) -> str:
    """A hint for a --path that is not in the backup: what its nearest existing directory
    holds."""
    parts = subpath.split("/")
    for depth in range(len(parts) - 1, -1, -1):
        under = "/".join(parts[:depth])
        names = host.list_directory(f"{mount_point}/{under}".rstrip("/"), LISTED_NAMES + 1)
        if names is None:
            continue
        names = [n for n in names if n != "lost+found/" or under]
        shown = ", ".join(names[:LISTED_NAMES]) + (", ..." if len(names) > LISTED_NAMES else "")
        where = f"under {under!r}" if under else "at its top"
        if not names:
            return f"{where} it holds nothing"
        return f"{where} it holds: {shown}; give --path one of those"
    return "give --path a directory of the backup"


LISTED_NAMES = 12
MAX_RECORDED_DIFFERENCES = 200


def ensure_compared(ctx: StepContext) -> str:
    run, profile = ctx.run, ctx.profile
    host = connect(ctx)
    with attributed(ctx):
        require_mounted(ctx, host)
    differences: list[str] = []
    for source in profile.sources:
        lines = ctx.syncer.compare(
            source.path,
            ctx.ssh_target(),
            f"{profile.mount_point}/{source.dest}",
            excludes=profile.excludes,
            remote_sudo=host.rsync_needs_sudo,
        )
        for line in lines:
            path, what = plain_difference(line)
            differences.append(f"{source.dest}/{path}: {what}")
    shown = [f"differs: {d}" for d in differences[:MAX_RECORDED_DIFFERENCES]]
    if len(differences) > MAX_RECORDED_DIFFERENCES:
        shown.append(f"differs: ... and {len(differences) - MAX_RECORDED_DIFFERENCES} more")
    run.warnings = [*run.warnings, *shown]
    run.files_transferred = len(differences)  # for verify: the number of differences
    ctx.recorder.save()
    return f"{len(differences)} differences" if differences else "the volume matches the sources"


def ensure_synced(ctx: StepContext) -> str:
    run, profile = ctx.run, ctx.profile
    host = connect(ctx)
    sizes = source_sizes(profile)
    _space, grown = make_room(ctx, host, sizes)
    totals = {"files": 0, "entries": 0, "sent": 0, "size": 0}
    for i, (source, size) in enumerate(zip(profile.sources, sizes, strict=True)):
        remote_dir = f"{profile.mount_point}/{source.dest}"
        log.info("run %s: copying %s to %s", run.id, source.path, remote_dir)
        label = source.dest + (f" ({i + 1} of {len(sizes)})" if len(sizes) > 1 else "")
        ctx.on_transfer(TransferNote(label, expected_bytes=size))
        with attributed(ctx):
            stats = ctx.syncer.sync(
                source.path,
                ctx.ssh_target(),
                remote_dir,
                excludes=profile.excludes,
                extra_args=profile.rsync_args,
                remote_sudo=host.rsync_needs_sudo,
                on_progress=ctx.progress,
            )
        ctx.on_transfer(TransferNote(label, stats=stats))
        if stats.exit_code == 24:
            run.warnings = [*run.warnings, f"{source.path}: some files vanished during the copy"]
        totals["files"] += stats.files_transferred
        totals["entries"] += stats.entries
        totals["sent"] += stats.bytes_sent
        totals["size"] += stats.total_size
    run.files_transferred = totals["files"]
    run.bytes_sent = totals["sent"]
    run.total_size = totals["size"]
    ctx.recorder.save()
    copied = (
        f"{totals['files']:,} files copied, {totals['entries']:,} entries checked, "
        f"{totals['sent']:,} bytes sent, {totals['size']:,} bytes in all"
    )
    return f"{grown}; {copied}" if grown else copied
