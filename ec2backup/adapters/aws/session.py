"""One boto3 session and one set of clients per region and AWS environment in a process."""

from __future__ import annotations

import copy
import os

import boto3

from .account import Boto3Account
from .client import Boto3Ec2
from .ebs import Boto3SnapshotBlocks

# One boto3 session and one set of clients per region and AWS environment, shared by every
# ``Boto3Ec2`` this process makes: a new session loads botocore's EC2 model again (~0.15 s), a
# new client builds its methods again (~0.03-0.1 s), and a run makes several (the volume
# check before the run is recorded, the run's own, reap's and doctor's).
_EC2S: dict[tuple[str, frozenset[tuple[str, str]]], Boto3Ec2] = {}


def make_ec2(region: str, run_id: str | None = None) -> Boto3Ec2:
    key = (region, frozenset((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    base = _EC2S.get(key)
    if base is None:
        from .botomodel import botocore_session

        session = boto3.session.Session(botocore_session=botocore_session(), region_name=region)
        base = _EC2S[key] = Boto3Ec2(region, session=session)
    ec2 = copy.copy(base)  # its own run id on errors; the session and clients are shared
    ec2.run_id = run_id
    return ec2


def make_account(region: str) -> Boto3Account:
    """The account probes, on the session ``make_ec2`` shares."""
    return Boto3Account(region, make_ec2(region).session)


def make_blocks(region: str, run_id: str | None = None) -> Boto3SnapshotBlocks:
    """The EBS direct APIs, on the session ``make_ec2`` shares."""
    return Boto3SnapshotBlocks(region, make_ec2(region).session, run_id)
