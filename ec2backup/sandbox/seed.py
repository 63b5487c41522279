"""What a new sandbox account holds (``server.py`` keeps moto's ~200 default AMIs out): an Ubuntu
24.04 AMI owned by Canonical, and the SSM public parameter that names it, as ec2backup looks it
up."""

from __future__ import annotations

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.utils import utcnow
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import Ami
from moto.ec2.utils import random_ami_id
from moto.ssm.models import Parameter, ssm_backends

UBUNTU_AMI_PARAMETER = (
    "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"
)
UBUNTU_AMI_NAME = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20251101"
CANONICAL_OWNER_ID = "099720109477"


def seed(region: str) -> str:
    """Register the Ubuntu AMI and the SSM public parameter that names it; return its id."""
    backend = ec2_backends[DEFAULT_ACCOUNT_ID][region]
    ami = Ami(
        backend,
        random_ami_id(),
        name=UBUNTU_AMI_NAME,
        description="Canonical, Ubuntu, 24.04, amd64 noble image",
        owner_id=CANONICAL_OWNER_ID,
        public=True,
        virtualization_type="hvm",
        architecture="x86_64",
        hypervisor="xen",
        root_device_type="ebs",
        root_device_name="/dev/sda1",
        region_name=f"{region}a",
    )
    backend.amis[ami.id] = ami
    ssm = ssm_backends[DEFAULT_ACCOUNT_ID][region]
    ssm._parameters[UBUNTU_AMI_PARAMETER].append(
        Parameter(  # type: ignore[abstract]
            account_id=DEFAULT_ACCOUNT_ID,
            name=UBUNTU_AMI_PARAMETER,
            value=ami.id,
            parameter_type="String",
            description=None,
            allowed_pattern=None,
            keyid=None,
            last_modified_date=utcnow(),
            version=1,
            data_type="aws:ec2:image",
        )
    )
    return ami.id
