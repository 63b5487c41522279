"""Copying: the backup's sync onto the volume, restore's pull from it, verify's compare."""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path

from ...config import Source
from ...errors import (
    InsufficientSpaceError,
    RemoteCommandError,
    SyncError,
)
from ...treefacts import data_bytes
from ..context import StepContext
from .fidelity import (
    check_changed,
    check_deletions,
    fact_differences,
    merged,
    not_root_note,
    record,
)
from .filesystem import LEFTOVER_RSYNC_SECONDS, require_mounted
from .session import attributed, connect

log = logging.getLogger(__name__)


def ensure_pulled(ctx: StepContext) -> str:
    run = ctx.run
    subpath = run.config.get("path") or ""
    remote_dir = ctx.profile.mount_point + (f"/{subpath}" if subpath else "")
    host = connect(ctx)
    with attributed(ctx):
        require_mounted(ctx, host)
        if not host.is_directory(remote_dir):
            raise RemoteCommandError(
                f"the backup has no directory {subpath!r}",
                run_id=run.id,
                resources=ctx.resources(),
                hint="list what it holds with `ec2backup restore --path ''` into a scratch "
                "directory",
            )
    try:
        with attributed(ctx):
            stats = ctx.syncer.sync(
                Path(run.config["to"]),
                ctx.ssh_target(),
                remote_dir,
                extra_args=ctx.profile.rsync_args,
                remote_sudo=host.rsync_needs_sudo,
                on_progress=ctx.progress,
                pull=True,
            )
    except SyncError as exc:
        record(ctx, exc.problems, exc.problem_count)
        raise
    run.files_transferred, run.bytes_sent, run.total_size = (
        stats.files_transferred,
        stats.bytes_sent,
        stats.total_size,
    )
    ctx.recorder.save()
    return f"{stats.files_transferred} files restored into {run.config['to']}"


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


def tree_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root`` (not following symlinks), walked without
    keeping per-file state: the data of a file with holes, which the copy keeps as holes.
    Excludes are not applied: an estimate on the safe side."""
    total, stack = 0, [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    size = st.st_size
                    if st.st_blocks * 512 < size:  # fewer blocks than bytes: holes, perhaps
                        size = data_bytes(os.fsencode(entry.path), size) or size
                    total += size
    return total


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


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def ensure_synced(ctx: StepContext) -> str:
    run, profile = ctx.run, ctx.profile
    host = connect(ctx)
    with attributed(ctx):
        # One round trip: the mount point must be a mount (or the copy would fill the
        # instance's root disk), an rsync of a killed earlier attempt is ended, the space is
        # measured and the destinations are made.
        space = host.prepare_sync(
            profile.mount_point, [s.dest for s in profile.sources], LEFTOVER_RSYNC_SECONDS
        )
    check_free_space(ctx, space.used, space.free)
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
    totals = {"files": 0, "sent": 0, "size": 0}
    for source in profile.sources:
        remote_dir = f"{profile.mount_point}/{source.dest}"
        log.info("run %s: copying %s to %s", run.id, source.path, remote_dir)
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
        if stats.exit_code == 24:
            record(
                ctx,
                [f"{source.path}: some files vanished during the copy", *stats.problems],
                stats.problem_count + 1,
            )
        with attributed(ctx):
            check_changed(ctx, host, source.path, remote_dir, started)
        totals["files"] += stats.files_transferred
        totals["sent"] += stats.bytes_sent
        totals["size"] += stats.total_size
    run.files_transferred = totals["files"]
    run.bytes_sent = totals["sent"]
    run.total_size = totals["size"]
    ctx.recorder.save()
    return f"{totals['files']} files, {totals['sent']} bytes sent, {totals['size']} bytes in all"
