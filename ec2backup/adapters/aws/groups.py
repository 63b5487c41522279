"""The security group ``init`` makes (SSH from the backup host only), and the check that the
groups a profile names exist."""

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
