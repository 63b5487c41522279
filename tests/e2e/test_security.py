"""Security behaviour end to end: a host key that does not match the console's is refused and
the run cleans up; no secret ends up in the database, the output or process arguments."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Cli, assert_clean_after, ec2_client, make_sample_tree

pytestmark = pytest.mark.e2e


def init_profile(cli: Cli, tmp_path: Path) -> tuple[str, Path]:
    source = tmp_path / "home"
    source.mkdir()
    make_sample_tree(source)
    volume_id = cli(
        "init", "--profile", "s", "--az", "us-east-1a", "--size", "1", "--source", str(source)
    ).stdout.strip()
    return volume_id, source


def test_a_console_showing_another_host_key_is_refused_and_the_run_cleans_up(
    cli: Cli, sandbox: Any, tmp_path: Path
) -> None:
    volume_id, _ = init_profile(cli, tmp_path)
    sandbox.fake_console_host_key()  # the next instance's console shows another key
    result = cli("run", "--profile", "s", check=False)
    assert result.returncode == 6, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "host keys" in last and "do not match the key this run gave it" in last
    assert "ec2backup resume" not in last  # nothing to resume: it was cleaned up
    (run,) = [r for r in cli.json("runs") if r["kind"] == "backup"]
    shown = cli.json("show", run["id"])
    assert shown["state"] == "aborted"
    assert [e["to"] for e in shown["events"]][-3:] == ["failed", "cleaning", "aborted"]
    assert_clean_after(ec2_client(sandbox), run["id"], volume_id)
    assert not (tmp_path / "data" / "runs" / run["id"]).exists()


def recording_shims(bin_dir: Path, log: Path) -> str:
    """Put `rsync` and `ssh` wrappers first on PATH that log their full argument list (NUL
    separated, one record per call) and exec the real program, so every invocation is seen
    however short-lived it is."""
    bin_dir.mkdir()
    for name in ("rsync", "ssh"):
        real = shutil.which(name)
        assert real is not None, f"{name} is installed"
        shim = bin_dir / name
        shim.write_text(
            "#!/bin/sh\n"
            f'printf "%s\\0" "$0" "$@" >> "{log}"\n'
            f'printf "\\n" >> "{log}"\n'
            f'exec "{real}" "$@"\n'
        )
        shim.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


def test_no_secret_in_database_output_logs_or_process_arguments(
    cli: Cli, sandbox: Any, tmp_path: Path
) -> None:
    # The local cloud accepts any secret for its access key. A distinctive one per test: its
    # default ("testing") is a word that other processes on a CI host may well have in their
    # arguments (the wide net below once failed on such a false positive).
    secret = f"ec2backup-secret-{secrets.token_hex(12)}"
    cli = replace(cli, env={**cli.env, "AWS_SECRET_ACCESS_KEY": secret})
    init_profile(cli, tmp_path)
    calls_log = tmp_path / "calls.log"
    path = recording_shims(tmp_path / "shims", calls_log)
    sampled_args: list[str] = []
    stop = threading.Event()

    def sample_processes() -> None:
        # A wider but sampled net: every process's arguments (the ec2backup command itself, the
        # remote side of rsync) while the backup runs. Short-lived ones may slip through; the
        # shims catch all rsync and ssh calls.
        while not stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                with contextlib.suppress(OSError):  # processes come and go
                    sampled_args.append(
                        cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    )
            stop.wait(0.01)

    sampler = threading.Thread(target=sample_processes)
    sampler.start()
    try:
        result = replace(cli, env={**cli.env, "PATH": path})("--debug", "run", "--profile", "s")
    finally:
        stop.set()
        sampler.join()
    run_id = result.stdout.strip()
    calls = [line.replace("\0", " ") for line in calls_log.read_text(errors="replace").splitlines()]
    rsync_calls = [c for c in calls if c.startswith(str(tmp_path / "shims" / "rsync"))]
    assert any("-e " in c and "--version" not in c for c in rsync_calls), calls
    assert any(c.startswith(str(tmp_path / "shims" / "ssh")) for c in calls), calls

    private_markers = ("PRIVATE KEY", "b3BlbnNzaC1rZXktdjE")  # PEM header, base64 of openssh-key-v1
    haystacks = {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "database": (tmp_path / "ec2backup.db").read_bytes().decode(errors="replace"),
        "rsync and ssh arguments": "\n".join(calls),
        "sampled process arguments": "\n".join(sampled_args),
        "config": (tmp_path / "config.toml").read_text(),
    }
    for name, text in haystacks.items():
        assert secret not in text, f"the AWS secret key is in the {name}"
        for marker in private_markers:
            assert marker not in text, f"private key material ({marker}) is in the {name}"

    db = tmp_path / "ec2backup.db"
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    runs_dir = tmp_path / "data" / "runs"
    assert oct(runs_dir.stat().st_mode & 0o777) == "0o700"
    assert not (runs_dir / run_id).exists()  # the run's key is deleted when it ends
    assert os.listdir(runs_dir) == []


def test_init_hardens_the_volume_the_instances_and_ssh(
    cli: Cli, sandbox: Any, tmp_path: Path
) -> None:
    ec2 = ec2_client(sandbox)
    volume_id, _ = init_profile(cli, tmp_path)
    (volume,) = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    assert volume["Encrypted"] is True and volume["VolumeType"] == "gp3"

    config = (tmp_path / "config.toml").read_text()
    (group_id,) = re.findall(r'security_group_ids = \["(sg-[0-9a-f]+)"\]', config)
    (group,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    assert group["GroupName"] == "ec2backup-s"
    assert {t["Key"]: t["Value"] for t in group["Tags"]}["ec2backup:managed"] == "true"
    ingress = [
        (p.get("IpProtocol"), p.get("FromPort"), p.get("ToPort"), r["CidrIp"])
        for p in group["IpPermissions"]
        for r in p.get("IpRanges", [])
    ]
    # This host's address as the local cloud's lookup answers it (no client_address: 127.0.0.1).
    assert ingress == [("tcp", 22, 22, "127.0.0.1/32")]

    run_id = cli("run", "--profile", "s").stdout.strip()
    (reservation,) = ec2.describe_instances(
        Filters=[{"Name": "tag:ec2backup:run-id", "Values": [run_id]}]
    )["Reservations"]
    (instance,) = reservation["Instances"]
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert "IamInstanceProfile" not in instance
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [group_id]
    # The run found its address admitted already: it added no rule, and left none.
    (group,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    assert [r["CidrIp"] for p in group["IpPermissions"] for r in p["IpRanges"]] == ["127.0.0.1/32"]

    other = cli(
        "init",
        "--profile",
        "t",
        "--az",
        "us-east-1a",
        "--size",
        "1",
        "--source",
        str(tmp_path / "home"),
        "--allow-ssh-from",
        "not-an-address",
        check=False,
    )
    assert other.returncode == 2 and "is not an address or network" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


def test_the_run_key_runs_commands_but_cannot_forward_ports(sandbox: Any, tmp_path: Path) -> None:
    """The user data ec2backup launches with, on a real sshd: the key logs in and runs a
    command; a tunnel through the instance (to its own sshd) is refused."""
    import asyncio

    import asyncssh

    from ec2backup.adapters.keys import generate_host_key, generate_run_key
    from ec2backup.run.userdata import HostKeyPair, user_data

    key_path, public_key = generate_run_key(tmp_path / "run")
    host_key = HostKeyPair(*generate_host_key(tmp_path / "run"))
    ec2 = ec2_client(sandbox)
    (instance,) = ec2.run_instances(
        ImageId=sandbox.default_ami_id,
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.micro",
        Placement={"AvailabilityZone": f"{sandbox.region}a"},
        UserData=user_data(public_key, host_key, 60, 60),
    )["Instances"]
    try:
        ec2.get_waiter("instance_running").wait(
            InstanceIds=[instance["InstanceId"]], WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
        )
        (seen,) = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"]
        address = seen["Instances"][0]["PublicIpAddress"]

        async def probe() -> tuple[str, int | None]:
            pinned = asyncssh.import_known_hosts(f"{address} {host_key.public}\n")
            async with asyncssh.connect(
                address, username="ubuntu", client_keys=[str(key_path)], known_hosts=pinned
            ) as conn:
                ran = (await conn.run("echo ok", check=True)).stdout
                try:
                    channel, _ = await conn.create_connection(asyncssh.SSHTCPSession, address, 22)
                    channel.close()
                    refused = None
                except asyncssh.ChannelOpenError as exc:
                    refused = exc.code
                return str(ran).strip(), refused

        ran, refused = asyncio.run(asyncio.wait_for(probe(), 60))
        assert ran == "ok"
        assert refused == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
    finally:
        ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
