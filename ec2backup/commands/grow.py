"""``ec2backup grow``: make the profile's volume bigger (ModifyVolume). Its filesystem grows into
the new size online, with resize2fs, at the start of the next backup's copy.

Safe to repeat: run again after an interruption, it finds the modification it asked for (the
volume at that size, or a modification to it under way) and reports it instead of asking again.
EBS volumes never shrink, and allow one modification every six hours.
"""

from __future__ import annotations

from typing import Any

from ..config import load_profile, require_volume
from ..errors import UserInputError, WaitTimeoutError
from ..ports import VolumeModification
from .app import App

MAX_GIB = 16384  # gp3's largest size
# How long `grow` waits for the new size to be there (it is, within seconds to minutes).
WAIT_SECONDS = 120.0


def grow(app: App, profile_name: str, size_gib: int) -> dict[str, Any]:
    file = str(app.config_path)
    profile = load_profile(app.config_path, profile_name)
    if profile.storage == "snapshots":
        raise UserInputError(
            f"profile {profile.name!r} keeps its backups as snapshots only: it has no volume "
            "to grow",
            hint="each backup makes its volume from the latest snapshot; start a profile "
            "with a larger --size to have larger ones",
        )
    require_volume(profile, file)
    assert profile.volume_id is not None
    if not 1 <= size_gib <= MAX_GIB:
        raise UserInputError(
            f"--size {size_gib} is out of range", hint=f"give a size in GiB from 1 to {MAX_GIB}"
        )
    ec2 = app.adapters.ec2(profile.region, None)
    volume = ec2.get_volume(profile.volume_id)
    if volume is None:
        raise UserInputError(
            f"volume {profile.volume_id} does not exist in {profile.region}",
            hint="check volume_id and region in the profile",
        )
    latest = ec2.get_volume_modification(volume.id)
    under_way = latest is not None and latest.state in ("modifying", "optimizing")
    if under_way and latest is not None and latest.target_size_gib != size_gib:
        raise UserInputError(
            f"volume {volume.id} is already being modified to {latest.target_size_gib} GiB "
            f"({latest.state})",
            hint="wait until that is done; EBS then allows the next change after 6 hours",
        )
    if size_gib < volume.size_gib and not under_way:
        raise UserInputError(
            f"volume {volume.id} is {volume.size_gib} GiB: EBS volumes cannot shrink",
            hint=f"give --size above {volume.size_gib}, or restore into a new, smaller volume",
        )
    asked = False
    if not under_way and size_gib > volume.size_gib:
        latest = ec2.modify_volume_size(volume.id, size_gib)
        asked = True
    if latest is not None and (asked or under_way):
        try:
            latest = ec2.wait_volume_resized(volume.id, WAIT_SECONDS)
        except WaitTimeoutError:
            latest = ec2.get_volume_modification(volume.id) or latest
    return _result(profile.name, volume.id, volume.size_gib, size_gib, latest, asked)


def _result(
    profile: str,
    volume_id: str,
    before: int,
    size_gib: int,
    modification: VolumeModification | None,
    asked: bool,
) -> dict[str, Any]:
    state = modification.state if modification else "completed"
    return {
        "profile": profile,
        "volume_id": volume_id,
        "size_gib": size_gib,
        "previous_size_gib": modification.original_size_gib if modification else before,
        "modification": state,
        "progress": modification.progress if modification else 100,
        "requested": asked,
        # The filesystem grows when a backup mounts the volume next (resize2fs, online).
        "filesystem": "grows at the next run",
    }
