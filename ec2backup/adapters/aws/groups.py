"""The network around an instance: the security group ``init`` makes (SSH from the backup host
only), the SSH rules each run adds to it for the address it runs from (tagged with the run, so
that a later run or ``reap`` finds one a crash left behind), the check that the groups a
profile names exist, the zone's default subnet, and whether a subnet routes to the internet
(so that the backup host can reach the instance)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ...errors import ResourceNotFoundError
from ...ports import IngressRule
from .clients import Ec2Clients
from .convert import _batches, _tag_filters, _tag_specs, _tags
from .errors import _error_code
from .waiters import while_not_found

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import FilterTypeDef

# A Describe filter takes at most 200 values.
FILTER_VALUES_BATCH = 200
_GROUP_GONE = ("InvalidGroup.NotFound", "InvalidGroupId.Malformed")
_RULE_GONE = ("InvalidPermission.NotFound", "InvalidSecurityGroupRuleId.NotFound")


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
    # One call for the VPC's tables: the subnet's own if it has one, else the VPC's main one.
    with ec2.errors("ec2:DescribeRouteTables", resources):
        pages = ec2.client.get_paginator("describe_route_tables").paginate(
            Filters=[{"Name": "vpc-id", "Values": [vpc_id]}]
        )
        in_vpc = [table for page in pages for table in page["RouteTables"]]
    associations = [(table, a) for table in in_vpc for a in table.get("Associations", ())]
    tables = [t for t, a in associations if a.get("SubnetId") == subnet_id] or [
        t for t, a in associations if a.get("Main")
    ]
    return any(
        route.get("DestinationCidrBlock") == "0.0.0.0/0"
        and str(route.get("GatewayId", "")).startswith("igw-")
        and route.get("State", "active") == "active"
        for table in tables
        for route in table.get("Routes", ())
    )


# --- the SSH rules runs add (run/steps/access.py) --------------------------------------------


def _rule(raw: Mapping[str, Any]) -> IngressRule:
    def port(value: Any) -> int | None:
        return None if value is None or int(value) == -1 else int(value)

    return IngressRule(
        id=raw["SecurityGroupRuleId"],
        group_id=raw["GroupId"],
        protocol=str(raw.get("IpProtocol", "-1")),
        from_port=port(raw.get("FromPort")),
        to_port=port(raw.get("ToPort")),
        cidr=raw.get("CidrIpv4"),
        tags=_tags(raw.get("Tags")),
    )


def security_group_tags(ec2: Ec2Clients, group_id: str) -> Mapping[str, str] | None:
    with ec2.errors("ec2:DescribeSecurityGroups", {"security_group": group_id}):
        try:
            groups = ec2.client.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
        except ClientError as exc:
            if _error_code(exc) in _GROUP_GONE:
                return None
            raise
    return _tags(groups[0].get("Tags")) if groups else None


def _ingress(ec2: Ec2Clients, filters: list[FilterTypeDef], group: str | None) -> list[IngressRule]:
    with ec2.errors("ec2:DescribeSecurityGroupRules", {"security_group": group} if group else None):
        pages = ec2.client.get_paginator("describe_security_group_rules").paginate(Filters=filters)
        raw = [r for page in pages for r in page.get("SecurityGroupRules", ())]
    return [_rule(r) for r in raw if not r.get("IsEgress")]


def ingress_rules(ec2: Ec2Clients, group_id: str) -> list[IngressRule]:
    return _ingress(ec2, [{"Name": "group-id", "Values": [group_id]}], group_id)


def find_ingress_rules(ec2: Ec2Clients, tags: Mapping[str, str]) -> list[IngressRule]:
    return _ingress(ec2, list(_tag_filters(tags)), None)


def authorize_ssh(ec2: Ec2Clients, group_id: str, cidr: str, tags: Mapping[str, str]) -> str:
    resources = {"security_group": group_id, "cidr": cidr}
    response: Mapping[str, Any] = {}
    with ec2.errors("ec2:AuthorizeSecurityGroupIngress", resources):
        try:
            response = ec2.client.authorize_security_group_ingress(
                GroupId=group_id,
                IpPermissions=[
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 22,
                        "ToPort": 22,
                        "IpRanges": [{"CidrIp": cidr, "Description": "ec2backup run"}],
                    }
                ],
                TagSpecifications=_tag_specs(tags, "security-group-rule"),
            )
        except ClientError as exc:
            if _error_code(exc) != "InvalidPermission.Duplicate":
                raise
    added = response.get("SecurityGroupRules") or []
    if added:
        return str(added[0]["SecurityGroupRuleId"])
    # Already there (a retry after a lost response, or a rule made by hand).
    for rule in ingress_rules(ec2, group_id):
        if rule.cidr == cidr and rule.protocol == "tcp" and rule.from_port == 22:
            return rule.id
    raise ResourceNotFoundError(
        f"the SSH rule for {cidr} of {group_id} was neither added nor found",
        resources=resources,
        run_id=ec2.run_id,
    )


def revoke_ingress_rules(ec2: Ec2Clients, group_id: str, rule_ids: Sequence[str]) -> None:
    if not rule_ids:
        return
    resources = {"security_group": group_id, "rules": ", ".join(rule_ids)}
    with ec2.errors("ec2:RevokeSecurityGroupIngress", resources):
        try:
            ec2.client.revoke_security_group_ingress(
                GroupId=group_id, SecurityGroupRuleIds=list(rule_ids)
            )
        except ClientError as exc:
            code = _error_code(exc)
            if code in _GROUP_GONE or (code in _RULE_GONE and len(rule_ids) == 1):
                return  # already gone: success
            if code not in _RULE_GONE:
                raise
            failed_batch = True
        else:
            failed_batch = False
    if failed_batch:  # EC2 refuses the whole call if one id is gone: one at a time
        for rule_id in rule_ids:
            revoke_ingress_rules(ec2, group_id, [rule_id])
