"""Room on the volume for a backup's copy: measured before rsync starts, the filesystem grown
into a volume that was made bigger (``ec2backup grow``, or the console), and with
``auto_grow_max_gib`` the volume itself grown when the sources no longer fit.

Every part of it looks first and is safe to repeat: a sync step re-run after a crash finds the
modification it started (and waits for it), or a device already bigger than its filesystem (and
grows the filesystem), or a filesystem already grown (and goes on).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

from ...config import Profile
from ...errors import Ec2BackupError, InsufficientSpaceError
from ...ports import InstanceHost, SyncSpace
from ...treefacts import data_bytes
from ..context import StepContext
from .filesystem import LEFTOVER_RSYNC_SECONDS
from .session import attributed

log = logging.getLogger(__name__)

GIB = 2**30
# A device this much bigger than its filesystem has been grown: mkfs leaves less than a block.
GROW_SLACK = 16 * 2**20
# What the filesystem's own metadata and reserve take of a grown volume: room asked for beyond
# the shortfall, so that the data fits once grown.
HEADROOM = 1.10
# A volume is grown by at least this factor: EBS allows one modification every 6 hours, so a
# run should not need another one soon after.
MIN_GROWTH = 1.25
RESIZE_TIMEOUT = 600.0  # how long a modification may take to give the volume its new size
DEVICE_GROWTH_SECONDS = 60.0  # how long the instance may take to see the device grow


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


def source_sizes(profile: Profile) -> list[int]:
    return [tree_bytes(source.path) for source in profile.sources]


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def grown_size_gib(size_gib: int, shortfall: int, max_gib: int) -> int | None:
    """The size to grow a ``size_gib`` volume to so that ``shortfall`` more bytes fit, at
    most ``max_gib``; None if even that is too small."""
    needed = math.ceil((size_gib * GIB + shortfall) * HEADROOM / GIB)
    if needed > max_gib:
        return None
    return min(max(needed, math.ceil(size_gib * MIN_GROWTH)), max_gib)


def make_room(ctx: StepContext, host: InstanceHost, sizes: list[int]) -> tuple[SyncSpace, str]:
    """The space for the copy of sources of ``sizes`` bytes, and what was grown to make it
    (``""`` if nothing); ``InsufficientSpaceError`` if they do not fit."""
    space = _prepare(ctx, host)
    notes = []
    if space.room_to_grow > GROW_SLACK:
        notes.append(_grow_filesystem(ctx, host, space))
        space = _prepare(ctx, host)
    shortfall = sum(sizes) - space.used - space.free
    max_gib = ctx.profile.auto_grow_max_gib
    if shortfall > 0 and max_gib:
        notes.append(_grow_volume(ctx, host, shortfall, max_gib))
        space = _prepare(ctx, host)
        shortfall = sum(sizes) - space.used - space.free
    if shortfall > 0:
        raise InsufficientSpaceError(
            f"the sources need about {gib(sum(sizes) - space.used)} more on volume "
            f"{ctx.run.volume_id}, which has {gib(space.free)} free",
            run_id=ctx.run.id,
            resources=ctx.resources(),
            hint=_grow_hint(ctx.profile),
        )
    return space, "; ".join(n for n in notes if n)


def _grow_hint(profile: Profile) -> str:
    how = f"`ec2backup grow --profile {profile.name} --size GIB`"
    if profile.auto_grow_max_gib:
        return f"grow the volume beyond auto_grow_max_gib ({how}) or exclude some data"
    return f"grow the volume ({how}, or auto_grow_max_gib in the profile) or exclude some data"


def _prepare(ctx: StepContext, host: InstanceHost) -> SyncSpace:
    profile = ctx.profile
    with attributed(ctx):
        # One round trip: the mount point must be a mount (or the copy would fill the
        # instance's root disk), an rsync of a killed earlier attempt is ended, the space and
        # the sizes are measured and the destinations are made.
        return host.prepare_sync(
            profile.mount_point, [s.dest for s in profile.sources], LEFTOVER_RSYNC_SECONDS
        )


def _grow_filesystem(ctx: StepContext, host: InstanceHost, space: SyncSpace) -> str:
    log.info(
        "run %s: growing the filesystem from %s to %s",
        ctx.run.id,
        gib(space.filesystem_bytes),
        gib(space.device_bytes),
    )
    with attributed(ctx):
        host.grow_filesystem(ctx.profile.mount_point)
    return f"filesystem grown from {gib(space.filesystem_bytes)} to {gib(space.device_bytes)}"


def _grow_volume(ctx: StepContext, host: InstanceHost, shortfall: int, max_gib: int) -> str:
    """ModifyVolume so that ``shortfall`` more bytes fit (at most ``max_gib``), wait for the
    new size, and grow the filesystem into it."""
    run = ctx.run
    assert run.volume_id is not None
    volume = ctx.ec2.get_volume(run.volume_id)
    assert volume is not None
    latest = ctx.ec2.get_volume_modification(run.volume_id)
    under_way = latest is not None and latest.state in ("modifying", "optimizing")
    target = grown_size_gib(volume.size_gib, shortfall, max_gib)
    if not under_way and target is None:
        raise InsufficientSpaceError(
            f"the sources need {gib(shortfall)} more than volume {volume.id} "
            f"({volume.size_gib} GiB) holds, more than auto_grow_max_gib ({max_gib} GiB) allows",
            run_id=run.id,
            resources=ctx.resources(),
            hint=_grow_hint(ctx.profile),
        )
    before = volume.size_gib
    if not under_way:
        assert target is not None
        log.warning(
            "run %s: the sources do not fit; growing volume %s from %d to %d GiB "
            "(auto_grow_max_gib %d)",
            run.id,
            volume.id,
            before,
            target,
            max_gib,
        )
        try:
            ctx.ec2.modify_volume_size(volume.id, target)
        except Ec2BackupError as exc:
            raise InsufficientSpaceError(
                f"the sources do not fit on volume {volume.id} and it could not be grown "
                f"to {target} GiB: {exc.message}",
                run_id=run.id,
                resources=ctx.resources(),
                hint=exc.hint or _grow_hint(ctx.profile),
            ) from exc
    done = ctx.ec2.wait_volume_resized(volume.id, RESIZE_TIMEOUT)
    run.warnings = [
        *run.warnings,
        f"volume {volume.id} grown from {done.original_size_gib or before} to "
        f"{done.target_size_gib} GiB (auto_grow_max_gib {max_gib})",
    ]
    ctx.recorder.save()
    # The instance sees the device grow a moment after EC2 says the size is there.
    deadline = time.monotonic() + DEVICE_GROWTH_SECONDS
    while _prepare(ctx, host).device_bytes < done.target_size_gib * GIB:
        if time.monotonic() >= deadline:
            raise InsufficientSpaceError(
                f"volume {volume.id} was grown to {done.target_size_gib} GiB, but the instance "
                f"still shows the old size after {DEVICE_GROWTH_SECONDS:.0f} s",
                run_id=run.id,
                resources=ctx.resources(),
                hint=f"`ec2backup resume {run.id}` grows the filesystem once it shows",
            )
        time.sleep(1.0)
    with attributed(ctx):
        host.grow_filesystem(ctx.profile.mount_point)
    return f"volume grown to {done.target_size_gib} GiB"
