"""An init's profile: the entry written into the config file as a step of the machine (never by
code after ``done``: a crash between the two would leave what no profile names), and taken out
again when the init is force-cleaned, with what it made.

* ``init`` (storage = "volume"): the entry naming the new volume, right after the volume
  exists. The entry is this init's when it names that volume.
* snapshots-only ``init``: the entry (no volume) right after the first snapshot exists. The
  entry is this init's when it is the very profile this init writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...config import Profile, parse_profile, read_document, remove_profile, write_profile
from ...core.states import RunKind
from ...core.tags import TAG_ROLE, TAG_RUN_ID
from ...errors import ConfigError, InvalidResourceStateError
from ..context import StepContext


def _config_path(ctx: StepContext) -> Path:
    return Path(ctx.run.config["config_path"])


def _entry(path: Path, name: str) -> dict[str, Any] | None:
    """The file's entry of the profile, if it has one."""
    if not path.exists():
        return None
    profiles = read_document(path).get("profiles", {})
    entry = profiles.get(name) if isinstance(profiles, dict) else None
    return entry if isinstance(entry, dict) else None


def _to_write(ctx: StepContext) -> Profile:
    """The profile this init writes."""
    if ctx.run.kind == RunKind.INIT:
        return ctx.profile.model_copy(update={"volume_id": ctx.run.volume_id})
    return ctx.profile


def _is_ours(ctx: StepContext, path: Path, entry: dict[str, Any]) -> bool:
    run = ctx.run
    if run.kind == RunKind.INIT:
        return run.volume_id is not None and entry.get("volume_id") == run.volume_id
    try:
        return parse_profile(run.profile, entry, str(path)) == _to_write(ctx)
    except ConfigError:  # an entry that does not even parse is not the one this init wrote
        return False


def ensure_profile_written(ctx: StepContext) -> str:
    run, path = ctx.run, _config_path(ctx)
    if run.kind == RunKind.INIT:
        assert run.volume_id is not None
    entry = _entry(path, run.profile)
    if entry is not None and _is_ours(ctx, path, entry):
        return f"profile {run.profile!r} is already in {path}"
    if entry is not None:
        differs = (
            f"names volume {entry.get('volume_id')}, not the volume {run.volume_id} this init made"
            if run.kind == RunKind.INIT
            else "differs from the profile this init writes: something else wrote it"
        )
        raise ConfigError(
            differs,
            file=str(path),
            profile=run.profile,
            hint=f"end this init with `ec2backup resume {run.id} --clean`",
        )
    write_profile(path, _to_write(ctx))
    return f"profile {run.profile!r} written to {path}"


def _remove_own_entry(ctx: StepContext) -> tuple[list[str], bool]:
    """Take this init's entry out of the file (an entry it did not write stays); the notes,
    and whether an entry of the profile's name is left in the file."""
    run, path = ctx.run, _config_path(ctx)
    entry = _entry(path, run.profile)
    if entry is None:
        return [], False
    if _is_ours(ctx, path, entry):
        remove_profile(path, run.profile)
        return [f"profile {run.profile!r} removed from {path}"], False
    return [], True


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
    notes += _remove_own_entry(ctx)[0]
    return notes or ["the init made nothing to remove"]


def undo_snapshot_init(ctx: StepContext) -> list[str]:
    """Force-clean of a snapshots-only init: the profile entry it wrote, then its first
    snapshot. That snapshot holds an empty filesystem (nothing is lost with it) and, once no
    profile of its name is in the file, nothing owns it: reap never deletes snapshots, so this
    is where it ends. If the file has an entry of that name this init did not write, the
    snapshot, tagged for that profile, is left to it. The work volume goes as every temporary
    volume does (``engine.clean``)."""
    run = ctx.run
    notes, other_entry = _remove_own_entry(ctx)
    made = {s.id for s in ctx.ec2.find_snapshots({TAG_RUN_ID: run.id})}
    if run.snapshot_id:
        made.add(run.snapshot_id)
    for snapshot_id in sorted(made):
        if other_entry:
            notes.append(
                f"snapshot {snapshot_id} kept: profile {run.profile!r} in "
                f"{_config_path(ctx)} is not this init's, and may start from it"
            )
        else:
            ctx.ec2.delete_snapshot(snapshot_id)  # already gone is success
            notes.append(f"snapshot {snapshot_id} deleted")
    return notes or ["the init wrote no profile and made no snapshot"]
