"""The snapshot hooks: an image copy per snapshot, ``pending`` for ``snapshot_delay`` seconds
before ``completed`` (its progress rising meanwhile, as on AWS), and DescribeSnapshots'
``OwnerIds``. moto keeps the metadata (ids, states, tags from TagSpecifications).
``Volumes.create_volume`` refuses a pending snapshot as the source of a volume."""

from __future__ import annotations

import time
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult
from moto.ec2.models.elastic_block_store import Snapshot as MotoSnapshot
from moto.ec2.responses import EC2Response

from .consistency import Consistency
from .ebs import EbsDirect
from .host import copy_sparse
from .state import CloudState, Original, PendingSnapshot
from .tiers import Tiers

# moto reports every snapshot as 100% done: the progress is the sandbox's, where it keeps one.
MotoSnapshot.progress = property(  # type: ignore[method-assign,assignment]
    lambda self: getattr(self, "sandbox_progress", "100%")
)


class Snapshots:
    def __init__(
        self, state: CloudState, consistency: Consistency, ebs: EbsDirect, tiers: Tiers
    ) -> None:
        self.state = state
        self.consistency = consistency
        self.ebs = ebs
        self.tiers = tiers

    def create_snapshot(self, response: EC2Response, original: Original) -> ActionResult:
        result = original()
        snapshot: Any = result.result
        self.consistency.note([snapshot.id])
        layout = self.state.layout
        image = layout.volume_image(snapshot.volume.id)
        if image.exists():
            copy_sparse(image, layout.snapshot_image(snapshot.id))
        delay = self.state.settings.delay("snapshot_delay")
        if delay > 0:
            snapshot.status = "pending"
            snapshot.sandbox_progress = "0%"
            now = time.monotonic()
            self.state.pending_snapshots[snapshot.id] = PendingSnapshot(snapshot, now, now + delay)
        return result

    def advance(self, now: float) -> None:
        """Move the pending snapshots' progress on; complete those that are due."""
        for snapshot_id, pending in list(self.state.pending_snapshots.items()):
            snapshot = pending.snapshot
            if now >= pending.due:
                del self.state.pending_snapshots[snapshot_id]
                snapshot.status = "completed"
                snapshot.sandbox_progress = "100%"
                self.state.record_change("snapshot", snapshot_id, pending.due)
                continue
            share = (now - pending.started) / max(pending.due - pending.started, 1e-9)
            snapshot.sandbox_progress = f"{min(99, int(share * 100))}%"

    def delete_snapshot(self, response: EC2Response, original: Original) -> ActionResult:
        result = original()
        snapshot_id = response._get_param("SnapshotId")
        self.state.pending_snapshots.pop(snapshot_id, None)
        self.state.layout.snapshot_image(snapshot_id).unlink(missing_ok=True)
        self.ebs.forget(snapshot_id)
        return result

    def describe_snapshots(self, response: EC2Response, original: Original) -> ActionResult:
        """Honour OwnerIds, which moto ignores: with ``self`` AWS lists only the account's own
        snapshots, not the public ones behind other owners' AMIs (the seeded Ubuntu AMI's)."""
        self.tiers.settle()
        result = original()
        owners = response._get_param("OwnerIds", [])
        snapshots: Any = self.consistency.visible(response, list(result.result["Snapshots"]))  # type: ignore[index]
        if owners:
            wanted = {DEFAULT_ACCOUNT_ID if owner == "self" else owner for owner in owners}
            snapshots = [s for s in snapshots if s.owner_id in wanted]
        return ActionResult({**result.result, "Snapshots": snapshots})  # type: ignore[dict-item]
