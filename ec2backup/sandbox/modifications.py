"""Volume modifications (ModifyVolume, DescribeVolumesModifications) as EBS does them: the
image grows, and the modification goes ``modifying`` -> ``optimizing`` -> ``completed``.

moto changes the size at once and reports every modification ``completed``. Here, as on AWS:

* the new size reaches the volume when ``optimizing`` begins: the image file grows then and a
  loop device attached to an instance is told (``losetup -c``), so the instance sees its device
  grow, and a filesystem on it can be grown online;
* a smaller size is refused (``InvalidParameterValue``: "New size cannot be smaller than
  existing size"), so is a modification while one is under way (``IncorrectModificationState``)
  and one within six hours of the last (``VolumeModificationRateExceeded``), in EC2's words;
* DescribeVolumesModifications answers with the latest modification of each volume, and for a
  volume never modified with ``InvalidVolumeModification.NotFound``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.elastic_block_store import VolumeModification
from moto.ec2.responses import EC2Response

from .host import HostError, make_sparse, run
from .state import CloudState, Original

log = logging.getLogger("ec2backup.sandbox")

MODIFYING_SECONDS = 0.5  # modifying -> optimizing: the new size is there
OPTIMIZING_SECONDS = 1.5  # optimizing -> completed
RATE_LIMIT_SECONDS = 6 * 3600  # EBS: one modification per volume every six hours


@dataclass
class Pending:
    modification: Any  # moto's VolumeModification
    started: float  # time.monotonic()


def install_states() -> None:
    """moto's VolumeModification says ``completed`` and 100% from the start; ours keep the
    state and progress set here (moto's answer for those made before, e.g. by a test)."""
    VolumeModification.modification_state = property(  # type: ignore[assignment,method-assign]
        lambda self: getattr(self, "sandbox_state", "completed")
    )
    VolumeModification.progress = property(  # type: ignore[assignment,method-assign]
        lambda self: getattr(self, "sandbox_progress", 100)
    )


class Modifications:
    def __init__(self, state: CloudState) -> None:
        self.state = state
        self.pending: dict[str, Pending] = {}  # volume id -> its modification under way
        self.last: dict[str, float] = {}  # volume id -> when it was last modified (monotonic)

    def modify_volume(self, response: EC2Response, original: Original) -> ActionResult:
        volume_id = response._get_param("VolumeId")
        size = response._get_param("Size")
        volume = response.ec2_backend.get_volume(volume_id)  # InvalidVolume.NotFound
        pending = self.pending.get(volume_id)
        if pending is not None:
            state = pending.modification.sandbox_state
            raise EC2ClientError(
                "IncorrectModificationState",
                f"Volume {volume_id} cannot be modified in modification state {state.upper()}",
            )
        last = self.last.get(volume_id)
        if last is not None and time.monotonic() - last < RATE_LIMIT_SECONDS:
            raise EC2ClientError(
                "VolumeModificationRateExceeded",
                "You've reached the maximum modification rate per volume limit. Wait at least "
                "6 hours between modifications per EBS volume.",
            )
        if size is not None and int(size) < int(volume.size):
            raise EC2ClientError(
                "InvalidParameterValue", "New size cannot be smaller than existing size"
            )
        old_size = int(volume.size)
        result = original()
        modification = volume.modifications[-1]
        modification.sandbox_state = "modifying"
        modification.sandbox_progress = 0
        # As on AWS, the volume keeps its size until the modification reaches optimizing.
        modification.sandbox_target = int(volume.size)
        volume.size = old_size
        now = time.monotonic()
        self.pending[volume_id] = Pending(modification, now)
        self.last[volume_id] = now
        log.info("modifying %s: %s -> %s GiB", volume_id, old_size, modification.sandbox_target)
        return result

    def describe_volumes_modifications(
        self, response: EC2Response, original: Original
    ) -> ActionResult:
        wanted = response._get_param("VolumeIds", [])
        for volume_id in wanted:
            if not response.ec2_backend.get_volume(volume_id).modifications:
                raise EC2ClientError(
                    "InvalidVolumeModification.NotFound",
                    f"Modification for volume '{volume_id}' does not exist.",
                )
        result = original()
        found: Any = result.result["VolumesModifications"]  # type: ignore[index]
        latest: dict[str, Any] = {}
        for modification in found:  # in the order they were made
            latest[modification.volume.id] = modification
        return ActionResult({"VolumesModifications": list(latest.values())})

    def advance(self) -> None:
        """Move the modifications under way on (the server's reconcile loop)."""
        with self.state.lock:
            now = time.monotonic()
            for volume_id, pending in list(self.pending.items()):
                modification, elapsed = pending.modification, now - pending.started
                if volume_id not in modification.volume.ec2_backend.volumes:  # deleted
                    del self.pending[volume_id]
                    continue
                if modification.sandbox_state == "modifying" and elapsed >= MODIFYING_SECONDS:
                    self._resize(volume_id, modification)
                    modification.sandbox_state = "optimizing"
                if modification.sandbox_state == "optimizing":
                    done = (elapsed - MODIFYING_SECONDS) / OPTIMIZING_SECONDS
                    modification.sandbox_progress = max(0, min(99, int(done * 100)))
                    if done >= 1:
                        modification.sandbox_state = "completed"
                        modification.sandbox_progress = 100
                        del self.pending[volume_id]
                        log.info("modification of %s completed", volume_id)

    def _resize(self, volume_id: str, modification: Any) -> None:
        volume = modification.volume
        volume.size = modification.sandbox_target
        make_sparse(self.state.layout.volume_image(volume_id), int(volume.size))
        device = self.state.devices.get(volume_id)
        if device is not None:
            try:
                run(["losetup", "-c", device.loop])  # the instance's device grows
            except HostError:
                log.exception("could not tell %s of the new size of %s", device.loop, volume_id)
        log.info("%s is %s GiB now (optimizing)", volume_id, volume.size)
