"""Attaching the volume to the run's instance and detaching it again."""

from __future__ import annotations

import logging

from ...errors import (
    InvalidResourceStateError,
    WaitTimeoutError,
)
from ..context import StepContext
from .volume import _volume, check_volume_usable

log = logging.getLogger(__name__)

DEVICE_NAME = "/dev/sdf"  # what we ask EC2 for; the instance may show it under another name


# --- attach / detach ---------------------------------------------------------------------


def ensure_attached(ctx: StepContext) -> str:
    run = ctx.run
    assert run.instance_id is not None
    volume = _volume(ctx)
    check_volume_usable(ctx, volume)
    attachment = volume.attachment_to(run.instance_id)
    if attachment is None:
        ctx.ec2.attach_volume(volume.id, run.instance_id, DEVICE_NAME)
    elif attachment.state in ("detaching", "detached"):
        raise InvalidResourceStateError(
            f"volume {volume.id} is {attachment.state} from this run's instance",
            run_id=run.id,
            hint="resume again once the detach has finished",
            resources=ctx.resources(),
        )
    ctx.ec2.wait_volume_attached(volume.id, run.instance_id, ctx.profile.attach_timeout)
    return f"volume {volume.id} attached to {run.instance_id}"


def ensure_detached(ctx: StepContext, *, force_after: float | None = None) -> str:
    """Detach the volume from the run's instance. With ``force_after``, a detach that has not
    finished in that many seconds is forced (force-clean only: it risks the filesystem)."""
    run = ctx.run
    volume = _volume(ctx)
    attachment = volume.attachment_to(run.instance_id) if run.instance_id else None
    if attachment is None and volume.state == "available":
        return f"volume {volume.id} available"
    if attachment is None and force_after is None:
        check_volume_usable(ctx, volume)  # attached elsewhere: not ours to detach
    if attachment is not None and attachment.state in ("attaching", "attached", "busy"):
        assert run.instance_id is not None
        ctx.ec2.detach_volume(volume.id, run.instance_id)
    if force_after is None or attachment is None:
        ctx.ec2.wait_volume_available(volume.id, ctx.profile.detach_timeout)
        return f"volume {volume.id} available"
    try:
        ctx.ec2.wait_volume_available(volume.id, force_after)
        return f"volume {volume.id} available"
    except WaitTimeoutError:
        assert run.instance_id is not None
        message = (
            f"volume {volume.id} did not detach within {force_after:.0f}s; forced the detach "
            "(the filesystem may need a check)"
        )
        log.warning("run %s: %s", run.id, message)
        run.warnings = [*run.warnings, message]
        ctx.recorder.save()
        ctx.ec2.detach_volume(volume.id, run.instance_id, force=True)
        ctx.ec2.wait_volume_available(volume.id, ctx.profile.detach_timeout)
        return message
