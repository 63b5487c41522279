"""The backup's snapshot: found by the run's tag before one is created (no client token)."""

from __future__ import annotations

from ...core.states import called
from ...core.tags import TAG_RUN_ID
from ...faults import crash_point
from ..context import StepContext


def ensure_snapshot(ctx: StepContext) -> str:
    run = ctx.run
    if not ctx.profile.snapshot:
        return "snapshots are off for this profile"
    assert run.volume_id is not None
    if run.snapshot_id is None:
        existing = ctx.ec2.find_snapshots({TAG_RUN_ID: run.id})
        if existing:
            run.snapshot_id = existing[0].id
        else:
            snapshot = ctx.ec2.create_snapshot(
                run.volume_id,
                f"ec2backup {run.profile} run {run.id}",
                {**ctx.tags(), "Name": f"ec2backup {run.profile} {run.id}"},
            )
            crash_point(called("create_snapshot"))
            run.snapshot_id = snapshot.id
        ctx.recorder.save()
    # Not waited on: the snapshot captures the volume as of now and completes in the background.
    return f"snapshot {run.snapshot_id}"
