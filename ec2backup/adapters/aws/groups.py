"""The security group calls of ``Boto3Ec2``: the group ``init`` makes, and the SSH rules each
run adds for the address it runs from (tagged with the run, so that a later run or ``reap``
finds one a crash left behind)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ...errors import ResourceNotFoundError
from ...ports import IngressRule
from .convert import _tag_filters, _tag_specs, _tags
from .errors import _error_code

if TYPE_CHECKING:
    from mypy_boto3_ec2.client import EC2Client

_GROUP_GONE = ("InvalidGroup.NotFound", "InvalidGroupId.Malformed")
_RULE_GONE = ("InvalidPermission.NotFound", "InvalidSecurityGroupRuleId.NotFound")


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


class SecurityGroupCalls:
    """Mixed into ``Boto3Ec2``, which provides the client and the error translation."""

    region: str
    run_id: str | None
    _client: EC2Client
    _errors: Callable[[str, Mapping[str, str] | None], AbstractContextManager[None]]

    def ensure_security_group(self, name: str, ssh_cidr: str, tags: Mapping[str, str]) -> str:
        """A security group of the default VPC admitting only SSH from ``ssh_cidr``, found by
        its name (so a second `init` reuses it) or created with its tags in the same call."""
        resources = {"security_group": name, "cidr": ssh_cidr}
        with self._errors("ec2:DescribeVpcs", resources):
            vpcs = self._client.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])[
                "Vpcs"
            ]
        if not vpcs:
            raise ResourceNotFoundError(
                f"region {self.region} has no default VPC",
                resources=resources,
                run_id=self.run_id,
                hint="name an existing security group with --security-group",
            )
        vpc_id = vpcs[0]["VpcId"]
        with self._errors("ec2:DescribeSecurityGroups", resources):
            found = self._client.describe_security_groups(
                Filters=[
                    {"Name": "group-name", "Values": [name]},
                    {"Name": "vpc-id", "Values": [vpc_id]},
                ]
            )["SecurityGroups"]
        if found:
            return str(found[0]["GroupId"])
        with self._errors("ec2:CreateSecurityGroup", resources):
            group_id = self._client.create_security_group(
                GroupName=name,
                Description="ec2backup: SSH from the backup host only",
                VpcId=vpc_id,
                TagSpecifications=_tag_specs(tags, "security-group"),
            )["GroupId"]
        with self._errors("ec2:AuthorizeSecurityGroupIngress", resources):
            self._client.authorize_security_group_ingress(
                GroupId=group_id,
                IpPermissions=[
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 22,
                        "ToPort": 22,
                        "IpRanges": [{"CidrIp": ssh_cidr, "Description": "ec2backup host"}],
                    }
                ],
            )
        return str(group_id)

    def security_group_tags(self, group_id: str) -> Mapping[str, str] | None:
        with self._errors("ec2:DescribeSecurityGroups", {"security_group": group_id}):
            try:
                groups = self._client.describe_security_groups(GroupIds=[group_id])[
                    "SecurityGroups"
                ]
            except ClientError as exc:
                if _error_code(exc) in _GROUP_GONE:
                    return None
                raise
        return _tags(groups[0].get("Tags")) if groups else None

    def ingress_rules(self, group_id: str) -> list[IngressRule]:
        with self._errors("ec2:DescribeSecurityGroupRules", {"security_group": group_id}):
            pages = self._client.get_paginator("describe_security_group_rules").paginate(
                Filters=[{"Name": "group-id", "Values": [group_id]}]
            )
            raw = [r for page in pages for r in page.get("SecurityGroupRules", ())]
        return [_rule(r) for r in raw if not r.get("IsEgress")]

    def find_ingress_rules(self, tags: Mapping[str, str]) -> list[IngressRule]:
        with self._errors("ec2:DescribeSecurityGroupRules", None):
            pages = self._client.get_paginator("describe_security_group_rules").paginate(
                Filters=_tag_filters(tags)
            )
            raw = [r for page in pages for r in page.get("SecurityGroupRules", ())]
        return [_rule(r) for r in raw if not r.get("IsEgress")]

    def authorize_ssh(self, group_id: str, cidr: str, tags: Mapping[str, str]) -> str:
        resources = {"security_group": group_id, "cidr": cidr}
        response: Mapping[str, Any] = {}
        with self._errors("ec2:AuthorizeSecurityGroupIngress", resources):
            try:
                response = self._client.authorize_security_group_ingress(
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
        for rule in self.ingress_rules(group_id):
            if rule.cidr == cidr and rule.protocol == "tcp" and rule.from_port == 22:
                return rule.id
        raise ResourceNotFoundError(
            f"the SSH rule for {cidr} of {group_id} was neither added nor found",
            resources=resources,
            run_id=self.run_id,
        )

    def revoke_ingress_rules(self, group_id: str, rule_ids: Sequence[str]) -> None:
        if not rule_ids:
            return
        resources = {"security_group": group_id, "rules": ", ".join(rule_ids)}
        with self._errors("ec2:RevokeSecurityGroupIngress", resources):
            try:
                self._client.revoke_security_group_ingress(
                    GroupId=group_id, SecurityGroupRuleIds=list(rule_ids)
                )
            except ClientError as exc:
                if _error_code(exc) in _GROUP_GONE:
                    return
                if _error_code(exc) not in _RULE_GONE or len(rule_ids) == 1:
                    if _error_code(exc) in _RULE_GONE:
                        return
                    raise
                # EC2 refuses the whole call if one id is gone: one at a time.
                for rule_id in rule_ids:
                    self.revoke_ingress_rules(group_id, [rule_id])
