"""The network around an instance: the security group ``init`` makes (SSH from the backup host
only), the check that the groups a profile names exist, the zone's default subnet, and whether
a subnet routes to the internet (so that the backup host can reach the instance)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ...errors import ResourceNotFoundError
from .clients import Ec2Clients
from .convert import _batches, _tag_specs
from .waiters import while_not_found

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import FilterTypeDef

# A Describe filter takes at most 200 values.
FILTER_VALUES_BATCH = 200


def ensure_security_group(
    ec2: Ec2Clients, name: str, ssh_cidr: str, tags: Mapping[str, str]
) -> str:
    """A security group of the default VPC admitting only SSH from ``ssh_cidr``, found by
    its name (so a second `init` reuses it) or created with its tags in the same call."""
    resources = {"security_group": name, "cidr": ssh_cidr}
    with ec2.errors("ec2:DescribeVpcs", resources):
        vpcs = ec2.client.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])[
            "Vpcs"
        ]
    if not vpcs:
        raise ResourceNotFoundError(
            f"region {ec2.region} has no default VPC",
            resources=resources,
            run_id=ec2.run_id,
            hint="name an existing security group with --security-group",
        )
    vpc_id = vpcs[0]["VpcId"]
    with ec2.errors("ec2:DescribeSecurityGroups", resources):
        found = ec2.client.describe_security_groups(
            Filters=[
                {"Name": "group-name", "Values": [name]},
                {"Name": "vpc-id", "Values": [vpc_id]},
            ]
        )["SecurityGroups"]
    if found:
        return str(found[0]["GroupId"])
    with ec2.errors("ec2:CreateSecurityGroup", resources):
        group_id = ec2.client.create_security_group(
            GroupName=name,
            Description="ec2backup: SSH from the backup host only",
            VpcId=vpc_id,
            TagSpecifications=_tag_specs(tags, "security-group"),
        )["GroupId"]
    with ec2.errors("ec2:AuthorizeSecurityGroupIngress", resources):
        # The group was created just now: EC2 may not know its id for a moment.
        while_not_found(
            lambda: ec2.client.authorize_security_group_ingress(
                GroupId=group_id,
                IpPermissions=[
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 22,
                        "ToPort": 22,
                        "IpRanges": [{"CidrIp": ssh_cidr, "Description": "ec2backup host"}],
                    }
                ],
            ),
            ("InvalidGroup.NotFound",),
            ec2.poll_interval,
        )
    return str(group_id)


def missing_security_groups(ec2: Ec2Clients, group_ids: Sequence[str]) -> list[str]:
    """The ids in ``group_ids`` that name no security group in this region. A filter (not
    GroupIds) so that unknown ids come back as absent rather than as an error."""
    existing: set[str] = set()
    for batch in _batches(group_ids, FILTER_VALUES_BATCH):
        filters: list[FilterTypeDef] = [{"Name": "group-id", "Values": batch}]
        with ec2.errors("ec2:DescribeSecurityGroups"):
            pages = ec2.client.get_paginator("describe_security_groups").paginate(Filters=filters)
            existing |= {g["GroupId"] for page in pages for g in page["SecurityGroups"]}
    return [g for g in dict.fromkeys(group_ids) if g not in existing]


def default_subnet(ec2: Ec2Clients, availability_zone: str) -> str | None:
    """The default VPC's subnet in the zone (where a launch without a subnet goes), if any."""
    filters: list[FilterTypeDef] = [
        {"Name": "availability-zone", "Values": [availability_zone]},
        {"Name": "default-for-az", "Values": ["true"]},
    ]
    with ec2.errors("ec2:DescribeSubnets", {"availability_zone": availability_zone}):
        subnets = ec2.client.describe_subnets(Filters=filters)["Subnets"]
    return str(subnets[0]["SubnetId"]) if subnets else None


def subnet_routes_to_internet(ec2: Ec2Clients, subnet_id: str) -> bool:
    """Whether the subnet's route table (its own, else its VPC's main one) sends 0.0.0.0/0 to an
    internet gateway: without one, the backup host cannot reach the instance's public address."""
    resources = {"subnet": subnet_id}
    with ec2.errors("ec2:DescribeSubnets", resources):
        subnets = ec2.client.describe_subnets(SubnetIds=[subnet_id])["Subnets"]
    if not subnets:
        raise ResourceNotFoundError(
            "subnet not found", run_id=ec2.run_id, resources=resources, hint="check subnet_id"
        )
    vpc_id = subnets[0]["VpcId"]
    with ec2.errors("ec2:DescribeRouteTables", resources):
        own = ec2.client.describe_route_tables(
            Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}]
        )["RouteTables"]
        tables = (
            own
            or ec2.client.describe_route_tables(
                Filters=[
                    {"Name": "vpc-id", "Values": [vpc_id]},
                    {"Name": "association.main", "Values": ["true"]},
                ]
            )["RouteTables"]
        )
    return any(
        route.get("DestinationCidrBlock") == "0.0.0.0/0"
        and str(route.get("GatewayId", "")).startswith("igw-")
        and route.get("State", "active") == "active"
        for table in tables
        for route in table.get("Routes", ())
    )
