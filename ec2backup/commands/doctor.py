"""``ec2backup doctor``: is this machine (and this profile) ready for a backup?

One line per check: ``pass``, ``fail`` (with the fix) or ``skip`` (a check it depends on
failed). Local checks: the config file, rsync (not openrsync), ssh, the database schema. Cloud
checks: the AWS credentials (STS GetCallerIdentity) always; with a profile also the region, the
volume (exists, in the profile's AZ, not attached), the AMI and the security groups. Every call
is read-only and nothing is created: not even the database file.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..config import Profile, load_profile, parse_profile, read_document
from ..errors import ConfigError, Ec2BackupError
from ..ports import Account, Ec2, Syncer

__all__ = ["EXIT_FAILED", "Check", "check_database", "run_checks"]

EXIT_FAILED = 3  # as EnvironmentProblem: the machine or the account lacks something


@dataclass(frozen=True)
class Check:
    check: str
    status: str  # pass | fail | skip
    detail: str
    fix: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "fail"


def _pass(name: str, detail: str) -> Check:
    return Check(name, "pass", detail)


def _fail(name: str, detail: str, fix: str | None) -> Check:
    return Check(name, "fail", detail, fix)


def _from_error(name: str, exc: Ec2BackupError) -> Check:
    message = exc.message
    if exc.resources:
        message += " (" + ", ".join(f"{k} {v}" for k, v in exc.resources.items()) + ")"
    return _fail(name, message, exc.hint)


def _skip(name: str, because: str) -> Check:
    return Check(name, "skip", f"not checked: {because}")


# --- local --------------------------------------------------------------------------------


def check_config(config_path: Path, profile_name: str | None) -> tuple[Check, Profile | None]:
    name = "config"
    try:
        if profile_name is not None:
            profile = load_profile(config_path, profile_name)
            detail = f"{config_path}: profile {profile_name!r} is valid"
        elif not config_path.exists():
            # A fresh install: `init` creates the file. Not a fault, as with the database.
            return _pass(
                name, f"{config_path} does not exist yet; `ec2backup init` creates it"
            ), None
        else:
            profile = None
            document = read_document(config_path)
            profiles = document.get("profiles", {})
            if not isinstance(profiles, dict):
                raise ConfigError("[profiles] must be a table", file=str(config_path))
            for pname, data in profiles.items():
                if not isinstance(data, dict):
                    raise ConfigError("must be a table", file=str(config_path), profile=pname)
                parse_profile(pname, data, str(config_path))
            detail = f"{config_path}: {len(profiles)} profile(s) valid"
        from .cost import load_prices

        load_prices(config_path)
    except Ec2BackupError as exc:
        return _from_error(name, exc), None
    return _pass(name, detail), profile


def check_rsync(syncer: Syncer) -> Check:
    try:
        syncer.check_available()
    except Ec2BackupError as exc:
        return _from_error("rsync", exc)
    return _pass("rsync", f"{shutil.which('rsync') or 'rsync'}: rsync 3.x, not openrsync")


def check_ssh() -> Check:
    found = shutil.which("ssh")
    if found is None:
        return _fail(
            "ssh",
            "ssh is not installed (not found on PATH)",
            "install the OpenSSH client, e.g. `apt install openssh-client`",
        )
    return _pass("ssh", found)


def check_database(db_url: str) -> Check:
    """The schema version, read without creating or upgrading anything."""
    import sqlite3

    from sqlalchemy import create_engine, inspect
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, DatabaseError

    from ..db.sqlite_runs import SCHEMA_HEAD
    from ..db.store import current_revision

    name = "database"
    try:
        url = make_url(db_url)
    except ArgumentError as exc:
        return _fail(name, f"{db_url!r} is not a database URL ({exc})", "fix --db/EC2BACKUP_DB")
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite":
        database = url.database
        if not database or database == ":memory:":
            return _pass(name, f"{shown}: in memory")
        path = Path(database).expanduser()
        if not path.exists():
            return _pass(name, f"{path} does not exist yet; it is created on first use")
    try:
        engine = create_engine(url)
    except Exception as exc:  # a driver that is not installed, a bad option
        return _fail(name, f"{shown}: {exc}", "install the database driver or fix the URL")
    try:
        revision = current_revision(engine)
        has_tables = bool(inspect(engine).get_table_names())
    except (DatabaseError, sqlite3.DatabaseError) as exc:
        return _fail(
            name,
            f"{shown} is not a usable ec2backup database ({getattr(exc, 'orig', exc)})",
            "move the file aside (a new one is created), or pass another --db",
        )
    finally:
        engine.dispose()
    if revision == SCHEMA_HEAD:
        return _pass(name, f"{shown}: schema {revision} (current)")
    if revision is None:
        if has_tables:
            return _fail(
                name,
                f"{shown} has tables but no ec2backup schema version",
                "pass another --db; this one belongs to something else",
            )
        return _pass(name, f"{shown}: empty; the schema is created on first use")
    if revision in _known_revisions():
        return _pass(name, f"{shown}: schema {revision}; upgraded to {SCHEMA_HEAD} on next use")
    return _fail(
        name,
        f"{shown} has schema {revision}, newer than this ec2backup knows ({SCHEMA_HEAD})",
        "upgrade ec2backup, or pass another --db",
    )


def _known_revisions() -> set[str]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from ..db.store import migrations_dir

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return {s.revision for s in ScriptDirectory.from_config(config).walk_revisions()}


# --- cloud --------------------------------------------------------------------------------


def check_credentials(probe: Account) -> Check:
    try:
        who = probe.caller_identity()
    except Ec2BackupError as exc:
        return _from_error("credentials", exc)
    return _pass("credentials", f"account {who['account']} as {who['arn']}")


def check_region(probe: Account, region: str) -> Check:
    try:
        status = probe.region_status()
    except Ec2BackupError as exc:
        check = _from_error("region", exc)
        return _fail(
            "region",
            check.detail,
            f"enable {region} for the account (AWS console: Account, AWS Regions) or fix "
            "the profile's region",
        )
    if status is None:
        return _fail(
            "region",
            f"{region} is not an AWS region this boto3 knows",
            "fix the profile's region (e.g. us-east-1), or upgrade boto3 if it is new",
        )
    if status == "not-opted-in":
        return _fail(
            "region",
            f"{region} is not enabled for this account",
            "enable it in the AWS console (Account, AWS Regions), or use another region",
        )
    return _pass("region", f"{region} ({status})")


def check_volume(probe: Ec2, profile: Profile, file: str) -> Check:
    from .checks import check_volume as service_check_volume

    if profile.storage == "snapshots":
        return _snapshot_storage(probe, profile)
    if profile.volume_id is None:
        return _fail(
            "volume",
            f"profile {profile.name!r} has no volume_id",
            "run `ec2backup init` to create the volume, or set volume_id",
        )
    try:
        service_check_volume(profile, probe, file)
        volume = probe.get_volume(profile.volume_id)
    except Ec2BackupError as exc:
        return _from_error("volume", exc)
    assert volume is not None
    return _pass(
        "volume",
        f"{volume.id}: {volume.state}, {volume.size_gib} GiB, in {volume.availability_zone}",
    )


def _snapshot_storage(probe: Ec2, profile: Profile) -> Check:
    """Snapshots-only storage: no volume; a backup needs a snapshot to start from."""
    from .backup import latest_snapshot

    try:
        base, passed = latest_snapshot(probe, profile.name)
    except Ec2BackupError as exc:
        return _from_error("volume", exc)
    if base is None:
        return _fail(
            "volume",
            f"storage = snapshots and no completed snapshot to start from ({len(passed)} "
            "pending or archived)",
            "make the first one with `ec2backup init --storage snapshots`, or wait for a "
            "pending one",
        )
    return _pass(
        "volume",
        f"none standing (storage = snapshots); a run starts from {base.id} ({base.size_gib} GiB)",
    )


def check_ami(probe: Ec2, profile: Profile) -> Check:
    try:
        image_id = probe.resolve_image(profile.ami)
    except Ec2BackupError as exc:
        return _from_error("ami", exc)
    shown = profile.ami if profile.ami == image_id else f"{profile.ami} -> {image_id}"
    return _pass("ami", shown)


def check_security_groups(probe: Ec2, group_ids: Sequence[str]) -> Check:
    name = "security groups"
    if not group_ids:
        return _pass(name, "none set: the default VPC's default group is used")
    try:
        missing = probe.missing_security_groups(group_ids)
    except Ec2BackupError as exc:
        return _from_error(name, exc)
    if missing:
        return _fail(
            name,
            f"not found in the region: {', '.join(missing)}",
            "fix security_group_ids in the profile (groups are regional and per VPC)",
        )
    return _pass(name, ", ".join(group_ids))


# --- all of them --------------------------------------------------------------------------


def _default_region() -> str:
    import boto3

    return boto3.session.Session().region_name or "us-east-1"


def _known_region(region: str) -> bool:
    import boto3

    session = boto3.session.Session()
    return any(
        region in session.get_available_regions("sts", partition)
        for partition in session.get_available_partitions()
    )


def run_checks(
    *,
    config_path: Path,
    db_url: str,
    profile_name: str | None = None,
    ec2_factory: Callable[[str], Ec2] | None = None,
    account_factory: Callable[[str], Account] | None = None,
    syncer: Syncer | None = None,
) -> list[Check]:
    """Every check, in order. Without ``profile_name``: the local checks and the credentials."""
    if ec2_factory is None or account_factory is None:
        from ..adapters.aws.session import make_account, make_ec2

        ec2_factory = ec2_factory or make_ec2
        account_factory = account_factory or make_account
    if syncer is None:
        from ..adapters.rsync import RsyncSyncer

        syncer = RsyncSyncer()

    config, profile = check_config(config_path, profile_name)
    checks = [config, check_rsync(syncer), check_ssh(), check_database(db_url)]
    # STS of a misspelt region would fail as "cannot reach": ask the default region instead,
    # and let the region check say what is wrong.
    if profile is not None and _known_region(profile.region):
        account = account_factory(profile.region)
    else:
        account = account_factory(_default_region())
    credentials = check_credentials(account)
    checks.append(credentials)
    if profile_name is None:
        return checks

    cloud = ["region", "volume", "ami", "security groups"]
    if profile is None:
        return checks + [_skip(c, "the profile is not valid") for c in cloud]
    if credentials.failed:
        return checks + [_skip(c, "the credentials do not work") for c in cloud]
    if account.region != profile.region:
        account = account_factory(profile.region)
    region_check = check_region(account, profile.region)
    checks.append(region_check)
    if region_check.failed:
        return checks + [_skip(c, "the region is not usable") for c in cloud[1:]]
    ec2 = ec2_factory(profile.region)
    checks += [
        check_volume(ec2, profile, str(config_path)),
        check_ami(ec2, profile),
        check_security_groups(ec2, profile.security_group_ids),
    ]
    return checks


def as_rows(checks: Sequence[Check]) -> list[dict[str, Any]]:
    return [asdict(c) for c in checks]
