"""Instance types of either architecture: ec2backup launches each on an image of its own
architecture (the local cloud refuses a mismatch as EC2 does, InvalidParameterValue)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Cli, make_sample_tree, run_instances, tree_digest

pytestmark = pytest.mark.e2e


def test_a_t4g_profile_backs_up_and_restores_on_an_arm64_image(
    cli: Cli, sandbox: Any, tmp_path: Path
) -> None:
    source = tmp_path / "home"
    source.mkdir()
    make_sample_tree(source)
    cli(
        "init", "--profile", "g", "--az", "us-east-1a", "--size", "1", "--source", str(source),
        "--instance-type", "t4g.micro",
    )  # fmt: skip
    backup = cli("run", "--profile", "g").stdout.strip()
    restore = cli("restore", "--run", backup, "--to", str(tmp_path / "back")).stdout.strip()
    assert tree_digest(tmp_path / "back" / "home") == tree_digest(source)
    from tests.e2e.helpers import ec2_client

    ec2 = ec2_client(sandbox)
    for run_id in (backup, restore):
        (instance,) = run_instances(ec2, run_id)
        assert instance["InstanceType"] == "t4g.micro"
        assert instance["ImageId"] == sandbox.ami_ids["arm64"]


def test_a_fallback_of_the_other_architecture_gets_its_own_image(
    cli: Cli, sandbox: Any, tmp_path: Path
) -> None:
    source = tmp_path / "home"
    source.mkdir()
    (source / "a.txt").write_text("a\n")
    cli("init", "--profile", "f", "--az", "us-east-1a", "--size", "1", "--source", str(source))
    config = tmp_path / "config.toml"
    config.write_text(config.read_text() + 'fallback_instance_types = ["t4g.small"]\n')
    with sandbox.configured(no_capacity=("t3.micro",)):
        run_id = cli("run", "--profile", "f").stdout.strip()
    shown = cli.json("show", run_id)
    assert shown["state"] == "done" and shown["cost"]["instance_type"] == "t4g.small"
    from tests.e2e.helpers import ec2_client

    (instance,) = [
        i for i in run_instances(ec2_client(sandbox), run_id) if i["InstanceType"] == "t4g.small"
    ]
    assert instance["ImageId"] == sandbox.ami_ids["arm64"]
