"""Growing a volume (ModifyVolume) and waiting until its new size is there, for ``Boto3Ec2``.

A modification goes ``modifying`` -> ``optimizing`` -> ``completed``; the volume has its new
size from ``optimizing`` on, and the filesystem can then grow into it. EBS allows one
modification per volume every six hours (``VolumeModificationRateExceeded``) and none while one
is under way (``IncorrectModificationState``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from botocore.waiter import WaiterModel

from ...errors import CloudError
from ...ports import VolumeModification
from .waiters import wait

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from mypy_boto3_ec2.client import EC2Client

_NEVER_MODIFIED = "InvalidVolumeModification.NotFound"
_RESIZED = WaiterModel(
    {
        "version": 2,
        "waiters": {
            "VolumeResized": {
                "operation": "DescribeVolumesModifications",
                "delay": 1,
                "maxAttempts": 1,
                "acceptors": [
                    {
                        "state": "success",
                        "matcher": "path",
                        "argument": "length(VolumesModifications[?ModificationState == "
                        "'optimizing' || ModificationState == 'completed']) > `0`",
                        "expected": True,
                    },
                    {
                        "state": "failure",
                        "matcher": "pathAny",
                        "argument": "VolumesModifications[].ModificationState",
                        "expected": "failed",
                    },
                    # Right after ModifyVolume the modification may not show yet.
                    {"state": "retry", "matcher": "error", "expected": _NEVER_MODIFIED},
                ],
            }
        },
    }
).get_waiter("VolumeResized")


def _modification(data: Mapping[str, Any]) -> VolumeModification:
    return VolumeModification(
        volume_id=str(data["VolumeId"]),
        state=str(data.get("ModificationState", "")),
        original_size_gib=int(data.get("OriginalSize") or 0),
        target_size_gib=int(data.get("TargetSize") or 0),
        progress=int(data.get("Progress") or 0),
        started_at=data.get("StartTime"),
    )


def _latest(response: Mapping[str, Any]) -> VolumeModification | None:
    found = [_modification(m) for m in response.get("VolumesModifications", [])]
    # AWS answers with the latest modification of each volume; be sure of it.
    found.sort(key=lambda m: (m.started_at is not None, m.started_at or 0))
    return found[-1] if found else None


class VolumeResizing:
    """The ``Ec2`` methods that grow a volume; mixed into ``Boto3Ec2``."""

    _client: EC2Client
    poll_interval: float
    run_id: str | None

    def _errors(
        self, action: str, resources: Mapping[str, str] | None = None
    ) -> AbstractContextManager[None]:
        raise NotImplementedError  # Boto3Ec2's

    def modify_volume_size(self, volume_id: str, size_gib: int) -> VolumeModification:
        with self._errors("ec2:ModifyVolume", {"volume": volume_id, "size": f"{size_gib} GiB"}):
            answer = self._client.modify_volume(VolumeId=volume_id, Size=size_gib)
        return _modification(answer["VolumeModification"])

    def get_volume_modification(self, volume_id: str) -> VolumeModification | None:
        with self._errors("ec2:DescribeVolumesModifications", {"volume": volume_id}):
            try:
                answer = self._client.describe_volumes_modifications(VolumeIds=[volume_id])
            except ClientError as exc:
                # A volume never modified: AWS answers with this error, not an empty list.
                if exc.response.get("Error", {}).get("Code") == _NEVER_MODIFIED:
                    return None
                raise
        return _latest(answer)

    def wait_volume_resized(self, volume_id: str, timeout: float) -> VolumeModification:
        def observe(response: Mapping[str, Any]) -> str:
            latest = _latest(response)
            return f"{latest.state} {latest.progress}%" if latest else "no modification"

        response = wait(
            self._client,
            _RESIZED,
            {"VolumeIds": [volume_id]},
            timeout,
            action="volume resized",
            resources={"volume": volume_id},
            observe=observe,
            timeout_hint="the modification is still under way: run again later, the "
            "filesystem grows once it is done",
            poll_interval=self.poll_interval,
            run_id=self.run_id,
        )
        latest = _latest(response)
        if latest is None:
            raise CloudError(
                f"volume {volume_id} shows no modification after ModifyVolume",
                run_id=self.run_id,
                resources={"volume": volume_id},
            )
        return latest
