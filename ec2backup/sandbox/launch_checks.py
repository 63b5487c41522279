"""What RunInstances refuses before anything is made: the capacity and instance limit faults of
the settings (``no_capacity``, ``instance_limit``), answered with EC2's codes and messages.
Called after the ClientToken check, so a replay of an earlier launch still answers."""

from __future__ import annotations

import contextlib

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses import EC2Response

from .faults import CloudFault
from .settings import CloudSettings

# Counted by instance_limit: what still holds capacity.
LIVE_STATES = ("pending", "running", "stopping", "shutting-down")


def check_capacity(settings: CloudSettings, response: EC2Response) -> None:
    """Refuse a launch that ``no_capacity`` or ``instance_limit`` forbid, as EC2 words it."""
    backend = response.ec2_backend
    instance_type = response._get_param("InstanceType") or "m1.small"
    zone = response._get_param("Placement.AvailabilityZone")
    subnet_id = response._get_param("SubnetId")
    if not zone and subnet_id:
        with contextlib.suppress(EC2ClientError):  # gone meanwhile
            zone = backend.get_subnet(subnet_id).availability_zone
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
