"""What keeps a backup faithful around the copy itself: the guard against mirroring an
accident, the files rsync could not copy or that changed while it ran, and verify's look at
what rsync's compare cannot see (holes, hard links joined on the copy)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ...errors import DeletionRefusedError
from ...ports import Difference, InstanceHost, SyncSpace
from ...treefacts import changed_since, lookup, walk
from ..context import StepContext

# Warnings a run records about single files, at most (then "... and N more").
MAX_FILE_WARNINGS = 50
# How far before a copy started a change still counts as "during the copy": the kernel stamps
# inodes with a clock that may lag the one read here by a tick, and a file touched just before
# rsync listed it is looked at again, never missed.
CHANGE_MARGIN_NS = 1_000_000_000
# How many changed files are checked against the copy after a sync.
MAX_CHANGED_CHECKED = 1000


def record(ctx: StepContext, lines: Iterable[str], total: int | None = None) -> None:
    """Add ``lines`` to the run's warnings, at most ``MAX_FILE_WARNINGS`` of them."""
    lines = list(lines)
    total = len(lines) if total is None else total
    kept = lines[:MAX_FILE_WARNINGS]
    if total > len(kept):
        kept.append(f"... and {total - len(kept)} more")
    ctx.run.warnings = [*ctx.run.warnings, *kept]
    ctx.recorder.save()


# --- the guard ------------------------------------------------------------------------------


def _is_empty(path: Path) -> bool:
    with os.scandir(path) as entries:
        return next(entries, None) is None


def check_deletions(ctx: StepContext, host: InstanceHost, space: SyncSpace) -> None:
    """Before anything is copied or deleted: refuse when a source is empty while its copy is
    not, or when mirroring it would delete more than ``max_delete_percent`` of the copy."""
    run, profile = ctx.run, ctx.profile
    again = f"ec2backup run --profile {profile.name} --allow-deletions"
    for source in profile.sources:
        in_copy = space.files.get(source.dest, 0)
        if in_copy == 0:
            continue
        if _is_empty(source.path):  # however high max_delete_percent is
            raise DeletionRefusedError(
                f"source {source.path} is empty but its copy on the volume ({source.dest}) "
                f"holds {in_copy:,} files; mirroring it would delete them all (is a drive "
                "not mounted?): nothing was copied or deleted",
                run_id=run.id,
                resources=ctx.resources(),
                hint=f"if the source really is empty now, run `{again}`",
            )
        if profile.max_delete_percent >= 100:  # no share is too much: no dry run needed
            continue
        deleted = ctx.syncer.count_deletions(
            source.path,
            ctx.ssh_target(),
            f"{profile.mount_point}/{source.dest}",
            excludes=profile.excludes,
            extra_args=profile.rsync_args,
            remote_sudo=host.rsync_needs_sudo,
        )
        share = 100 * deleted / in_copy
        if share > profile.max_delete_percent:
            raise DeletionRefusedError(
                f"mirroring {source.path} would delete {deleted:,} of the {in_copy:,} files "
                f"in its copy ({source.dest}, {share:.0f}%), more than max_delete_percent "
                f"({profile.max_delete_percent}%): nothing was copied or deleted",
                run_id=run.id,
                resources=ctx.resources(),
                hint=f"if those files are meant to go, run `{again}` (or raise "
                "max_delete_percent in the profile)",
            )


# --- files that changed while the copy ran ----------------------------------------------------


def check_changed(
    ctx: StepContext, host: InstanceHost, source_path: Path, remote_dir: str, started_ns: int
) -> None:
    """Warn about the files of ``source_path`` that changed after its copy started and no
    longer match the copy (rsync took their time and size when it listed them): the copy may
    hold an earlier version, or a mix of two. Only files whose inode changed are compared."""
    candidates, count = changed_since(
        source_path, started_ns - CHANGE_MARGIN_NS, MAX_CHANGED_CHECKED
    )
    if not candidates:
        return
    profile = ctx.profile
    differing = ctx.syncer.compare(
        source_path,
        ctx.ssh_target(),
        remote_dir,
        excludes=profile.excludes,
        extra_args=profile.rsync_args,
        remote_sudo=host.rsync_needs_sudo,
        checksum=False,
        only=candidates,
    )
    # A path the copy lacks was created after its directory was listed (or is excluded): not
    # in this backup, and nothing was torn.
    torn = [d for d in differing if "missing on the volume" not in d.what]
    if torn:
        record(
            ctx,
            (
                f"changed while the backup ran, the copy may hold an earlier version or a "
                f"mix: {source_path}/{d.path}"
                for d in torn
            ),
        )
    if count > len(candidates):
        record(
            ctx,
            [
                f"{source_path}: {count:,} files changed while the backup ran; only the first "
                f"{len(candidates):,} were checked against the copy"
            ],
        )


# --- verify: what rsync's compare cannot see -------------------------------------------------


def shown(path: str) -> str:
    """A relative path as rsync shows names: bytes outside printable ASCII as ``\\#ooo``."""
    raw = path.encode("utf-8", "surrogateescape")
    return "".join(chr(b) if 32 <= b < 127 else f"\\#{b:03o}" for b in raw)


def fact_differences(source_path: Path, host: InstanceHost, remote_dir: str) -> list[Difference]:
    """Holes the copy does not keep, and files that are one inode on the copy but separate in
    the source (a split the other way round rsync's compare reports itself)."""
    local = walk(source_path)
    remote = host.tree_facts(remote_dir, sorted(local["holes"]))
    found: list[Difference] = []
    for path, (size, data) in sorted(local["holes"].items()):
        fact = remote.facts.get(path)
        if fact is None:  # not a file on the copy: rsync's compare says what it is
            continue
        # rsync -S writes runs of zeros as holes at 1 KiB granularity: a faithful copy holds
        # about the source's data. Holding more than half of the holes as data is not.
        if fact[1] - data > (size - data) / 2:
            found.append(
                Difference(
                    shown(path),
                    (f"holes not kept ({(fact[1] - data):,} bytes of holes stored as data)",),
                )
            )
    paths = sorted({p for group in remote.groups for p in group})
    here = lookup(source_path, paths)
    for group in remote.groups:
        present = [p for p in group if p in here]
        by_inode: dict[str, list[str]] = {}
        for p in present:
            by_inode.setdefault(here[p][0], []).append(p)
        if len(by_inode) < 2:
            continue
        largest = max(by_inode.values(), key=len)
        for members in by_inode.values():
            if members is largest:
                continue
            for p in members:
                found.append(
                    Difference(
                        shown(p),
                        (
                            f"hard link joined (one file with {shown(largest[0])} on the volume, "
                            "separate in the source)",
                        ),
                    )
                )
    return found


def merged(differences: Sequence[Difference]) -> list[Difference]:
    """One ``Difference`` per path, its words in the order found, sorted by path."""
    words: dict[str, list[str]] = {}
    for d in differences:
        words.setdefault(d.path, [])
        words[d.path] += [w for w in d.what if w not in words[d.path]]
    return [Difference(path, tuple(what)) for path, what in sorted(words.items())]


def not_root_note() -> str | None:
    """What a copy made by a user other than root cannot keep, or None for root."""
    if os.geteuid() == 0:
        return None
    return (
        f"ec2backup ran as uid {os.geteuid()}, not root: trusted.* extended attributes are "
        "not visible to it and were not copied, and files it cannot read fail the run"
    )
