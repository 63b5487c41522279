"""An instance's console output: where cloud-init prints the instance's host keys."""

from __future__ import annotations

from botocore.exceptions import ClientError

from .clients import Ec2Clients
from .errors import _error_code

# What instance types without a live serial console answer to ``Latest=True``.
_NO_LATEST = (
    "UnsupportedOperation",
    "Unsupported",
    "InvalidParameter",
    "InvalidParameterValue",
    "InvalidParameterCombination",
)


def console_output(ec2: Ec2Clients, instance_id: str) -> str:
    """The console text, decoded ('' if none yet). ``Latest`` gives the live serial console
    on Nitro; other instance types reject it and get the buffered output."""
    with ec2.errors("ec2:GetConsoleOutput", {"instance": instance_id}):
        try:
            response = ec2.client.get_console_output(InstanceId=instance_id, Latest=True)
        except ClientError as exc:
            if _error_code(exc) not in _NO_LATEST:
                raise
            response = ec2.client.get_console_output(InstanceId=instance_id)
    # botocore already base64-decodes Output (handlers.decode_console_output).
    return response.get("Output") or ""
