"""The local cloud's faults: throttling, server errors, latency and lost responses on EC2 calls;
state changes that take time; the dead-man's switch; SSH connections cut; capacity and quota
errors; IAM enforcement. All seeded or deterministic, so a failing run can be replayed.

Settings are changed on the session sandbox (``sandbox_faults`` resets them after each test);
IAM needs its own sandbox (``iam_sandbox``)."""

from __future__ import annotations

import hashlib
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from ec2backup.errors import RSYNC_CONNECTION_EXITS
from ec2backup.sandbox import Sandbox, stop_sandbox
from ec2backup.sandbox.host import nitro_device_name
from ec2backup.sandbox.settings import CloudSettings
from tests.conftest import sandbox_skip_reason
from tests.sandbox.helpers import (
    AZ,
    UBUNTU_PARAMETER,
    Launch,
    client,
    console_host_keys,
    error_code,
    instance_state,
    known_hosts,
    no_retries,
    ssh,
    ssh_args,
    volume_state,
    with_deadline,
)

# --- settings and parsing (no sandbox) ---------------------------------------------------------


def test_settings_reject_nonsense_and_round_trip(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="throttle_rate"):
        CloudSettings(throttle_rate=1.5)
    with pytest.raises(ValueError, match="must not exceed 1"):
        CloudSettings(throttle_rate=0.6, error_rate=0.6)
    with pytest.raises(ValueError, match="boot_delay"):
        CloudSettings(boot_delay=-1)
    with pytest.raises(TypeError):
        CloudSettings().replace(no_such_setting=1)
    settings = CloudSettings(no_capacity=("t3.micro@us-east-1a",), fault_actions=("RunInstances",))
    settings.save(tmp_path / "s.json")
    assert CloudSettings.load(tmp_path / "s.json") == settings
    assert settings.no_capacity_for("t3.micro", "us-east-1a")
    assert not settings.no_capacity_for("t3.micro", "us-east-1b")
    assert settings.faults_apply_to("RunInstances")
    assert not settings.faults_apply_to("DescribeInstances")


# --- EC2 API faults ------------------------------------------------------------------------------


def _outcomes(ec2: Any, calls: int) -> list[str]:
    seen = []
    for _ in range(calls):
        try:
            ec2.describe_volumes()
            seen.append("ok")
        except ClientError as e:
            status, code = error_code(e)
            seen.append(f"{status} {code}")
    return seen


def test_throttling_and_server_errors_are_seeded(sandbox_faults: Sandbox) -> None:
    bare = client(sandbox_faults, "ec2", config=no_retries())
    sandbox_faults.configure_faults(
        throttle_rate=0.3, error_rate=0.3, fault_seed=11, fault_actions=("DescribeVolumes",)
    )
    first = _outcomes(bare, 30)
    assert "503 RequestLimitExceeded" in first
    assert {"500 InternalError", "503 Unavailable"} & set(first)
    assert "ok" in first
    assert bare.describe_instances()["ResponseMetadata"]["HTTPStatusCode"] == 200  # not listed

    sandbox_faults.configure_faults(fault_seed=11)  # a (re)configuration replays the sequence
    assert _outcomes(bare, 30) == first
    sandbox_faults.configure_faults(fault_seed=12)
    assert _outcomes(bare, 30) != first


@pytest.mark.parametrize("mode", ["standard", "adaptive"])
def test_botocore_retries_ride_through_faults(
    sandbox_faults: Sandbox, mode: Literal["standard", "adaptive"]
) -> None:
    ec2 = client(
        sandbox_faults, "ec2", config=Config(retries={"mode": mode, "total_max_attempts": 10})
    )
    sandbox_faults.configure_faults(
        throttle_rate=0.15, error_rate=0.1, fault_seed=3, fault_actions=("DescribeVolumes",)
    )
    retried = 0
    for _ in range(6):
        response = ec2.describe_volumes()
        retried += response["ResponseMetadata"]["RetryAttempts"]
    assert retried > 0  # faults were injected, and ridden through


def test_latency_is_added_to_the_chosen_actions(sandbox_faults: Sandbox) -> None:
    ec2 = client(sandbox_faults, "ec2")
    # A latency far above a loaded machine's call time (0.4 s once failed on a busy CI host):
    # the chosen action takes at least that long, the other far less.
    sandbox_faults.configure_faults(latency=2.0, fault_actions=("DescribeVolumes",))
    began = time.monotonic()
    ec2.describe_volumes()
    assert time.monotonic() - began >= 2.0
    began = time.monotonic()
    ec2.describe_instances()
    assert time.monotonic() - began < 2.0


def test_a_lost_response_did_the_work_and_client_token_finds_it(
    sandbox_faults: Sandbox, ec2: Any
) -> None:
    sandbox_faults.configure_faults(lost_response_rate=1.0, fault_actions=("RunInstances",))
    token = f"lost-{time.monotonic_ns()}"
    bare = client(sandbox_faults, "ec2", config=no_retries())
    params: dict[str, Any] = {
        "ImageId": sandbox_faults.default_ami_id,
        "MinCount": 1,
        "MaxCount": 1,
        "ClientToken": token,
        "Placement": {"AvailabilityZone": AZ},
        "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "t", "Value": token}]}],
    }
    with pytest.raises(ClientError) as lost:
        bare.run_instances(**params)
    assert error_code(lost.value) == (500, "InternalError")
    found = ec2.describe_instances(Filters=[{"Name": "tag:t", "Values": [token]}])
    (made,) = [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]
    try:
        sandbox_faults.reset_faults()
        # The retry a client makes: same token, same parameters -> the same instance.
        assert bare.run_instances(**params)["Instances"][0]["InstanceId"] == made
    finally:
        ec2.terminate_instances(InstanceIds=[made])


# --- state changes that take time -------------------------------------------------------------


def _observe(check: Any, until: Any, timeout: float = 10.0) -> list[Any]:
    """The distinct values ``check()`` returned, polled until ``until(value)``."""
    seen: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if not seen or seen[-1] != value:
            seen.append(value)
        if until(value):
            return seen
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout}s; seen {seen}")
        time.sleep(0.03)


def _port_22_open(address: str) -> bool:
    assert address.startswith("127.")
    try:
        socket.create_connection((address, 22), timeout=1).close()
    except OSError:
        return False
    return True


def test_state_changes_take_time_and_show_as_on_aws(
    sandbox_faults: Sandbox,
    launch: Launch,
    ec2: Any,
    volume: str,
    ssh_key: Path,
    tmp_path: Path,
) -> None:
    # The attach delay outlasts the ssh call made while attaching (about a second when the
    # machine is busy), so the sampling sees "attaching" first.
    sandbox_faults.configure_faults(
        boot_delay=1.0, attach_delay=2.0, detach_delay=0.4, terminate_delay=0.4
    )
    instance = launch()
    instance_id, address = instance["InstanceId"], instance["PublicIpAddress"]
    assert instance["State"]["Name"] == "pending"
    # While pending, nothing answers on port 22 and the console is empty.
    assert instance_state(ec2, instance_id) == "pending"
    closed = not _port_22_open(address)
    no_console = "Output" not in ec2.get_console_output(InstanceId=instance_id)
    assert instance_state(ec2, instance_id) == "pending", "too slow a machine for this test"
    assert closed and no_console
    with pytest.raises(ClientError) as not_running:
        ec2.attach_volume(VolumeId=volume, InstanceId=instance_id, Device="/dev/sdf")
    assert error_code(not_running.value)[1] == "IncorrectState"

    ec2.get_waiter("instance_running").wait(
        InstanceIds=[instance_id], WaiterConfig={"Delay": 0.2, "MaxAttempts": 50}
    )
    known = known_hosts(tmp_path / "kh", address, console_host_keys(ec2, instance_id))
    assert ssh(address, ssh_key, known, "true").returncode == 0

    device = f"/dev/disk/by-id/{nitro_device_name(volume)}"
    attached = ec2.attach_volume(VolumeId=volume, InstanceId=instance_id, Device="/dev/sdf")
    assert attached["State"] == "attaching"
    in_between = ssh(address, ssh_key, known, f"test -e {device}")
    seen = _observe(lambda: volume_state(ec2, volume), lambda s: s == ("in-use", ["attached"]))
    assert seen == [("in-use", ["attaching"]), ("in-use", ["attached"])]
    assert in_between.returncode != 0  # the device appears when attached, not before
    assert ssh(address, ssh_key, known, f"test -b {device}").returncode == 0

    assert ec2.detach_volume(VolumeId=volume)["State"] == "detaching"
    seen = _observe(lambda: volume_state(ec2, volume), lambda s: s == ("available", []))
    assert seen == [("in-use", ["detaching"]), ("available", [])]

    ec2.attach_volume(VolumeId=volume, InstanceId=instance_id, Device="/dev/sdf")
    _observe(lambda: volume_state(ec2, volume), lambda s: s == ("in-use", ["attached"]))
    (terminating,) = ec2.terminate_instances(InstanceIds=[instance_id])["TerminatingInstances"]
    assert terminating["CurrentState"]["Name"] == "shutting-down"
    assert terminating["PreviousState"]["Name"] == "running"
    assert not _port_22_open(address)  # the machine is gone at once

    def snapshot() -> tuple[str, tuple[str, list[str]]] | None:
        # Two calls are not one: keep only samples where the instance did not change between.
        before, volume_now = instance_state(ec2, instance_id), volume_state(ec2, volume)
        return (before, volume_now) if instance_state(ec2, instance_id) == before else None

    samples = _observe(snapshot, lambda s: s is not None and s[0] == "terminated")
    seen = [s for i, s in enumerate(samples) if s is not None and s not in samples[:i]]
    assert seen == [
        ("shutting-down", ("in-use", ["attached"])),
        ("terminated", ("available", [])),
    ]


# --- dead-man's switch ------------------------------------------------------------------------


def _dead_man(ssh_key: Path, idle_minutes: int = 2) -> str:
    """The user data ec2backup launches with (its dead-man's switch in runcmd)."""
    from ec2backup.adapters.keys import generate_host_key, generate_run_key
    from ec2backup.run.userdata import HostKeyPair, user_data

    run_dir = ssh_key.parent / f"run-{time.monotonic_ns()}"
    generate_run_key(run_dir)
    public = ssh_key.with_suffix(".pub").read_text().strip()
    return user_data(public, HostKeyPair(*generate_host_key(run_dir)), idle_minutes, 60)


def test_an_instance_ends_itself_when_its_idle_timer_fires(
    sandbox_faults: Sandbox, launch: Launch, ec2: Any, volume: str, ssh_key: Path
) -> None:
    sandbox_faults.configure_faults(minute_seconds=0.3)  # 2 minutes: 0.6 s
    dead_man = _dead_man(ssh_key)
    terminating = launch(UserData=dead_man, InstanceInitiatedShutdownBehavior="terminate")
    stopping = launch(UserData=dead_man)  # EC2's default behaviour: stop
    lasting = launch()  # no timer
    ec2.attach_volume(VolumeId=volume, InstanceId=terminating["InstanceId"], Device="/dev/sdf")
    assert instance_state(ec2, terminating["InstanceId"]) == "running"

    # No API call but Describe from here on.
    with_deadline(lambda: instance_state(ec2, terminating["InstanceId"]) == "terminated")
    with_deadline(lambda: instance_state(ec2, stopping["InstanceId"]) == "stopped")
    for instance in (terminating, stopping):
        (reservation,) = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])[
            "Reservations"
        ]
        assert reservation["Instances"][0]["StateReason"]["Code"] == (
            "Client.InstanceInitiatedShutdown"
        )
        assert not _port_22_open(instance["PublicIpAddress"])
    assert volume_state(ec2, volume) == ("available", [])
    assert instance_state(ec2, lasting["InstanceId"]) == "running"
    assert _port_22_open(lasting["PublicIpAddress"])


def test_a_shutdown_in_bootcmd_arms_nothing_as_on_ubuntu(
    sandbox_faults: Sandbox, launch: Launch, ec2: Any, ssh_key: Path
) -> None:
    """bootcmd runs before D-Bus and logind: `shutdown +N` there cannot schedule anything.
    The same command in runcmd (systemd up) does."""
    sandbox_faults.configure_faults(minute_seconds=0.5)
    public = ssh_key.with_suffix(".pub").read_text().strip()
    command = '[shutdown, -P, "+1", "lifetime"]'
    head = f"#cloud-config\nssh_authorized_keys:\n  - {public}\n"
    early = launch(
        UserData=f"{head}bootcmd:\n  - {command}\n", InstanceInitiatedShutdownBehavior="terminate"
    )
    late = launch(
        UserData=f"{head}runcmd:\n  - {command}\n", InstanceInitiatedShutdownBehavior="terminate"
    )
    with_deadline(lambda: instance_state(ec2, late["InstanceId"]) == "terminated")
    # The bootcmd one would have fired at the same moment: it never was armed.
    assert instance_state(ec2, early["InstanceId"]) == "running"
    log = sandbox_faults.layout.instance_dir(early["InstanceId"]) / "cloud-init-output.log"
    assert "Failed to connect to bus" in log.read_text()


def test_the_idle_timer_is_rearmed_over_ssh_and_fires_once_the_rearming_stops(
    sandbox_faults: Sandbox, launch: Launch, ec2: Any, ssh_key: Path, tmp_path: Path
) -> None:
    """What ec2backup's controller does while it works: re-arm over SSH, as root, with the
    instance's own systemd-run. The instance that is re-armed outlives one that is not."""
    from ec2backup.core.deadman import arm_idle_script

    sandbox_faults.configure_faults(minute_seconds=3.0)  # the idle bound: 1 minute = 3 s
    dead_man = _dead_man(ssh_key, idle_minutes=1)
    kept = launch(UserData=dead_man, InstanceInitiatedShutdownBehavior="terminate")
    left = launch(UserData=dead_man, InstanceInitiatedShutdownBehavior="terminate")
    address = kept["PublicIpAddress"]
    known = known_hosts(tmp_path / "kh", address, console_host_keys(ec2, kept["InstanceId"]))
    rearm = f"sudo -n sh -c {shlex.quote(arm_idle_script(60))}"
    rearms = 0
    while instance_state(ec2, left["InstanceId"]) == "running":
        result = ssh(address, ssh_key, known, rearm)
        assert result.returncode == 0, result.stderr
        rearms += 1
    assert rearms >= 2
    assert instance_state(ec2, kept["InstanceId"]) == "running"
    with_deadline(lambda: instance_state(ec2, kept["InstanceId"]) == "terminated")


# --- SSH faults -------------------------------------------------------------------------------


def _runs(sandbox: Sandbox, instance_id: str, name: str) -> bool:
    from ec2backup.sandbox.host import Machine

    machine = Machine.load(sandbox.layout.instance_dir(instance_id))
    return machine is not None and any(n == name for _, _, n in machine.processes())


def test_cut_ssh_drops_connections_and_the_instance_stays_up(
    sandbox: Sandbox, launch: Launch, ec2: Any, ssh_key: Path, tmp_path: Path
) -> None:
    instance = launch()
    instance_id, address = instance["InstanceId"], instance["PublicIpAddress"]
    known = known_hosts(tmp_path / "kh", address, console_host_keys(ec2, instance_id))
    assert ssh(address, ssh_key, known, "true").returncode == 0
    session = subprocess.Popen(
        [*ssh_args(address, ssh_key, known), f"ubuntu@{address}", "sleep 60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The session's command runs: the connection of the first ssh has ended by then.
        with_deadline(
            lambda: (
                _runs(sandbox, instance_id, "sleep") and sandbox.ssh_connections(instance_id) == 1
            )
        )
        assert sandbox.cut_ssh(instance_id) == 1
        _, stderr = session.communicate(timeout=10)
        assert session.returncode == 255, stderr
    finally:
        session.kill()
        session.wait()
    with_deadline(lambda: sandbox.ssh_connections(instance_id) == 0)
    assert ssh(address, ssh_key, known, "echo again").stdout == "again\n"
    with_deadline(lambda: sandbox.ssh_connections(instance_id) == 0)  # sshd ends after ssh
    assert sandbox.cut_ssh(instance_id) == 0
    assert sandbox.cut_ssh("i-00000000000000000") == 0


def _rsync(source: Path, address: str, key: Path, known: Path, *extra: str) -> int:
    remote_shell = " ".join(ssh_args(address, key, known))
    return subprocess.run(
        ["rsync", "-a", *extra, "-e", remote_shell, str(source), f"ubuntu@{address}:/home/ubuntu/"],
        capture_output=True,
        timeout=60,
    ).returncode


def test_cut_ssh_after_drops_a_running_rsync_once(
    sandbox_faults: Sandbox, launch: Launch, ec2: Any, ssh_key: Path, tmp_path: Path
) -> None:
    sandbox_faults.configure_faults(cut_ssh_after=0.3, cut_ssh_on="rsync")
    instance = launch()
    instance_id, address = instance["InstanceId"], instance["PublicIpAddress"]
    known = known_hosts(tmp_path / "kh", address, console_host_keys(ec2, instance_id))
    assert ssh(address, ssh_key, known, "true").returncode == 0  # no rsync: not cut
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(3 * 1024 * 1024))
    # 3 MB at 1 MB/s: still running when the cut comes. rsync reports the cut as a socket
    # error (10), a broken stream (12) or ssh's 255, depending on which end notices first.
    assert _rsync(data, address, ssh_key, known, "--bwlimit=1000") in RSYNC_CONNECTION_EXITS
    assert _rsync(data, address, ssh_key, known) == 0  # once per instance
    remote = ssh(address, ssh_key, known, "sha256sum /home/ubuntu/data.bin").stdout.split()[0]
    assert remote == hashlib.sha256(data.read_bytes()).hexdigest()


# --- capacity and quotas ----------------------------------------------------------------------


def test_no_capacity_for_an_instance_type_in_a_zone(
    sandbox_faults: Sandbox, launch: Launch
) -> None:
    sandbox_faults.configure_faults(no_capacity=("t3.micro@us-east-1a", "t3.nano"))
    with pytest.raises(ClientError) as no_capacity:
        client(sandbox_faults, "ec2", config=no_retries()).run_instances(
            ImageId=sandbox_faults.default_ami_id,
            InstanceType="t3.micro",
            MinCount=1,
            MaxCount=1,
            Placement={"AvailabilityZone": "us-east-1a"},
        )
    # As on AWS, a server error (500): botocore retries it unless told otherwise.
    assert error_code(no_capacity.value) == (500, "InsufficientInstanceCapacity")
    message = no_capacity.value.response["Error"]["Message"]
    assert "t3.micro capacity in the Availability Zone you requested (us-east-1a)" in message
    assert "us-east-1b" in message
    assert launch(InstanceType="t3.micro", Placement={"AvailabilityZone": "us-east-1b"})
    assert launch(InstanceType="t3.small")  # another type, same zone
    with pytest.raises(ClientError) as nowhere:
        client(sandbox_faults, "ec2", config=no_retries()).run_instances(
            ImageId=sandbox_faults.default_ami_id, InstanceType="t3.nano", MinCount=1, MaxCount=1
        )
    assert error_code(nowhere.value) == (500, "InsufficientInstanceCapacity")


def test_instance_limit_counts_live_instances(
    sandbox_faults: Sandbox, launch: Launch, ec2: Any
) -> None:
    live = [
        i
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] in ("pending", "running", "stopping", "shutting-down")
    ]
    sandbox_faults.configure_faults(instance_limit=len(live) + 1)
    token = f"limit-{time.monotonic_ns()}"
    first = launch(ClientToken=token)
    with pytest.raises(ClientError) as limit:
        launch()
    assert error_code(limit.value) == (400, "InstanceLimitExceeded")
    assert "current instance limit of" in limit.value.response["Error"]["Message"]
    assert launch(ClientToken=token)["InstanceId"] == first["InstanceId"]  # a replay is no launch
    ec2.terminate_instances(InstanceIds=[first["InstanceId"]])
    assert launch()  # a terminated instance no longer counts


# --- IAM --------------------------------------------------------------------------------------


def _policy(*actions: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": "*"}],
    }


def test_iam_mode_checks_each_call_against_the_users_policy(iam_sandbox: Sandbox) -> None:
    # The sandbox's own seeding went around the checks: the administrator sees it.
    admin_ec2 = client(iam_sandbox, "ec2")
    assert admin_ec2.describe_images(ImageIds=[iam_sandbox.default_ami_id])["Images"]
    parameter = client(iam_sandbox, "ssm").get_parameter(Name=UBUNTU_PARAMETER)["Parameter"]
    assert parameter["Value"] == iam_sandbox.default_ami_id

    suffix = time.monotonic_ns()
    launch_only = iam_sandbox.create_iam_user(
        f"launch-only-{suffix}", _policy("ec2:RunInstances", "ec2:Describe*")
    )
    full = iam_sandbox.create_iam_user(
        f"full-{suffix}", _policy("ec2:RunInstances", "ec2:Describe*", "ec2:TerminateInstances")
    )
    weak = client(iam_sandbox, "ec2", launch_only, no_retries())
    strong = client(iam_sandbox, "ec2", full, no_retries())
    instance_id = weak.run_instances(
        ImageId=iam_sandbox.default_ami_id, MinCount=1, MaxCount=1, InstanceType="t3.micro"
    )["Instances"][0]["InstanceId"]
    try:
        with pytest.raises(ClientError) as denied:
            weak.terminate_instances(InstanceIds=[instance_id])
        assert error_code(denied.value) == (403, "UnauthorizedOperation")
        assert "ec2:TerminateInstances" in denied.value.response["Error"]["Message"]
        with pytest.raises(ClientError) as no_snapshot:
            strong.create_snapshot(VolumeId="vol-00000000000000000")
        assert error_code(no_snapshot.value)[1] == "UnauthorizedOperation"
        strong.terminate_instances(InstanceIds=[instance_id])
        assert instance_state(strong, instance_id) == "terminated"
    finally:
        admin_ec2.terminate_instances(InstanceIds=[instance_id])

    stranger = client(
        iam_sandbox,
        "ec2",
        {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
        no_retries(),
    )
    with pytest.raises(ClientError) as unknown:
        stranger.describe_instances()
    assert error_code(unknown.value) == (401, "AuthFailure")


# --- CLI --------------------------------------------------------------------------------------


def test_cli_start_takes_the_fault_flags(tmp_path: Path) -> None:
    reason = sandbox_skip_reason()
    if reason:
        pytest.skip(reason)
    directory = tmp_path / "cloud"
    cli = [sys.executable, "-m", "ec2backup.sandbox"]
    flags = "--throttle-rate 0.1 --error-rate 0.05 --latency 0.05 --boot-delay 3"
    flags += " --attach-delay 1 --detach-delay 1 --terminate-delay 2 --fault-seed 9"
    flags += " --minute-seconds 1 --cut-ssh-after 4 --cut-ssh-on rsync"
    flags += " --no-capacity t3.micro --no-capacity t3.nano@us-east-1b --instance-limit 2 --iam"
    flags += " --timing aws --timing-scale 0.5 --consistency-lag 1.5 --snapshot-delay 7"
    started = subprocess.run(
        [*cli, "start", "--dir", str(directory), *flags.split()],
        capture_output=True,
        text=True,
        timeout=90,
    )
    try:
        assert started.returncode == 0, started.stderr
        sandbox = Sandbox.open(directory)
        assert sandbox.iam
        assert f"export AWS_ACCESS_KEY_ID={sandbox.access_key_id}" in started.stdout
        assert sandbox.settings == CloudSettings(
            throttle_rate=0.1,
            error_rate=0.05,
            latency=0.05,
            boot_delay=3,
            attach_delay=1,
            detach_delay=1,
            terminate_delay=2,
            fault_seed=9,
            minute_seconds=1,
            cut_ssh_after=4,
            cut_ssh_on="rsync",
            no_capacity=("t3.micro", "t3.nano@us-east-1b"),
            instance_limit=2,
            timing="aws",
            timing_scale=0.5,
            consistency_lag=1.5,
            snapshot_delay=7,
        )
        assert sandbox.settings.delay("ssh_delay") == 10.0  # AWS's 20 s, halved
        assert sandbox.settings.delay("snapshot_delay") == 7.0  # as set
        changed = subprocess.run(
            [
                *cli,
                "configure",
                "--dir",
                str(directory),
                "throttle_rate=0",
                "instance_limit=none",
                "timing=instant",
            ],
            capture_output=True,
            text=True,
        )
        assert changed.returncode == 0, changed.stderr
        assert "instance_limit=none" in changed.stdout.splitlines()
        assert sandbox.settings.throttle_rate == 0
        assert sandbox.settings.boot_delay == 3
        assert sandbox.settings.delay("ssh_delay") == 0.0  # instant again
        status = subprocess.run(
            [*cli, "status", "--dir", str(directory)], capture_output=True, text=True
        )
        assert "IAM: enforced" in status.stdout
        assert "boot_delay=3.0" in status.stdout
    finally:
        stop_sandbox(directory)


def test_a_snapshot_stays_pending_and_no_volume_comes_from_it_meanwhile(
    sandbox_faults: Sandbox,
) -> None:
    ec2 = client(sandbox_faults, "ec2")
    source = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    sandbox_faults.configure_faults(snapshot_delay=2.0)
    snapshot_id = ec2.create_snapshot(VolumeId=source)["SnapshotId"]
    (pending,) = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    assert pending["State"] == "pending" and pending["Progress"] != "100%"
    with pytest.raises(ClientError) as refused:
        ec2.create_volume(AvailabilityZone="us-east-1a", SnapshotId=snapshot_id)
    assert refused.value.response["Error"] == {
        "Code": "IncorrectState",
        "Message": "Snapshot is in invalid state - pending",
    }
    with_deadline(
        lambda: (
            ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"]
            == "completed"
        ),
        timeout=10,
    )
    (done,) = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    assert done["Progress"] == "100%"
    restored = ec2.create_volume(AvailabilityZone="us-east-1a", SnapshotId=snapshot_id)
    ec2.delete_volume(VolumeId=restored["VolumeId"])
    ec2.delete_snapshot(SnapshotId=snapshot_id)
    ec2.delete_volume(VolumeId=source)


def test_new_resources_are_not_found_by_id_nor_by_tag_for_the_consistency_lag(
    sandbox_faults: Sandbox, launch: Launch
) -> None:
    ec2 = client(sandbox_faults, "ec2", config=no_retries())
    sandbox_faults.configure_faults(consistency_lag=2.0)
    tag = {"Key": "lag-test", "Value": str(time.monotonic_ns())}
    volume_id = ec2.create_volume(
        AvailabilityZone=AZ, Size=1, TagSpecifications=[{"ResourceType": "volume", "Tags": [tag]}]
    )["VolumeId"]
    instance_id = launch(TagSpecifications=[{"ResourceType": "instance", "Tags": [tag]}])[
        "InstanceId"
    ]
    group_id = ec2.create_security_group(GroupName=tag["Value"], Description="lag")["GroupId"]
    by_tag = [{"Name": f"tag:{tag['Key']}", "Values": [tag["Value"]]}]
    for call, code, message in (
        (
            lambda: ec2.describe_volumes(VolumeIds=[volume_id]),
            "InvalidVolume.NotFound",
            f"The volume '{volume_id}' does not exist.",
        ),
        (
            lambda: ec2.describe_instances(InstanceIds=[instance_id]),
            "InvalidInstanceID.NotFound",
            f"The instance ID '{instance_id}' does not exist",
        ),
        (
            lambda: ec2.authorize_security_group_ingress(
                GroupId=group_id, IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="127.0.0.1/32"
            ),
            "InvalidGroup.NotFound",
            f"The security group '{group_id}' does not exist",
        ),
    ):
        with pytest.raises(ClientError) as missing:
            call()
        assert missing.value.response["Error"] == {"Code": code, "Message": message}
    assert ec2.describe_volumes(Filters=by_tag)["Volumes"] == []
    assert ec2.describe_instances(Filters=by_tag)["Reservations"] == []
    # A launch into the new group, named on its network interface, is refused the same way.
    with pytest.raises(ClientError) as young_group:
        launch(
            Placement={},
            NetworkInterfaces=[{"DeviceIndex": 0, "Groups": [group_id]}],
        )
    assert young_group.value.response["Error"]["Code"] == "InvalidGroup.NotFound"
    # Then it shows, by id and by tag.
    with_deadline(lambda: ec2.describe_volumes(Filters=by_tag)["Volumes"], timeout=10)
    assert ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    assert ec2.describe_instances(Filters=by_tag)["Reservations"]
    ec2.delete_volume(VolumeId=volume_id)
    with_deadline(lambda: _shows(lambda: ec2.describe_security_groups(GroupIds=[group_id])))
    ec2.delete_security_group(GroupId=group_id)


def _shows(call: Any) -> bool:
    try:
        call()
    except ClientError as e:
        assert e.response["Error"]["Code"].endswith(".NotFound")
        return False
    return True


def test_timing_aws_takes_awss_delays_scaled_in_the_same_order() -> None:
    from ec2backup.sandbox.settings import AWS_DELAYS

    aws = CloudSettings(timing="aws", timing_scale=0.1)
    assert aws.delay("boot_delay") == pytest.approx(1.2)
    assert aws.delay("terminate_delay") == pytest.approx(4.5)
    order = sorted(AWS_DELAYS, key=aws.delay)
    assert order == sorted(AWS_DELAYS, key=AWS_DELAYS.__getitem__)
    assert aws.replace(boot_delay=0.5).delay("boot_delay") == 0.5  # set: as set
    assert CloudSettings().delay("boot_delay") == 0.0  # instant
    with pytest.raises(ValueError, match="timing must be one of instant, aws"):
        CloudSettings(timing="slow")


def test_until_cloud_final_the_console_shows_no_keys_and_logins_are_refused(
    sandbox_faults: Sandbox, launch: Launch, ssh_key: Path, tmp_path: Path
) -> None:
    ec2 = client(sandbox_faults, "ec2")
    sandbox_faults.configure_faults(ssh_delay=3.0)
    instance = launch()
    address = instance["PublicIpAddress"]
    with_deadline(lambda: instance_state(ec2, instance["InstanceId"]) == "running")
    with_deadline(lambda: _port_open(address))
    output = ec2.get_console_output(InstanceId=instance["InstanceId"], Latest=True)["Output"]
    assert "cloud-init" in output and "BEGIN SSH HOST KEY KEYS" not in output
    # The machine's real host key, read on the host: the login itself is what is refused.
    host_key = (
        sandbox_faults.layout.instance_dir(instance["InstanceId"]) / "ssh_host_ed25519_key.pub"
    ).read_text()
    known = known_hosts(tmp_path / "host", address, [host_key])
    refused = subprocess.run(
        [*ssh_args(address, ssh_key, known), f"ubuntu@{address}", "true"],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused.stderr
    keys = with_deadline(lambda: _console_keys(ec2, instance["InstanceId"]), timeout=15)
    proc = ssh(address, ssh_key, known_hosts(tmp_path / "known", address, keys), "id -un")
    assert (proc.returncode, proc.stdout.strip()) == (0, "ubuntu"), proc.stderr


def _port_open(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), 1):
            return True
    except OSError:
        return False


def _console_keys(ec2: Any, instance_id: str) -> list[str]:
    output = ec2.get_console_output(InstanceId=instance_id, Latest=True).get("Output", "")
    return console_host_keys(ec2, instance_id) if "BEGIN SSH HOST KEY KEYS" in output else []


# --- the client's address -------------------------------------------------------------------------


def _syn_answered(address: str) -> bool:
    """Whether port 22 answers a SYN at all (a dropped SYN times out; nothing is refused)."""
    assert address.startswith("127.")
    try:
        socket.create_connection((address, 22), timeout=1).close()
    except TimeoutError:
        return False
    return True


def test_client_address_makes_security_groups_decide_who_reaches_port_22(
    sandbox_faults: Sandbox, launch: Launch, ec2: Any, ssh_key: Path, tmp_path: Path
) -> None:
    import urllib.request

    checkip = sandbox_faults.env["EC2BACKUP_CHECKIP_URL"]
    with urllib.request.urlopen(checkip, timeout=5) as answer:
        assert answer.read().decode().strip() == "127.0.0.1"  # no client_address: the caller's
    group = ec2.create_security_group(GroupName=f"g-{time.monotonic_ns()}", Description="t")[
        "GroupId"
    ]
    ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "198.51.100.0/24"}],
            }
        ],
    )
    try:
        sandbox_faults.configure_faults(client_address="203.0.113.7")
        with urllib.request.urlopen(checkip, timeout=5) as answer:
            assert answer.read().decode().strip() == "203.0.113.7"
        instance = launch(SecurityGroupIds=[group])
        address = instance["PublicIpAddress"]
        assert not _syn_answered(address)  # dropped from the first SYN on, as on AWS
        known = known_hosts(
            tmp_path / "kh", address, console_host_keys(ec2, instance["InstanceId"])
        )

        added = ec2.authorize_security_group_ingress(
            GroupId=group,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 22,
                    "ToPort": 22,
                    "IpRanges": [{"CidrIp": "203.0.113.7/32"}],
                }
            ],
        )["SecurityGroupRules"][0]["SecurityGroupRuleId"]
        with_deadline(lambda: _syn_answered(address))
        assert ssh(address, ssh_key, known, "true").returncode == 0

        ec2.revoke_security_group_ingress(GroupId=group, SecurityGroupRuleIds=[added])
        with_deadline(lambda: not _syn_answered(address))
        sandbox_faults.configure_faults(client_address="198.51.100.20")  # inside the other rule
        with_deadline(lambda: _syn_answered(address))
    finally:
        sandbox_faults.reset_faults()
