"""``ec2backup init``, ``run`` and ``verify``: their input checks, then a run of that kind."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import (
    Profile,
    is_availability_zone,
    is_region,
    load_profile,
    parse_profile,
    require_backup_ready,
)
from ..core.states import INIT_KINDS, RunKind
from ..core.tags import TAG_MANAGED, TAG_PROFILE
from ..db import leases
from ..db.models import Run
from ..errors import ConfigError, UserInputError
from ..ports import Ec2, Snapshot
from .app import App
from .checks import check_fits, check_fits_in, check_sources, check_volume, plan_launch
from .heal import heal
from .hooks import refusals_reported
from .runner import _create_run, _drive, new_run_id

log = logging.getLogger(__name__)


def start_backup(app: App, profile_name: str, *, allow_deletions: bool = False) -> Run:
    file = str(app.config_path)
    profile = load_profile(app.config_path, profile_name)
    with refusals_reported(app, profile, RunKind.BACKUP) as began:
        require_backup_ready(profile, file)
        check_sources(profile, file)
        app.adapters.syncer().check_available()
        if profile.storage == "snapshots":
            return _start_snapshot_backup(app, profile, file, began, allow_deletions)
        assert profile.volume_id is not None
        run_id = new_run_id()
        # The volume's lease first: a second run of the same volume is refused naming the
        # holder, before it looks at (or touches) the volume.
        keys = [leases.run_key(run_id), leases.volume_key(profile.volume_id)]
        with leases.held(app.store, run_id, keys):
            # An earlier run of the profile that nobody drives any more is finished or cleaned
            # first: it must not hold the volume (or bill) any longer.
            healed = heal(app, profile.name, profile.region, held=keys)
            ec2 = app.adapters.ec2(profile.region, None)
            check_fits(profile, check_volume(profile, ec2, file))
            # Now: a missing AMI, a type the zone does not offer or a launch IAM refuses is
            # bad input, found before anything is created.
            plan = plan_launch(profile, ec2, file)
            extra: dict[str, Any] = plan.config()
            if allow_deletions:  # recorded: a resumed run keeps what the command said
                extra["allow_deletions"] = True
            _create_run(app, run_id, RunKind.BACKUP, profile, extra, warnings=healed)
            began()
            return _drive(app, run_id)
    raise AssertionError("unreachable")  # the block returns or raises


def latest_snapshot(ec2: Ec2, profile_name: str) -> tuple[Snapshot | None, list[Snapshot]]:
    """The newest usable snapshot of the profile (completed, in the standard tier or restored
    from the archive), and the newer ones passed over (pending, archived)."""
    from .owned import profile_snapshots
    from .tiers import usable_now

    passed: list[Snapshot] = []
    for snapshot in profile_snapshots(ec2, profile_name):
        if snapshot.state == "completed" and usable_now(snapshot):
            return snapshot, passed
        if snapshot.state != "error":
            passed.append(snapshot)
    return None, passed


def _start_snapshot_backup(
    app: App, profile: Profile, file: str, began: Callable[[], None], allow_deletions: bool
) -> Run:
    """Snapshots-only storage: the run makes its own volume from the profile's latest
    snapshot, copies onto it, snapshots it and deletes it."""
    run_id = new_run_id()
    keys = [leases.run_key(run_id), leases.profile_key(profile.name)]
    with leases.held(app.store, run_id, keys):
        healed = heal(app, profile.name, profile.region, held=keys)
        ec2 = app.adapters.ec2(profile.region, None)
        base, passed = latest_snapshot(ec2, profile.name)
        if base is None:
            raise ConfigError(
                "has no completed snapshot to start from"
                + (f" ({len(passed)} pending or archived)" if passed else ""),
                file=file,
                profile=profile.name,
                field="storage",
                hint="make the first one with `ec2backup init --storage snapshots`, or wait "
                "until a pending snapshot completes (`ec2backup snapshots`)",
            )
        size_gib = base.size_gib or 1
        check_fits_in(
            profile,
            size_gib,
            f"the volumes of this profile (made from snapshot {base.id})",
            "exclude some data, or start a profile with a larger --size",
        )
        image_id = ec2.resolve_image(profile.ami)
        extra: dict[str, Any] = {
            "image_id": image_id,
            "base_snapshot_id": base.id,
            "size_gib": size_gib,
        }
        if allow_deletions:  # recorded: a resumed run keeps what the command said
            extra["allow_deletions"] = True
        run = _create_run(app, run_id, RunKind.SNAPSHOT_BACKUP, profile, extra, warnings=healed)
        if passed:
            note = (
                f"started from {base.id}: newer snapshot(s) "
                f"{', '.join(s.id for s in passed)} not usable yet (pending or archived)"
            )
            with app.store.session() as session:
                stored = app.store.get_run(session, run.id)
                stored.warnings = [*stored.warnings, note]
                session.commit()
        began()
        return _drive(app, run_id)


def start_init(
    app: App,
    profile_name: str,
    *,
    region: str | None,
    availability_zone: str,
    size_gib: int,
    sources: list[Path],
    settings: dict[str, Any] | None = None,
    allow_ssh_from: str | None = None,
    storage: str = "volume",
) -> Run:
    """A new profile: its volume made and formatted, or, with ``storage="snapshots"``, a
    formatted volume snapshotted (the profile's first snapshot) and deleted."""
    file = str(app.config_path)
    region = region or region_of_zone(availability_zone)
    if not 1 <= size_gib <= 16384:
        raise UserInputError(
            f"--size {size_gib} is out of range", hint="give a size in GiB from 1 to 16384"
        )
    paths = [p.expanduser().absolute() for p in sources]
    dests, notes = destination_names(paths)
    for note in notes:
        log.warning("%s", note)
    data = {
        **(settings or {}),
        **({"storage": storage} if storage != "volume" else {}),
        "region": region,
        "availability_zone": availability_zone,
        "sources": [{"path": str(p), "dest": d} for p, d in zip(paths, dests, strict=True)],
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
    healed = heal(
        app,
        profile_name,
        profile.region,
        kinds=sorted(INIT_KINDS),
        starting_over=True,
    )
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
    # Before the security group and the volume: nothing is created for a launch that cannot be.
    plan = plan_launch(profile, ec2, file)
    if not profile.security_group_ids:
        cidr = ssh_cidr(allow_ssh_from)
        group = ec2.ensure_security_group(
            f"ec2backup-{profile_name}",
            cidr,
            {TAG_MANAGED: "true", TAG_PROFILE: profile_name, "Name": f"ec2backup {profile_name}"},
        )
        profile = profile.model_copy(update={"security_group_ids": (group,)})
    run_id = new_run_id()
    kind = RunKind.SNAPSHOT_INIT if profile.storage == "snapshots" else RunKind.INIT
    with leases.held(app.store, run_id, [leases.run_key(run_id)]):
        _create_run(
            app,
            run_id,
            kind,
            profile,
            {"size_gib": size_gib, "config_path": str(app.config_path), **plan.config()},
            warnings=healed,
        )
        return _drive(app, run_id)


def start_verify(app: App, profile_name: str) -> Run:
    """Compare the profile's sources with the volume's copy by checksum, read-only."""
    file = str(app.config_path)
    profile = load_profile(app.config_path, profile_name)
    if profile.storage == "snapshots":
        raise UserInputError(
            f'profile {profile.name} keeps no volume to verify (storage = "snapshots")',
            hint="restore its latest snapshot into a scratch directory "
            "(`ec2backup restore --snapshot ID --profile NAME --to DIR`) and compare that",
        )
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
        plan = plan_launch(profile, ec2, file)
        _create_run(app, run_id, RunKind.VERIFY, profile, plan.config(), warnings=healed)
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


def destination_names(paths: list[Path]) -> tuple[list[str], list[str]]:
    """A destination for each source: its folder's name, or where two sources share one,
    enough of their parents' names to tell them apart (``/home/a/docs`` and ``/home/b/docs``
    become ``a-docs`` and ``b-docs``); and a note saying so when a name had to change."""

    def name(path: Path, depth: int) -> str:
        parts = [p for p in path.parts if p != path.anchor] or ["root"]
        return "-".join(parts[-depth:])

    depths = [1] * len(paths)
    while True:
        names = [name(p, d) for p, d in zip(paths, depths, strict=True)]
        longer = [
            i
            for i, n in enumerate(names)
            if names.count(n) > 1 and depths[i] < len(paths[i].parts) - 1
        ]
        if not longer:
            break
        for i in longer:
            depths[i] += 1
    # The same directory given twice, or names that cannot be told apart: number them.
    for i, n in enumerate(list(names)):
        if n in names[:i]:
            names[i] = f"{n}-{names[:i].count(n) + 1}"
    renamed = [i for i, p in enumerate(paths) if names[i] != name(p, 1)]
    notes = []
    if renamed:
        notes.append(
            "sources share a folder name, so their copies get distinct names on the volume: "
            + ", ".join(f"{paths[i]} -> {names[i]!r}" for i in renamed)
        )
    return names, notes


def region_of_zone(availability_zone: str) -> str:
    """The region of ``--az``, which must be a zone (``us-east-1a``), not a region."""
    if is_region(availability_zone):
        raise UserInputError(
            f"--az {availability_zone} is a region, not an availability zone",
            hint=f"give one of its zones, e.g. --az {availability_zone}a",
        )
    if not is_availability_zone(availability_zone):
        raise UserInputError(
            f"--az {availability_zone} is not an availability zone",
            hint="give one like --az us-east-1a",
        )
    return availability_zone[:-1]
