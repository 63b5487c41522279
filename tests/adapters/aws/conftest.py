"""Fixtures of the boto3 adapter's tests: in-process moto with fake credentials."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from ec2backup.adapters.aws.botomodel import botocore_session
from ec2backup.adapters.aws.client import Boto3Ec2

REGION = "us-east-1"
RUN = "run-test-1"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def moto_aws(aws_env: None) -> Iterator[None]:
    from ec2backup.sandbox import moto_fixes

    moto_fixes.install()  # as the local cloud runs moto: a second terminate is harmless
    with mock_aws():
        yield


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def ec2(moto_aws: None, model_cache: Path) -> Boto3Ec2:
    # The session make_ec2 uses (the trimmed models, or botocore's own with
    # EC2BACKUP_NO_FASTPATHS): every test here also proves it sufficient.
    session = boto3.session.Session(
        botocore_session=botocore_session(model_cache), region_name=REGION
    )
    return Boto3Ec2(REGION, session=session, poll_interval=0.001, run_id=RUN)
