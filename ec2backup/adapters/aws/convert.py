"""EC2's answers as the plain values of ``ports``, and the tag shapes EC2 takes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from ...core.times import as_utc
from ...ports import Attachment, Instance, Snapshot, Volume

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import FilterTypeDef, TagSpecificationTypeDef


def _when(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def _tags(raw: Sequence[Mapping[str, Any]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in raw or ()}


def _tag_specs(tags: Mapping[str, str], *resource_types: str) -> list[TagSpecificationTypeDef]:
    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    # The stubs type ResourceType as a Literal; these come from literals in this module.
    return cast(
        "list[TagSpecificationTypeDef]",
        [{"ResourceType": rt, "Tags": tag_list} for rt in resource_types],
    )


def _tag_filters(tags: Mapping[str, str]) -> list[FilterTypeDef]:
    if not tags:
        # An empty filter matches every resource in the account; the reaper must never see that.
        raise ValueError("refusing to search without a tag filter")
    return [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]


def _instance(raw: Mapping[str, Any]) -> Instance:
    return Instance(
        id=raw["InstanceId"],
        state=raw["State"]["Name"],
        availability_zone=raw.get("Placement", {}).get("AvailabilityZone", ""),
        public_ip=raw.get("PublicIpAddress") or None,
        private_ip=raw.get("PrivateIpAddress") or None,
        tags=_tags(raw.get("Tags")),
        launch_time=_when(raw.get("LaunchTime")),
        root_device=raw.get("RootDeviceName") or None,
    )


def _volume(raw: Mapping[str, Any]) -> Volume:
    return Volume(
        id=raw["VolumeId"],
        state=raw["State"],
        availability_zone=raw["AvailabilityZone"],
        size_gib=int(raw["Size"]),
        attachments=tuple(
            Attachment(instance_id=a["InstanceId"], device=a.get("Device", ""), state=a["State"])
            for a in raw.get("Attachments") or ()
        ),
        tags=_tags(raw.get("Tags")),
        encrypted=bool(raw.get("Encrypted", False)),
    )


def _snapshot(raw: Mapping[str, Any]) -> Snapshot:
    size = raw.get("VolumeSize")
    return Snapshot(
        id=raw["SnapshotId"],
        state=raw["State"],
        volume_id=raw.get("VolumeId", ""),
        started_at=_when(raw.get("StartTime")),
        size_gib=int(size) if size is not None else None,
        tags=_tags(raw.get("Tags")),
        progress=raw.get("Progress") or None,
        storage_tier=raw.get("StorageTier") or "standard",
        restore_expiry=_when(raw.get("RestoreExpiryTime")),
    )


def _instances_in(response: Mapping[str, Any]) -> list[Instance]:
    return [_instance(i) for r in response.get("Reservations", ()) for i in r.get("Instances", ())]


def _volumes_in(response: Mapping[str, Any]) -> list[Volume]:
    return [_volume(v) for v in response.get("Volumes", ())]


def _batches(items: Sequence[str], size: int) -> Iterator[list[str]]:
    unique = list(dict.fromkeys(items))  # de-duplicated, order kept
    for start in range(0, len(unique), size):
        yield unique[start : start + size]


def _describe_volumes(response: Mapping[str, Any]) -> str:
    parts = []
    for v in _volumes_in(response):
        att = ", ".join(f"{a.instance_id} {a.state}" for a in v.attachments) or "no attachments"
        parts.append(f"{v.state}, {att}")
    return "; ".join(parts)
