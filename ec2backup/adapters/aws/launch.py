"""What a launch needs to know before anything is created: the image (resolved from an SSM
parameter, checked to exist), the architectures of images and instance types, the types
offered in a zone, and whether IAM lets this identity launch at all (a dry run)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ...errors import InvalidResourceStateError, ResourceNotFoundError
from .clients import Ec2Clients
from .convert import _batches
from .errors import _NOT_FOUND_CODES, _error_code, _one_line

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import FilterTypeDef

# DescribeInstanceTypes takes at most 100 types per call.
TYPES_BATCH = 100


def resolve_image(ec2: Ec2Clients, ami: str) -> str:
    """An ``ami-...`` id is checked to exist; ``/name`` or ``resolve:ssm:name`` is an SSM
    parameter holding the id. Resolving here (not in RunInstances) lets the run record a fixed
    AMI id, so a resumed launch with the same client token sends the same request."""
    if ami.startswith("resolve:ssm:") or ami.startswith("/"):
        name = ami.removeprefix("resolve:ssm:")
        with ec2.errors("ssm:GetParameter", {"parameter": name}):
            try:
                value = ec2.ssm_client().get_parameter(Name=name)["Parameter"]["Value"]
            except ClientError as exc:
                if _error_code(exc) in _NOT_FOUND_CODES:
                    raise ResourceNotFoundError(
                        "SSM parameter for the AMI not found",
                        run_id=ec2.run_id,
                        resources={"parameter": name, "region": ec2.region},
                        hint="check the parameter name and the region, e.g. "
                        "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/"
                        "hvm/ebs-gp3/ami-id",
                    ) from exc
                raise
        image_id = value.strip()
        if not image_id.startswith("ami-"):
            raise ResourceNotFoundError(
                f"SSM parameter holds {_one_line(image_id, 60)!r}, not an AMI id",
                run_id=ec2.run_id,
                resources={"parameter": name},
                hint="point the profile at a parameter whose value is an ami-... id",
            )
    else:
        image_id = ami
    describe_image(ec2, image_id)
    return image_id


def describe_image(ec2: Ec2Clients, image_id: str) -> dict[str, Any]:
    """The image, which must exist and be available."""
    resources = {"image": image_id, "region": ec2.region}
    with ec2.errors("ec2:DescribeImages", resources):
        images = ec2.client.describe_images(ImageIds=[image_id]).get("Images", [])
    if not images:
        raise ResourceNotFoundError(
            "AMI not found",
            run_id=ec2.run_id,
            resources=resources,
            hint="check the AMI id and the region (AMI ids are regional)",
        )
    state = images[0].get("State", "available")
    if state != "available":
        raise InvalidResourceStateError(
            f"AMI is {state}, not available",
            run_id=ec2.run_id,
            resources=resources,
            hint="choose an available AMI",
        )
    return dict(images[0])


def image_architecture(ec2: Ec2Clients, image_id: str) -> str:
    return str(describe_image(ec2, image_id).get("Architecture") or "x86_64")


def instance_type_architectures(
    ec2: Ec2Clients, instance_types: Sequence[str]
) -> dict[str, tuple[str, ...]]:
    """Each known type's supported architectures; types EC2 does not know are left out. A
    filter (not InstanceTypes) so that an unknown type is absent rather than an error."""
    found: dict[str, tuple[str, ...]] = {}
    for batch in _batches(instance_types, TYPES_BATCH):
        filters: list[FilterTypeDef] = [{"Name": "instance-type", "Values": batch}]
        with ec2.errors("ec2:DescribeInstanceTypes"):
            pages = ec2.client.get_paginator("describe_instance_types").paginate(Filters=filters)
            for page in pages:
                for info in page.get("InstanceTypes", ()):
                    archs = info.get("ProcessorInfo", {}).get("SupportedArchitectures", ())
                    found[info["InstanceType"]] = tuple(archs)
    return found


def offered_instance_types(
    ec2: Ec2Clients, availability_zone: str, only: Sequence[str] = ()
) -> set[str]:
    """The instance types offered in the zone: of ``only`` if given (a filter, so the answer
    is a few rows, not the zone's hundreds), else all of them."""
    filters: list[FilterTypeDef] = [{"Name": "location", "Values": [availability_zone]}]
    if only:
        filters.append({"Name": "instance-type", "Values": list(only)})
    with ec2.errors("ec2:DescribeInstanceTypeOfferings", {"availability_zone": availability_zone}):
        pages = ec2.client.get_paginator("describe_instance_type_offerings").paginate(
            LocationType="availability-zone", Filters=filters
        )
        return {o["InstanceType"] for page in pages for o in page["InstanceTypeOfferings"]}


def check_launch(ec2: Ec2Clients, params: dict[str, Any], resources: dict[str, str]) -> None:
    """RunInstances with DryRun: AWS answers DryRunOperation if this identity may make that
    launch (its IAM conditions included) and UnauthorizedOperation if not, creating nothing."""
    with ec2.errors("ec2:RunInstances", resources):
        try:
            # Retried like any read: a dry run makes nothing, so a retry cannot make it twice.
            ec2.client.run_instances(**params, DryRun=True)
        except ClientError as exc:
            if _error_code(exc) == "DryRunOperation":
                return
            raise
