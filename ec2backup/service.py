"""What the CLI's commands do. The CLI parses and renders; everything else happens here.

Bad input is found before anything is created: the profile is validated, the sources and the
local tools are checked, and the volume is looked at (read-only calls) before a run is
recorded or an instance launched.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import leases
from .app import App
from .config import Profile, load_profile, parse_profile, require_backup_ready
from .errors import ConfigError, InsufficientSpaceError, RunStateError, UserInputError
from .models import Event, Run, utcnow
from .ports import TAG_MANAGED, TAG_PROFILE, Ec2, Volume
from .states import FINAL_STATES, RunKind, RunState, fire
from .store import RunRecorder


def new_run_id() -> str:
    # Sorts by time, reads at a glance, and leaves room in a 64-character ClientToken.
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


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
    if volume.availability_zone != profile.availability_zone:
        raise ConfigError(
            f"volume {volume.id} is in {volume.availability_zone}, not in "
            f"{profile.availability_zone}",
            file=file,
            profile=profile.name,
            field="availability_zone",
            hint=f'set availability_zone = "{volume.availability_zone}"',
        )
    if volume.attachments:
        raise UserInputError(
            f"volume {volume.id} is attached to instance {volume.attachments[0].instance_id}",
            hint="detach it first, or `ec2backup reap` if a crashed run left it there",
        )
    return volume


def check_fits(profile: Profile, volume: Volume) -> None:
    """Data larger than the whole volume can never fit: refuse before launching anything.
    (The exact check, against the filesystem's free space, runs on the instance.)"""
    from .steps import tree_bytes

    local = sum(tree_bytes(source.path) for source in profile.sources)
    usable = volume.size_gib * 2**30 * 0.95  # ext4's own metadata and reserve
    if local > usable:
        raise InsufficientSpaceError(
            f"the sources hold {local / 2**30:.2f} GiB, more than volume {volume.id} "
            f"({volume.size_gib} GiB) can hold",
            hint="grow the volume (aws ec2 modify-volume, then resize2fs) or exclude some data",
        )


# --- starting and resuming runs ----------------------------------------------------------


def _create_run(
    app: App,
    run_id: str,
    kind: RunKind,
    profile: Profile,
    extra: dict[str, Any],
    *,
    volume_id: str | None = None,
) -> Run:
    now = utcnow()
    run = Run(
        id=run_id,
        kind=kind,
        profile=profile.name,
        state=RunState.CREATED,
        host=socket.gethostname(),
        volume_id=volume_id or (None if kind == RunKind.RESTORE else profile.volume_id),
        launch_attempt=0,
        warnings=[],
        config={"profile": profile.model_dump(mode="json"), **extra},
        created_at=now,
        updated_at=now,
    )
    with app.store.session() as session:
        session.add(run)
        session.add(Event(run_id=run_id, from_state=None, to_state=RunState.CREATED, at=now))
        session.commit()
    return run


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
    with leases.held(
        app.store, run_id, [leases.run_key(run_id), leases.volume_key(profile.volume_id)]
    ):
        ec2 = app.adapters.ec2(profile.region, None)
        check_fits(profile, check_volume(profile, ec2, file))
        # Resolved now: a missing AMI is bad input, found before anything is created.
        image_id = ec2.resolve_image(profile.ami)
        _create_run(app, run_id, RunKind.BACKUP, profile, {"image_id": image_id})
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
    if app.config_path.exists():
        from .config import read_document

        existing = read_document(app.config_path).get("profiles", {})
        if profile_name in existing:
            raise ConfigError(
                "already exists",
                file=file,
                profile=profile_name,
                hint="choose another --profile name, or edit the file",
            )
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
    profile = parse_profile(profile_name, data, file)
    check_sources(profile, file)
    app.adapters.syncer().check_available()
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
        )
        return _drive(app, run_id)


def start_restore(
    app: App,
    *,
    to: Path,
    run_id: str | None = None,
    snapshot_id: str | None = None,
    profile_name: str | None = None,
    live: bool = False,
    path: str | None = None,
) -> Run:
    """Copy a backup back into ``to``: from the snapshot of run ``run_id``, from
    ``snapshot_id``, or (``live``) from the profile's volume itself, mounted read-only."""
    if sum(bool(x) for x in (run_id, snapshot_id, live)) != 1:
        raise UserInputError(
            "say what to restore from", hint="give exactly one of --run, --snapshot or --live"
        )
    if path and (Path(path).is_absolute() or ".." in Path(path).parts):
        raise UserInputError(f"--path {path!r} must be relative, without '..'")
    to = to.expanduser().absolute()
    if to.exists() and not to.is_dir():
        raise UserInputError(f"--to {to} exists and is not a directory")
    file = str(app.config_path)
    if run_id:
        with app.store.session() as session:
            source_run = app.store.get_run(session, run_id)
            if source_run.kind != RunKind.BACKUP or not source_run.snapshot_id:
                raise RunStateError(
                    f"run {run_id} is a {source_run.kind} run with no snapshot",
                    hint="pick a backup run that made one (`ec2backup runs`), or --snapshot",
                )
            snapshot_id = source_run.snapshot_id
            profile = Profile.model_validate(source_run.config["profile"])
    elif not profile_name:
        raise UserInputError("--profile is needed with --snapshot and --live")
    else:
        profile = load_profile(app.config_path, profile_name)
    app.adapters.syncer().check_available()
    ec2 = app.adapters.ec2(profile.region, None)
    extra: dict[str, Any] = {"to": str(to), "path": path or "", "live": live}
    keys: list[str] = []
    if live:
        require_backup_ready(profile, file)
        check_volume(profile, ec2, file)
        assert profile.volume_id is not None
        keys.append(leases.volume_key(profile.volume_id))
    else:
        assert snapshot_id is not None
        snapshot = ec2.get_snapshot(snapshot_id)
        if snapshot is None:
            raise UserInputError(
                f"snapshot {snapshot_id} does not exist in {profile.region}",
                hint="list them with `ec2backup snapshots`",
            )
        if snapshot.state != "completed":
            raise UserInputError(
                f"snapshot {snapshot_id} is {snapshot.state}", hint="try again once it completes"
            )
        extra |= {"snapshot_id": snapshot_id, "size_gib": snapshot.size_gib or 1}
    extra["image_id"] = ec2.resolve_image(profile.ami)
    new_id = new_run_id()
    with leases.held(app.store, new_id, [leases.run_key(new_id), *keys]):
        _create_run(
            app,
            new_id,
            RunKind.RESTORE,
            profile,
            extra,
            volume_id=profile.volume_id if live else None,
        )
        return _drive(app, new_id)


def start_verify(app: App, profile_name: str) -> Run:
    """Compare the profile's sources with the volume's copy by checksum, read-only."""
    file = str(app.config_path)
    profile = load_profile(app.config_path, profile_name)
    require_backup_ready(profile, file)
    check_sources(profile, file)
    app.adapters.syncer().check_available()
    assert profile.volume_id is not None
    ec2 = app.adapters.ec2(profile.region, None)
    check_volume(profile, ec2, file)
    image_id = ec2.resolve_image(profile.ami)
    run_id = new_run_id()
    keys = [leases.run_key(run_id), leases.volume_key(profile.volume_id)]
    with leases.held(app.store, run_id, keys):
        _create_run(app, run_id, RunKind.VERIFY, profile, {"image_id": image_id})
        return _drive(app, run_id)


def differences(run: Run) -> list[str]:
    """What a verify run found, as recorded on it."""
    return [w.removeprefix("differs: ") for w in run.warnings if w.startswith("differs: ")]


CHECKIP_URL = "https://checkip.amazonaws.com"


def ssh_cidr(allow_ssh_from: str | None) -> str:
    """Where the instance may be reached from over SSH: the given network, else this host's
    public address as AWS sees it (one /32). Never the whole internet unless asked for."""
    import ipaddress

    if allow_ssh_from:
        try:
            return str(ipaddress.ip_network(allow_ssh_from, strict=False))
        except ValueError:
            raise UserInputError(
                f"--allow-ssh-from {allow_ssh_from!r} is not an address or network",
                hint="give e.g. 203.0.113.7 or 203.0.113.0/24",
            ) from None
    import urllib.request

    try:
        with urllib.request.urlopen(CHECKIP_URL, timeout=5) as response:
            address = response.read().decode().strip()
        return str(ipaddress.ip_network(address))
    except (OSError, ValueError) as exc:
        raise UserInputError(
            f"cannot find this host's public address ({CHECKIP_URL}: {exc})",
            hint="pass --allow-ssh-from with the address or network the backups run from",
        ) from None


def _dest_name(path: Path) -> str:
    name = path.expanduser().absolute().name
    return name or "root"


def resume(app: App, run_id: str, *, clean: bool = False, snapshot: bool = False) -> Run:
    """Continue a run from its last committed state; with ``clean``, force-clean it instead
    (unmount, detach, terminate; end ``aborted``)."""
    with app.store.session() as session:
        run = app.store.get_run(session, run_id)
        if run.state in FINAL_STATES:
            raise RunStateError(
                f"run {run_id} is already {run.state}; there is nothing to "
                + ("clean up" if clean else "resume"),
                hint="start a new one with `ec2backup run`",
            )
        keys = [leases.run_key(run.id)]
        if run.volume_id:
            keys.append(leases.volume_key(run.volume_id))
    with leases.held(app.store, run_id, keys):
        return _drive(app, run_id, resuming=True, clean=clean, snapshot=snapshot)


def _drive(
    app: App, run_id: str, *, resuming: bool = False, clean: bool = False, snapshot: bool = False
) -> Run:
    """Drive a run whose leases this process holds."""
    from . import engine
    from .keys import generate_run_key, remove_run_dir
    from .steps import StepContext

    with app.store.session() as session:
        run = app.store.get_run(session, run_id)
        profile = Profile.model_validate(run.config["profile"])
        run_dir = app.run_dir(run.id)
        key_path, public_key = generate_run_key(run_dir)
        recorder = RunRecorder(session, run)
        ctx = StepContext(
            run=run,
            recorder=recorder,
            profile=profile,
            ec2=app.adapters.ec2(profile.region, run.id),
            connector=app.adapters.connector(),
            syncer=app.adapters.syncer(),
            run_dir=run_dir,
            key_path=key_path,
            public_key=public_key,
            progress=app.progress,
            on_state=app.on_state,
        )
        engine.bind(run, ctx)
        try:
            if clean:
                engine.clean(ctx, snapshot=snapshot)
            else:
                if resuming and run.state == RunState.FAILED:
                    run.error = None
                    run.error_type = None
                    fire(run, "resume", detail=f"resumed from {run.failed_from}")
                engine.drive(ctx)
            if run.kind == RunKind.INIT and run.state == RunState.DONE:
                _write_initialised_profile(run, profile)
            if run.kind == RunKind.BACKUP and run.state == RunState.DONE and profile.retention:
                from .snapshots import apply_profile_retention

                apply_profile_retention(app, profile)
        finally:
            # The run's key is needed only while the run can still be resumed.
            if run.state in FINAL_STATES:
                remove_run_dir(run_dir)
        return run


def _write_initialised_profile(run: Run, profile: Profile) -> None:
    from .config import write_profile

    path = Path(run.config["config_path"])
    write_profile(path, profile.model_copy(update={"volume_id": run.volume_id}))


# --- reap --------------------------------------------------------------------------------


def reap_regions(app: App, regions: list[str]) -> list[str]:
    """The regions to sweep: those given, else those of the config's profiles, else boto3's
    default region. Reap must work without a config or a database."""
    if regions:
        return regions
    from .config import read_document

    found: set[str] = set()
    if app.config_path.exists():
        try:
            profiles = read_document(app.config_path).get("profiles", {})
            found = {
                p["region"] for p in profiles.values() if isinstance(p, dict) and "region" in p
            }
        except ConfigError:
            found = set()
    if not found:
        import boto3

        region = boto3.session.Session().region_name
        if not region:
            raise UserInputError(
                "no region to sweep", hint="pass --region, or set AWS_DEFAULT_REGION"
            )
        found = {region}
    return sorted(found)


def reap(
    app: App, *, regions: list[str], act: bool, older_than: str | None
) -> list[dict[str, Any]]:
    from .reap import parse_duration, reap_restore_volumes
    from .reap import reap as reap_region

    age = parse_duration(older_than) if older_than else None
    rows: list[dict[str, Any]] = []
    for region in reap_regions(app, regions):
        ec2 = app.adapters.ec2(region, None)
        for verdict in reap_region(app.store, ec2, act=act, older_than=age):
            rows.append({"region": region, "resource": verdict.instance.id, **verdict.row()})
        # After the instances: a volume they held is free (and deletable) only then.
        for volume in reap_restore_volumes(app.store, ec2, act=act):
            rows.append({"region": region, "resource": volume.volume_id, **volume.row()})
    return rows


# The read-only history lives in history.py (light imports for `runs` and `show`).
from .history import list_runs, run_summary, show_run  # noqa: E402

__all__ = ["list_runs", "run_summary", "show_run"]
