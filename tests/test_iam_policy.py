"""docs/iam-policy.json: exactly the actions ec2backup calls, destructive ones only on resources
tagged ec2backup:managed=true, and clean under the parliament IAM linter. That it works as
written (resources and conditions) is shown by tests/e2e/test_iam.py on the local cloud's IAM
mode."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
POLICY = json.loads((ROOT / "docs" / "iam-policy.json").read_text())

DESTRUCTIVE = {
    "ec2:AttachVolume",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:DeleteSnapshot",
    "ec2:DeleteVolume",
    "ec2:DetachVolume",
    "ec2:ModifySnapshotTier",
    "ec2:ModifyVolume",
    "ec2:RestoreSnapshotTier",
    "ec2:RevokeSecurityGroupIngress",
    "ec2:TerminateInstances",
}
# Parliament wants every resource type of an action in one statement. These are split on
# purpose: AWS evaluates each resource with only the condition keys the Service Authorization
# Reference lists for its type, so aws:RequestTag can only sit on the resources being created
# (instance, volume, snapshot), ec2:MetadataHttpTokens only on the instance, and
# aws:ResourceTag only on those that exist (the source volume of a snapshot, the snapshot of a
# restored volume). The local cloud's IAM mode runs the policy as written (tests/e2e/test_iam.py).
ACCEPTED_MISMATCHES = {
    ("ec2:RunInstances", "arn:*:ec2:*:*:volume/*"),
    ("ec2:CreateVolume", "arn:*:ec2:*:*:volume/*"),
    ("ec2:CreateVolume", "arn:*:ec2:*::snapshot/*"),
    ("ec2:RunInstances", "arn:*:ec2:*::image/*"),
    ("ec2:RunInstances", "arn:*:ec2:*:*:network-interface/*"),
    ("ec2:RunInstances", "arn:*:ec2:*:*:security-group/*"),
    ("ec2:RunInstances", "arn:*:ec2:*:*:subnet/*"),
    ("ec2:RunInstances", "arn:*:ec2:*:*:instance/*"),
    ("ec2:CreateSnapshot", "arn:*:ec2:*::snapshot/*"),
    # CreateVolume from a snapshot authorizes the snapshot too, by its own tags (no request tag
    # there): a statement of its own for the snapshot resource.
    ("ec2:CreateVolume", "arn:*:ec2:*:*:volume/*"),
    ("ec2:CreateSecurityGroup", "arn:*:ec2:*:*:vpc/*"),
    ("ec2:CreateSecurityGroup", "arn:*:ec2:*:*:security-group/*"),
    # The rule a run adds carries its tags (aws:RequestTag); the group it goes into is ours
    # (aws:ResourceTag): one condition each.
    ("ec2:AuthorizeSecurityGroupIngress", "arn:*:ec2:*:*:security-group-rule/*"),
    ("ec2:AuthorizeSecurityGroupIngress", "arn:*:ec2:*:*:security-group/*"),
}


def _actions(statement: dict[str, object]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)  # type: ignore[arg-type]


def policy_actions() -> set[str]:
    return {a for s in POLICY["Statement"] for a in _actions(s)}


def _camel(snake: str) -> str:
    return "".join(part.title() for part in snake.split("_"))


def actions_in_code() -> set[str]:
    """Every AWS operation the code sends, read from its boto3 calls."""
    used: set[str] = set()
    package = ROOT / "ec2backup"
    for module in [
        *sorted((package / "adapters" / "aws").glob("*.py")),
        package / "commands" / "doctor.py",
    ]:
        text = module.read_text()
        for op in re.findall(r"\.(?:_client|client)(?:_once)?\.([a-z_]+)\(", text):
            if op not in ("get_paginator", "get_waiter", "meta"):
                used.add(f"ec2:{_camel(op)}")
        used |= {f"ec2:{_camel(op)}" for op in re.findall(r'get_paginator\("([a-z_]+)"\)', text)}
        used |= (
            {f"ec2:{_camel(op)}" for op in re.findall(r"client\.describe_regions", text)}
            and {"ec2:DescribeRegions"}
            if "describe_regions" in text
            else set()
        )
        ssm_calls = re.findall(r"ssm_client(?:\(\))?\.([a-z_]+)\(", text)
        used |= {f"ssm:{_camel(op)}" for op in ssm_calls}
        ebs_calls = re.findall(r"ebs_client(?:\(\))?\.([a-z_]+)\(", text)
        used |= {f"ebs:{_camel(op)}" for op in ebs_calls}
        used |= {f"sts:{_camel(op)}" for op in re.findall(r"sts\.([a-z_]+)\(", text)}
    # Waiters poll Describe* calls, already listed; TagSpecifications need CreateTags.
    return used | {"ec2:CreateTags"}


def test_the_policy_allows_exactly_what_the_code_calls() -> None:
    assert actions_in_code() == policy_actions()


@pytest.mark.parametrize("action", sorted(DESTRUCTIVE))
def test_destructive_actions_only_on_resources_tagged_ours(action: str) -> None:
    statements = [s for s in POLICY["Statement"] if action in _actions(s)]
    assert statements
    for statement in statements:
        condition = statement.get("Condition", {}).get("StringEquals", {})
        if statement["Resource"] == "arn:aws:ec2:*:*:security-group-rule/*":
            # The rule being added exists only as the request: its tags must say it is ours.
            assert condition.get("aws:RequestTag/ec2backup:managed") == "true", statement["Sid"]
            continue
        assert condition.get("aws:ResourceTag/ec2backup:managed") == "true", statement["Sid"]


def test_instances_launch_only_tagged_and_with_imdsv2() -> None:
    (statement,) = [
        s for s in POLICY["Statement"] if s["Sid"] == "LaunchOnlyTaggedInstancesWithImdsv2"
    ]
    assert statement["Resource"] == "arn:aws:ec2:*:*:instance/*"  # the key exists there only
    condition = statement["Condition"]["StringEquals"]
    assert condition["aws:RequestTag/ec2backup:managed"] == "true"
    assert condition["ec2:MetadataHttpTokens"] == "required"
    assert not any("iam:PassRole" in _actions(s) for s in POLICY["Statement"])  # no profile


def test_parliament_finds_nothing_of_medium_severity_or_more() -> None:
    from parliament import analyze_policy_string, enhance_finding

    findings = [enhance_finding(f) for f in analyze_policy_string(json.dumps(POLICY)).findings]
    serious = []
    for finding in findings:
        if finding.severity not in ("MEDIUM", "HIGH", "CRITICAL"):
            continue
        if finding.issue == "RESOURCE_MISMATCH" and all(
            (d["action"], d["required_format"]) in ACCEPTED_MISMATCHES for d in finding.detail
        ):
            continue
        serious.append((finding.severity, finding.issue, finding.detail))
    assert serious == []
