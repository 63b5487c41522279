"""The configuration file: TOML with named profiles.

    [profiles.laptop]
    region = "us-east-1"
    availability_zone = "us-east-1a"
    volume_id = "vol-0123456789abcdef0"
    sources = [{ path = "/home/me/docs", dest = "docs" }]

Every other field has a default (see docs/configuration.md). A bad value is reported with its
file, profile and field. Reading uses ``tomllib``; writing (``init``) uses ``tomlkit`` so a
user's comments and layout survive.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError
from .paths import CONFIG_ENV, default_config_path, write_atomically

__all__ = ["CONFIG_ENV", "default_config_path"]

DEFAULT_AMI = "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"

_AZ = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d[a-z]$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_VOLUME = re.compile(r"^vol-[0-9a-f]{8,17}$")


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    dest: str = Field(min_length=1)

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        if not v.is_absolute():
            raise ValueError("must be an absolute path")
        return v

    @field_validator("dest")
    @classmethod
    def _relative(cls, v: str) -> str:
        path = PurePosixPath(v)
        if path.is_absolute() or ".." in path.parts:
            raise ValueError("must be a relative path under the mount point, without '..'")
        if not path.parts:  # "." or "./": the whole volume, with lost+found and every copy
            raise ValueError("must name a directory under the mount point, not the mount point")
        return "/".join(path.parts)  # "docs//a/./b/" is "docs/a/b"


class Retention(BaseModel):
    """Which snapshots ``prune`` keeps (restic's ``forget`` rules); applied after each run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep_last: int = Field(default=0, ge=0)
    keep_daily: int = Field(default=0, ge=0)
    keep_weekly: int = Field(default=0, ge=0)
    keep_monthly: int = Field(default=0, ge=0)
    # Kept snapshots at least this many days old move to the archive tier (ModifySnapshotTier),
    # as Data Lifecycle Manager does; the newest never. Archived snapshots are billed for at
    # least 90 days and take up to 72 hours to restore (docs/configuration.md).
    archive_after_days: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _some_rule(self) -> Retention:
        if not any((self.keep_last, self.keep_daily, self.keep_weekly, self.keep_monthly)):
            raise ValueError(
                "needs at least one of keep_last, keep_daily, keep_weekly, keep_monthly above 0"
            )
        return self


class Profile(BaseModel):
    """One backup target: a volume in an AZ and the local directories copied onto it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    region: str
    availability_zone: str
    # "volume": one standing volume, snapshotted after each run. "snapshots": no standing
    # volume; each run makes one from the profile's latest snapshot and deletes it after its
    # own snapshot (docs/configuration.md has the trade-off).
    storage: Literal["volume", "snapshots"] = "volume"
    volume_id: str | None = None  # set by `init` (storage = "volume")
    instance_type: str = "t3.micro"
    # Tried in order when AWS has no capacity for instance_type in the volume's zone.
    fallback_instance_types: tuple[str, ...] = ()
    ami: str = DEFAULT_AMI
    ssh_user: str = "ubuntu"
    mount_point: str = "/mnt/ec2backup"
    sources: tuple[Source, ...] = ()
    excludes: tuple[str, ...] = ()
    rsync_args: tuple[str, ...] = ()
    # A backup refuses (unless run with --allow-deletions) to delete more than this share of
    # the files in a source's copy: a source that was not there (an unmounted drive) must not
    # be mirrored as "delete everything".
    max_delete_percent: int = Field(default=50, ge=0, le=100)
    snapshot: bool = True
    tags: dict[str, str] = Field(default_factory=dict)
    security_group_ids: tuple[str, ...] = ()
    subnet_id: str | None = None
    # Bounds for each wait, in seconds: a step that does not finish in time fails the run.
    boot_timeout: float = Field(default=600, gt=0)
    attach_timeout: float = Field(default=300, gt=0)
    detach_timeout: float = Field(default=300, gt=0)
    ssh_timeout: float = Field(default=300, gt=0)
    # Snapshot retention applied after each successful run (none: keep every snapshot).
    retention: Retention | None = None
    # Dead-man's switch (core/deadman.py): the instance powers itself off (and so terminates)
    # once ec2backup has not re-armed it for this many minutes: an orphan lives at most this
    # long. ec2backup re-arms it while it works, however long a copy takes...
    instance_idle_minutes: int = Field(default=20, ge=1, le=10080)
    # ...up to this ceiling after boot, even for an ec2backup that is alive but stuck (it
    # fires first if it is the shorter). Two days: a first backup of a day and more is not cut.
    instance_lifetime_minutes: int = Field(default=2880, ge=1, le=10080)
    # Where SSH to the instances comes from: an address or network (CIDR). Unset: this host's
    # public address as AWS sees it, looked up at every run (it may change between runs).
    allow_ssh_from: str | None = None
    # A run whose sources no longer fit grows the volume (ModifyVolume, then the filesystem,
    # online) up to this many GiB instead of failing; none: never grown by itself.
    auto_grow_max_gib: int | None = Field(default=None, ge=1, le=16384)
    # Shell commands run after each run of the profile (sh -c), with the run's outcome in
    # EC2BACKUP_* environment variables; bounded by hook_timeout_seconds, and a hook that
    # fails is a warning, never a failed run.
    on_success: str | None = None
    on_failure: str | None = None
    hook_timeout_seconds: float = Field(default=300, gt=0, le=86400)
    # node_exporter textfile (*.prom) rewritten atomically after every backup run.
    metrics_file: Path | None = None

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not _REGION.match(v):
            raise ValueError(f"{v!r} is not a region name like 'us-east-1'")
        return v

    @field_validator("availability_zone")
    @classmethod
    def _az(cls, v: str) -> str:
        if not _AZ.match(v):
            raise ValueError(f"{v!r} is not an availability zone like 'us-east-1a'")
        return v

    @field_validator("volume_id")
    @classmethod
    def _volume(cls, v: str | None) -> str | None:
        if v is not None and not _VOLUME.match(v):
            raise ValueError(f"{v!r} is not a volume id like 'vol-0123456789abcdef0'")
        return v

    @field_validator("ami")
    @classmethod
    def _ami(cls, v: str) -> str:
        if not (v.startswith(("ami-", "/", "resolve:ssm:"))):
            raise ValueError("must be an AMI id (ami-...) or an SSM parameter name (/aws/...)")
        return v

    @field_validator("mount_point")
    @classmethod
    def _mount_point(cls, v: str) -> str:
        if not v.startswith("/") or v.rstrip("/") in ("", "/mnt") or ".." in v:
            raise ValueError("must be an absolute directory such as /mnt/ec2backup")
        return v.rstrip("/")

    @field_validator("metrics_file")
    @classmethod
    def _metrics_file(cls, v: Path | None) -> Path | None:
        if v is None:
            return v
        v = v.expanduser()
        if not v.is_absolute():
            raise ValueError("must be an absolute path, e.g. /var/lib/node_exporter/ec2backup.prom")
        if v.suffix != ".prom":
            raise ValueError(
                "must end in .prom: node_exporter's textfile collector reads only those"
            )
        return v

    @field_validator("on_success", "on_failure")
    @classmethod
    def _hook(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("is empty: give a shell command, or leave the field out")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if key.lower().startswith(("aws:", "ec2backup:")):
                raise ValueError(f"tag key {key!r} is reserved")
        return v

    @field_validator("allow_ssh_from")
    @classmethod
    def _network(cls, v: str | None) -> str | None:
        if v is None:
            return v
        import ipaddress

        try:
            return str(ipaddress.ip_network(v.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"{v!r} is not an address or network like 203.0.113.7 or 203.0.113.0/24"
            ) from None

    @model_validator(mode="after")
    def _storage(self) -> Profile:
        if self.storage == "snapshots" and self.volume_id is not None:
            raise ValueError('volume_id: a profile with storage = "snapshots" has no volume')
        if self.storage == "snapshots" and not self.snapshot:
            raise ValueError('snapshot: storage = "snapshots" keeps the backups as snapshots')
        return self

    def region_matches_az(self) -> bool:
        return self.availability_zone[:-1] == self.region


def is_region(name: str) -> bool:
    return bool(_REGION.match(name))


def is_availability_zone(name: str) -> bool:
    return bool(_AZ.match(name))


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def destination_clash(sources: tuple[Source, ...]) -> tuple[int, int, str] | None:
    """The first two sources (indices) whose destinations are the same directory or one
    inside the other, and which; None if every copy has a place of its own. Each copy is
    mirrored with deletions, so a second copy in or over it would be deleted by the first."""
    for j, later in enumerate(sources):
        for i, earlier in enumerate(sources[:j]):
            a, b = PurePosixPath(earlier.dest).parts, PurePosixPath(later.dest).parts
            if a == b:
                return i, j, "same"
            if a == b[: len(a)] or b == a[: len(b)]:
                return i, j, "nested"
    return None


def _check_destinations(profile: Profile, file: str) -> None:
    clash = destination_clash(profile.sources)
    if clash is None:
        return
    i, j, kind = clash
    a, b = profile.sources[i], profile.sources[j]
    if kind == "same":
        message = (
            f"sources {a.path} and {b.path} both copy to {a.dest!r} on the volume: each "
            "run's mirror of one would delete the other's copy"
        )
    else:
        outer, inner = (a, b) if len(a.dest) < len(b.dest) else (b, a)
        message = (
            f"source {inner.path} copies to {inner.dest!r}, inside {outer.dest!r} where "
            f"{outer.path} is copied: the mirror of {outer.path} would delete it"
        )
    raise ConfigError(
        message,
        file=file,
        profile=profile.name,
        field=f"sources[{j}].dest",
        hint="give each source a dest of its own, neither the same as another nor inside it",
    )


def parse_profile(name: str, data: dict[str, Any], file: str) -> Profile:
    try:
        profile = Profile.model_validate({**data, "name": name})
    except ValidationError as exc:
        # A misspelt key also shows up as a missing one: report the misspelling.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        first = errors[0]
        field = _field_path(first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            message = "is required"
        elif first["type"] == "extra_forbidden":
            message = "is not a known setting (see docs/configuration.md)"
        raise ConfigError(message, file=file, profile=name, field=field) from None
    if not profile.region_matches_az():
        raise ConfigError(
            f"availability zone {profile.availability_zone} is not in region {profile.region}",
            file=file,
            profile=name,
            field="availability_zone",
            hint=f"set availability_zone to a zone of {profile.region} "
            f"(e.g. {profile.region}a), or set region to {profile.availability_zone[:-1]}",
        )
    _check_destinations(profile, file)
    return profile


def read_document(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(
            "file not found",
            file=str(path),
            hint="create a profile with `ec2backup init`, or pass --config PATH",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"not valid TOML: {exc}", file=str(path), hint="fix the syntax at that line"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot be read: {exc.strerror}", file=str(path)) from None


def load_profile(path: Path, name: str) -> Profile:
    document = read_document(path)
    profiles = document.get("profiles")
    if not isinstance(profiles, dict):
        raise ConfigError(
            "has no [profiles.NAME] table", file=str(path), hint="see docs/configuration.md"
        )
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(
            f"unknown profile {name!r} (known: {known})",
            file=str(path),
            hint="pass --profile with one of them, or create it with `ec2backup init`",
        )
    data = profiles[name]
    if not isinstance(data, dict):
        raise ConfigError("must be a table", file=str(path), profile=name)
    return parse_profile(name, data, str(path))


def require_backup_ready(profile: Profile, file: str) -> None:
    """What a backup run needs beyond a valid profile."""
    if profile.storage == "volume":
        require_volume(profile, file)
    if not profile.sources:
        raise ConfigError(
            "lists no directory to back up",
            file=file,
            profile=profile.name,
            field="sources",
            hint='add sources = [{ path = "/abs/dir", dest = "name" }]',
        )


def require_volume(profile: Profile, file: str) -> None:
    if profile.volume_id is None:
        raise ConfigError(
            "is required for a backup",
            file=file,
            profile=profile.name,
            field="volume_id",
            hint="run `ec2backup init` to create the volume, or set volume_id",
        )


def profile_to_toml(profile: Profile) -> dict[str, Any]:
    """The profile as it is written to the file: only what differs from the defaults."""
    data = profile.model_dump(mode="json", exclude={"name"}, exclude_defaults=True)
    for key in ("region", "availability_zone"):
        data[key] = getattr(profile, key)
    if profile.sources:
        data["sources"] = [{"path": str(s.path), "dest": s.dest} for s in profile.sources]
    return data


def write_profile(path: Path, profile: Profile) -> None:
    """Add or replace one profile, keeping the rest of the file (comments included)."""
    import tomlkit

    document = tomlkit.parse(path.read_text()) if path.exists() else tomlkit.document()
    profiles = document.setdefault("profiles", tomlkit.table(is_super_table=True))
    table = tomlkit.table()
    for key, value in profile_to_toml(profile).items():
        if key == "sources":
            array = tomlkit.array()
            for source in value:
                inline = tomlkit.inline_table()
                inline.update(source)
                array.append(inline)
            table[key] = array
        else:
            table[key] = value
    profiles[profile.name] = table
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, tomlkit.dumps(document).encode())


def remove_profile(path: Path, name: str) -> None:
    """Take one profile out of the file, keeping the rest (comments included)."""
    import tomlkit

    if not path.exists():
        return
    document = tomlkit.parse(path.read_text())
    profiles = document.get("profiles")
    if profiles is None or name not in profiles:
        return
    del profiles[name]
    write_atomically(path, tomlkit.dumps(document).encode())
