"""ClientToken idempotency, which moto lacks: a call repeated with the same token gets what the
first call made (also after the instance terminated); the same token with other parameters is
refused with ``IdempotentParameterMismatch``. Used by RunInstances and CreateVolume, under
``CloudState.lock`` (the hooks' lock)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses import EC2Response


@dataclass(frozen=True)
class TokenUse:
    fingerprint: str
    resource_id: str  # reservation id for RunInstances, volume id for CreateVolume


class ClientTokens:
    def __init__(self) -> None:
        # (account, region, action, token) -> its first use; kept for the server's life, as a
        # retry may come after the instance terminated.
        self._uses: dict[tuple[str, str, str, str], TokenUse] = {}

    def check(self, response: EC2Response, action: str) -> str | None:
        """The id made by an earlier call with this token, or None if the call is new."""
        key = _token_key(response, action)
        known = self._uses.get(key) if key else None
        if known is None:
            return None
        if known.fingerprint != _fingerprint(response):
            raise EC2ClientError(
                "IdempotentParameterMismatch",
                "Arguments on this idempotent request are inconsistent with arguments used in"
                " previous request(s).",
            )
        return known.resource_id

    def remember(self, response: EC2Response, action: str, resource_id: str) -> None:
        key = _token_key(response, action)
        if key is not None:
            self._uses[key] = TokenUse(_fingerprint(response), resource_id)


def _token_key(response: EC2Response, action: str) -> tuple[str, str, str, str] | None:
    token = response._get_param("ClientToken")
    if not token:
        return None
    backend = response.ec2_backend
    return (backend.account_id, backend.region_name, action, str(token))


def _fingerprint(response: EC2Response) -> str:
    params = {k: v for k, v in dict(response.params).items() if k != "ClientToken"}
    return json.dumps(params, sort_keys=True, default=str)
