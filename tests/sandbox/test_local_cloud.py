"""The local cloud itself: what ec2backup's end-to-end tests rely on must be real.

Talks to the sandbox with boto3 and the system ssh client only. Every address connected to is
checked to be a 127.x address first.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from ec2backup.sandbox import Sandbox
from ec2backup.sandbox.host import loops_backed_under, nitro_device_name
from tests.conftest import sandbox_skip_reason
from tests.sandbox.helpers import (
    AZ,
    UBUNTU_PARAMETER,
    Launch,
    client,
    cloud_config,
    console_host_keys,
    host_mounts_mentioning,
    known_hosts,
    processes_mentioning,
    ssh,
    volume_state,
    with_deadline,
)

# --- tests ------------------------------------------------------------------------------------


def loops_of(image: Path) -> list[str]:
    """Loop devices backed by this one image (other tests share the sandbox's volumes/)."""
    out = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True).stdout
    return [line.split(":", 1)[0] for line in out.splitlines() if line.strip()]


def test_ubuntu_ami_parameter_resolves(sandbox: Sandbox) -> None:
    parameter = client(sandbox, "ssm").get_parameter(Name=UBUNTU_PARAMETER)["Parameter"]
    assert parameter["Value"] == sandbox.default_ami_id
    (image,) = client(sandbox, "ec2").describe_images(ImageIds=[sandbox.default_ami_id])["Images"]
    assert "ubuntu" in image["Name"]
    assert image["OwnerId"] == "099720109477"


def own_account(ec2: Any) -> str:
    return str(ec2.describe_security_groups()["SecurityGroups"][0]["OwnerId"])


def test_the_account_holds_only_what_the_sandbox_seeded(sandbox: Sandbox) -> None:
    # Like a new AWS account: no public AMIs of moto's own, and so no snapshots behind them
    # listed as the caller's (they made every DescribeSnapshots OwnerIds=self slow).
    ec2 = client(sandbox, "ec2")
    images = {i["ImageId"]: i["Architecture"] for i in ec2.describe_images()["Images"]}
    assert images == {sandbox.default_ami_id: "x86_64", sandbox.ami_ids["arm64"]: "arm64"}
    # The AMIs' snapshots are Canonical's, as on AWS: listed for their owner, not the caller's.
    canonical = ec2.describe_snapshots(OwnerIds=["099720109477"])["Snapshots"]
    assert {i for i in images for s in canonical if i in s["Description"]} == set(images)
    own = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert not {s["SnapshotId"] for s in canonical} & {s["SnapshotId"] for s in own}
    assert all(s["OwnerId"] == own_account(ec2) for s in own)


def test_open_finds_the_running_sandbox(sandbox: Sandbox) -> None:
    assert Sandbox.open(sandbox.directory) == sandbox


def test_env_fixture_sets_environment(sandbox_env: dict[str, str]) -> None:
    assert os.environ["AWS_ENDPOINT_URL"] == sandbox_env["AWS_ENDPOINT_URL"]
    assert sandbox_env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert boto3.client("ec2").describe_instances()["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_launch_gets_a_loopback_address(launch: Launch, ec2: Any) -> None:
    first, second = launch(), launch()
    for instance in (first, second):
        assert instance["PublicIpAddress"].startswith("127.0.")
        assert not instance["PublicIpAddress"].startswith("127.0.0.")
    assert first["PublicIpAddress"] != second["PublicIpAddress"]
    (reservation,) = ec2.describe_instances(InstanceIds=[first["InstanceId"]])["Reservations"]
    assert reservation["Instances"][0]["PublicIpAddress"] == first["PublicIpAddress"]


def test_ssh_as_ubuntu_with_the_host_key_from_the_console(
    launch: Launch, ec2: Any, ssh_key: Path, tmp_path: Path
) -> None:
    instance = launch()
    address = instance["PublicIpAddress"]
    keys = console_host_keys(ec2, instance["InstanceId"])
    assert len(keys) == 1 and keys[0].startswith("ssh-ed25519 AAAA")
    known = known_hosts(tmp_path / "known_hosts", address, keys)

    result = ssh(address, ssh_key, known, "id -un; id -u; sudo -n id -u")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ubuntu", "1000", "0"]
    assert ssh(address, ssh_key, known, "sudo -n true").returncode == 0
    # A command that forgot sudo fails, as on an Ubuntu AMI.
    forgot = ssh(address, ssh_key, known, "touch /root/forgot-sudo")
    assert forgot.returncode != 0
    assert "Permission denied" in forgot.stderr
    # The ubuntu user exists only inside the instance.
    assert "ubuntu:x:1000" not in Path("/etc/passwd").read_text()


def test_host_key_comes_from_the_user_data_and_the_console_shows_it_once_booted(
    launch: Launch, ec2: Any, ssh_key: Path, tmp_path: Path
) -> None:
    """cloud-init's ssh_keys: the sshd presents exactly the key the user data gave it, so a
    client can pin it before the instance exists; the console prints it at the end of boot."""
    host_key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    public = host_key.with_suffix(".pub").read_text().strip()
    private = "".join(f"    {line}\n" for line in host_key.read_text().splitlines())
    user_data = cloud_config(
        ssh_key, f"ssh_keys:\n  ed25519_private: |\n{private}  ed25519_public: {public}\n"
    )
    instance = launch(UserData=user_data)
    address = instance["PublicIpAddress"]
    known = known_hosts(tmp_path / "pinned", address, [public])  # before any connection
    assert ssh(address, ssh_key, known, "true").returncode == 0
    assert console_host_keys(ec2, instance["InstanceId"]) == [
        " ".join(public.split()[:2])
        + " root@"
        + "ip-"
        + instance["PrivateIpAddress"].replace(".", "-")
    ]


def test_key_pair_public_key_is_authorized(
    launch: Launch, ec2: Any, ssh_key: Path, tmp_path: Path
) -> None:
    name = f"sandbox-test-{time.monotonic_ns()}"
    ec2.import_key_pair(KeyName=name, PublicKeyMaterial=ssh_key.with_suffix(".pub").read_bytes())
    try:
        instance = launch(KeyName=name, UserData="")
        known = known_hosts(
            tmp_path / "kh",
            instance["PublicIpAddress"],
            console_host_keys(ec2, instance["InstanceId"]),
        )
        result = ssh(instance["PublicIpAddress"], ssh_key, known, "id -un")
        assert result.stdout.strip() == "ubuntu", result.stderr
    finally:
        ec2.delete_key_pair(KeyName=name)


def test_console_can_show_an_impostor_host_key(
    sandbox: Sandbox, launch: Launch, ec2: Any, ssh_key: Path, tmp_path: Path
) -> None:
    honest = launch()
    real_key = console_host_keys(ec2, honest["InstanceId"])

    sandbox.fake_console_host_key(honest["InstanceId"])
    faked = console_host_keys(ec2, honest["InstanceId"])
    assert faked != real_key
    assert console_host_keys(ec2, honest["InstanceId"]) == faked  # stable once made
    known = known_hosts(tmp_path / "kh", honest["PublicIpAddress"], faked)
    result = ssh(honest["PublicIpAddress"], ssh_key, known, "true")
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr

    sandbox.fake_console_host_key()  # the next instance launched
    mitm = launch()
    known = known_hosts(
        tmp_path / "kh2", mitm["PublicIpAddress"], console_host_keys(ec2, mitm["InstanceId"])
    )
    assert ssh(mitm["PublicIpAddress"], ssh_key, known, "true").returncode == 255
    following = launch()
    known = known_hosts(
        tmp_path / "kh3",
        following["PublicIpAddress"],
        console_host_keys(ec2, following["InstanceId"]),
    )
    assert ssh(following["PublicIpAddress"], ssh_key, known, "true").returncode == 0


def test_client_token_makes_run_instances_idempotent(launch: Launch, ec2: Any) -> None:
    token = f"run-{time.monotonic_ns()}"
    first = launch(ClientToken=token)
    again = launch(ClientToken=token)
    assert again["InstanceId"] == first["InstanceId"]
    with pytest.raises(ClientError) as mismatch:
        launch(ClientToken=token, InstanceType="t3.large")
    assert mismatch.value.response["Error"]["Code"] == "IdempotentParameterMismatch"

    ec2.terminate_instances(InstanceIds=[first["InstanceId"]])
    after = launch(ClientToken=token)
    assert after["InstanceId"] == first["InstanceId"]
    assert after["State"]["Name"] == "terminated"


def test_client_token_makes_create_volume_idempotent(ec2: Any) -> None:
    token = f"vol-{time.monotonic_ns()}"
    first = ec2.create_volume(AvailabilityZone=AZ, Size=1, ClientToken=token)["VolumeId"]
    again = ec2.create_volume(AvailabilityZone=AZ, Size=1, ClientToken=token)["VolumeId"]
    assert again == first
    with pytest.raises(ClientError) as mismatch:
        ec2.create_volume(AvailabilityZone=AZ, Size=2, ClientToken=token)
    assert mismatch.value.response["Error"]["Code"] == "IdempotentParameterMismatch"
    assert len(ec2.describe_volumes(VolumeIds=[first])["Volumes"]) == 1
    ec2.delete_volume(VolumeId=first)


def test_volume_is_a_device_inside_its_instance_only_and_keeps_its_data(
    sandbox: Sandbox, launch: Launch, ec2: Any, volume: str, ssh_key: Path, tmp_path: Path
) -> None:
    image = sandbox.volume_image(volume)
    assert image.stat().st_size == 1024**3
    assert image.stat().st_blocks == 0  # sparse
    name = nitro_device_name(volume)
    device = f"/dev/disk/by-id/{name}"
    first, second = launch(), launch()
    shells = {}
    for instance in (first, second):
        address = instance["PublicIpAddress"]
        known = known_hosts(
            tmp_path / address, address, console_host_keys(ec2, instance["InstanceId"])
        )
        shells[instance["InstanceId"]] = (address, known)

    def on(instance: dict[str, Any], command: str) -> subprocess.CompletedProcess[str]:
        address, known = shells[instance["InstanceId"]]
        return ssh(address, ssh_key, known, command)

    ec2.attach_volume(VolumeId=volume, InstanceId=first["InstanceId"], Device="/dev/sdf")
    assert volume_state(ec2, volume) == ("in-use", ["attached"])
    assert on(first, f"test -b {device}").returncode == 0
    assert on(second, f"test -e {device}").returncode != 0
    assert not os.path.lexists(device)  # not on the host

    result = on(
        first,
        f"sudo -n mkfs.ext4 -q {device} && sudo -n mkdir -p /mnt/data"
        f" && sudo -n mount {device} /mnt/data && echo kept | sudo -n tee /mnt/data/file",
    )
    assert result.returncode == 0, result.stderr
    assert not os.path.ismount("/mnt/data")
    assert host_mounts_mentioning("/mnt/data") == []

    # As on AWS, the detach hangs while the filesystem is mounted, and completes after umount.
    assert ec2.detach_volume(VolumeId=volume)["State"] == "detaching"
    assert volume_state(ec2, volume) == ("in-use", ["detaching"])
    assert on(first, f"test -b {device}").returncode == 0
    assert on(first, "sudo -n umount /mnt/data").returncode == 0
    with_deadline(lambda: volume_state(ec2, volume) == ("available", []))
    assert on(first, f"test -e {device}").returncode != 0
    assert loops_of(image) == []

    ec2.attach_volume(VolumeId=volume, InstanceId=second["InstanceId"], Device="/dev/sdg")
    result = on(
        second,
        f"sudo -n mkdir -p /mnt/b && sudo -n mount {device} /mnt/b && cat /mnt/b/file"
        " && sudo -n umount /mnt/b",
    )
    assert result.stdout == "kept\n", result.stderr
    ec2.detach_volume(VolumeId=volume)
    with_deadline(lambda: volume_state(ec2, volume) == ("available", []))


def test_each_instance_has_its_own_empty_blkid_cache(
    launch: Launch, ec2: Any, ssh_key: Path, tmp_path: Path
) -> None:
    # The host's cache describes whatever last had a /dev/loopN name; an init that trusted it
    # once skipped mkfs on a new volume.
    instance = launch()
    address = instance["PublicIpAddress"]
    known = known_hosts(tmp_path / address, address, console_host_keys(ec2, instance["InstanceId"]))
    marker = f"ec2backup-test-{instance['InstanceId']}"
    result = ssh(address, ssh_key, known, f"ls -A /run/blkid && sudo -n touch /run/blkid/{marker}")
    assert result.returncode == 0 and result.stdout == "", result.stderr
    assert not Path("/run/blkid", marker).exists()


def test_attach_refuses_another_zone_and_a_volume_in_use(
    launch: Launch, ec2: Any, volume: str
) -> None:
    here = launch()
    elsewhere = launch(Placement={"AvailabilityZone": "us-east-1b"})
    with pytest.raises(ClientError) as zone:
        ec2.attach_volume(VolumeId=volume, InstanceId=elsewhere["InstanceId"], Device="/dev/sdf")
    assert zone.value.response["Error"]["Code"] == "InvalidVolume.ZoneMismatch"
    ec2.attach_volume(VolumeId=volume, InstanceId=here["InstanceId"], Device="/dev/sdf")
    with pytest.raises(ClientError) as in_use:
        ec2.attach_volume(VolumeId=volume, InstanceId=here["InstanceId"], Device="/dev/sdg")
    assert in_use.value.response["Error"]["Code"] == "VolumeInUse"


def test_terminate_stops_the_host_and_frees_the_volume(
    sandbox: Sandbox, launch: Launch, ec2: Any, volume: str, ssh_key: Path, tmp_path: Path
) -> None:
    instance = launch()
    address = instance["PublicIpAddress"]
    known = known_hosts(tmp_path / "kh", address, console_host_keys(ec2, instance["InstanceId"]))
    ec2.attach_volume(VolumeId=volume, InstanceId=instance["InstanceId"], Device="/dev/sdf")
    device = f"/dev/disk/by-id/{nitro_device_name(volume)}"
    mounted = ssh(
        address,
        ssh_key,
        known,
        f"sudo -n mkfs.ext4 -q {device} && sudo -n mount {device} /mnt"
        " && echo x | sudo -n tee /mnt/f",
    )
    assert mounted.returncode == 0, mounted.stderr
    instance_dir = str(sandbox.directory / "instances" / instance["InstanceId"])
    assert processes_mentioning(instance_dir)

    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    ec2.get_waiter("instance_terminated").wait(
        InstanceIds=[instance["InstanceId"]], WaiterConfig={"Delay": 1, "MaxAttempts": 10}
    )
    assert volume_state(ec2, volume) == ("available", [])
    assert processes_mentioning(instance_dir) == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, 22), timeout=2).close()
    with_deadline(lambda: loops_of(sandbox.volume_image(volume)) == [])


def test_snapshot_copies_the_image_and_keeps_tags(sandbox: Sandbox, ec2: Any, volume: str) -> None:
    with sandbox.volume_image(volume).open("r+b") as f:
        f.seek(512 * 1024 * 1024)
        f.write(b"point in time")
    snapshot = ec2.create_snapshot(
        VolumeId=volume,
        Description="test",
        TagSpecifications=[
            {"ResourceType": "snapshot", "Tags": [{"Key": "ec2backup:run-id", "Value": "r1"}]}
        ],
    )
    with sandbox.volume_image(volume).open("r+b") as f:  # changes after it do not count
        f.seek(512 * 1024 * 1024)
        f.write(b"later changes")
    copy = sandbox.snapshot_image(snapshot["SnapshotId"])
    with copy.open("rb") as f:
        f.seek(512 * 1024 * 1024)
        assert f.read(13) == b"point in time"
    assert copy.stat().st_blocks * 512 < 1024**2  # still sparse
    (described,) = ec2.describe_snapshots(
        Filters=[{"Name": "tag:ec2backup:run-id", "Values": ["r1"]}]
    )["Snapshots"]
    assert described["SnapshotId"] == snapshot["SnapshotId"]
    assert described["State"] == "completed"

    restored = ec2.create_volume(AvailabilityZone=AZ, SnapshotId=snapshot["SnapshotId"])
    with sandbox.volume_image(restored["VolumeId"]).open("rb") as f:
        f.seek(512 * 1024 * 1024)
        assert f.read(13) == b"point in time"
    ec2.delete_volume(VolumeId=restored["VolumeId"])
    assert not sandbox.volume_image(restored["VolumeId"]).exists()
    ec2.delete_snapshot(SnapshotId=snapshot["SnapshotId"])
    assert not copy.exists()


@pytest.mark.parametrize("server_dies", [False, True], ids=["stop", "server-killed"])
def test_stop_leaves_nothing_behind(server_dies: bool, tmp_path: Path, ssh_key: Path) -> None:
    reason = sandbox_skip_reason()
    if reason:
        pytest.skip(reason)
    directory = tmp_path / "cloud"
    own = Sandbox.start(directory)
    try:
        ec2 = client(own, "ec2")
        instance = ec2.run_instances(
            ImageId=own.default_ami_id,
            MinCount=1,
            MaxCount=1,
            Placement={"AvailabilityZone": AZ},
            UserData=cloud_config(ssh_key),
        )["Instances"][0]
        volume_id = ec2.create_volume(AvailabilityZone=AZ, Size=1)["VolumeId"]
        ec2.attach_volume(VolumeId=volume_id, InstanceId=instance["InstanceId"], Device="/dev/sdf")
        address = instance["PublicIpAddress"]
        known = known_hosts(
            tmp_path / "kh", address, console_host_keys(ec2, instance["InstanceId"])
        )
        device = f"/dev/disk/by-id/{nitro_device_name(volume_id)}"
        mounted = ssh(
            address, ssh_key, known, f"sudo -n mkfs.ext4 -q {device} && sudo -n mount {device} /mnt"
        )
        assert mounted.returncode == 0, mounted.stderr
        assert loops_backed_under(directory)
        if server_dies:
            os.kill(own.server_pid, signal.SIGKILL)
            with_deadline(lambda: not _alive(own.server_pid))
            assert processes_mentioning(str(directory / "instances"))  # orphans left
    finally:
        own.stop()

    assert processes_mentioning(str(directory)) == []
    assert loops_backed_under(directory) == []
    assert host_mounts_mentioning(str(directory)) == []
    assert own.volume_image(volume_id).exists()  # the data stays
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, 22), timeout=2).close()
    with pytest.raises(Exception, match="no sandbox is running"):
        Sandbox.open(directory)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_cli_status_and_root_check(sandbox: Sandbox, tmp_path: Path) -> None:
    status = subprocess.run(
        [sys.executable, "-m", "ec2backup.sandbox", "status", "--dir", str(sandbox.directory)],
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    assert f"running: {sandbox.endpoint_url}" in status.stdout

    idle = subprocess.run(
        [sys.executable, "-m", "ec2backup.sandbox", "status", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert idle.returncode != 0
    assert "no sandbox is running" in idle.stderr

    as_nobody = subprocess.run(
        [
            *("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"),
            *(sys.executable, "-m", "ec2backup.sandbox", "start", "--dir", str(tmp_path / "x")),
        ],
        capture_output=True,
        text=True,
    )
    assert as_nobody.returncode != 0
    assert as_nobody.stdout == ""
    assert len(as_nobody.stderr.strip().splitlines()) == 1
    assert "needs root" in as_nobody.stderr


def test_importing_the_cli_does_not_import_moto_or_boto3() -> None:
    code = (
        "import sys, ec2backup.sandbox.cli; "
        "print([m for m in sys.modules if m.split('.')[0] in ('moto', 'boto3', 'botocore')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


ARM64_PARAMETER = UBUNTU_PARAMETER.replace("/amd64/", "/arm64/")


def test_an_image_of_another_architecture_is_refused_as_ec2_words_it(
    sandbox: Sandbox, launch: Launch, ec2: Any
) -> None:
    arm64 = client(sandbox, "ssm").get_parameter(Name=ARM64_PARAMETER)["Parameter"]["Value"]
    assert arm64 == sandbox.ami_ids["arm64"] != sandbox.default_ami_id
    with pytest.raises(ClientError) as refused:
        launch(InstanceType="t4g.micro")  # the amd64 image
    assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert refused.value.response["Error"]["Message"].startswith(
        "The architecture 'arm64' of the specified instance type does not match the"
        " architecture 'x86_64' of the specified AMI."
    )
    with pytest.raises(ClientError) as backwards:
        launch(InstanceType="t3.micro", ImageId=arm64)
    assert (
        "'x86_64' of the specified instance type does not match the architecture 'arm64'"
        in (backwards.value.response["Error"]["Message"])
    )
    instance = launch(InstanceType="t4g.micro", ImageId=arm64)
    assert instance["Architecture"] == "arm64" or instance["ImageId"] == arm64
    (image,) = ec2.describe_images(ImageIds=[arm64])["Images"]
    assert image["Architecture"] == "arm64"


def test_a_type_not_offered_in_the_zone_is_unsupported(launch: Launch, ec2: Any) -> None:
    offered = ec2.describe_instance_type_offerings(
        LocationType="availability-zone",
        Filters=[{"Name": "instance-type", "Values": ["t3.micro"]}],
    )["InstanceTypeOfferings"]
    zones = sorted(o["Location"] for o in offered)
    assert "us-east-1e" not in zones and "us-east-1a" in zones
    with pytest.raises(ClientError) as refused:
        launch(Placement={"AvailabilityZone": "us-east-1e"})
    error = refused.value.response["Error"]
    assert error["Code"] == "Unsupported"
    assert error["Message"] == (
        "Your requested instance type (t3.micro) is not supported in your requested"
        " Availability Zone (us-east-1e). Please retry your request by not specifying an"
        f" Availability Zone or choosing {', '.join(zones)}."
    )
    # t2.nano is offered there.
    launch(InstanceType="t2.nano", Placement={"AvailabilityZone": "us-east-1e"})


def test_a_running_instances_root_volume_cannot_be_detached_and_goes_with_it(
    launch: Launch, ec2: Any
) -> None:
    instance = launch()
    instance_id = instance["InstanceId"]
    (reservation,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    described = reservation["Instances"][0]
    root_device = described["RootDeviceName"]
    (root,) = [
        m["Ebs"]["VolumeId"]
        for m in described["BlockDeviceMappings"]
        if m["DeviceName"] == root_device
    ]
    for force in (False, True):
        with pytest.raises(ClientError) as refused:
            ec2.detach_volume(VolumeId=root, InstanceId=instance_id, Force=force)
        assert refused.value.response["Error"]["Code"] == "OperationNotPermitted"
        assert refused.value.response["Error"]["Message"] == (
            f"Unable to detach root volume '{root}' from instance '{instance_id}'"
        )
    ec2.terminate_instances(InstanceIds=[instance_id])
    gone = with_deadline(lambda: not _volume_exists(ec2, root), timeout=10)
    assert gone  # DeleteOnTermination, as the Ubuntu AMI maps its root volume


def _volume_exists(ec2: Any, volume_id: str) -> bool:
    try:
        ec2.describe_volumes(VolumeIds=[volume_id])
    except ClientError as e:
        assert e.response["Error"]["Code"] == "InvalidVolume.NotFound"
        return False
    return True


def _instance(ec2: Any, instance_id: str) -> dict[str, Any]:
    (reservation,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservation["Instances"][0]  # type: ignore[no-any-return]


def test_a_public_address_only_where_the_subnet_maps_one_or_the_launch_asks(
    sandbox: Sandbox, launch: Launch, ec2: Any
) -> None:
    # A new account's default VPC routes 0.0.0.0/0 to an internet gateway, as on AWS.
    (vpc,) = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    (table,) = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])[
        "RouteTables"
    ]
    assert any(
        r.get("DestinationCidrBlock") == "0.0.0.0/0" and r.get("GatewayId", "").startswith("igw-")
        for r in table["Routes"]
    )
    private = ec2.create_subnet(
        VpcId=vpc["VpcId"], CidrBlock="172.31.240.0/24", AvailabilityZone=AZ
    )["Subnet"]["SubnetId"]
    # (The subnet stays: the launch fixture terminates its instances after the test.)
    assert not ec2.describe_subnets(SubnetIds=[private])["Subnets"][0]["MapPublicIpOnLaunch"]
    quiet = launch(SubnetId=private, Placement={})
    assert "PublicIpAddress" not in _instance(ec2, quiet["InstanceId"])
    asked = launch(
        Placement={},
        NetworkInterfaces=[
            {"DeviceIndex": 0, "SubnetId": private, "AssociatePublicIpAddress": True}
        ],
    )
    assert _instance(ec2, asked["InstanceId"])["PublicIpAddress"].startswith("127.")


def test_an_instance_in_a_subnet_without_a_route_to_the_internet_cannot_be_reached(
    launch: Launch, ec2: Any
) -> None:
    vpc_id = ec2.create_vpc(CidrBlock="10.250.0.0/16")["Vpc"]["VpcId"]
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.250.1.0/24", AvailabilityZone=AZ)[
        "Subnet"
    ]["SubnetId"]
    instance = launch(
        Placement={},
        NetworkInterfaces=[
            {"DeviceIndex": 0, "SubnetId": subnet_id, "AssociatePublicIpAddress": True}
        ],
    )
    address = _instance(ec2, instance["InstanceId"])["PublicIpAddress"]
    assert address.startswith("127."), address  # never connect anywhere else
    with pytest.raises(ConnectionRefusedError), socket.create_connection((address, 22), 2):
        pass
