"""Every botocore exception turned into the classes of ``errors.py``, in one place, with the
resource ids and a hint that says the fix."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    TokenRetrievalError,
)

from ...errors import (
    CapacityError,
    CloudError,
    InvalidResourceStateError,
    ResourceNotFoundError,
    TransientCloudError,
)

if TYPE_CHECKING:
    pass


_MAX_AWS_MESSAGE = 240
# "... is not authorized to perform: ec2:RunInstances on resource: arn:...:volume/* because ..."
_REFUSED_RESOURCE = re.compile(r"on resource: (\S+)")

_CREDENTIALS_HINT = (
    "refresh or configure AWS credentials (aws configure, aws sso login, AWS_PROFILE, or "
    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and check that the system clock is correct"
)
_CREDENTIAL_CODES = frozenset(
    {
        "AuthFailure",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
    }
)
_THROTTLE_CODES = frozenset(
    {"RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottledException"}
)
_SERVER_CODES = frozenset({"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable"})
_STATE_CODES = frozenset(
    {"IncorrectState", "IncorrectInstanceState", "VolumeInUse", "InvalidVolume.ZoneMismatch"}
)
_NOT_FOUND_CODES = frozenset(
    {"ParameterNotFound", "ParameterVersionNotFound", "ResourceNotFoundException"}
)

# code -> (class, what went wrong, how to fix it)
_KNOWN_CODES: dict[str, tuple[type[CloudError], str, str]] = {
    "IdempotentParameterMismatch": (
        CloudError,
        "the launch token was already used with different parameters",
        "the run's launch settings changed since its first attempt: restore them, or abort "
        "the run and start a new one",
    ),
    "InsufficientInstanceCapacity": (
        CapacityError,
        "AWS has no capacity for this instance type in this availability zone",
        "retry later or choose another instance type (the zone is fixed by the volume)",
    ),
    "InstanceLimitExceeded": (
        CloudError,
        "the account's instance quota is reached",
        "terminate unused instances or request a quota increase in Service Quotas",
    ),
    "VcpuLimitExceeded": (
        CloudError,
        "the account's vCPU quota is reached",
        "terminate unused instances, choose a smaller type, or request a quota increase",
    ),
    "Unsupported": (
        CapacityError,
        "the request is not supported here (often: instance type not offered in this zone)",
        "choose an instance type offered in the volume's zone "
        "(aws ec2 describe-instance-type-offerings --location-type availability-zone)",
    ),
    "InvalidVolume.ZoneMismatch": (
        InvalidResourceStateError,
        "the volume and the instance are in different availability zones",
        "launch the instance in the volume's availability zone",
    ),
    "VolumeInUse": (
        InvalidResourceStateError,
        "the volume is attached to another instance",
        "detach it from that instance (or terminate the instance) first",
    ),
    "VolumeLimitExceeded": (
        CloudError,
        "the account's EBS storage quota is reached",
        "delete unused volumes or request a quota increase",
    ),
    "SnapshotLimitExceeded": (
        CloudError,
        "the account's snapshot quota is reached",
        "delete old snapshots (ec2backup prune) or request a quota increase",
    ),
    "InvalidSnapshot.InUse": (
        InvalidResourceStateError,
        "the snapshot is in use (an AMI is registered from it, or it is being copied)",
        "deregister the AMI that uses it, or wait for the copy, then prune again",
    ),
}


def _one_line(text: str, limit: int = _MAX_AWS_MESSAGE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def translate(
    exc: ClientError | BotoCoreError,
    action: str,
    resources: Mapping[str, str],
    run_id: str | None,
) -> CloudError:
    """The ``errors.py`` class for a botocore exception raised by ``action``."""
    res = dict(resources)

    def err(cls: type[CloudError], message: str, hint: str) -> CloudError:
        return cls(message, run_id=run_id, resources=res, hint=hint)

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return err(CloudError, f"{action}: no AWS credentials found", _CREDENTIALS_HINT)
    if isinstance(exc, TokenRetrievalError | ProfileNotFound):
        return err(CloudError, f"{action}: {_one_line(str(exc))}", _CREDENTIALS_HINT)
    if isinstance(exc, EndpointConnectionError):
        return err(
            CloudError,
            f"{action}: cannot reach the AWS endpoint: {_one_line(str(exc))}",
            "check the network, the region and AWS_ENDPOINT_URL, then resume the run",
        )
    if isinstance(exc, BotoCoreError):
        return err(
            CloudError,
            f"{action}: {type(exc).__name__}: {_one_line(str(exc))}",
            "check the network and the AWS configuration, then resume the run",
        )

    code = _error_code(exc)
    aws_message = _one_line(str(exc.response.get("Error", {}).get("Message", "")))
    detail = f"({code}: {aws_message})" if aws_message else f"({code})"
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)

    if code in _KNOWN_CODES:
        cls, what, hint = _KNOWN_CODES[code]
        return err(cls, f"{action}: {what} {detail}", hint)
    if code in _CREDENTIAL_CODES:
        return err(
            CloudError, f"{action}: AWS rejected the credentials {detail}", _CREDENTIALS_HINT
        )
    if code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException"):
        # The EC2 message carries a long encoded blob: keep it out of the one-line message,
        # but name the resource AWS refused (one call authorizes several).
        refused = _REFUSED_RESOURCE.search(str(exc.response.get("Error", {}).get("Message", "")))
        on = f" on {refused.group(1)}" if refused else ""
        return err(
            CloudError,
            f"not authorized to call {action}{on} ({code})",
            f"grant {action} to this IAM identity (details: aws sts "
            "decode-authorization-message --encoded-message ...)",
        )
    if code in _THROTTLE_CODES:
        return err(
            TransientCloudError,
            f"{action}: AWS kept throttling the requests after retries {detail}",
            "wait a minute and resume the run; something else may be calling EC2 heavily",
        )
    if code in _SERVER_CODES or status >= 500:
        return err(
            TransientCloudError,
            f"{action}: AWS service error {detail}",
            "a transient AWS-side failure: resume the run later",
        )
    if code.startswith("InvalidAMIID."):
        return err(
            ResourceNotFoundError,
            f"{action}: AMI not found {detail}",
            "check the AMI id and the region (AMI ids are regional), or use an SSM "
            "parameter such as /aws/service/canonical/...",
        )
    if code.endswith((".NotFound", ".Malformed")) or code in _NOT_FOUND_CODES:
        return err(
            ResourceNotFoundError,
            f"{action}: resource not found {detail}",
            "check the id and the region; it may have been deleted",
        )
    if code in _STATE_CODES:
        return err(
            InvalidResourceStateError,
            f"{action}: resource is not in a state that allows this {detail}",
            "check the resource in the EC2 console; resume once it is settled",
        )
    return err(
        CloudError,
        f"{action} failed {detail}",
        "check the profile settings passed to this call",
    )


@contextmanager
def translated(
    action: str, resources: Mapping[str, str] | None, run_id: str | None
) -> Iterator[None]:
    """Translate botocore exceptions raised inside the block (and only those)."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, action, resources or {}, run_id) from exc
