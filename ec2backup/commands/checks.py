"""Checks made before anything is created: the sources, the volume, whether the data fits, and
whether the instances can be launched (types, zone, images, IAM)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..config import Profile
from ..core.tags import TAG_MANAGED, TAG_PROFILE, TAG_RUN_ID
from ..errors import ConfigError, InsufficientSpaceError, UserInputError
from ..ports import Ec2, LaunchSpec, Volume
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
    how = f"`ec2backup grow --profile {profile.name} --size GIB`"
    if profile.auto_grow_max_gib and profile.auto_grow_max_gib > volume.size_gib:
        check_fits_in(
            profile,
            profile.auto_grow_max_gib,
            f"volume {volume.id} even grown to auto_grow_max_gib",
            f"raise auto_grow_max_gib, grow the volume ({how}) or exclude some data",
        )
        return
    check_fits_in(
        profile,
        volume.size_gib,
        f"volume {volume.id}",
        f"grow the volume ({how}, or auto_grow_max_gib in the profile) or exclude some data",
    )


def check_fits_in(profile: Profile, size_gib: int, what: str, hint: str) -> None:
    from ..run.steps.space import tree_bytes

    local = sum(tree_bytes(source.path) for source in profile.sources)
    usable = size_gib * 2**30 * 0.95  # ext4's own metadata and reserve
    if local > usable:
        raise InsufficientSpaceError(
            f"the sources hold {local / 2**30:.2f} GiB, more than {what} ({size_gib} GiB) can hold",
            hint=hint,
        )


# --- the launch: architectures, offerings, IAM -------------------------------------------

# Ubuntu's name in Canonical's SSM parameters -> EC2's architecture name.
_UBUNTU_ARCH = {"amd64": "x86_64", "arm64": "arm64"}
_EC2_TO_UBUNTU = {v: k for k, v in _UBUNTU_ARCH.items()}
# Offered types named in the error when none of the profile's can run in the zone.
_SUGGESTED_FAMILIES = ("t3", "t3a", "t4g", "t2", "m7i", "m7g")
_SUGGESTED_SIZES = ("nano", "micro", "small")


@dataclass(frozen=True)
class LaunchPlan:
    """What a run may launch: the profile's instance types (all offered in the zone), in
    order, and the image of each one's architecture."""

    instance_types: tuple[str, ...]
    images: dict[str, str]
    subnet_id: str

    def config(self) -> dict[str, Any]:
        """As recorded on a run (``image_id``: the first type's, as before fallbacks)."""
        first = self.instance_types[0]
        return {
            "image_id": self.images[first],
            "images": dict(self.images),
            "instance_types": list(self.instance_types),
            "subnet_id": self.subnet_id,
        }


def check_network(profile: Profile, ec2: Ec2, file: str) -> str:
    """The subnet the instances go to (the profile's, else the zone's default one), which must
    route to the internet: the backup host reaches the instance at its public address."""
    where = {"file": file, "profile": profile.name, "field": "subnet_id"}
    subnet_id = profile.subnet_id or ec2.default_subnet(profile.availability_zone)
    if subnet_id is None:
        raise ConfigError(
            f"{profile.availability_zone} has no default subnet (no default VPC?)",
            hint="set subnet_id to a subnet of that zone with a route to an internet gateway",
            **where,
        )
    if not ec2.subnet_routes_to_internet(subnet_id):
        raise ConfigError(
            f"subnet {subnet_id} has no route to the internet (no 0.0.0.0/0 route to an "
            "internet gateway), so this host could not reach the instance over SSH",
            hint="set subnet_id to a public subnet, or add a 0.0.0.0/0 route to an internet "
            "gateway to the subnet's route table",
            **where,
        )
    return subnet_id


def _arch_parameter(ami: str) -> tuple[str, str] | None:
    """(prefix, suffix) around the architecture of a Canonical SSM parameter, else None."""
    for ubuntu in _UBUNTU_ARCH:
        marker = f"/{ubuntu}/"
        if ami.startswith(("/", "resolve:ssm:")) and marker in ami:
            head, _, tail = ami.partition(marker)
            return head, tail
    return None


def _suggestions(offered: set[str]) -> list[str]:
    return [
        f"{family}.{size}"
        for family in _SUGGESTED_FAMILIES
        for size in _SUGGESTED_SIZES
        if f"{family}.{size}" in offered
    ][:6]


def plan_launch(
    profile: Profile,
    ec2: Ec2,
    file: str,
    *,
    security_group_ids: tuple[str, ...] | None = None,
) -> LaunchPlan:
    """Check, before anything is created, that the profile's instances can be launched: every
    type exists and is offered in the volume's zone, each has an image of its architecture
    (the profile's SSM parameter with the architecture swapped, or the profile's AMI, which
    must match), the subnet routes to the internet, and IAM lets this identity make the launch
    (a dry run)."""
    where = {"file": file, "profile": profile.name}
    types = list(dict.fromkeys([profile.instance_type, *profile.fallback_instance_types]))
    known = ec2.instance_type_architectures(types)
    for i, name in enumerate(types):
        if name not in known:
            raise ConfigError(
                f"instance type {name!r} does not exist in {profile.region}",
                field="instance_type" if i == 0 else "fallback_instance_types",
                hint="check the name (aws ec2 describe-instance-types)",
                **where,
            )
    zone = profile.availability_zone
    offered = ec2.offered_instance_types(zone, types)
    missing = [t for t in types if t not in offered]
    if missing:
        # Only now every type of the zone, for the suggestions.
        can = [t for t in types if t in offered] or _suggestions(ec2.offered_instance_types(zone))
        raise ConfigError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not offered in {zone}"
            + (f"; offered there: {', '.join(can)}" if can else ""),
            field="instance_type"
            if profile.instance_type in missing
            else "fallback_instance_types",
            hint="choose instance types offered in the volume's zone "
            "(aws ec2 describe-instance-type-offerings --location-type availability-zone)",
            **where,
        )
    images: dict[str, str] = {}
    by_arch: dict[str, str] = {}
    around = _arch_parameter(profile.ami)
    fixed = None if around else ec2.resolve_image(profile.ami)
    fixed_arch = ec2.image_architecture(fixed) if fixed else None
    for i, name in enumerate(types):
        archs = [a for a in known[name] if a in _EC2_TO_UBUNTU]
        if fixed is not None:
            if fixed_arch not in known[name]:
                raise ConfigError(
                    f"AMI {fixed} is {fixed_arch}, but instance type {name} runs "
                    f"{' or '.join(known[name]) or 'neither x86_64 nor arm64'}",
                    field="ami" if i == 0 else "fallback_instance_types",
                    hint="choose an AMI and instance types of one architecture, or use an SSM "
                    "parameter such as the default, which ec2backup picks per architecture",
                    **where,
                )
            images[name] = fixed
            continue
        assert around is not None
        if not archs:
            raise ConfigError(
                f"instance type {name} runs neither x86_64 nor arm64",
                field="instance_type" if i == 0 else "fallback_instance_types",
                **where,
            )
        arch = archs[0]
        if arch not in by_arch:
            parameter = f"{around[0]}/{_EC2_TO_UBUNTU[arch]}/{around[1]}"
            by_arch[arch] = ec2.resolve_image(parameter)
        images[name] = by_arch[arch]
    subnet_id = check_network(profile, ec2, file)
    first = types[0]
    ec2.check_launch(
        LaunchSpec(
            image_id=images[first],
            instance_type=first,
            availability_zone=zone,
            client_token="",
            tags={**profile.tags, TAG_MANAGED: "true", TAG_PROFILE: profile.name},
            security_group_ids=profile.security_group_ids
            if security_group_ids is None
            else security_group_ids,
            subnet_id=subnet_id,
        )
    )
    return LaunchPlan(tuple(types), images, subnet_id)
