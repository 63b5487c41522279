"""What RunInstances refuses before anything is made, answered with EC2's codes and messages:
an image whose architecture the instance type does not support (``InvalidParameterValue``), a
type not offered in the zone (``Unsupported``), both from moto's instance-type data (AWS's
DescribeInstanceTypes and DescribeInstanceTypeOfferings, which moto also serves); then the
capacity and instance limit faults of the settings (``no_capacity``, ``instance_limit``).
Called after the ClientToken check, so a replay of an earlier launch still answers."""

from __future__ import annotations

import contextlib

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.instance_types import INSTANCE_TYPE_OFFERINGS, INSTANCE_TYPES
from moto.ec2.responses import EC2Response

from .faults import CloudFault
from .settings import CloudSettings

# Counted by instance_limit: what still holds capacity.
LIVE_STATES = ("pending", "running", "stopping", "shutting-down")


def _zone_of(response: EC2Response) -> str | None:
    zone = response._get_param("Placement.AvailabilityZone")
    nics = response._get_param("NetworkInterfaces") or [{}]
    subnet_id = response._get_param("SubnetId") or nics[0].get("SubnetId")
    if not zone and subnet_id:
        with contextlib.suppress(EC2ClientError):  # moto answers an unknown subnet itself
            zone = response.ec2_backend.get_subnet(subnet_id).availability_zone
    return str(zone) if zone else None


def architectures(instance_type: str) -> list[str]:
    info = INSTANCE_TYPES.get(instance_type) or {}
    return list(info.get("ProcessorInfo", {}).get("SupportedArchitectures", []))


def zones_offering(region: str, instance_type: str) -> list[str]:
    offerings = INSTANCE_TYPE_OFFERINGS["availability-zone"].get(region, [])
    return sorted(o["Location"] for o in offerings if o["InstanceType"] == instance_type)


def check_image_and_type(response: EC2Response) -> None:
    """Refuse an image the type cannot run, and a type the zone does not offer."""
    backend = response.ec2_backend
    instance_type = response._get_param("InstanceType") or "m1.small"
    image = backend.amis.get(response._get_param("ImageId"))
    supported = architectures(instance_type)
    if image is not None and supported and image.architecture not in supported:
        raise EC2ClientError(
            "InvalidParameterValue",
            f"The architecture '{supported[0]}' of the specified instance type does not match"
            f" the architecture '{image.architecture}' of the specified AMI. Specify an"
            " instance type and an AMI that have matching architectures, and try again. You"
            " can use 'describe-instance-types' or 'describe-images' to discover the"
            " architecture of the instance type or AMI.",
        )
    zone = _zone_of(response) or f"{backend.region_name}a"
    offered = zones_offering(backend.region_name, instance_type)
    if supported and zone not in offered:
        raise EC2ClientError(
            "Unsupported",
            f"Your requested instance type ({instance_type}) is not supported in your"
            f" requested Availability Zone ({zone}). Please retry your request by not"
            f" specifying an Availability Zone or choosing {', '.join(offered)}.",
        )


def check_capacity(settings: CloudSettings, response: EC2Response) -> None:
    """Refuse a launch that ``no_capacity`` or ``instance_limit`` forbid, as EC2 words it."""
    backend = response.ec2_backend
    instance_type = response._get_param("InstanceType") or "m1.small"
    zone = _zone_of(response)
    if zone and settings.no_capacity_for(instance_type, zone):
        others = [
            z.name
            for z in backend.describe_availability_zones()
            if z.name != zone and not settings.no_capacity_for(instance_type, z.name)
        ]
        message = (
            f"We currently do not have sufficient {instance_type} capacity in the"
            f" Availability Zone you requested ({zone}). Our system will be working on"
            " provisioning additional capacity."
        )
        if others:
            message += (
                f" You can currently get {instance_type} capacity by not specifying an"
                f" Availability Zone in your request or choosing {', '.join(others)}."
            )
        raise CloudFault(500, "InsufficientInstanceCapacity", message)
    if not zone and instance_type in settings.no_capacity:
        raise CloudFault(500, "InsufficientInstanceCapacity", "Insufficient capacity.")
    if settings.instance_limit is not None:
        live = sum(1 for i in backend.all_instances() if i.state in LIVE_STATES)
        wanted = live + int(response._get_param("MinCount") or 1)
        if wanted > settings.instance_limit:
            raise CloudFault(
                400,
                "InstanceLimitExceeded",
                f"You have requested more instances ({wanted}) than your current instance"
                f" limit of {settings.instance_limit} allows for the specified instance"
                " type. Please visit http://aws.amazon.com/contact-us/ec2-request to"
                " request an adjustment to this limit.",
            )
