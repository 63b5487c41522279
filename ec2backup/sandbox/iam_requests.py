"""Which authorizations AWS makes for one API call, read from the Service Authorization
Reference: every (action, resource ARN) pair, each with the condition keys the reference lists
for that resource type of that action, and their values from the request and the resources.

The reference is parliament's copy (``parliament/iam_definition.json``, the AWS "Actions,
resources, and condition keys" pages as data). Nothing here is written per action; per
resource type there is one finder (which resources of that type a request names or creates)
and per condition key one way to read its value:

* a resource type of the action is *created* by the call when the reference lists
  ``aws:RequestTag/${TagKey}`` for it (and the action is not a tagging action): it is
  authorized as ``.../<type>/*`` with the request's values (its tags from
  ``TagSpecifications``, the instance type asked for...). A required one always; an optional
  one when the request tags it, or, for volumes, when the image brings them (a launch's root
  volume);
* any other resource type names an existing resource: the ids in the request (``VolumeId``,
  ``InstanceIds``, ``SecurityGroupIds``, the EBS direct APIs' ``FirstSnapshotId`` and
  ``SecondSnapshotId``...), or the default the call would use (a launch's default subnet and
  security group), with the resource's own values (its tags, its type...);
* a resource a required type needs but the request cannot be resolved to (an unknown id) is
  authorized by its ARN with no resource keys, as AWS does before answering NotFound;
* an action without resource types is authorized on ``*``;
* the reference's dependent ``ec2:CreateTags``: each resource tagged at creation is also
  authorized for ``ec2:CreateTags`` with ``ec2:CreateAction`` set to the creating action.

Only the keys the reference lists for the (action, resource type), for the action as a whole
(its row without a resource type) and the global keys of every request are present: any other
key is missing, and a condition on a missing key is false (``iam_policy.py``).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from .iam_policy import ContextValue, Request

# Present in every request made with an IAM user's long-term key (AWS's global condition
# context keys that "are always present").
GLOBAL_KEYS = (
    "aws:CurrentTime",
    "aws:EpochTime",
    "aws:PrincipalAccount",
    "aws:PrincipalArn",
    "aws:PrincipalType",
    "aws:RequestedRegion",
    "aws:SecureTransport",
    "aws:SourceIp",
    "aws:UserAgent",
    "aws:userid",
    "aws:username",
    "aws:ViaAWSService",
)


# How EC2 ids start, by resource type: a list of mixed ids (``Resources``) is sorted by it.
ID_PREFIXES = {
    "instance": "i-",
    "volume": "vol-",
    "snapshot": "snap-",
    "image": "ami-",
    "security-group": "sg-",
    "network-interface": "eni-",
    "subnet": "subnet-",
    "vpc": "vpc-",
}


@dataclass(frozen=True)
class ResourceType:
    name: str
    required: bool
    condition_keys: tuple[str, ...]
    dependent_actions: tuple[str, ...]

    def creates(self, access_level: str) -> bool:
        return access_level != "Tagging" and "aws:RequestTag/${TagKey}" in self.condition_keys


@dataclass(frozen=True)
class Privilege:
    service: str
    name: str
    access_level: str
    resource_types: tuple[ResourceType, ...]
    action_keys: tuple[str, ...]  # the row without a resource type: keys of every resource

    @property
    def action(self) -> str:
        return f"{self.service}:{self.name}"


@functools.cache
def _reference() -> dict[str, Any]:
    with resources.files("parliament").joinpath("iam_definition.json").open() as f:
        services = json.load(f)
    return {s["prefix"]: s for s in services}


@functools.cache
def privilege(service: str, name: str) -> Privilege | None:
    """The reference's entry for ``service:name``, or None if it lists no such action."""
    entry = _reference().get(service)
    if entry is None:
        return None
    for p in entry["privileges"]:
        if p["privilege"] == name:
            types = []
            action_keys: tuple[str, ...] = ()
            for row in p["resource_types"]:
                if not row["resource_type"]:
                    action_keys = tuple(row["condition_keys"])
                    continue
                types.append(
                    ResourceType(
                        row["resource_type"].rstrip("*"),
                        row["resource_type"].endswith("*"),
                        tuple(row["condition_keys"]),
                        tuple(row["dependent_actions"]),
                    )
                )
            return Privilege(service, name, p["access_level"], tuple(types), action_keys)
    return None


@functools.cache
def arn_format(service: str, resource_type: str) -> str:
    for r in _reference()[service]["resources"]:
        if r["resource"] == resource_type:
            return str(r["arn"])
    raise KeyError(f"{service} has no resource type {resource_type}")


def arn_of(service: str, resource_type: str, region: str, account: str, resource_id: str) -> str:
    """The resource's ARN in the reference's format (``${Account}`` empty where AWS leaves it
    so: images, snapshots, public SSM parameters)."""
    text = arn_format(service, resource_type)
    head, _, tail = text.partition(f":{resource_type}")
    head = head.replace("${Partition}", "aws").replace("${Region}", region)
    head = head.replace("${Account}", account)
    tail = tail.split("${", 1)[0]
    return f"{head}:{resource_type}{tail}{resource_id}"


# --- the request ----------------------------------------------------------------------------


@dataclass
class Touched:
    """One resource a call touches, with every condition key value known for it."""

    type: str
    arn: str
    keys: dict[str, ContextValue] = field(default_factory=dict)
    tags_at_creation: dict[str, str] | None = None  # tags the call puts on it as it makes it


@dataclass
class Call:
    """What the finders need of a request: its parameters (botocore names), the backend of
    its service, where it runs and who makes it."""

    service: str
    action: str
    param: Callable[[str], Any]
    backend: Any
    region: str
    account: str
    principal: Mapping[str, ContextValue]

    def ids(self, *names: str) -> list[str]:
        found: list[str] = []
        for name in names:
            value = self.param(name)
            found += [str(v) for v in value] if isinstance(value, list) else []
            if isinstance(value, str) and value:
                found.append(value)
        return list(dict.fromkeys(found))

    def ids_of(self, resource_type: str, *names: str) -> list[str]:
        """The ids of ``resource_type`` the request names: in ``names``, and among the mixed
        ``Resources`` (CreateTags, DeleteTags) those with the type's prefix."""
        prefix = ID_PREFIXES.get(resource_type)
        mixed = [i for i in self.ids("Resources") if prefix and i.startswith(prefix)]
        return list(dict.fromkeys([*self.ids(*names), *mixed]))

    def tag_specifications(self) -> dict[str, dict[str, str]]:
        specs: dict[str, dict[str, str]] = {}
        for spec in self.param("TagSpecifications") or []:
            tags = specs.setdefault(str(spec.get("ResourceType")), {})
            for tag in spec.get("Tags") or spec.get("Tag") or []:
                tags[str(tag["Key"])] = str(tag.get("Value", ""))
        return specs

    def arn(self, resource_type: str, resource_id: str, *, account: str | None = None) -> str:
        return arn_of(
            self.service,
            resource_type,
            self.region,
            self.account if account is None else account,
            resource_id,
        )


def _tag_keys(tags: Mapping[str, str], *prefixes: str) -> dict[str, ContextValue]:
    return {f"{p}/{k}": v for k, v in tags.items() for p in prefixes}


def _created(call: Call, resource_type: str, keys: dict[str, ContextValue]) -> Touched:
    tags = call.tag_specifications().get(resource_type)
    if tags is not None:
        keys = {**keys, **_tag_keys(tags, "aws:RequestTag"), "aws:TagKeys": sorted(tags)}
    return Touched(resource_type, call.arn(resource_type, "*"), keys, tags)


def _existing(call: Call, resource_type: str, resource_id: str, keys: dict[str, Any]) -> Touched:
    tags = dict(getattr(call.backend, "tags", {}).get(resource_id, {}))
    keys = {**keys, **_tag_keys(tags, "aws:ResourceTag", f"{call.service}:ResourceTag")}
    account = keys.pop("_account", None)
    return Touched(resource_type, call.arn(resource_type, resource_id, account=account), keys)


def _lookup(getter: Callable[[Any], Any], resource_id: str) -> Any:
    with contextlib.suppress(Exception):  # unknown id: authorized by its ARN alone
        return getter(resource_id)
    return None


# --- finders, one per resource type --------------------------------------------------------


def _instance_keys(instance: Any) -> dict[str, ContextValue]:
    options = instance.metadata_options
    return {
        "ec2:InstanceID": instance.id,
        "ec2:InstanceType": instance.instance_type,
        "ec2:AvailabilityZone": instance.placement.zone,
        "ec2:MetadataHttpTokens": options.http_tokens,
        "ec2:MetadataHttpEndpoint": options.http_endpoint,
        "ec2:MetadataHttpPutResponseHopLimit": str(options.http_put_response_hop_limit),
        "ec2:InstanceMetadataTags": options.instance_metadata_tags,
        "ec2:Tenancy": "default",
        "ec2:RootDeviceType": "ebs",
        "ec2:EbsOptimized": str(bool(instance.ebs_optimized)).lower(),
        "ec2:InstanceMarketType": "on-demand",
    }


def _zone(call: Call) -> str | None:
    placement = call.param("Placement") or {}
    zone = placement.get("AvailabilityZone") if isinstance(placement, dict) else None
    subnet_id = _subnet_ids(call)
    if not zone and subnet_id:
        subnet = _lookup(call.backend.get_subnet, subnet_id[0])
        zone = subnet.availability_zone if subnet is not None else None
    return zone or call.param("AvailabilityZone")


def find_instances(call: Call, created: bool) -> list[Touched]:
    if created:
        options = call.param("MetadataOptions") or {}
        return [
            _created(
                call,
                "instance",
                {
                    "ec2:InstanceType": call.param("InstanceType") or "m1.small",
                    "ec2:AvailabilityZone": _zone(call) or f"{call.region}a",
                    "ec2:MetadataHttpTokens": options.get("HttpTokens", "optional"),
                    "ec2:MetadataHttpEndpoint": options.get("HttpEndpoint", "enabled"),
                    "ec2:MetadataHttpPutResponseHopLimit": str(
                        options.get("HttpPutResponseHopLimit", 1)
                    ),
                    "ec2:InstanceMetadataTags": options.get("InstanceMetadataTags", "disabled"),
                    "ec2:Tenancy": "default",
                    "ec2:RootDeviceType": "ebs",
                    "ec2:EbsOptimized": str(bool(call.param("EbsOptimized"))).lower(),
                    "ec2:InstanceMarketType": "on-demand",
                },
            )
        ]
    found = []
    for instance_id in call.ids_of("instance", "InstanceId", "InstanceIds"):
        instance = _lookup(call.backend.get_instance, instance_id)
        keys = _instance_keys(instance) if instance is not None else {}
        found.append(_existing(call, "instance", instance_id, keys))
    return found


def _volume_keys(volume: Any) -> dict[str, ContextValue]:
    keys: dict[str, ContextValue] = {
        "ec2:VolumeID": volume.id,
        "ec2:AvailabilityZone": volume.zone.name if volume.zone else "",
        "ec2:Encrypted": str(bool(volume.encrypted)).lower(),
        "ec2:VolumeSize": str(volume.size),
        "ec2:VolumeType": str(volume.volume_type),
    }
    if volume.snapshot_id:
        keys["ec2:ParentSnapshot"] = arn_of("ec2", "snapshot", "*", "", volume.snapshot_id)
    return keys


def find_volumes(call: Call, created: bool) -> list[Touched]:
    if created:
        if call.param("ImageId"):
            # A launch: the image's EBS mappings (its root volume) become volumes.
            image = _lookup(lambda i: call.backend.amis[i], call.param("ImageId"))
            mappings = list(getattr(image, "block_device_mappings", []) or [])
            mappings += list(call.param("BlockDeviceMappings") or [])
            ebs = [m for m in mappings if m.get("Ebs") is not None]
            return [
                _created(
                    call,
                    "volume",
                    {
                        "ec2:AvailabilityZone": _zone(call) or f"{call.region}a",
                        "ec2:Encrypted": str(bool(m["Ebs"].get("Encrypted", False))).lower(),
                        "ec2:VolumeSize": str(m["Ebs"].get("VolumeSize", 8)),
                        "ec2:VolumeType": str(m["Ebs"].get("VolumeType", "gp2")),
                    },
                )
                for m in ebs[:1] or [{"Ebs": {}}]
            ]
        keys: dict[str, ContextValue] = {
            "ec2:AvailabilityZone": str(call.param("AvailabilityZone") or ""),
            "ec2:Encrypted": str(bool(call.param("Encrypted"))).lower(),
            "ec2:VolumeSize": str(call.param("Size") or ""),
            "ec2:VolumeType": str(call.param("VolumeType") or "gp2"),
        }
        if call.param("SnapshotId"):
            keys["ec2:ParentSnapshot"] = call.arn("snapshot", call.param("SnapshotId"))
        return [_created(call, "volume", keys)]
    found = []
    for volume_id in call.ids_of("volume", "VolumeId"):
        volume = _lookup(call.backend.get_volume, volume_id)
        keys = _volume_keys(volume) if volume is not None else {}
        found.append(_existing(call, "volume", volume_id, keys))
    return found


def find_snapshots(call: Call, created: bool) -> list[Touched]:
    if created:
        return [_created(call, "snapshot", {})]
    found = []
    for snapshot_id in call.ids_of("snapshot", "SnapshotId"):
        snapshot = _lookup(call.backend.get_snapshot, snapshot_id)
        keys: dict[str, Any] = {"ec2:SnapshotID": snapshot_id}
        if snapshot is not None:
            keys |= {
                "ec2:Owner": snapshot.owner_id,
                "ec2:VolumeSize": str(snapshot.volume.size),
                "ec2:Encrypted": str(bool(snapshot.encrypted)).lower(),
                "ec2:ParentVolume": call.arn("volume", snapshot.volume.id),
            }
        found.append(_existing(call, "snapshot", snapshot_id, keys))
    return found


def find_ebs_snapshots(call: Call, created: bool) -> list[Touched]:
    """The snapshots an EBS direct API call reads: ListSnapshotBlocks its ``SnapshotId``,
    ListChangedBlocks both ``SecondSnapshotId`` and ``FirstSnapshotId`` (each authorized).
    EC2 snapshots: their tags are the EC2 backend's."""
    return [
        _existing(call, "snapshot", snapshot_id, {})
        for snapshot_id in call.ids("SnapshotId", "SecondSnapshotId", "FirstSnapshotId")
    ]


def find_images(call: Call, created: bool) -> list[Touched]:
    found = []
    for image_id in call.ids_of("image", "ImageId"):
        image = _lookup(lambda i: call.backend.amis[i], image_id)
        keys: dict[str, Any] = {"ec2:ImageID": image_id, "ec2:ImageType": "machine"}
        if image is not None:
            keys |= {
                "ec2:Owner": getattr(image, "owner_alias", None) or image.owner_id,
                "ec2:Public": str(bool(image.is_public)).lower(),
                "ec2:RootDeviceType": image.root_device_type,
            }
        found.append(_existing(call, "image", image_id, keys))
    return found


def _subnet_ids(call: Call) -> list[str]:
    ids = call.ids_of("subnet", "SubnetId")
    for nic in call.param("NetworkInterfaces") or []:
        if nic.get("SubnetId"):
            ids.append(str(nic["SubnetId"]))
    return list(dict.fromkeys(ids))


def _default_subnet(call: Call) -> Any:
    zone = _zone(call) or f"{call.region}a"
    with contextlib.suppress(Exception):
        return call.backend.get_default_subnets().get(zone)
    return None


def find_subnets(call: Call, created: bool) -> list[Touched]:
    ids = _subnet_ids(call)
    if not ids and call.param("ImageId"):
        subnet = _default_subnet(call)
        ids = [subnet.id] if subnet is not None else []
    found = []
    for subnet_id in ids:
        subnet = _lookup(call.backend.get_subnet, subnet_id)
        keys: dict[str, Any] = {"ec2:SubnetID": subnet_id}
        if subnet is not None:
            keys |= {
                "ec2:AvailabilityZone": subnet.availability_zone,
                "ec2:Vpc": call.arn("vpc", subnet.vpc_id),
            }
        found.append(_existing(call, "subnet", subnet_id, keys))
    return found


def find_network_interfaces(call: Call, created: bool) -> list[Touched]:
    if created:
        nics = call.param("NetworkInterfaces") or [{}]
        subnets = _subnet_ids(call)
        subnet = _lookup(call.backend.get_subnet, subnets[0]) if subnets else _default_subnet(call)
        keys: dict[str, ContextValue] = {
            "ec2:AvailabilityZone": _zone(call) or f"{call.region}a",
        }
        if subnet is not None:
            keys["ec2:Subnet"] = call.arn("subnet", subnet.id)
            keys["ec2:Vpc"] = call.arn("vpc", subnet.vpc_id)
        associate = nics[0].get("AssociatePublicIpAddress")
        if associate is not None:
            keys["ec2:AssociatePublicIpAddress"] = str(bool(associate)).lower()
        return [_created(call, "network-interface", keys)]
    return [
        _existing(call, "network-interface", nic_id, {"ec2:NetworkInterfaceID": nic_id})
        for nic_id in call.ids_of("network-interface", "NetworkInterfaceId")
    ]


def find_security_groups(call: Call, created: bool) -> list[Touched]:
    if created:
        return [_created(call, "security-group", {})]
    ids = call.ids_of("security-group", "GroupId", "SecurityGroupIds")
    for nic in call.param("NetworkInterfaces") or []:
        ids += [str(g) for g in nic.get("Groups") or []]
    if not ids and call.param("ImageId"):
        # A launch without groups uses the default group of the subnet's VPC.
        subnet = _default_subnet(call)
        group = _lookup(call.backend.get_default_security_group, subnet.vpc_id if subnet else "")
        ids = [group.id] if group is not None else []
    found = []
    for group_id in dict.fromkeys(ids):
        group = _lookup(call.backend.get_security_group_from_id, group_id)
        keys: dict[str, Any] = {"ec2:SecurityGroupID": group_id}
        if group is not None and group.vpc_id:
            keys["ec2:Vpc"] = call.arn("vpc", group.vpc_id)
        found.append(_existing(call, "security-group", group_id, keys))
    return found


def find_vpcs(call: Call, created: bool) -> list[Touched]:
    return [_existing(call, "vpc", vpc_id, {}) for vpc_id in call.ids_of("vpc", "VpcId")]


def find_security_group_rules(call: Call, created: bool) -> list[Touched]:
    return [_created(call, "security-group-rule", {})] if created else []


def find_key_pairs(call: Call, created: bool) -> list[Touched]:
    return [
        _existing(call, "key-pair", name, {"ec2:KeyPairName": name}) for name in call.ids("KeyName")
    ]


def find_parameters(call: Call, created: bool) -> list[Touched]:
    found = []
    for name in call.ids("Name", "Names"):
        public = name.startswith("/aws/service/")
        found.append(
            Touched(
                "parameter",
                call.arn("parameter", name.lstrip("/"), account="" if public else None),
                {},
            )
        )
    return found


FINDERS: dict[tuple[str, str], Callable[[Call, bool], list[Touched]]] = {
    ("ec2", "instance"): find_instances,
    ("ec2", "volume"): find_volumes,
    ("ec2", "snapshot"): find_snapshots,
    ("ec2", "image"): find_images,
    ("ec2", "subnet"): find_subnets,
    ("ec2", "network-interface"): find_network_interfaces,
    ("ec2", "security-group"): find_security_groups,
    ("ec2", "security-group-rule"): find_security_group_rules,
    ("ec2", "vpc"): find_vpcs,
    ("ec2", "key-pair"): find_key_pairs,
    ("ebs", "snapshot"): find_ebs_snapshots,
    ("ssm", "parameter"): find_parameters,
}


# --- the authorizations of a call ----------------------------------------------------------


def _context(
    call: Call, listed: tuple[str, ...], keys: Mapping[str, ContextValue]
) -> dict[str, ContextValue]:
    """The keys that exist for this resource of this action: those the reference lists
    (``${TagKey}`` standing for any tag key), the action's own, and the global ones."""
    prefixes = tuple(k.split("${", 1)[0] for k in listed if "${" in k)
    wanted = {k.lower() for k in listed if "${" not in k}
    context: dict[str, ContextValue] = {k: v for k, v in call.principal.items()}
    for name, value in keys.items():
        lower = name.lower()
        if lower in wanted or any(lower.startswith(p.lower()) for p in prefixes):
            context[name] = value
    if "ec2:region" in wanted:
        context["ec2:Region"] = call.region
    return context


def authorizations(call: Call) -> list[Request]:
    """Every authorization AWS makes for ``call``, in the reference's order of resource types."""
    entry = privilege(call.service, call.action)
    if entry is None:
        return [Request(f"{call.service}:{call.action}", "*", dict(call.principal))]
    if not entry.resource_types:
        return [Request(entry.action, "*", _context(call, entry.action_keys, {}))]
    requests: list[Request] = []
    tags_dependent = any("ec2:CreateTags" in t.dependent_actions for t in entry.resource_types)
    tagging = privilege("ec2", "CreateTags") if tags_dependent else None
    specs = call.tag_specifications()
    for resource_type in entry.resource_types:
        finder = FINDERS.get((call.service, resource_type.name))
        if finder is None:
            continue  # a type ec2backup never uses (placement groups, launch templates...)
        created = resource_type.creates(entry.access_level)
        if created and not resource_type.required and resource_type.name not in specs:
            touched = finder(call, True) if resource_type.name == "volume" else []
        else:
            touched = finder(call, created)
        if not touched and resource_type.required and not created:
            touched = [Touched(resource_type.name, call.arn(resource_type.name, "*"))]
        listed = resource_type.condition_keys + entry.action_keys
        for t in touched:
            requests.append(Request(entry.action, t.arn, _context(call, listed, t.keys)))
            if tagging is not None and t.tags_at_creation:
                requests.append(_create_tags(call, tagging, t))
    if not requests:
        # Nothing the finders know: AWS still authorizes the call; "*" matches only "*".
        requests.append(Request(entry.action, "*", _context(call, entry.action_keys, {})))
    return requests


def _create_tags(call: Call, tagging: Privilege, touched: Touched) -> Request:
    row = next((r for r in tagging.resource_types if r.name == touched.type), None)
    listed = (row.condition_keys if row else ()) + tagging.action_keys
    tags = touched.tags_at_creation or {}
    keys: dict[str, ContextValue] = {
        **_tag_keys(tags, "aws:RequestTag"),
        "aws:TagKeys": sorted(tags),
        "ec2:CreateAction": call.action,
    }
    return Request(tagging.action, touched.arn, _context(call, listed, keys))


def principal_keys(user_name: str, user_id: str, account: str, region: str) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "aws:CurrentTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "aws:EpochTime": str(int(now.timestamp())),
        "aws:PrincipalAccount": account,
        "aws:PrincipalArn": f"arn:aws:iam::{account}:user/{user_name}",
        "aws:PrincipalType": "User",
        "aws:RequestedRegion": region,
        # On AWS every call ec2backup makes is HTTPS; the sandbox's endpoint is plain HTTP.
        "aws:SecureTransport": "true",
        "aws:SourceIp": "127.0.0.1",
        "aws:UserAgent": "botocore",
        "aws:userid": user_id,
        "aws:username": user_name,
        "aws:ViaAWSService": "false",
    }
