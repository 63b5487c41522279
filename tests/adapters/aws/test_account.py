"""The account probes of ``ec2backup doctor`` (STS and DescribeRegions) against in-process
moto."""

from __future__ import annotations

from typing import Any

import pytest

from ec2backup.adapters.aws.account import Boto3Account
from ec2backup.adapters.aws.client import Boto3Ec2
from ec2backup.adapters.aws.session import make_account
from ec2backup.errors import CloudError
from tests.adapters.aws.conftest import REGION


def test_caller_identity_and_region_status(ec2: Boto3Ec2) -> None:
    account = Boto3Account(REGION, ec2.session)
    assert account.caller_identity()["account"] == "123456789012"
    assert account.region_status() == "opt-in-not-required"
    assert make_account("us-east-9").region_status() is None  # no such region anywhere


def test_caller_identity_without_credentials(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(CloudError) as err:
        make_account(REGION).caller_identity()
    assert "sts:GetCallerIdentity: no AWS credentials" in err.value.message
