"""Checks made before anything is created: the sources, the volume, whether the data fits."""

from __future__ import annotations

import os

from ..config import Profile
from ..errors import ConfigError, InsufficientSpaceError, UserInputError
from ..ports import Ec2, Volume
from ..run.steps.volume import volume_problem

# --- checks before anything is created ---------------------------------------------------


def check_sources(profile: Profile, file: str) -> None:
    for i, source in enumerate(profile.sources):
        where = {"file": file, "profile": profile.name, "field": f"sources[{i}].path"}
        if not source.path.is_dir():
            raise ConfigError(
                f"source directory {source.path} does not exist",
                hint="create it or fix the path",
                **where,
            )
        if not os.access(source.path, os.R_OK | os.X_OK):
            raise ConfigError(
                f"source directory {source.path} is not readable",
                hint="run as a user who can read it",
                **where,
            )


def check_volume(profile: Profile, ec2: Ec2, file: str) -> Volume:
    assert profile.volume_id is not None
    volume = ec2.get_volume(profile.volume_id)
    if volume is None:
        raise ConfigError(
            f"volume {profile.volume_id} does not exist in {profile.region}",
            file=file,
            profile=profile.name,
            field="volume_id",
            hint="check the volume id and the region",
        )
    problem = volume_problem(volume, profile.availability_zone, None)
    if problem is None:
        return volume
    if problem.kind == "zone":
        raise ConfigError(
            problem.message,
            file=file,
            profile=profile.name,
            field="availability_zone",
            hint=f'set availability_zone = "{volume.availability_zone}"',
        )
    if problem.kind == "attached":
        raise UserInputError(
            problem.message,
            hint="detach it first, or `ec2backup reap` if a crashed run left it there",
        )
    raise UserInputError(problem.message, hint="try again once the volume is available")


def check_fits(profile: Profile, volume: Volume) -> None:
    """Data larger than the whole volume can never fit: refuse before launching anything.
    (The exact check, against the filesystem's free space, runs on the instance.)"""
    check_fits_in(
        profile,
        volume.size_gib,
        f"volume {volume.id}",
        "grow the volume (aws ec2 modify-volume, then resize2fs) or exclude some data",
    )


def check_fits_in(profile: Profile, size_gib: int, what: str, hint: str) -> None:
    from ..run.steps.transfer import tree_bytes

    local = sum(tree_bytes(source.path) for source in profile.sources)
    usable = size_gib * 2**30 * 0.95  # ext4's own metadata and reserve
    if local > usable:
        raise InsufficientSpaceError(
            f"the sources hold {local / 2**30:.2f} GiB, more than {what} ({size_gib} GiB) can hold",
            hint=hint,
        )
