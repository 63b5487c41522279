"""IAM mode: moto's own enforcement switched on, and EC2's denials answered as EC2 does.

moto checks the SigV4 signature (a known access key, else 401 ``AuthFailure``) and whether the
user's policies allow the action (actions and resources "*", not conditions). It answers a
denial ``AccessDenied``; EC2 answers 403 ``UnauthorizedOperation``, which is what ec2backup
must recognise.
"""

from __future__ import annotations

import json

from moto import settings as moto_settings
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.authorization import ActionAuthenticatorMixin
from moto.core.exceptions import AccessDeniedError
from moto.ec2.responses import EC2Response
from moto.iam.models import iam_backends

from .faults import CloudFault

ADMIN_USER = "sandbox-admin"
ADMIN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}


def enable_iam(region: str) -> tuple[str, str]:
    """Switch on moto's IAM enforcement (signatures and actions, not conditions) and return
    the access key of an administrator made for the sandbox. Call after the seeding: it goes
    to the backends directly, never through the checks."""
    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    iam.create_user(region_name=region, user_name=ADMIN_USER)
    iam.put_user_policy(ADMIN_USER, "administrator", json.dumps(ADMIN_POLICY))
    key = iam.create_access_key(ADMIN_USER)
    ActionAuthenticatorMixin.request_count = 0
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    return key.access_key_id, key.secret_access_key


def install_ec2_denials() -> None:
    """Answer moto's EC2 denials as EC2 does. The CloudFault raised is turned into the answer
    by the ``call_action`` wrapper that ``LocalCloud.install`` puts around every EC2 call."""
    original_authorize = EC2Response._authenticate_and_authorize_normal_action

    def authorize(response: EC2Response, resource: str = "*") -> None:
        try:
            original_authorize(response, resource)
        except AccessDeniedError as denied:  # what EC2 answers instead of AccessDenied
            raise CloudFault(
                403,
                "UnauthorizedOperation",
                f"You are not authorized to perform this operation. {denied.message}",
            ) from None

    setattr(EC2Response, "_authenticate_and_authorize_normal_action", authorize)  # noqa: B010
