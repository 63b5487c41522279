"""What the modules ``Boto3Ec2`` delegates to (``launch.py``, ``groups.py``) need of it: its
clients, its region and run id, and its error translation. A protocol, so those modules do
not import ``client.py``."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mypy_boto3_ec2.client import EC2Client
    from mypy_boto3_ssm.client import SSMClient


class Ec2Clients(Protocol):
    region: str
    run_id: str | None
    poll_interval: float

    @property
    def client(self) -> EC2Client:
        """Retried by botocore (standard mode)."""
        ...

    @property
    def client_once(self) -> EC2Client:
        """Never retried by botocore: for calls without a client token."""
        ...

    def ssm_client(self) -> SSMClient: ...

    def errors(
        self, action: str, resources: Mapping[str, str] | None = None
    ) -> AbstractContextManager[None]:
        """Translate botocore exceptions raised inside the block (and only those)."""
        ...
