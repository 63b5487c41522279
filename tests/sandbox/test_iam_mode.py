"""The local cloud's IAM mode refuses what AWS refuses: each call authorized for every resource
it touches, with the condition keys the Service Authorization Reference lists for that resource
type, and the refusal worded as the service words it."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ec2backup.sandbox import Sandbox
from tests.sandbox.helpers import UBUNTU_PARAMETER, client, error_code, no_retries, with_deadline

MANAGED = [{"Key": "ec2backup:managed", "Value": "true"}]
ACCOUNT = "123456789012"


def _user(sandbox: Sandbox, *statements: dict[str, Any]) -> dict[str, str]:
    policy = {"Version": "2012-10-17", "Statement": list(statements)}
    return sandbox.create_iam_user(f"u{time.monotonic_ns()}", policy)


def _allow(actions: Any, resources: Any = "*", **condition: Any) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": actions, "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


TAG_AT_CREATION = _allow(
    "ec2:CreateTags",
    "*",
    StringEquals={"ec2:CreateAction": ["RunInstances", "CreateVolume", "CreateSnapshot"]},
)
LAUNCH_PARTS = _allow(
    "ec2:RunInstances",
    [
        "arn:aws:ec2:*::image/*",
        "arn:aws:ec2:*:*:security-group/*",
        "arn:aws:ec2:*:*:subnet/*",
        "arn:aws:ec2:*:*:network-interface/*",
    ],
)


def _launch(ec2: Any, sandbox: Sandbox, **overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "ImageId": sandbox.default_ami_id,
        "InstanceType": "t3.micro",
        "MinCount": 1,
        "MaxCount": 1,
        "MetadataOptions": {"HttpTokens": "required"},
        "TagSpecifications": [
            {"ResourceType": t, "Tags": MANAGED}
            for t in ("instance", "volume", "network-interface")
        ],
        **overrides,
    }
    return ec2.run_instances(**params)["Instances"][0]  # type: ignore[no-any-return]


def _refusal(error: pytest.ExceptionInfo[ClientError]) -> str:
    assert error_code(error.value) == (403, "UnauthorizedOperation")
    message = str(error.value.response["Error"]["Message"])
    assert message.startswith("You are not authorized to perform this operation. User: ")
    assert "Encoded authorization failure message: " in message
    return message


def _admin_cleanup(sandbox: Sandbox, instance_ids: list[str]) -> None:
    if instance_ids:
        client(sandbox, "ec2").terminate_instances(InstanceIds=instance_ids)


def test_a_condition_key_the_resource_type_lacks_refuses_that_resource(
    iam_sandbox: Sandbox,
) -> None:
    # ec2:MetadataHttpTokens exists for the instance of RunInstances, not for its root
    # volume: one statement holding both, with that condition, refuses the volume.
    keys = _user(
        iam_sandbox,
        LAUNCH_PARTS,
        TAG_AT_CREATION,
        _allow(
            "ec2:RunInstances",
            ["arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*:*:volume/*"],
            StringEquals={
                "aws:RequestTag/ec2backup:managed": "true",
                "ec2:MetadataHttpTokens": "required",
            },
        ),
    )
    ec2 = client(iam_sandbox, "ec2", keys, no_retries())
    before = _count_instances(iam_sandbox)
    with pytest.raises(ClientError) as refused:
        _launch(ec2, iam_sandbox)
    message = _refusal(refused)
    assert (
        f"is not authorized to perform: ec2:RunInstances on resource: arn:aws:ec2:us-east-1:"
        f"{ACCOUNT}:volume/* because no identity-based policy allows the ec2:RunInstances"
        " action." in message
    )
    assert _count_instances(iam_sandbox) == before

    # Split as the reference wants it, the same launch passes.
    keys = _user(
        iam_sandbox,
        LAUNCH_PARTS,
        TAG_AT_CREATION,
        _allow(
            "ec2:RunInstances",
            "arn:aws:ec2:*:*:instance/*",
            StringEquals={
                "aws:RequestTag/ec2backup:managed": "true",
                "ec2:MetadataHttpTokens": "required",
            },
        ),
        _allow(
            "ec2:RunInstances",
            "arn:aws:ec2:*:*:volume/*",
            StringEquals={"aws:RequestTag/ec2backup:managed": "true"},
        ),
    )
    ec2 = client(iam_sandbox, "ec2", keys, no_retries())
    instance = _launch(ec2, iam_sandbox)
    _admin_cleanup(iam_sandbox, [instance["InstanceId"]])
    # ... and without IMDSv2 it does not (a missing HttpTokens is "optional").
    with pytest.raises(ClientError) as optional:
        _launch(ec2, iam_sandbox, MetadataOptions={"HttpTokens": "optional"})
    assert f"{ACCOUNT}:instance/*" in _refusal(optional)


def test_tags_at_creation_need_create_tags_with_the_creating_action(
    iam_sandbox: Sandbox,
) -> None:
    create = _allow("ec2:CreateVolume", "arn:aws:ec2:*:*:volume/*")
    untagging = client(iam_sandbox, "ec2", _user(iam_sandbox, create), no_retries())
    # Without tags, CreateTags is not asked; with them it is.
    volume_id = untagging.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    with pytest.raises(ClientError) as refused:
        untagging.create_volume(
            AvailabilityZone="us-east-1a",
            Size=1,
            TagSpecifications=[{"ResourceType": "volume", "Tags": MANAGED}],
        )
    assert "perform: ec2:CreateTags on resource: arn:aws:ec2:us-east-1:" in _refusal(refused)
    tagging = client(iam_sandbox, "ec2", _user(iam_sandbox, create, TAG_AT_CREATION), no_retries())
    tagged = tagging.create_volume(
        AvailabilityZone="us-east-1a",
        Size=1,
        TagSpecifications=[{"ResourceType": "volume", "Tags": MANAGED}],
    )["VolumeId"]
    # The same CreateTags outside a create call is refused (ec2:CreateAction is missing).
    with pytest.raises(ClientError) as later:
        tagging.create_tags(Resources=[volume_id], Tags=MANAGED)
    assert f"ec2:CreateTags on resource: arn:aws:ec2:us-east-1:{ACCOUNT}:volume/{volume_id}" in (
        _refusal(later)
    )
    admin = client(iam_sandbox, "ec2")
    for v in (volume_id, tagged):
        admin.delete_volume(VolumeId=v)


def test_a_volume_from_a_snapshot_needs_the_snapshot_too(iam_sandbox: Sandbox) -> None:
    admin = client(iam_sandbox, "ec2")
    source = admin.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    ours = admin.create_snapshot(
        VolumeId=source, TagSpecifications=[{"ResourceType": "snapshot", "Tags": MANAGED}]
    )["SnapshotId"]
    theirs = admin.create_snapshot(VolumeId=source)["SnapshotId"]
    volume_only = _allow(
        "ec2:CreateVolume",
        "arn:aws:ec2:*:*:volume/*",
        StringEquals={"aws:RequestTag/ec2backup:managed": "true"},
    )
    spec = {"TagSpecifications": [{"ResourceType": "volume", "Tags": MANAGED}]}
    ec2 = client(iam_sandbox, "ec2", _user(iam_sandbox, volume_only, TAG_AT_CREATION))
    with pytest.raises(ClientError) as refused:
        ec2.create_volume(AvailabilityZone="us-east-1a", SnapshotId=ours, **spec)
    assert f"on resource: arn:aws:ec2:us-east-1::snapshot/{ours} " in _refusal(refused)

    from_ours = _allow(
        "ec2:CreateVolume",
        "arn:aws:ec2:*::snapshot/*",
        StringEquals={"aws:ResourceTag/ec2backup:managed": "true"},
    )
    ec2 = client(iam_sandbox, "ec2", _user(iam_sandbox, volume_only, from_ours, TAG_AT_CREATION))
    restored = ec2.create_volume(AvailabilityZone="us-east-1a", SnapshotId=ours, **spec)
    with pytest.raises(ClientError) as untagged:
        ec2.create_volume(AvailabilityZone="us-east-1a", SnapshotId=theirs, **spec)
    assert f"snapshot/{theirs}" in _refusal(untagged)
    admin.delete_volume(VolumeId=restored["VolumeId"])
    for snapshot in (ours, theirs):
        admin.delete_snapshot(SnapshotId=snapshot)
    admin.delete_volume(VolumeId=source)


def test_an_explicit_deny_by_condition_refuses_and_makes_nothing(iam_sandbox: Sandbox) -> None:
    keys = _user(
        iam_sandbox,
        _allow("ec2:*"),
        {
            "Effect": "Deny",
            "Action": "ec2:RunInstances",
            "Resource": "arn:aws:ec2:*:*:instance/*",
            "Condition": {"StringNotEquals": {"ec2:InstanceType": "t2.nano"}},
        },
    )
    ec2 = client(iam_sandbox, "ec2", keys, no_retries())
    before = _count_instances(iam_sandbox)
    with pytest.raises(ClientError) as refused:
        _launch(ec2, iam_sandbox)
    assert "with an explicit deny in an identity-based policy" in _refusal(refused)
    # A dry run answers the same, as AWS's does.
    with pytest.raises(ClientError) as dry:
        _launch(ec2, iam_sandbox, DryRun=True)
    assert error_code(dry.value)[1] == "UnauthorizedOperation"
    assert _count_instances(iam_sandbox) == before
    with pytest.raises(ClientError) as allowed:
        _launch(ec2, iam_sandbox, InstanceType="t2.nano", DryRun=True)
    assert error_code(allowed.value) == (412, "DryRunOperation")
    nano = _launch(ec2, iam_sandbox, InstanceType="t2.nano")
    _admin_cleanup(iam_sandbox, [nano["InstanceId"]])


def _count_instances(sandbox: Sandbox) -> int:
    pages = client(sandbox, "ec2").describe_instances()["Reservations"]
    return sum(len(r["Instances"]) for r in pages)


def test_ssm_parameters_are_authorized_by_their_arn(iam_sandbox: Sandbox) -> None:
    canonical = _allow("ssm:GetParameter", "arn:aws:ssm:*:*:parameter/aws/service/canonical/*")
    ssm = client(iam_sandbox, "ssm", _user(iam_sandbox, canonical), no_retries())
    assert ssm.get_parameter(Name=UBUNTU_PARAMETER)["Parameter"]["Value"].startswith("ami-")
    other = client(
        iam_sandbox,
        "ssm",
        _user(iam_sandbox, _allow("ssm:GetParameter", "arn:aws:ssm:*:*:parameter/mine/*")),
        no_retries(),
    )
    with pytest.raises(ClientError) as refused:
        other.get_parameter(Name=UBUNTU_PARAMETER)
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    assert (
        "is not authorized to perform: ssm:GetParameter on resource: arn:aws:ssm:us-east-1::"
        "parameter/aws/service/canonical/" in refused.value.response["Error"]["Message"]
    )


def test_ebs_direct_apis_are_authorized_for_each_snapshot_by_its_tags(
    iam_sandbox: Sandbox,
) -> None:
    """The EBS direct APIs are authorized on the snapshot's ARN (``arn:aws:ec2:REGION::snapshot/
    ID``) with its tags as ``aws:ResourceTag``; ListChangedBlocks on both of its snapshots.
    A refusal is the ebs service's 403 ``AccessDeniedException``, worded as AWS words it."""
    admin = client(iam_sandbox, "ec2")
    volume_id = admin.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    tagged = [{"ResourceType": "snapshot", "Tags": MANAGED}]
    first = admin.create_snapshot(VolumeId=volume_id, TagSpecifications=tagged)["SnapshotId"]
    second = admin.create_snapshot(VolumeId=volume_id, TagSpecifications=tagged)["SnapshotId"]
    theirs = admin.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    try:
        ids = [first, second, theirs]
        with_deadline(
            lambda: (
                {s["State"] for s in admin.describe_snapshots(SnapshotIds=ids)["Snapshots"]}
                == {"completed"}
            ),
            timeout=60,
        )
        name = f"ebs{time.monotonic_ns()}"
        keys = iam_sandbox.create_iam_user(
            name,
            {
                "Version": "2012-10-17",
                "Statement": [
                    _allow(
                        ["ebs:ListSnapshotBlocks", "ebs:ListChangedBlocks"],
                        "arn:aws:ec2:*::snapshot/*",
                        StringEquals={"aws:ResourceTag/ec2backup:managed": "true"},
                    )
                ],
            },
        )
        ebs = client(iam_sandbox, "ebs", keys, no_retries())
        assert ebs.list_snapshot_blocks(SnapshotId=first)["Blocks"] == []
        changed = ebs.list_changed_blocks(FirstSnapshotId=first, SecondSnapshotId=second)
        assert changed["ChangedBlocks"] == []

        with pytest.raises(ClientError) as refused:
            ebs.list_snapshot_blocks(SnapshotId=theirs)
        assert error_code(refused.value) == (403, "AccessDeniedException")
        assert refused.value.response["Error"]["Message"] == (
            f"User: arn:aws:iam::{ACCOUNT}:user/{name} is not authorized to perform:"
            f" ebs:ListSnapshotBlocks on resource: arn:aws:ec2:us-east-1::snapshot/{theirs}"
            " because no identity-based policy allows the ebs:ListSnapshotBlocks action"
        )
        # Either snapshot of a comparison not ours refuses it.
        for one, other in ((theirs, second), (first, theirs)):
            with pytest.raises(ClientError) as compared:
                ebs.list_changed_blocks(FirstSnapshotId=one, SecondSnapshotId=other)
            assert error_code(compared.value) == (403, "AccessDeniedException")
            assert (
                f"perform: ebs:ListChangedBlocks on resource: arn:aws:ec2:us-east-1::snapshot/"
                f"{theirs} because" in compared.value.response["Error"]["Message"]
            )
    finally:
        for snapshot_id in (first, second, theirs):
            admin.delete_snapshot(SnapshotId=snapshot_id)
        admin.delete_volume(VolumeId=volume_id)
