"""The run's volume: looked at before every step that uses it; created (init, restore from a
snapshot) and deleted (restore's temporary volume) with the run's tags."""

from __future__ import annotations

from dataclasses import dataclass

from ...core.states import called
from ...core.tags import TAG_ROLE, TAG_RUN_ID
from ...errors import (
    InvalidResourceStateError,
    ResourceNotFoundError,
)
from ...faults import crash_point
from ...ports import (
    Volume,
)
from ..context import StepContext
from .visibility import VOLUME_CREATED_AT, note_create, until_visible

# The roles (``ec2backup:role``) of volumes a run makes for itself and deletes at its end:
# restore's copy of a snapshot, and the volume of a run in snapshots-only storage.
RESTORE_ROLE = "restore"
WORK_ROLE = "work"
TEMPORARY_ROLES = (RESTORE_ROLE, WORK_ROLE)

# --- volume ------------------------------------------------------------------------------


def _get_run_volume(ctx: StepContext) -> Volume | None:
    """The run's volume; NotFound right after the run created it is EC2 catching up."""
    volume_id = ctx.run.volume_id
    assert volume_id is not None
    return until_visible(ctx, VOLUME_CREATED_AT, lambda: ctx.ec2.get_volume(volume_id))


def _volume(ctx: StepContext) -> Volume:
    assert ctx.run.volume_id is not None
    volume = _get_run_volume(ctx)
    if volume is None:
        raise ResourceNotFoundError(
            f"volume {ctx.run.volume_id} does not exist in {ctx.profile.region}",
            run_id=ctx.run.id,
            hint="check volume_id and region in the profile",
        )
    return volume


@dataclass(frozen=True)
class VolumeProblem:
    """Why a volume cannot be used by a run: ``kind`` is ``zone``, ``attached`` or ``state``."""

    kind: str
    message: str
    other_instance: str | None = None


def volume_problem(
    volume: Volume, availability_zone: str, own_instance: str | None
) -> VolumeProblem | None:
    """The one rule, for the check before a run and for every step that uses the volume: it
    must be in the profile's AZ, attached to nothing but the run's own instance, and
    available or in use."""
    if volume.availability_zone != availability_zone:
        return VolumeProblem(
            "zone",
            f"volume {volume.id} is in {volume.availability_zone}, not in {availability_zone}",
        )
    foreign = [a.instance_id for a in volume.attachments if a.instance_id != own_instance]
    if foreign:
        return VolumeProblem(
            "attached", f"volume {volume.id} is attached to instance {foreign[0]}", foreign[0]
        )
    if volume.state not in ("available", "in-use"):
        return VolumeProblem("state", f"volume {volume.id} is {volume.state}")
    return None


def check_volume_usable(ctx: StepContext, volume: Volume) -> None:
    problem = volume_problem(volume, ctx.profile.availability_zone, ctx.run.instance_id)
    if problem is None:
        return
    hint = {
        "zone": "set availability_zone in the profile to the volume's zone",
        "attached": "detach it there first (or reap it if it is a leftover of ec2backup)",
    }.get(problem.kind)
    message = problem.message + (", which is not this run's" if problem.kind == "attached" else "")
    raise InvalidResourceStateError(message, run_id=ctx.run.id, hint=hint)


def _ensure_tagged_volume(ctx: StepContext, role: str, snapshot_id: str | None = None) -> str:
    """This run's volume of ``role``: the recorded one, else the one tagged with the run's id
    (a crash between CreateVolume and recording it), else a new one. Waits until available."""
    run = ctx.run
    if run.volume_id is None:
        found = ctx.ec2.find_volumes({TAG_RUN_ID: run.id, TAG_ROLE: role})
        if found:
            run.volume_id = found[0].id
        else:
            note_create(ctx, VOLUME_CREATED_AT)
            ctx.recorder.save()
            volume = ctx.ec2.create_volume(
                ctx.profile.availability_zone,
                int(run.config["size_gib"]),
                {**ctx.tags(), TAG_ROLE: role, "Name": f"ec2backup {role} {run.profile}"},
                client_token=f"{run.id}-{role}",
                snapshot_id=snapshot_id,
            )
            crash_point(called("create_volume"))
            run.volume_id = volume.id
        ctx.recorder.save()
    ctx.ec2.wait_volume_available(run.volume_id, ctx.profile.attach_timeout)
    return run.volume_id


def ensure_volume_created(ctx: StepContext) -> str:
    return f"volume {_ensure_tagged_volume(ctx, 'data')}"


# --- restore and verify ------------------------------------------------------------------


def ensure_restore_volume(ctx: StepContext) -> str:
    """The volume to restore from: the live one (read-only), or a temporary one made from the
    snapshot, tagged so that reap finds it if this run is abandoned."""
    run = ctx.run
    if run.config.get("live"):
        return f"the live volume {run.volume_id}, read-only"
    snapshot_id = run.config["snapshot_id"]
    return (
        f"volume {_ensure_tagged_volume(ctx, 'restore', snapshot_id)} from snapshot {snapshot_id}"
    )


def ensure_work_volume(ctx: StepContext) -> str:
    """Snapshots-only storage: the run's own volume, encrypted and tagged with the run, made
    from the profile's latest snapshot as the run recorded it (empty for the first one)."""
    base = ctx.run.config.get("base_snapshot_id")
    volume_id = _ensure_tagged_volume(ctx, WORK_ROLE, base)
    return f"volume {volume_id} " + (f"from snapshot {base}" if base else "(empty)")


def adopt_unrecorded_volume(ctx: StepContext) -> None:
    """A run killed between CreateVolume and recording the id: its volume is the one its tags
    name (a force-clean must find it to delete it)."""
    run = ctx.run
    if run.volume_id is not None or run.config.get("live"):
        return
    roles = ("data", *TEMPORARY_ROLES)
    found = [
        v
        for v in ctx.ec2.find_volumes({TAG_RUN_ID: run.id})
        if v.tags.get(TAG_ROLE) in roles and v.state not in ("deleting", "deleted")
    ]
    if found:
        run.volume_id = found[0].id
        ctx.recorder.save()


def is_temporary_volume_of(volume: Volume, run_id: str) -> bool:
    """Whether the volume is one the run made for itself (its tags say so), to be deleted."""
    return volume.tags.get(TAG_ROLE) in TEMPORARY_ROLES and volume.tags.get(TAG_RUN_ID) == run_id


def ensure_volume_deleted(ctx: StepContext) -> str:
    run = ctx.run
    if run.config.get("live"):
        return "no temporary volume"
    volume = _get_run_volume(ctx)
    if volume is not None and volume.state not in ("deleting", "deleted"):
        if not is_temporary_volume_of(volume, run.id):
            raise InvalidResourceStateError(
                f"volume {volume.id} is not this run's temporary volume; not deleting it",
                run_id=run.id,
            )
        ctx.ec2.wait_volume_available(volume.id, ctx.profile.detach_timeout)
        ctx.ec2.delete_volume(volume.id)
    return f"temporary volume {run.volume_id} deleted"
