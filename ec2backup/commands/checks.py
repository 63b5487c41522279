"""Checks made before anything is created: the sources, the volume, whether the data fits."""

from __future__ import annotations

import os

from ..config import Profile
from ..core.tags import TAG_MANAGED, TAG_RUN_ID
from ..errors import ConfigError, InsufficientSpaceError, UserInputError
from ..ports import Ec2, Volume
from ..run.steps.volume import volume_problem

# --- checks before anything is created ---------------------------------------------------


def check_sources(profile: Profile, file: str) -> None:
    for i, source in enumerate(profile.sources):
        where = {"file": file, "profile": profile.name, "field": f"sources[{i}].path"}
        if source.path.exists() and not source.path.is_dir():
            raise ConfigError(
                f"source {source.path} is a file, not a directory",
                hint=f"give the directory to back up (e.g. {source.path.parent})",
                **where,
            )
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
        assert problem.other_instance is not None
        holder = ec2.get_instance(problem.other_instance)
        tags = holder.tags if holder is not None else {}
        run_id = tags.get(TAG_RUN_ID) if tags.get(TAG_MANAGED) == "true" else None
        if run_id:
            raise UserInputError(
                f"{problem.message} of ec2backup run {run_id}, which no process drives",
                hint=f"`ec2backup resume {run_id}` finishes that run, "
                f"`ec2backup resume {run_id} --clean` ends it (detach, terminate)",
            )
        raise UserInputError(
            f"{problem.message}, which ec2backup did not launch",
            hint="detach it there first",
        )
    raise UserInputError(problem.message, hint="try again once the volume is available")


def check_fits(profile: Profile, volume: Volume) -> None:
    """Data larger than the whole volume (or, with ``auto_grow_max_gib``, than the largest it
    may grow to) can never fit: refuse before launching anything. (The exact check, against
    the filesystem's free space, runs on the instance, which grows the volume if allowed.)"""
    from ..run.steps.space import tree_bytes

    local = sum(tree_bytes(source.path) for source in profile.sources)
    size_gib = max(volume.size_gib, profile.auto_grow_max_gib or 0)
    usable = size_gib * 2**30 * 0.95  # ext4's own metadata and reserve
    if local <= usable:
        return
    how = f"`ec2backup grow --profile {profile.name} --size GIB`"
    if profile.auto_grow_max_gib:
        raise InsufficientSpaceError(
            f"the sources hold {local / 2**30:.2f} GiB, more than volume {volume.id} can hold "
            f"even grown to auto_grow_max_gib ({profile.auto_grow_max_gib} GiB)",
            hint=f"raise auto_grow_max_gib, grow the volume ({how}) or exclude some data",
        )
    raise InsufficientSpaceError(
        f"the sources hold {local / 2**30:.2f} GiB, more than volume {volume.id} "
        f"({volume.size_gib} GiB) can hold",
        hint=f"grow the volume ({how}, or auto_grow_max_gib in the profile) or exclude some data",
    )
