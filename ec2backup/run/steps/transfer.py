"""Copying: the backup's sync onto the volume, restore's pull from it, verify's compare."""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path

from ...config import Source
from ...errors import NotInBackupError, SyncError
from ...ports import InstanceHost, TransferNote
from ..context import StepContext
from .fidelity import (
    check_changed,
    check_deletions,
    fact_differences,
    merged,
    not_root_note,
    record,
)
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
    label = subpath or "restore"
    ctx.on_transfer(TransferNote(label))
    try:
        with attributed(ctx):
            stats = ctx.syncer.sync(
                Path(run.config["to"]),
                ctx.ssh_target(),
                remote_dir,
                # The filesystem's own lost+found is no part of the backup.
                excludes=() if subpath else ("/lost+found",),
                extra_args=ctx.profile.rsync_args,
                remote_sudo=host.rsync_needs_sudo,
                on_progress=ctx.progress,
                pull=True,
            )
    except SyncError as exc:
        record(ctx, exc.problems, exc.problem_count)
        raise
    ctx.on_transfer(TransferNote(label, stats=stats))
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
        remote_dir = f"{profile.mount_point}/{source.dest}"
        with attributed(ctx):
            found = ctx.syncer.compare(
                source.path,
                ctx.ssh_target(),
                remote_dir,
                excludes=profile.excludes,
                extra_args=profile.rsync_args,
                remote_sudo=host.rsync_needs_sudo,
            )
            found += fact_differences(source.path, host, remote_dir)
        differences += [f"{source.dest}/{d.path}: {', '.join(d.what)}" for d in merged(found)]
    shown = [f"differs: {d}" for d in differences[:MAX_RECORDED_DIFFERENCES]]
    if len(differences) > MAX_RECORDED_DIFFERENCES:
        shown.append(f"differs: ... and {len(differences) - MAX_RECORDED_DIFFERENCES} more")
    # A compare run again (after a lost connection) replaces what an earlier attempt found.
    run.warnings = [*(w for w in run.warnings if not w.startswith("differs: ")), *shown]
    run.files_transferred = len(differences)  # for verify: the number of differences
    ctx.recorder.save()
    return f"{len(differences)} differences" if differences else "the volume matches the sources"


def names_to_unlink(
    mount_point: str, sources: Sequence[Source], groups: Sequence[Sequence[str]]
) -> list[str]:
    """The names on the volume to remove before rsync writes in place.

    rsync ``--inplace`` writes into the file a name points at, so it writes through every
    other name of that inode too. When the names of one inode on the volume are no longer one
    file at the source (an editor replaced one of them, a link was broken), each would be
    written in turn with the other's data, and one of them would end wrong. For each such
    group, the names of the largest set that still share one file at the source are kept;
    the others are removed, and rsync writes them anew as the files they now are. Names whose
    source is gone or no longer a regular file are left to rsync (it deletes or replaces
    them; neither writes through the link)."""
    unlink: list[str] = []
    for group in groups:
        by_file: dict[tuple[int, int], list[str]] = {}
        for name in group:
            local = _source_path(mount_point, sources, name)
            try:
                st = os.lstat(local) if local is not None else None
            except OSError:
                st = None
            if st is not None and stat.S_ISREG(st.st_mode):
                by_file.setdefault((st.st_dev, st.st_ino), []).append(name)
        if len(by_file) < 2:
            continue
        sets = sorted(by_file.values(), key=lambda names: (-len(names), sorted(names)))
        unlink += [name for names in sets[1:] for name in names]
    return sorted(unlink)


def _source_path(mount_point: str, sources: Sequence[Source], name: str) -> Path | None:
    for source in sources:
        prefix = f"{mount_point}/{source.dest}/"
        if name.startswith(prefix):
            return source.path / name[len(prefix) :]
    return None


def ensure_synced(ctx: StepContext) -> str:
    run, profile = ctx.run, ctx.profile
    host = connect(ctx)
    sizes = source_sizes(profile)
    space, grown = make_room(ctx, host, sizes)
    if not run.config.get("allow_deletions"):
        with attributed(ctx):
            check_deletions(ctx, host, space)
    note = not_root_note()
    if note and note not in run.warnings:
        record(ctx, [note])
    stale = names_to_unlink(profile.mount_point, profile.sources, space.hard_links)
    if stale:
        log.info("run %s: unlinking %d names no longer linked at the source", run.id, len(stale))
        with attributed(ctx):
            host.remove_files(stale)
    totals = {"files": 0, "entries": 0, "sent": 0, "size": 0}
    for i, (source, size) in enumerate(zip(profile.sources, sizes, strict=True)):
        remote_dir = f"{profile.mount_point}/{source.dest}"
        log.info("run %s: copying %s to %s", run.id, source.path, remote_dir)
        label = source.dest + (f" ({i + 1} of {len(sizes)})" if len(sizes) > 1 else "")
        ctx.on_transfer(TransferNote(label, expected_bytes=size))
        started = time.time_ns()
        try:
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
        except SyncError as exc:
            # The lines naming the files go into `show`; the error names the first ones.
            record(ctx, exc.problems, exc.problem_count)
            raise
        ctx.on_transfer(TransferNote(label, stats=stats))
        if stats.exit_code == 24:
            record(
                ctx,
                [f"{source.path}: some files vanished during the copy", *stats.problems],
                stats.problem_count + 1,
            )
        with attributed(ctx):
            check_changed(ctx, host, source.path, remote_dir, started)
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
