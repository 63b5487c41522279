"""The local cloud's IAM evaluation (``sandbox/iam_policy.py``, ``sandbox/iam_requests.py``):
AWS's documented logic, and the authorizations the Service Authorization Reference lists.
Pure: no server."""

from __future__ import annotations

from typing import Any

import pytest

from ec2backup.sandbox.iam_policy import Decision, Request, condition_holds, decide, matches
from ec2backup.sandbox.iam_requests import privilege

CONTEXT = {
    "aws:RequestTag/ec2backup:managed": "true",
    "aws:TagKeys": ["ec2backup:managed", "Name"],
    "ec2:InstanceType": "t3.micro",
    "aws:username": "alice",
}


def allow(action: str, resource: str, condition: dict[str, Any] | None = None) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": action, "Resource": resource}
    if condition:
        statement["Condition"] = condition
    return {"Version": "2012-10-17", "Statement": [statement]}


@pytest.mark.parametrize(
    ("operator", "key", "values", "expected"),
    [
        ("StringEquals", "ec2:InstanceType", "t3.micro", True),
        ("StringEquals", "ec2:InstanceType", ["t2.nano", "t3.micro"], True),
        ("StringEquals", "ec2:InstanceType", "t2.nano", False),
        ("StringEqualsIgnoreCase", "EC2:instancetype", "T3.MICRO", True),
        ("StringLike", "ec2:InstanceType", "t3.*", True),
        ("StringNotEquals", "ec2:InstanceType", "t2.nano", True),
        # A key missing from the context: false, but for IfExists, negations and Null.
        ("StringEquals", "ec2:MetadataHttpTokens", "required", False),
        ("StringEqualsIfExists", "ec2:MetadataHttpTokens", "required", True),
        ("StringNotEquals", "ec2:MetadataHttpTokens", "optional", True),
        ("StringNotLike", "ec2:MetadataHttpTokens", "opt*", True),
        ("Null", "ec2:MetadataHttpTokens", "true", True),
        ("Null", "ec2:InstanceType", "true", False),
        ("Null", "ec2:InstanceType", "false", True),
        # Multi-valued keys.
        ("ForAllValues:StringEquals", "aws:TagKeys", ["ec2backup:managed", "Name"], True),
        ("ForAllValues:StringEquals", "aws:TagKeys", ["ec2backup:managed"], False),
        ("ForAllValues:StringEquals", "aws:NoSuchKey", ["x"], True),
        ("ForAnyValue:StringEquals", "aws:TagKeys", ["Name"], True),
        ("ForAnyValue:StringEquals", "aws:NoSuchKey", ["Name"], False),
        ("NumericLessThan", "ec2:VolumeSize", "10", False),
    ],
)
def test_condition_operators(operator: str, key: str, values: Any, expected: bool) -> None:
    assert condition_holds(operator, key, values, CONTEXT) is expected


def test_wildcards_and_variables() -> None:
    assert matches("arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:us-east-1:123:volume/vol-1")
    assert not matches("arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:us-east-1:123:instance/i-1")
    # An empty account (images, snapshots, public parameters) matches "*".
    assert matches("arn:aws:ssm:*:*:parameter/aws/*", "arn:aws:ssm:us-east-1::parameter/aws/x")
    assert matches("EC2:run*", "ec2:RunInstances", ignore_case=True)
    policy = allow("ec2:RunInstances", "arn:aws:ec2:*:*:instance/${aws:username}-*")
    request = Request("ec2:RunInstances", "arn:aws:ec2:r:1:instance/alice-1", CONTEXT)
    assert decide([policy], request) is Decision.ALLOWED
    other = Request("ec2:RunInstances", "arn:aws:ec2:r:1:instance/bob-1", CONTEXT)
    assert decide([policy], other) is Decision.IMPLICIT_DENY


def test_explicit_deny_wins_over_allow() -> None:
    allowed = allow("ec2:*", "*")
    deny = {
        "Statement": [
            {
                "Effect": "Deny",
                "Action": "ec2:RunInstances",
                "Resource": "arn:aws:ec2:*:*:instance/*",
                "Condition": {"StringNotEquals": {"ec2:InstanceType": "t2.nano"}},
            }
        ]
    }
    request = Request("ec2:RunInstances", "arn:aws:ec2:r:1:instance/*", CONTEXT)
    assert decide([allowed], request) is Decision.ALLOWED
    assert decide([allowed, deny], request) is Decision.EXPLICIT_DENY
    # The same Deny does not reach another resource of the call.
    volume = Request("ec2:RunInstances", "arn:aws:ec2:r:1:volume/*", CONTEXT)
    assert decide([allowed, deny], volume) is Decision.ALLOWED
    assert decide([], request) is Decision.IMPLICIT_DENY


def test_the_reference_says_what_each_launch_resource_offers() -> None:
    """The facts the documented policy must respect, read from the data the sandbox uses."""
    run = privilege("ec2", "RunInstances")
    assert run is not None
    by_type = {t.name: t for t in run.resource_types}
    assert {n for n, t in by_type.items() if t.required} == {
        "image",
        "instance",
        "network-interface",
        "security-group",
        "subnet",
    }
    assert "ec2:MetadataHttpTokens" in by_type["instance"].condition_keys
    assert "ec2:MetadataHttpTokens" not in by_type["volume"].condition_keys
    assert by_type["volume"].creates(run.access_level)
    assert not by_type["image"].creates(run.access_level)
    create_volume = privilege("ec2", "CreateVolume")
    assert create_volume is not None
    snapshot = next(t for t in create_volume.resource_types if t.name == "snapshot")
    assert "aws:ResourceTag/${TagKey}" in snapshot.condition_keys
    assert "aws:RequestTag/${TagKey}" not in snapshot.condition_keys
    tags = privilege("ec2", "CreateTags")
    assert tags is not None and "ec2:CreateAction" in tags.action_keys


class _Snapshot:
    owner_id = "123456789012"
    encrypted = True

    class volume:  # a stand-in for moto's object
        id = "vol-1"
        size = 1


class _Backend:
    def __init__(self) -> None:
        self.tags = {"snap-1": {"ec2backup:managed": "true"}}

    def get_snapshot(self, snapshot_id: str) -> Any:
        return _Snapshot()


def test_a_call_is_authorized_per_resource_with_only_the_keys_listed_for_it() -> None:
    from ec2backup.sandbox.iam_requests import Call, authorizations

    params = {
        "SnapshotId": "snap-1",
        "AvailabilityZone": "us-east-1a",
        "Size": 1,
        "TagSpecifications": [
            {"ResourceType": "volume", "Tags": [{"Key": "ec2backup:managed", "Value": "true"}]}
        ],
    }
    call = Call("ec2", "CreateVolume", params.get, _Backend(), "us-east-1", "123", {})
    volume, tags, snapshot = authorizations(call)
    assert volume.action == "ec2:CreateVolume"
    assert volume.resource == "arn:aws:ec2:us-east-1:123:volume/*"
    assert volume.context["aws:RequestTag/ec2backup:managed"] == "true"
    assert volume.context["ec2:ParentSnapshot"] == "arn:aws:ec2:us-east-1::snapshot/snap-1"
    assert (tags.action, tags.context["ec2:CreateAction"]) == ("ec2:CreateTags", "CreateVolume")
    assert snapshot.resource == "arn:aws:ec2:us-east-1::snapshot/snap-1"
    assert snapshot.context["aws:ResourceTag/ec2backup:managed"] == "true"
    assert snapshot.context["ec2:Owner"] == "123456789012"
    # Known to the sandbox, but not a key of this resource type for CreateVolume: missing.
    assert "ec2:SnapshotID" not in snapshot.context
    assert "aws:RequestTag/ec2backup:managed" not in snapshot.context
    assert snapshot.context["ec2:Region"] == "us-east-1"
