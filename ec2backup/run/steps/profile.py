"""init's profile: the entry naming the new volume, written into the config file as a step of
the machine right after the volume exists (never by code after ``done``: a crash between the
two would leave a volume that no profile names), and taken out again when the init is
force-cleaned, with the volume it made."""

from __future__ import annotations

from pathlib import Path

from ...config import read_document, remove_profile, write_profile
from ...core.tags import TAG_ROLE, TAG_RUN_ID
from ...errors import ConfigError, InvalidResourceStateError
from ..context import StepContext


def _config_path(ctx: StepContext) -> Path:
    return Path(ctx.run.config["config_path"])


def _written_volume(path: Path, name: str) -> tuple[bool, str | None]:
    """(whether the file has the profile, the volume it names)."""
    if not path.exists():
        return False, None
    profiles = read_document(path).get("profiles", {})
    entry = profiles.get(name) if isinstance(profiles, dict) else None
    if not isinstance(entry, dict):
        return False, None
    volume = entry.get("volume_id")
    return True, volume if isinstance(volume, str) else None


def ensure_profile_written(ctx: StepContext) -> str:
    run, path = ctx.run, _config_path(ctx)
    assert run.volume_id is not None
    exists, volume = _written_volume(path, run.profile)
    if exists and volume == run.volume_id:
        return f"profile {run.profile!r} in {path} already names volume {run.volume_id}"
    if exists:
        raise ConfigError(
            f"names volume {volume}, not the volume {run.volume_id} this init made",
            file=str(path),
            profile=run.profile,
            hint=f"end this init with `ec2backup resume {run.id} --clean`",
        )
    write_profile(path, ctx.profile.model_copy(update={"volume_id": run.volume_id}))
    return f"profile {run.profile!r} written to {path}"


def undo_init(ctx: StepContext) -> list[str]:
    """Force-clean of an init: delete the volume it made (still empty: formatting is all an
    init writes) and the profile entry naming it. A volume this run did not make is never
    touched; nor an entry that names another volume."""
    run = ctx.run
    notes = []
    if run.volume_id is None:  # killed between CreateVolume and recording its id: its tags
        found = ctx.ec2.find_volumes({TAG_RUN_ID: run.id, TAG_ROLE: "data"})
        if found:
            run.volume_id = found[0].id
            ctx.recorder.save()
    if run.volume_id:
        volume = ctx.ec2.get_volume(run.volume_id)
        if volume is not None and volume.state not in ("deleting", "deleted"):
            if volume.tags.get(TAG_RUN_ID) != run.id or volume.tags.get(TAG_ROLE) != "data":
                raise InvalidResourceStateError(
                    f"volume {volume.id} was not made by this init; not deleting it",
                    run_id=run.id,
                )
            ctx.ec2.wait_volume_available(volume.id, ctx.profile.detach_timeout)
            ctx.ec2.delete_volume(volume.id)
        notes.append(f"volume {run.volume_id} deleted")
    path = _config_path(ctx)
    exists, volume_id = _written_volume(path, run.profile)
    if exists and run.volume_id and volume_id == run.volume_id:
        remove_profile(path, run.profile)
        notes.append(f"profile {run.profile!r} removed from {path}")
    return notes or ["the init made nothing to remove"]
