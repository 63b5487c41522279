"""Helpers shared by the local cloud's tests: boto3 clients, ssh with strict host keys, polling.

Every address connected to is checked to be a 127.x address first."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from ec2backup.sandbox import Sandbox

UBUNTU_PARAMETER = (
    "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"
)
AZ = "us-east-1a"

Launch = Callable[..., dict[str, Any]]


def client(
    sandbox: Sandbox,
    service: str,
    keys: dict[str, str] | None = None,
    config: Config | None = None,
) -> Any:
    """A boto3 client for the sandbox: its own keys (the administrator's in IAM mode) unless
    ``keys`` (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``) are given."""
    env = {**sandbox.env, **(keys or {})}
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=config,
    )


def no_retries() -> Config:
    """Every call made once: the client sees each fault the sandbox injects."""
    return Config(retries={"mode": "standard", "total_max_attempts": 1})


def cloud_config(ssh_key: Path, extra: str = "") -> str:
    public = ssh_key.with_suffix(".pub").read_text().strip()
    return f"#cloud-config\nssh_authorized_keys:\n  - {public}\npackage_update: false\n{extra}"


def with_deadline(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s: {check}")
        time.sleep(0.05)


def console_host_keys(ec2: Any, instance_id: str, timeout: float = 15.0) -> list[str]:
    """The host keys the console shows, once cloud-init has printed them (at the end of its
    final stage, a moment after the instance runs)."""

    def printed() -> list[str] | None:
        output = ec2.get_console_output(InstanceId=instance_id, Latest=True).get("Output", "")
        lines = output.splitlines()
        if "-----END SSH HOST KEY KEYS-----" not in lines:
            return None
        begin = lines.index("-----BEGIN SSH HOST KEY KEYS-----")
        end = lines.index("-----END SSH HOST KEY KEYS-----")
        return lines[begin + 1 : end]

    keys: list[str] = with_deadline(printed, timeout)
    return keys


def known_hosts(path: Path, address: str, host_keys: list[str]) -> Path:
    path.write_text("".join(f"{address} {' '.join(k.split()[:2])}\n" for k in host_keys))
    return path


def ssh_args(address: str, key: Path, known: Path) -> list[str]:
    """``ssh`` with strict host key checking and nothing from ~/.ssh, up to the destination."""
    assert address.startswith("127."), f"refusing to connect to non-loopback {address}"
    args = ["ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes"]
    args += ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5"]
    args += ["-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null"]
    return args


def ssh(
    address: str, key: Path, known: Path, command: str, timeout: float = 15.0
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as ubuntu over ssh, strict host key checking; retry refused
    connections (sshd not yet listening) until ``timeout``."""
    args = [*ssh_args(address, key, known), f"ubuntu@{address}", command]
    deadline = time.monotonic() + timeout
    while True:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        refused = proc.returncode == 255 and "Connection refused" in proc.stderr
        if not refused or time.monotonic() > deadline:
            return proc
        time.sleep(0.1)


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in line:
            found.append(f"{entry.name}: {line}")
    return found


def host_mounts_mentioning(text: str) -> list[str]:
    return [m for m in Path("/proc/self/mountinfo").read_text().splitlines() if text in m]


def volume_state(ec2: Any, volume_id: str) -> tuple[str, list[str]]:
    (vol,) = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    return vol["State"], [a["State"] for a in vol["Attachments"]]


def instance_state(ec2: Any, instance_id: str) -> str:
    (reservation,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return str(reservation["Instances"][0]["State"]["Name"])


def error_code(error: BaseException) -> tuple[int, str]:
    """(HTTP status, EC2 error code) of a botocore ClientError."""
    response = error.response  # type: ignore[attr-defined]
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]
