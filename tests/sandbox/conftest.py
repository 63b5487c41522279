"""Fixtures of the local cloud's tests (the ``sandbox`` itself comes from tests/conftest.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ec2backup.sandbox import Sandbox
from tests.sandbox.helpers import AZ, Launch, client, cloud_config, volume_state, with_deadline


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


@pytest.fixture
def ec2(sandbox: Sandbox) -> Any:
    return client(sandbox, "ec2")


@pytest.fixture
def launch(sandbox: Sandbox, ec2: Any, ssh_key: Path) -> Iterator[Launch]:
    """Launch an instance (our key in its user data); all are terminated after the test."""
    launched: list[str] = []

    def _launch(**overrides: Any) -> dict[str, Any]:
        params: dict[str, Any] = {
            "ImageId": sandbox.default_ami_id,
            "InstanceType": "t3.micro",
            "MinCount": 1,
            "MaxCount": 1,
            "Placement": {"AvailabilityZone": AZ},
            "UserData": cloud_config(ssh_key),
            **overrides,
        }
        instance: dict[str, Any] = ec2.run_instances(**params)["Instances"][0]
        launched.append(instance["InstanceId"])
        return instance

    yield _launch
    if launched:
        ec2.terminate_instances(InstanceIds=launched)


@pytest.fixture
def volume(ec2: Any) -> Iterator[str]:
    volume_id: str = ec2.create_volume(AvailabilityZone=AZ, Size=1, VolumeType="gp3")["VolumeId"]
    yield volume_id
    # Torn down before the test's instances: force it off whatever still holds it.
    if volume_state(ec2, volume_id)[1]:
        ec2.detach_volume(VolumeId=volume_id, Force=True)
    with_deadline(lambda: _try_delete(ec2, volume_id), timeout=10)


def _try_delete(ec2: Any, volume_id: str) -> bool:
    try:
        ec2.delete_volume(VolumeId=volume_id)
    except ClientError as e:
        return e.response["Error"]["Code"] == "InvalidVolume.NotFound"
    return True
