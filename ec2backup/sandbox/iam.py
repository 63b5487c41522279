"""IAM mode: every request signed by a known IAM key, and EC2, EBS direct API and SSM calls
authorized as AWS authorizes them, resource by resource and with conditions.

moto checks the SigV4 signature (a known access key, else 401 ``AuthFailure``); what it would
then check itself (actions against the resource "*", no conditions) is replaced for EC2, EBS
and SSM:
``iam_requests.authorizations`` lists every (action, resource ARN) pair AWS evaluates for the
call, with the condition keys the Service Authorization Reference lists for each, and
``iam_policy.decide`` evaluates the user's policies for each pair. One pair denied refuses the
whole call, worded as AWS words it: EC2 answers 403 ``UnauthorizedOperation`` ("You are not
authorized to perform this operation. User: ... is not authorized to perform: ec2:RunInstances
on resource: arn:...:volume/* because no identity-based policy allows the ec2:RunInstances
action. Encoded authorization failure message: ..."), SSM ``AccessDeniedException`` (400) and
the EBS direct APIs ``AccessDeniedException`` (403, "User: ... is not authorized to perform:
ebs:ListSnapshotBlocks on resource: arn:aws:ec2:...::snapshot/snap-... because ...", answered
by ``ebs.py``). EBS snapshots are EC2 snapshots: their tags are read from the EC2 backend.
``sts:GetCallerIdentity`` needs no permission (as on AWS); IAM calls keep moto's own check.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from moto import settings as moto_settings
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.authorization import ActionAuthenticatorMixin
from moto.core.exceptions import AccessDeniedError
from moto.ec2.models import ec2_backends
from moto.iam.access_control import IAMPolicy, IAMRequest
from moto.iam.models import iam_backends

from .faults import CloudFault
from .iam_policy import Decision, PolicyError, Request, decide
from .iam_requests import Call, authorizations, principal_keys

log = logging.getLogger("ec2backup.sandbox")

ADMIN_USER = "sandbox-admin"
ADMIN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}
# Services whose calls are authorized per resource here; the others keep moto's check.
EVALUATED = ("ec2", "ebs", "ssm")


def enable_iam(region: str) -> tuple[str, str]:
    """Switch on IAM enforcement and return the access key of an administrator made for the
    sandbox. Call after the seeding: it goes to the backends directly, never through the
    checks."""
    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    iam.create_user(region_name=region, user_name=ADMIN_USER)
    iam.put_user_policy(ADMIN_USER, "administrator", json.dumps(ADMIN_POLICY))
    key = iam.create_access_key(ADMIN_USER)
    ActionAuthenticatorMixin.request_count = 0
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    return key.access_key_id, key.secret_access_key


class Denied(Exception):
    def __init__(self, request: Request, decision: Decision, user_arn: str) -> None:
        self.request = request
        self.decision = decision
        self.user_arn = user_arn
        because = (
            "with an explicit deny in an identity-based policy"
            if decision is Decision.EXPLICIT_DENY
            else f"because no identity-based policy allows the {request.action} action"
        )
        self.reason = (
            f"User: {user_arn} is not authorized to perform: {request.action} on resource:"
            f" {request.resource} {because}"
        )
        super().__init__(self.reason)

    def encoded(self) -> str:
        """What ``sts decode-authorization-message`` would show, encoded (it is not: the
        sandbox has no such call, but the message reads as AWS's does)."""
        detail = {
            "allowed": False,
            "explicitDeny": self.decision is Decision.EXPLICIT_DENY,
            "context": {
                "principal": {"arn": self.user_arn},
                "action": self.request.action,
                "resource": self.request.resource,
                "conditions": {k: v for k, v in sorted(self.request.context.items())},
            },
        }
        return base64.urlsafe_b64encode(json.dumps(detail, default=list).encode()).decode()


def _user_policies(iam_request: IAMRequest) -> list[dict[str, Any]]:
    return [IAMPolicy(p)._policy_json for p in iam_request._access_key.collect_policies()]


def authorize_call(response: Any, service: str, iam_request: IAMRequest) -> None:
    """Raise ``Denied`` unless the caller's policies allow every authorization of the call."""
    access_key = iam_request._access_key
    user_name = getattr(access_key, "_owner_user_name", "")
    account = response.current_account
    region = response.region
    # The EBS direct APIs read EC2's snapshots (and their tags).
    backend = ec2_backends[account][region] if service in ("ec2", "ebs") else None
    user_arn = access_key.arn
    call = Call(
        service=service,
        action=response._get_action(),
        param=response._get_param,
        backend=backend,
        region=region,
        account=account,
        principal=principal_keys(user_name, f"AIDA{user_name.upper()}", account, region),
    )
    policies = _user_policies(iam_request)
    for request in authorizations(call):
        try:
            decision = decide(policies, request)
        except PolicyError as e:
            log.warning("IAM: %s; denying", e)
            decision = Decision.IMPLICIT_DENY
        if decision is not Decision.ALLOWED:
            log.info("IAM: denied %s on %s (%s)", request.action, request.resource, decision.value)
            raise Denied(request, decision, user_arn)


def install() -> None:
    """Put the per-resource authorization in moto's place, for every service's responses."""
    original = ActionAuthenticatorMixin._authenticate_and_authorize_normal_action

    def authenticate_and_authorize(self: Any, resource: str = "*") -> None:
        if ActionAuthenticatorMixin.request_count < moto_settings.INITIAL_NO_AUTH_ACTION_COUNT:
            original(self, resource)  # IAM is not switched on (yet)
            return
        if self.headers.get("X-Amz-Target") in ActionAuthenticatorMixin.PUBLIC_OPERATIONS:
            return
        iam_request = _iam_request(self)
        iam_request.check_signature()
        service = iam_request._service
        if service == "sts" and self._get_action() == "GetCallerIdentity":
            return  # AWS: "No permissions are required to perform this operation."
        if service not in EVALUATED:
            iam_request.check_action_permitted(resource)
            return
        try:
            authorize_call(self, service, iam_request)
        except Denied as denied:
            if service == "ec2":
                raise CloudFault(
                    403,
                    "UnauthorizedOperation",
                    "You are not authorized to perform this operation. "
                    f"{denied.reason}. Encoded authorization failure message: "
                    f"{denied.encoded()}",
                ) from None
            error = AccessDeniedError(denied.user_arn, denied.request.action)
            if service == "ebs":
                error.message = denied.reason  # ebs.py answers it in the service's protocol
                raise error from None
            error.code = 400  # SSM's JSON protocol answers its denials with 400
            error.description = json.dumps(
                {"__type": "AccessDeniedException", "message": denied.reason}
            )
            raise error from None

    setattr(  # noqa: B010 (mypy rejects assigning to a method)
        ActionAuthenticatorMixin,
        "_authenticate_and_authorize_normal_action",
        authenticate_and_authorize,
    )


def _iam_request(response: Any) -> IAMRequest:
    from urllib.parse import urlparse

    parsed_url = urlparse(response.uri)
    path = response.raw_path + (f"?{parsed_url.query}" if parsed_url.query else "")
    return IAMRequest(
        account_id=response.current_account,
        method=response.method,
        path=path,
        data=response.data,
        body=response.raw_body,
        headers=response.headers,
        action=response._get_action(),
    )
