"""The instance's public address: asked for at launch (AssociatePublicIpAddress), so a subnet
that maps none still works; the local cloud grants one only where AWS would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Cli, ec2_client, run_instances

pytestmark = pytest.mark.e2e


def test_a_backup_in_a_subnet_that_maps_no_public_address(
    cli: Cli, sandbox: Any, tmp_path: Path
) -> None:
    ec2 = ec2_client(sandbox)
    (vpc,) = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    subnet = ec2.create_subnet(
        VpcId=vpc["VpcId"], CidrBlock="172.31.241.0/24", AvailabilityZone="us-east-1a"
    )["Subnet"]
    assert not subnet["MapPublicIpOnLaunch"]
    source = tmp_path / "home"
    source.mkdir()
    (source / "a.txt").write_text("a\n")
    cli("init", "--profile", "n", "--az", "us-east-1a", "--size", "1", "--source", str(source))
    config = tmp_path / "config.toml"
    config.write_text(
        config.read_text() + f'subnet_id = "{subnet["SubnetId"]}"\nboot_timeout = 30\n'
    )
    run_id = cli("run", "--profile", "n").stdout.strip()
    assert cli.json("show", run_id)["state"] == "done"
    (instance,) = run_instances(ec2, run_id)
    assert instance["SubnetId"] == subnet["SubnetId"]
