"""``ec2backup restore``: a backup copied back into a local directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Profile, load_profile, require_backup_ready
from ..core.states import RunKind
from ..db import leases
from ..db.models import Run
from ..errors import RunStateError, UserInputError
from .app import App
from .checks import check_volume
from .heal import heal
from .runner import _create_run, _drive, new_run_id


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
