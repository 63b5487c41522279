"""``ec2backup restore``: a backup copied back into a local directory."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import Profile, load_profile, require_backup_ready
from ..core.states import BACKUP_KINDS, RunKind
from ..db import leases
from ..db.models import Run
from ..errors import RunStateError, UserInputError
from ..ports import Ec2, Snapshot
from ..run.steps.visibility import while_recent
from .app import App
from .checks import check_volume, plan_launch
from .heal import heal
from .runner import _create_run, _drive, new_run_id
from .tiers import start_tier_restore, usable_now

log = logging.getLogger(__name__)


# A snapshot right after its backup is pending for minutes on AWS (hours for a large first
# one): EC2 refuses it as the source of a volume until it is completed.
SNAPSHOT_WAIT_SECONDS = 6 * 3600


def _wait_for(ec2: Ec2, snapshot: Snapshot) -> Snapshot:
    last: list[str | None] = [None]

    def progress(now: Snapshot) -> None:
        if now.progress != last[0]:
            last[0] = now.progress
            log.info(
                "snapshot %s is %s (%s); the restore starts once it is completed",
                now.id,
                now.state,
                now.progress or "?",
            )

    progress(snapshot)
    return ec2.wait_snapshot_completed(snapshot.id, SNAPSHOT_WAIT_SECONDS, progress)


def start_restore(
    app: App,
    *,
    to: Path,
    run_id: str | None = None,
    snapshot_id: str | None = None,
    profile_name: str | None = None,
    live: bool = False,
    path: str | None = None,
    restore_days: int = 1,
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
    made_at: datetime | None = None
    if run_id:
        with app.store.session() as session:
            source_run = app.store.get_run(session, run_id)
            if source_run.kind not in BACKUP_KINDS or not source_run.snapshot_id:
                raise RunStateError(
                    f"run {run_id} is a {source_run.kind} run with no snapshot",
                    hint="pick a backup run that made one (`ec2backup runs`), or --snapshot",
                )
            snapshot_id = source_run.snapshot_id
            made_at = source_run.updated_at
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
        if profile.storage == "snapshots":
            raise UserInputError(
                f'profile {profile.name} keeps no live volume (storage = "snapshots")',
                hint="restore a snapshot: --run RUN_ID or --snapshot ID",
            )
        require_backup_ready(profile, file)
        assert profile.volume_id is not None
        keys.append(leases.volume_key(profile.volume_id))
    else:
        assert snapshot_id is not None
        # Made moments ago by that backup, EC2 may not show it yet (eventual consistency).
        snapshot = while_recent(made_at, lambda: ec2.get_snapshot(snapshot_id))
        if snapshot is None:
            raise UserInputError(
                f"snapshot {snapshot_id} does not exist in {profile.region}",
                hint="list them with `ec2backup snapshots`",
            )
        if snapshot.state == "pending":
            snapshot = _wait_for(ec2, snapshot)
        if snapshot.state != "completed":
            raise UserInputError(
                f"snapshot {snapshot_id} is {snapshot.state}",
                hint="restore from another snapshot (`ec2backup snapshots`)",
            )
        if not usable_now(snapshot):
            start_tier_restore(ec2, snapshot, profile.name, restore_days)
        extra |= {"snapshot_id": snapshot_id, "size_gib": snapshot.size_gib or 1}
    extra |= plan_launch(profile, ec2, file).config()
    new_id = new_run_id()
    keys = [leases.run_key(new_id), *keys]
    with leases.held(app.store, new_id, keys):
        healed = heal(app, profile.name, profile.region, held=keys)
        if live:  # after the healing: a healed run may just have released the volume
            check_volume(profile, ec2, file)
        _create_run(
            app,
            new_id,
            RunKind.RESTORE,
            profile,
            extra,
            volume_id=profile.volume_id if live else None,
            warnings=healed,
        )
        return _drive(app, new_id)
