"""The snapshot hooks: an image copy per snapshot, and DescribeSnapshots' ``OwnerIds``. moto
keeps the metadata (ids, states, tags from TagSpecifications)."""

from __future__ import annotations

from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult
from moto.ec2.responses import EC2Response

from .ebs import EbsDirect
from .host import copy_sparse
from .state import CloudState, Original
from .tiers import Tiers


class Snapshots:
    def __init__(self, state: CloudState, ebs: EbsDirect, tiers: Tiers) -> None:
        self.state = state
        self.ebs = ebs
        self.tiers = tiers

    def create_snapshot(self, response: EC2Response, original: Original) -> ActionResult:
        result = original()
        snapshot: Any = result.result
        layout = self.state.layout
        image = layout.volume_image(snapshot.volume.id)
        if image.exists():
            copy_sparse(image, layout.snapshot_image(snapshot.id))
        return result

    def delete_snapshot(self, response: EC2Response, original: Original) -> ActionResult:
        result = original()
        snapshot_id = response._get_param("SnapshotId")
        self.state.layout.snapshot_image(snapshot_id).unlink(missing_ok=True)
        self.ebs.forget(snapshot_id)
        return result

    def describe_snapshots(self, response: EC2Response, original: Original) -> ActionResult:
        """Honour OwnerIds, which moto ignores: with ``self`` AWS lists only the account's own
        snapshots, not the public ones behind other owners' AMIs (the seeded Ubuntu AMI's)."""
        self.tiers.settle()
        result = original()
        owners = response._get_param("OwnerIds", [])
        if not owners:
            return result
        wanted = {DEFAULT_ACCOUNT_ID if owner == "self" else owner for owner in owners}
        snapshots: Any = result.result["Snapshots"]  # type: ignore[index]
        return ActionResult({"Snapshots": [s for s in snapshots if s.owner_id in wanted]})
