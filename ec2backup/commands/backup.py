"""``ec2backup init``, ``run`` and ``verify``: their input checks, then a run of that kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import load_profile, parse_profile, require_backup_ready
from ..core.states import RunKind
from ..core.tags import TAG_MANAGED, TAG_PROFILE
from ..db import leases
from ..db.models import Run
from ..errors import ConfigError, UserInputError
from .app import App
from .checks import check_fits, check_sources, check_volume
from .heal import heal
from .runner import _create_run, _drive, new_run_id


def start_backup(app: App, profile_name: str) -> Run:
    file = str(app.config_path)
    profile = load_profile(app.config_path, profile_name)
    require_backup_ready(profile, file)
    check_sources(profile, file)
    app.adapters.syncer().check_available()
    assert profile.volume_id is not None
    run_id = new_run_id()
    # The volume's lease first: a second run of the same volume is refused naming the holder,
    # before it looks at (or touches) the volume.
    keys = [leases.run_key(run_id), leases.volume_key(profile.volume_id)]
    with leases.held(app.store, run_id, keys):
        # An earlier run of the profile that nobody drives any more is finished or cleaned
        # first: it must not hold the volume (or bill) any longer.
        healed = heal(app, profile.name, profile.region, held=keys)
        ec2 = app.adapters.ec2(profile.region, None)
        check_fits(profile, check_volume(profile, ec2, file))
        # Resolved now: a missing AMI is bad input, found before anything is created.
        image_id = ec2.resolve_image(profile.ami)
        _create_run(app, run_id, RunKind.BACKUP, profile, {"image_id": image_id}, warnings=healed)
        return _drive(app, run_id)


def start_init(
    app: App,
    profile_name: str,
    *,
    region: str,
    availability_zone: str,
    size_gib: int,
    sources: list[Path],
    settings: dict[str, Any] | None = None,
    allow_ssh_from: str | None = None,
) -> Run:
    file = str(app.config_path)
    if not 1 <= size_gib <= 16384:
        raise UserInputError(
            f"--size {size_gib} is out of range", hint="give a size in GiB from 1 to 16384"
        )
    data = {
        **(settings or {}),
        "region": region,
        "availability_zone": availability_zone,
        "sources": [
            {"path": str(p.expanduser().absolute()), "dest": _dest_name(p)} for p in sources
        ],
    }
    if allow_ssh_from:
        # Kept in the profile: every run admits SSH from there (else from where it runs).
        data["allow_ssh_from"] = ssh_cidr(allow_ssh_from)
    profile = parse_profile(profile_name, data, file)
    check_sources(profile, file)
    app.adapters.syncer().check_available()
    # An earlier init of this profile that nobody drives any more (killed, crashed) is
    # force-cleaned, its empty volume deleted and its profile entry removed: this one starts
    # over. A live one refuses (LeaseHeldError).
    healed = heal(app, profile_name, profile.region, kinds=[RunKind.INIT], starting_over=True)
    if app.config_path.exists():
        from ..config import read_document

        existing = read_document(app.config_path).get("profiles", {})
        if profile_name in existing:
            raise ConfigError(
                "already exists",
                file=file,
                profile=profile_name,
                hint="choose another --profile name, or edit the file",
            )
    ec2 = app.adapters.ec2(profile.region, None)
    image_id = ec2.resolve_image(profile.ami)
    if not profile.security_group_ids:
        cidr = ssh_cidr(allow_ssh_from)
        group = ec2.ensure_security_group(
            f"ec2backup-{profile_name}",
            cidr,
            {TAG_MANAGED: "true", TAG_PROFILE: profile_name, "Name": f"ec2backup {profile_name}"},
        )
        profile = profile.model_copy(update={"security_group_ids": (group,)})
    run_id = new_run_id()
    with leases.held(app.store, run_id, [leases.run_key(run_id)]):
        _create_run(
            app,
            run_id,
            RunKind.INIT,
            profile,
            {"size_gib": size_gib, "config_path": str(app.config_path), "image_id": image_id},
            warnings=healed,
        )
        return _drive(app, run_id)


def start_verify(app: App, profile_name: str) -> Run:
    """Compare the profile's sources with the volume's copy by checksum, read-only."""
    file = str(app.config_path)
    profile = load_profile(app.config_path, profile_name)
    require_backup_ready(profile, file)
    check_sources(profile, file)
    app.adapters.syncer().check_available()
    assert profile.volume_id is not None
    run_id = new_run_id()
    keys = [leases.run_key(run_id), leases.volume_key(profile.volume_id)]
    with leases.held(app.store, run_id, keys):
        healed = heal(app, profile.name, profile.region, held=keys)
        ec2 = app.adapters.ec2(profile.region, None)
        check_volume(profile, ec2, file)
        image_id = ec2.resolve_image(profile.ami)
        _create_run(app, run_id, RunKind.VERIFY, profile, {"image_id": image_id}, warnings=healed)
        return _drive(app, run_id)


def differences(run: Run) -> list[str]:
    """What a verify run found, as recorded on it."""
    return [w.removeprefix("differs: ") for w in run.warnings if w.startswith("differs: ")]


def ssh_cidr(allow_ssh_from: str | None) -> str:
    """Where the instance may be reached from over SSH: the given network, else this host's
    public address as AWS sees it (one /32). Never the whole internet unless asked for."""
    from ..adapters.address import checkip_url
    from ..adapters.address import ssh_cidr as lookup

    try:
        return lookup(allow_ssh_from)
    except ValueError:
        if allow_ssh_from:
            raise UserInputError(
                f"--allow-ssh-from {allow_ssh_from!r} is not an address or network",
                hint="give e.g. 203.0.113.7 or 203.0.113.0/24",
            ) from None
        raise UserInputError(
            f"cannot find this host's public address ({checkip_url()} answered no address)",
            hint="pass --allow-ssh-from with the address or network the backups run from",
        ) from None
    except OSError as exc:
        raise UserInputError(
            f"cannot find this host's public address ({checkip_url()}: {exc})",
            hint="pass --allow-ssh-from with the address or network the backups run from",
        ) from None


def _dest_name(path: Path) -> str:
    name = path.expanduser().absolute().name
    return name or "root"
