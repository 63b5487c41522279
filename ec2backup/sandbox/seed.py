"""What a new sandbox account holds (``server.py`` keeps moto's ~200 default AMIs out): Ubuntu
24.04 AMIs owned by Canonical, one per architecture (amd64 = ``x86_64``, ``arm64``), the SSM
public parameters that name them, as ec2backup looks them up, and, as in a new AWS account,
an internet gateway for the default VPC with the 0.0.0.0/0 route to it in its main route table
(moto's default VPC has none)."""

from __future__ import annotations

from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.utils import utcnow
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import Ami
from moto.ec2.utils import random_ami_id
from moto.ssm.models import Parameter, ssm_backends

CANONICAL_OWNER_ID = "099720109477"
# Ubuntu's name for the architecture -> EC2's.
ARCHITECTURES = {"amd64": "x86_64", "arm64": "arm64"}


def ubuntu_parameter(arch: str) -> str:
    return f"/aws/service/canonical/ubuntu/server/24.04/stable/current/{arch}/hvm/ebs-gp3/ami-id"


UBUNTU_AMI_PARAMETER = ubuntu_parameter("amd64")


def seed(region: str) -> dict[str, str]:
    """Register the Ubuntu AMIs and the SSM public parameters that name them; return the AMI
    ids by EC2 architecture (``x86_64``, ``arm64``)."""
    backend = ec2_backends[DEFAULT_ACCOUNT_ID][region]
    ssm = ssm_backends[DEFAULT_ACCOUNT_ID][region]
    _default_vpc_internet(backend)
    ids = {}
    for arch, ec2_arch in ARCHITECTURES.items():
        ami = Ami(
            backend,
            random_ami_id(),
            name=f"ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-{arch}-server-20251101",
            description=f"Canonical, Ubuntu, 24.04, {arch} noble image",
            owner_id=CANONICAL_OWNER_ID,
            public=True,
            virtualization_type="hvm",
            architecture=ec2_arch,
            hypervisor="xen",
            root_device_type="ebs",
            root_device_name="/dev/sda1",
            region_name=f"{region}a",
        )
        backend.amis[ami.id] = ami
        name = ubuntu_parameter(arch)
        ssm._parameters[name].append(
            Parameter(  # type: ignore[abstract]
                account_id=DEFAULT_ACCOUNT_ID,
                name=name,
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
        ids[ec2_arch] = ami.id
    return ids


def _default_vpc_internet(backend: Any) -> None:
    vpc = backend.get_default_vpc()
    if vpc is None:
        return
    igw = backend.create_internet_gateway()
    backend.attach_internet_gateway(igw.id, vpc.id)
    for table in backend.route_tables.values():
        if table.vpc_id == vpc.id and table.main_association_id:
            backend.create_route(table.id, "0.0.0.0/0", gateway_id=igw.id)
