"""The boto3 adapter against in-process moto, and botocore's Stubber for what moto cannot show
(slow attachments, timeouts, throttling, API errors moto never returns)."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import boto3
import botocore.retries.standard
import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import ANY, Stubber

from ec2backup.adapters.aws import client as aws_client
from ec2backup.adapters.aws import waiters as aws_waiters
from ec2backup.adapters.aws.client import Boto3Ec2
from ec2backup.adapters.aws.session import make_ec2
from ec2backup.core.tags import TAG_KIND, TAG_MANAGED, TAG_RUN_ID
from ec2backup.errors import (
    CapacityError,
    CloudError,
    InvalidResourceStateError,
    ResourceNotFoundError,
    TransientCloudError,
    WaitTimeoutError,
)
from ec2backup.ports import LaunchSpec
from tests.adapters.aws.conftest import REGION, RUN

AZ = "us-east-1b"
VOL = "vol-0123456789abcdef0"
INST = "i-0123456789abcdef0"
OTHER = "i-0fedcba9876543210"


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries still happen, without their (random, up to 20 s) sleeps."""
    monkeypatch.setattr(
        botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda self, ctx: 0
    )


@pytest.fixture
def raw(moto_aws: None) -> Any:
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def ami(raw: Any) -> str:
    # A name filter keeps this fast; moto ships over a thousand public images.
    images = (
        raw.describe_images(
            Owners=["amazon"], Filters=[{"Name": "name", "Values": ["al2023-ami-*"]}]
        )["Images"]
        or raw.describe_images(Owners=["amazon"])["Images"]
    )
    return str(images[0]["ImageId"])


@pytest.fixture
def stubbed(aws_env: None) -> Iterator[tuple[Boto3Ec2, Stubber]]:
    """An adapter whose EC2 client answers only from the Stubber (no moto, no network)."""
    ec2 = Boto3Ec2(REGION, poll_interval=0.001, run_id=RUN)
    ec2._client_once = ec2._client  # one stubbed client answers every call
    with Stubber(ec2._client) as stubber:
        yield ec2, stubber
        stubber.assert_no_pending_responses()


def spec(ami: str, run_id: str = RUN, token: str = "tok-1", **kw: Any) -> LaunchSpec:
    return LaunchSpec(
        image_id=ami,
        instance_type="t3.micro",
        availability_zone=AZ,
        client_token=token,
        tags={TAG_MANAGED: "true", TAG_RUN_ID: run_id},
        **kw,
    )


def volumes_response(*attachments: tuple[str, str], state: str = "in-use") -> dict[str, Any]:
    return {
        "Volumes": [
            {
                "VolumeId": VOL,
                "State": state,
                "AvailabilityZone": AZ,
                "Size": 8,
                "Attachments": [
                    {"VolumeId": VOL, "InstanceId": iid, "Device": "/dev/sdh", "State": st}
                    for iid, st in attachments
                ],
            }
        ]
    }


def instances_response(
    state: str, public_ip: str | None = None, subnet_id: str | None = None
) -> dict[str, Any]:
    instance: dict[str, Any] = {
        "InstanceId": INST,
        "State": {"Code": 16, "Name": state},
        "Placement": {"AvailabilityZone": AZ},
        "PrivateIpAddress": "10.0.0.5",
    }
    if public_ip:
        instance["PublicIpAddress"] = public_ip
    if subnet_id:
        instance["SubnetId"] = subnet_id
    return {"Reservations": [{"Instances": [instance]}]}


# ---- images --------------------------------------------------------------------------


def test_resolve_image_by_id(ec2: Boto3Ec2, ami: str) -> None:
    assert ec2.resolve_image(ami) == ami


def test_resolve_image_missing_id(ec2: Boto3Ec2) -> None:
    with pytest.raises(ResourceNotFoundError) as err:
        ec2.resolve_image("ami-12345678")
    assert err.value.resources["image"] == "ami-12345678"
    assert err.value.run_id == RUN
    assert err.value.hint and "region" in err.value.hint


@pytest.mark.parametrize("prefix", ["", "resolve:ssm:"])
def test_resolve_image_from_ssm_parameter(ec2: Boto3Ec2, ami: str, prefix: str) -> None:
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name="/ec2backup-test/ami", Value=ami, Type="String"
    )
    assert ec2.resolve_image(prefix + "/ec2backup-test/ami") == ami


def test_resolve_image_missing_ssm_parameter(ec2: Boto3Ec2) -> None:
    with pytest.raises(ResourceNotFoundError) as err:
        ec2.resolve_image("/ec2backup-test/nope")
    assert err.value.resources["parameter"] == "/ec2backup-test/nope"


def test_resolve_image_ssm_parameter_pointing_at_missing_ami(ec2: Boto3Ec2) -> None:
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name="/ec2backup-test/stale", Value="ami-12345678", Type="String"
    )
    with pytest.raises(ResourceNotFoundError) as err:
        ec2.resolve_image("/ec2backup-test/stale")
    assert err.value.resources["image"] == "ami-12345678"


# ---- launch checks -------------------------------------------------------------------


def test_offered_instance_types_of_only_the_types_asked(ec2: Boto3Ec2) -> None:
    zone = f"{REGION}a"
    everything = ec2.offered_instance_types(zone)
    assert {"t3.micro", "t3.small"} <= everything and len(everything) > 50
    asked = ec2.offered_instance_types(zone, ["t3.micro", "t3.small", "x9.nonesuch"])
    assert asked == {"t3.micro", "t3.small"}


def test_subnet_route_check_reads_its_own_table_else_the_main_one(ec2: Boto3Ec2) -> None:
    raw = boto3.client("ec2", region_name=REGION)
    vpc = raw.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    igw = raw.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    raw.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    (main,) = raw.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])[
        "RouteTables"
    ]
    raw.create_route(
        RouteTableId=main["RouteTableId"], DestinationCidrBlock="0.0.0.0/0", GatewayId=igw
    )

    def subnet(cidr: str) -> str:
        return str(raw.create_subnet(VpcId=vpc, CidrBlock=cidr)["Subnet"]["SubnetId"])

    on_main, on_own = subnet("10.9.1.0/24"), subnet("10.9.2.0/24")
    own = raw.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    raw.associate_route_table(RouteTableId=own, SubnetId=on_own)
    assert ec2.subnet_routes_to_internet(on_main)  # no table of its own: the main one's route
    assert not ec2.subnet_routes_to_internet(on_own)  # its own table has no such route
    raw.create_route(RouteTableId=own, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    assert ec2.subnet_routes_to_internet(on_own)


# ---- instances -----------------------------------------------------------------------


def test_run_instance_tags_hardening_and_user_data(ec2: Boto3Ec2, raw: Any, ami: str) -> None:
    user_data = "#!/bin/sh\nshutdown -h +60\n"
    inst = ec2.run_instance(spec(ami, user_data=user_data))

    assert inst.availability_zone == AZ
    assert inst.tags[TAG_RUN_ID] == RUN
    assert inst.launch_time is not None and inst.launch_time.tzinfo == UTC

    described = raw.describe_instances(InstanceIds=[inst.id])["Reservations"][0]["Instances"][0]
    assert {t["Key"]: t["Value"] for t in described["Tags"]}[TAG_RUN_ID] == RUN
    assert described["MetadataOptions"]["HttpTokens"] == "required"
    assert described["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert described["MetadataOptions"]["HttpEndpoint"] == "enabled"
    assert "IamInstanceProfile" not in described
    assert "KeyName" not in described

    root = described["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    vol_tags = raw.describe_volumes(VolumeIds=[root])["Volumes"][0]["Tags"]
    assert {t["Key"]: t["Value"] for t in vol_tags}[TAG_RUN_ID] == RUN

    attr = raw.describe_instance_attribute(InstanceId=inst.id, Attribute="userData")
    assert base64.b64decode(attr["UserData"]["Value"]).decode() == user_data
    shutdown = raw.describe_instance_attribute(
        InstanceId=inst.id, Attribute="instanceInitiatedShutdownBehavior"
    )
    assert shutdown["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"


def test_run_instance_sends_one_call_with_token_and_tag_specs(ec2: Boto3Ec2, ami: str) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    for client in (ec2._client, ec2._client_once):
        client.meta.events.register(
            "provide-client-params.ec2",
            lambda params, model, **kw: calls.append((model.name, dict(params))),
        )
    ec2.run_instance(spec(ami, token="run-test-1-launch-1"))
    assert [name for name, _ in calls] == ["RunInstances"]  # no CreateTags afterwards
    params = calls[0][1]
    assert params["ClientToken"] == "run-test-1-launch-1"
    assert params["Placement"] == {"AvailabilityZone": AZ}
    assert {s["ResourceType"] for s in params["TagSpecifications"]} == {
        "instance",
        "volume",
        "network-interface",
    }
    assert "UserData" not in params  # empty user data is not sent


def test_get_instance_unknown_or_malformed_is_none(ec2: Boto3Ec2) -> None:
    assert ec2.get_instance(INST) is None
    assert ec2.get_instance("bogus") is None
    assert ec2.get_volume(VOL) is None


def test_find_instances_by_tag_and_state(ec2: Boto3Ec2, ami: str) -> None:
    mine = ec2.run_instance(spec(ami, token="a"))
    gone = ec2.run_instance(spec(ami, token="b"))
    other = ec2.run_instance(spec(ami, run_id="run-other", token="c"))
    ec2.terminate_instance(gone.id)

    assert [i.id for i in ec2.find_instances({TAG_RUN_ID: RUN})] == [mine.id]
    found = ec2.find_instances({TAG_RUN_ID: RUN}, states=("terminated",))
    assert [(i.id, i.state) for i in found] == [(gone.id, "terminated")]
    managed = {i.id for i in ec2.find_instances({TAG_MANAGED: "true"})}
    assert managed == {mine.id, other.id}
    # A terminated instance is still visible by id, with its state.
    assert (got := ec2.get_instance(gone.id)) is not None and got.state == "terminated"


def test_find_without_tags_is_refused(ec2: Boto3Ec2) -> None:
    with pytest.raises(ValueError):
        ec2.find_instances({})


def test_terminate_twice_and_unknown_is_fine(ec2: Boto3Ec2, ami: str) -> None:
    inst = ec2.run_instance(spec(ami))
    assert ec2.terminate_instance(inst.id) in ("shutting-down", "terminated")
    assert ec2.terminate_instance(inst.id) in ("shutting-down", "terminated")
    assert ec2.terminate_instance(INST) is None  # unknown: nothing to wait for
    ec2.wait_instance_terminated(inst.id, timeout=5)
    ec2.wait_instance_terminated(INST, timeout=5)  # EC2 forgot it: also gone
    assert (got := ec2.get_instance(inst.id)) is not None and got.state == "terminated"


def test_wait_instance_running_returns_public_ip(ec2: Boto3Ec2, ami: str) -> None:
    inst = ec2.run_instance(spec(ami))
    running = ec2.wait_instance_running(inst.id, timeout=5)
    assert running.state == "running"
    assert running.public_ip


def test_console_output_is_decoded_text(ec2: Boto3Ec2, ami: str) -> None:
    inst = ec2.run_instance(spec(ami))
    assert "Linux version" in ec2.get_console_output(inst.id)


# ---- volumes -------------------------------------------------------------------------


def test_attach_wait_detach_cycle(ec2: Boto3Ec2, ami: str) -> None:
    inst = ec2.wait_instance_running(ec2.run_instance(spec(ami)).id, timeout=5)
    vol = ec2.create_volume(AZ, 4, {TAG_RUN_ID: RUN, TAG_KIND: "data"}, client_token="vol-tok")
    assert (vol.size_gib, vol.encrypted, vol.tags[TAG_RUN_ID]) == (4, True, RUN)
    ec2.wait_volume_available(vol.id, timeout=5)

    ec2.attach_volume(vol.id, inst.id, "/dev/sdh")
    ec2.attach_volume(vol.id, inst.id, "/dev/sdh")  # a resumed step may attach again
    attached = ec2.wait_volume_attached(vol.id, inst.id, timeout=5)
    att = attached.attachment_to(inst.id)
    assert att is not None and (att.state, att.device) == ("attached", "/dev/sdh")

    ec2.detach_volume(vol.id, inst.id)
    ec2.detach_volume(vol.id, inst.id)  # already detached: success
    available = ec2.wait_volume_available(vol.id, timeout=5)
    assert available.state == "available" and available.attachments == ()
    # The instance's root volume carries the run id too; the kind tag tells them apart.
    assert [v.id for v in ec2.find_volumes({TAG_RUN_ID: RUN, TAG_KIND: "data"})] == [vol.id]
    assert len(ec2.find_volumes({TAG_RUN_ID: RUN})) == 2


@pytest.mark.parametrize(
    ("holder", "raises"), [(INST, False), (OTHER, True)], ids=["same-instance", "other"]
)
def test_attach_when_volume_in_use(
    stubbed: tuple[Boto3Ec2, Stubber], holder: str, raises: bool
) -> None:
    """moto lets a volume attach twice; real EC2 answers VolumeInUse. Attached to the same
    instance (a resumed step) is success; attached elsewhere is a state error."""
    ec2, stub = stubbed
    stub.add_client_error("attach_volume", "VolumeInUse", f"{VOL} is already attached")
    stub.add_response("describe_volumes", volumes_response((holder, "attached")))
    if raises:
        with pytest.raises(InvalidResourceStateError) as err:
            ec2.attach_volume(VOL, INST, "/dev/sdh")
        assert err.value.hint and "detach" in err.value.hint
    else:
        ec2.attach_volume(VOL, INST, "/dev/sdh")


def test_attach_unknown_volume_is_not_found(ec2: Boto3Ec2, ami: str) -> None:
    inst = ec2.run_instance(spec(ami))
    with pytest.raises(ResourceNotFoundError) as err:
        ec2.attach_volume(VOL, inst.id, "/dev/sdh")
    assert err.value.resources == {"volume": VOL, "instance": inst.id, "device": "/dev/sdh"}
    assert err.value.run_id == RUN
    assert "\n" not in err.value.one_line()


def test_wait_volume_available_unknown_volume(ec2: Boto3Ec2) -> None:
    with pytest.raises(ResourceNotFoundError):
        ec2.wait_volume_available(VOL, timeout=1)


# ---- snapshots -----------------------------------------------------------------------


def test_create_snapshot_is_never_retried_blindly(ec2: Boto3Ec2) -> None:
    """No client token: after a lost response a retry would make a second snapshot. It fails as
    transient instead, and the step (which looks for the run's snapshot first) is re-run."""
    from ec2backup.errors import TransientCloudError

    vol = ec2.create_volume(AZ, 1, {TAG_RUN_ID: RUN}, client_token="v")
    sent: list[str] = []

    class Raw:
        def stream(self, **_kw: object) -> Iterator[bytes]:
            yield b"<Response><Errors><Error><Code>InternalError</Code><Message>lost</Message>"
            yield b"</Error></Errors></Response>"

    def lost(request: object, **kw: object) -> object:
        from botocore.awsrequest import AWSResponse

        sent.append("CreateSnapshot")
        return AWSResponse("https://x", 500, {}, Raw())

    ec2._client_once.meta.events.register_first("before-send.ec2.CreateSnapshot", lost)
    with pytest.raises(TransientCloudError):
        ec2.create_snapshot(vol.id, "d", {TAG_RUN_ID: RUN})
    assert sent == ["CreateSnapshot"]  # one attempt only


def test_snapshot_tagged_in_the_same_call(ec2: Boto3Ec2) -> None:
    vol = ec2.create_volume(AZ, 1, {TAG_RUN_ID: RUN}, client_token="v")
    calls: list[str] = []
    for client in (ec2._client, ec2._client_once):
        client.meta.events.register(
            "provide-client-params.ec2", lambda model, **kw: calls.append(model.name)
        )
    snap = ec2.create_snapshot(vol.id, "ec2backup test", {TAG_RUN_ID: RUN, "kind": "backup"})
    assert calls == ["CreateSnapshot"]
    assert snap.tags == {TAG_RUN_ID: RUN, "kind": "backup"}
    assert snap.volume_id == vol.id
    assert snap.started_at is not None and snap.started_at.tzinfo == UTC

    found = ec2.find_snapshots({TAG_RUN_ID: RUN})
    assert [s.id for s in found] == [snap.id]
    assert ec2.find_snapshots({TAG_RUN_ID: "run-other"}) == []


# ---- waits with the Stubber ----------------------------------------------------------


def test_wait_attached_returns_only_after_attached(stubbed: tuple[Boto3Ec2, Stubber]) -> None:
    ec2, stub = stubbed
    expected = {"VolumeIds": [VOL]}
    stub.add_response("describe_volumes", volumes_response((INST, "attaching")), expected)
    stub.add_response("describe_volumes", volumes_response((INST, "attaching")), expected)
    stub.add_response("describe_volumes", volumes_response((INST, "attached")), expected)
    vol = ec2.wait_volume_attached(VOL, INST, timeout=10)
    att = vol.attachment_to(INST)
    assert att is not None and att.state == "attached"


def test_wait_attached_times_out_with_resource_ids(stubbed: tuple[Boto3Ec2, Stubber]) -> None:
    ec2, stub = stubbed
    stub.add_response("describe_volumes", volumes_response((INST, "attaching")))
    with pytest.raises(WaitTimeoutError) as err:
        ec2.wait_volume_attached(VOL, INST, timeout=0)
    assert err.value.resources == {"volume": VOL, "instance": INST}
    assert err.value.run_id == RUN
    assert "attaching" in err.value.message
    assert "\n" not in err.value.one_line()


def test_wait_stops_at_the_wall_clock_deadline(
    stubbed: tuple[Boto3Ec2, Stubber], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slow calls must not stretch ``timeout``: with each call taking "100 s", a 150 s
    timeout allows two polls, although MaxAttempts alone would allow 150 001."""
    ec2, stub = stubbed
    clock = itertools.count(0, 100)
    monkeypatch.setattr(aws_waiters, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    stub.add_response("describe_volumes", volumes_response((INST, "attaching")))
    stub.add_response("describe_volumes", volumes_response((INST, "attaching")))
    with pytest.raises(WaitTimeoutError):
        ec2.wait_volume_attached(VOL, INST, timeout=150)


def test_wait_attached_fails_fast_when_attached_elsewhere(
    stubbed: tuple[Boto3Ec2, Stubber],
) -> None:
    ec2, stub = stubbed
    stub.add_response("describe_volumes", volumes_response((OTHER, "attached")))
    with pytest.raises(InvalidResourceStateError) as err:
        ec2.wait_volume_attached(VOL, INST, timeout=60)
    assert OTHER in err.value.message


def test_wait_attached_fails_fast_when_instance_gone(stubbed: tuple[Boto3Ec2, Stubber]) -> None:
    ec2, stub = stubbed
    stub.add_response("describe_volumes", volumes_response(state="available"))
    stub.add_response(
        "describe_instances", instances_response("terminated"), {"InstanceIds": [INST]}
    )
    with pytest.raises(InvalidResourceStateError) as err:
        ec2.wait_volume_attached(VOL, INST, timeout=60)
    assert "terminated" in err.value.message


def test_wait_running_waits_for_public_ip(stubbed: tuple[Boto3Ec2, Stubber]) -> None:
    ec2, stub = stubbed
    stub.add_client_error("describe_instances", "InvalidInstanceID.NotFound")  # consistency lag
    stub.add_response("describe_instances", instances_response("pending"))
    stub.add_response("describe_instances", instances_response("running"))
    stub.add_response("describe_instances", instances_response("running", "203.0.113.7"))
    inst = ec2.wait_instance_running(INST, timeout=10)
    assert (inst.state, inst.public_ip) == ("running", "203.0.113.7")


def test_wait_running_keeps_polling_until_the_public_ip_shows(
    stubbed: tuple[Boto3Ec2, Stubber],
) -> None:
    """The launch asks for a public address: running without one yet is not enough."""
    ec2, stub = stubbed
    stub.add_response("describe_instances", instances_response("running"))
    stub.add_response("describe_instances", instances_response("running", "203.0.113.9"))
    inst = ec2.wait_instance_running(INST, timeout=10)
    assert (inst.private_ip, inst.public_ip) == ("10.0.0.5", "203.0.113.9")


def test_wait_running_times_out_without_public_ip(stubbed: tuple[Boto3Ec2, Stubber]) -> None:
    ec2, stub = stubbed
    stub.add_response("describe_instances", instances_response("running"))
    stub.add_response("describe_instances", instances_response("running"))
    with pytest.raises(WaitTimeoutError) as err:
        ec2.wait_instance_running(INST, timeout=0)
    assert "public IP none" in err.value.message
    assert err.value.hint and "subnet" in err.value.hint


def test_wait_running_fails_when_terminated(stubbed: tuple[Boto3Ec2, Stubber]) -> None:
    ec2, stub = stubbed
    stub.add_response("describe_instances", instances_response("terminated"))
    with pytest.raises(InvalidResourceStateError) as err:
        ec2.wait_instance_running(INST, timeout=60)
    assert err.value.resources == {"instance": INST}
    assert not isinstance(err.value, WaitTimeoutError)


def test_console_output_falls_back_without_latest(stubbed: tuple[Boto3Ec2, Stubber]) -> None:
    ec2, stub = stubbed
    stub.add_client_error(
        "get_console_output",
        "UnsupportedOperation",
        expected_params={"InstanceId": INST, "Latest": True},
    )
    encoded = base64.b64encode(b"-----BEGIN SSH HOST KEY KEYS-----\n").decode()
    stub.add_response(
        "get_console_output", {"InstanceId": INST, "Output": encoded}, {"InstanceId": INST}
    )
    assert ec2.get_console_output(INST) == "-----BEGIN SSH HOST KEY KEYS-----\n"


def test_console_output_empty(stubbed: tuple[Boto3Ec2, Stubber]) -> None:
    ec2, stub = stubbed
    stub.add_response("get_console_output", {"InstanceId": INST, "Timestamp": datetime.now(UTC)})
    assert ec2.get_console_output(INST) == ""


# ---- error translation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cls", "hint_word"),
    [
        ("InvalidAMIID.NotFound", ResourceNotFoundError, "region"),
        ("IdempotentParameterMismatch", CloudError, "settings"),
        ("InsufficientInstanceCapacity", CapacityError, "instance type"),
        ("VcpuLimitExceeded", CloudError, "quota"),
        ("InstanceLimitExceeded", CloudError, "quota"),
        ("Unsupported", CapacityError, "offerings"),
        ("AuthFailure", CloudError, "credentials"),
        ("RequestExpired", CloudError, "clock"),
        ("RequestLimitExceeded", TransientCloudError, "resume"),
    ],
)
def test_run_instance_errors_are_translated(
    stubbed: tuple[Boto3Ec2, Stubber],
    code: str,
    cls: type[CloudError],
    hint_word: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    monkeypatch.setattr(aws_client, "RUN_INSTANCES_ATTEMPTS", 1)  # the translation, not the retry
    ec2, stub = stubbed
    stub.add_client_error("run_instances", code, "line one\nline two", http_status_code=400)
    with pytest.raises(cls) as err:
        ec2.run_instance(spec("ami-0123456789abcdef0"))
    assert type(err.value) is cls
    assert code in err.value.message
    assert err.value.hint and hint_word in err.value.hint
    assert err.value.resources["image"] == "ami-0123456789abcdef0"
    assert err.value.run_id == RUN
    assert "\n" not in err.value.one_line()


def test_unauthorized_names_the_action(stubbed: tuple[Boto3Ec2, Stubber]) -> None:
    ec2, stub = stubbed
    stub.add_client_error(
        "terminate_instances", "UnauthorizedOperation", "Encoded authorization failure: x" * 50
    )
    with pytest.raises(CloudError) as err:
        ec2.terminate_instance(INST)
    assert "ec2:TerminateInstances" in err.value.message
    assert "Encoded" not in err.value.message


def test_no_credentials(aws_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    ec2 = Boto3Ec2(REGION, run_id=RUN)
    with pytest.raises(CloudError) as err:
        ec2.get_instance(INST)
    assert "no AWS credentials" in err.value.message
    assert err.value.hint and "aws configure" in err.value.hint
    assert err.value.resources == {"instance": INST}


def test_unreachable_endpoint(
    aws_env: None, no_backoff: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    ec2 = Boto3Ec2(REGION, run_id=RUN)
    with pytest.raises(CloudError) as err:
        ec2.find_volumes({TAG_RUN_ID: RUN})
    assert "cannot reach" in err.value.message


# ---- retries (through botocore's real retry handler, not the Stubber) ----------------


class _Body:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **kwargs: Any) -> Iterator[bytes]:
        yield self.body


def _ec2_error(status: int, code: str) -> AWSResponse:
    body = (
        f"<Response><Errors><Error><Code>{code}</Code><Message>slow down</Message></Error>"
        "</Errors><RequestID>r</RequestID></Response>"
    ).encode()
    return AWSResponse("https://ec2.amazonaws.com/", status, {}, _Body(body))


@pytest.mark.parametrize(
    ("status", "code"), [(503, "RequestLimitExceeded"), (500, "InternalError")]
)
def test_throttling_and_5xx_are_retried(
    ec2: Boto3Ec2, ami: str, no_backoff: None, status: int, code: str
) -> None:
    inst = ec2.run_instance(spec(ami))
    failures = iter([_ec2_error(status, code)] * 3)
    sent: list[str] = []

    def flaky(**kwargs: Any) -> AWSResponse | None:
        sent.append("call")
        return next(failures, None)  # None: fall through to moto

    ec2._client.meta.events.register_first("before-send.ec2.DescribeInstances", flaky)
    got = ec2.get_instance(inst.id)
    assert got is not None and got.id == inst.id
    assert len(sent) == 4


def test_run_instances_retries_throttling_itself_but_not_a_capacity_shortage(
    ec2: Boto3Ec2, ami: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS answers InsufficientInstanceCapacity with HTTP 500: botocore would retry it for a
    minute. RunInstances is retried by the adapter instead, for throttling and 5xx only."""

    monkeypatch.setattr(aws_client.random, "uniform", lambda a, b: 0.0)
    answers = iter([_ec2_error(503, "RequestLimitExceeded"), _ec2_error(500, "InternalError")])
    sent: list[str] = []

    def flaky(**kwargs: Any) -> AWSResponse | None:
        sent.append("call")
        return next(answers, None)

    ec2._client_once.meta.events.register_first("before-send.ec2.RunInstances", flaky)
    assert ec2.run_instance(spec(ami)).id.startswith("i-")
    assert len(sent) == 3

    shortage: list[str] = []
    ec2._client_once.meta.events.register_first(
        "before-send.ec2.RunInstances",
        lambda **kw: shortage.append("call") or _ec2_error(500, "InsufficientInstanceCapacity"),
    )
    with pytest.raises(CapacityError):
        ec2.run_instance(spec(ami, token="tok-2"))
    assert len(shortage) == 1  # at once: the caller tries its next instance type


def test_throttling_that_never_ends_is_translated(
    ec2: Boto3Ec2, no_backoff: None, raw: Any
) -> None:
    ec2._client.meta.events.register_first(
        "before-send.ec2.DescribeVolumes", lambda **kw: _ec2_error(503, "RequestLimitExceeded")
    )
    with pytest.raises(CloudError) as err:
        ec2.find_volumes({TAG_RUN_ID: RUN})
    assert "throttling" in err.value.message
    assert "RequestLimitExceeded" in err.value.message


def test_stubbed_paramater_shapes(stubbed: tuple[Boto3Ec2, Stubber]) -> None:
    """The exact create_volume and detach requests real EC2 receives."""
    ec2, stub = stubbed
    stub.add_response(
        "create_volume",
        {"VolumeId": VOL, "State": "creating", "AvailabilityZone": AZ, "Size": 5},
        {
            "AvailabilityZone": AZ,
            "Size": 5,
            "VolumeType": "gp3",
            "Encrypted": True,
            "ClientToken": "run-test-1-volume",
            "TagSpecifications": [
                {"ResourceType": "volume", "Tags": [{"Key": TAG_RUN_ID, "Value": RUN}]}
            ],
        },
    )
    stub.add_client_error(
        "detach_volume",
        "IncorrectState",
        expected_params={"VolumeId": VOL, "InstanceId": INST, "Force": ANY},
    )
    vol = ec2.create_volume(AZ, 5, {TAG_RUN_ID: RUN}, client_token="run-test-1-volume")
    assert vol.state == "creating"
    ec2.detach_volume(VOL, INST)


def test_make_ec2() -> None:
    ec2 = make_ec2(REGION, run_id=RUN)
    assert isinstance(ec2, Boto3Ec2)
    assert (ec2.region, ec2.run_id) == (REGION, RUN)
    assert ec2._client.meta.config.retries["mode"] == "standard"


def test_make_ec2_shares_one_session_per_region_and_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = make_ec2(REGION, run_id=RUN), make_ec2(REGION)
    assert first.session is second.session  # botocore's models are loaded once
    assert first._client is second._client and first._client_once is second._client_once
    assert (first.run_id, second.run_id) == (RUN, None)  # each puts its own run id on errors
    assert make_ec2("eu-west-1").session is not first.session
    monkeypatch.setenv("AWS_PROFILE_X", "other")  # any AWS_* change: credentials may differ
    assert make_ec2(REGION).session is not first.session
    assert make_ec2(REGION)._client is not first._client


# ---- batch calls (reap, prune) and doctor's probes ----------------------------------------


def iid(n: int) -> str:
    return f"i-{n:017x}"


def test_find_instances_asks_for_pages_of_1000(stubbed: tuple[Boto3Ec2, Stubber]) -> None:
    ec2, stub = stubbed
    page = {"Reservations": [{"Instances": [{"InstanceId": INST, "State": {"Name": "running"}}]}]}
    stub.add_response(
        "describe_instances",
        {**page, "NextToken": "t2"},
        {"Filters": ANY, "MaxResults": 1000},
    )
    other = {"Reservations": [{"Instances": [{"InstanceId": OTHER, "State": {"Name": "running"}}]}]}
    stub.add_response(
        "describe_instances", other, {"Filters": ANY, "MaxResults": 1000, "NextToken": "t2"}
    )
    assert [i.id for i in ec2.find_instances({TAG_MANAGED: "true"})] == [INST, OTHER]


def test_terminate_instances_in_batches_of_1000(stubbed: tuple[Boto3Ec2, Stubber]) -> None:
    ec2, stub = stubbed
    ids = [iid(n) for n in range(2345)]
    for chunk in (ids[:1000], ids[1000:2000], ids[2000:]):
        stub.add_response("terminate_instances", {}, {"InstanceIds": chunk})
    ec2.terminate_instances(ids + ids[:10])  # duplicates are sent once
    ec2.terminate_instances([])  # nothing to do: no call


def test_terminate_instances_skips_the_ids_ec2_says_are_unknown(
    stubbed: tuple[Boto3Ec2, Stubber],
) -> None:
    ec2, stub = stubbed
    stub.add_client_error(
        "terminate_instances",
        "InvalidInstanceID.NotFound",
        f"The instance IDs '{iid(2)}, {iid(3)}' do not exist",
        expected_params={"InstanceIds": [iid(1), iid(2), iid(3), iid(4)]},
    )
    stub.add_response("terminate_instances", {}, {"InstanceIds": [iid(1), iid(4)]})
    ec2.terminate_instances([iid(1), iid(2), iid(3), iid(4)])


def test_terminate_instances_with_real_unknown_and_malformed_ids(
    ec2: Boto3Ec2, raw: Any, ami: str
) -> None:
    live = [ec2.run_instance(spec(ami, token=f"t{n}")).id for n in range(3)]
    ec2.terminate_instances([live[0], INST, live[1]])
    ec2.terminate_instances([live[2], "bogus"])  # named by no id: falls back to one by one
    states = {i.id: i.state for i in ec2.find_instances({TAG_RUN_ID: RUN}, states=())}
    assert states == dict.fromkeys(live, "terminated")


def test_terminate_instances_other_errors_are_translated(
    stubbed: tuple[Boto3Ec2, Stubber],
) -> None:
    ec2, stub = stubbed
    stub.add_client_error("terminate_instances", "UnauthorizedOperation", "Encoded blob")
    with pytest.raises(CloudError) as err:
        ec2.terminate_instances([INST])
    assert "ec2:TerminateInstances" in err.value.message


def test_find_volumes_by_tag_reads_every_page_with_one_filter_per_tag(
    stubbed: tuple[Boto3Ec2, Stubber],
) -> None:
    """What reap lists our volumes with: one tag-filtered listing, however many orphans."""
    ec2, stub = stubbed

    def vol(n: int, instance: str) -> dict[str, Any]:
        return {
            "VolumeId": f"vol-{n:017x}",
            "State": "in-use",
            "AvailabilityZone": AZ,
            "Size": 1,
            "Attachments": [{"InstanceId": instance, "State": "attached", "Device": "/dev/sdh"}],
            "Tags": [{"Key": "ec2backup:managed", "Value": "true"}],
        }

    flt = [{"Name": "tag:ec2backup:managed", "Values": ["true"]}]
    stub.add_response(
        "describe_volumes", {"Volumes": [vol(1, iid(1))], "NextToken": "p2"}, {"Filters": flt}
    )
    stub.add_response(
        "describe_volumes", {"Volumes": [vol(2, iid(2))]}, {"Filters": flt, "NextToken": "p2"}
    )
    found = ec2.find_volumes({"ec2backup:managed": "true"})
    assert [(v.id, v.attachments[0].instance_id) for v in found] == [
        (f"vol-{1:017x}", iid(1)),
        (f"vol-{2:017x}", iid(2)),
    ]
    stub.assert_no_pending_responses()
    with pytest.raises(ValueError, match="without a tag filter"):
        ec2.find_volumes({})


def test_delete_snapshot_twice_and_unknown_is_fine(ec2: Boto3Ec2) -> None:
    vol = ec2.create_volume(AZ, 1, {TAG_RUN_ID: RUN}, client_token="v")
    snap = ec2.create_snapshot(vol.id, "d", {TAG_RUN_ID: RUN})
    other = ec2.create_snapshot(vol.id, "d", {TAG_RUN_ID: RUN})
    ec2.delete_snapshot(snap.id)
    ec2.delete_snapshot(snap.id)
    ec2.delete_snapshot("snap-0123456789abcdef0")
    assert [s.id for s in ec2.find_snapshots({TAG_RUN_ID: RUN})] == [other.id]


def test_delete_snapshot_in_use_is_a_state_error(stubbed: tuple[Boto3Ec2, Stubber]) -> None:
    ec2, stub = stubbed
    stub.add_client_error(
        "delete_snapshot",
        "InvalidSnapshot.InUse",
        "The snapshot snap-1 is currently in use by ami-1",
        expected_params={"SnapshotId": "snap-1"},
    )
    with pytest.raises(InvalidResourceStateError) as err:
        ec2.delete_snapshot("snap-1")
    assert err.value.resources == {"snapshot": "snap-1"}
    assert err.value.hint and "AMI" in err.value.hint


def test_missing_security_groups(ec2: Boto3Ec2, raw: Any) -> None:
    group = raw.create_security_group(GroupName="g", Description="d")["GroupId"]
    missing = "sg-0123456789abcdef0"
    assert ec2.missing_security_groups([group, missing, missing]) == [missing]
    assert ec2.missing_security_groups([group]) == []
