"""Volume modifications in the local cloud as EBS does them: the image grows, the modification
goes modifying -> optimizing -> completed, and what EBS refuses is refused in its words."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from ec2backup.sandbox import Sandbox
from tests.sandbox.helpers import client, no_retries, with_deadline

pytestmark = pytest.mark.e2e
GIB = 2**30


def _modification(ec2: Any, volume_id: str) -> dict[str, Any]:
    (latest,) = ec2.describe_volumes_modifications(VolumeIds=[volume_id])["VolumesModifications"]
    return latest  # type: ignore[no-any-return]


def _refused(call: Any, **params: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call(**params)
    error = info.value.response["Error"]
    return error["Code"], error["Message"]


def test_a_modification_grows_the_image_through_modifying_optimizing_completed(
    sandbox: Sandbox, volume: str
) -> None:
    ec2 = client(sandbox, "ec2", config=no_retries())
    assert _refused(ec2.describe_volumes_modifications, VolumeIds=[volume]) == (
        "InvalidVolumeModification.NotFound",
        f"Modification for volume '{volume}' does not exist.",
    )
    assert _refused(ec2.modify_volume, VolumeId=volume, Size=0)[0] == "InvalidParameterValue"

    answer = ec2.modify_volume(VolumeId=volume, Size=3)["VolumeModification"]
    assert (answer["ModificationState"], answer["OriginalSize"], answer["TargetSize"]) == (
        "modifying",
        1,
        3,
    )
    image = sandbox.volume_image(volume)
    seen = {_modification(ec2, volume)["ModificationState"]}
    # While modifying, the volume keeps its size; one modification at a time.
    code, message = _refused(ec2.modify_volume, VolumeId=volume, Size=4)
    assert code == "IncorrectModificationState" and "in modification state" in message

    def optimizing() -> bool:
        state = _modification(ec2, volume)["ModificationState"]
        seen.add(state)
        return state in ("optimizing", "completed")

    with_deadline(optimizing, timeout=10)
    # From optimizing on, the new size is there: in EC2's answer and in the image.
    (described,) = ec2.describe_volumes(VolumeIds=[volume])["Volumes"]
    assert described["Size"] == 3 and image.stat().st_size == 3 * GIB

    def completed() -> bool:
        latest = _modification(ec2, volume)
        seen.add(latest["ModificationState"])
        return latest["ModificationState"] == "completed" and latest["Progress"] == 100

    with_deadline(completed, timeout=10)
    assert seen >= {"modifying", "optimizing", "completed"}
    # EBS: six hours between modifications of one volume; never smaller.
    assert _refused(ec2.modify_volume, VolumeId=volume, Size=4) == (
        "VolumeModificationRateExceeded",
        "You've reached the maximum modification rate per volume limit. Wait at least 6 hours "
        "between modifications per EBS volume.",
    )


def test_a_volume_is_never_made_smaller(sandbox: Sandbox, ec2: Any) -> None:
    volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=2, VolumeType="gp3")
    try:
        refusing = client(sandbox, "ec2", config=no_retries())
        assert _refused(refusing.modify_volume, VolumeId=volume["VolumeId"], Size=1) == (
            "InvalidParameterValue",
            "New size cannot be smaller than existing size",
        )
    finally:
        ec2.delete_volume(VolumeId=volume["VolumeId"])
