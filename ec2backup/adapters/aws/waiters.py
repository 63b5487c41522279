"""Waits on botocore's waiter machinery with a sub-second ``Delay`` (botocore passes it straight
to ``time.sleep``, so a float works) and a wall-clock deadline, so ``timeout`` means seconds
even when calls are slow."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from botocore import xform_name
from botocore.exceptions import (
    ClientError,
    WaiterError,
)
from botocore.waiter import NormalizedOperationMethod, SingleWaiterConfig, Waiter, WaiterModel

from ...errors import (
    InvalidResourceStateError,
    WaitTimeoutError,
)
from .errors import _one_line, translated

if TYPE_CHECKING:
    pass


# How long EC2 may answer NotFound for a resource it has just created (its API is eventually
# consistent: usually seconds; the wait gives it a minute).
EVENTUAL_CONSISTENCY_SECONDS = 60.0

_INSTANCE_FAILED_STATES = ("shutting-down", "terminated", "stopping", "stopped")
_INSTANCE_GONE_STATES = ("shutting-down", "terminated")

# Waiters botocore does not ship in the form needed here:
# - running only counts once the public IP is there (the caller connects to it next);
# - terminated also counts when EC2 has forgotten the instance (NotFound), which the stock
#   waiter treats as an error.
_WAITERS = WaiterModel(
    {
        "version": 2,
        "waiters": {
            "InstanceRunningWithPublicIp": {
                "operation": "DescribeInstances",
                "delay": 1,
                "maxAttempts": 1,
                "acceptors": [
                    {
                        "state": "success",
                        "matcher": "path",
                        "argument": "length(Reservations[].Instances[?State.Name == 'running'"
                        " && PublicIpAddress][]) > `0`",
                        "expected": True,
                    },
                    *(
                        {
                            "state": "failure",
                            "matcher": "pathAny",
                            "argument": "Reservations[].Instances[].State.Name",
                            "expected": state,
                        }
                        for state in _INSTANCE_FAILED_STATES
                    ),
                    # RunInstances is eventually consistent: a new id may be unknown briefly.
                    {
                        "state": "retry",
                        "matcher": "error",
                        "expected": "InvalidInstanceID.NotFound",
                    },
                ],
            },
            # botocore's VolumeAvailable, plus: a new volume's id may be unknown briefly.
            "VolumeAvailable": {
                "operation": "DescribeVolumes",
                "delay": 1,
                "maxAttempts": 1,
                "acceptors": [
                    {
                        "state": "success",
                        "matcher": "pathAll",
                        "argument": "Volumes[].State",
                        "expected": "available",
                    },
                    {
                        "state": "failure",
                        "matcher": "pathAny",
                        "argument": "Volumes[].State",
                        "expected": "deleted",
                    },
                    {"state": "retry", "matcher": "error", "expected": "InvalidVolume.NotFound"},
                ],
            },
            "InstanceGone": {
                "operation": "DescribeInstances",
                "delay": 1,
                "maxAttempts": 1,
                "acceptors": [
                    {
                        "state": "success",
                        "matcher": "pathAll",
                        "argument": "Reservations[].Instances[].State.Name",
                        "expected": "terminated",
                    },
                    {
                        "state": "success",
                        "matcher": "error",
                        "expected": "InvalidInstanceID.NotFound",
                    },
                ],
            },
        },
    }
)


def _attached_waiter(instance_id: str) -> SingleWaiterConfig:
    """A DescribeVolumes waiter for "attached to ``instance_id``": the stock ``volume_in_use``
    only checks the volume state, while the attachment may still be ``attaching``."""
    iid = instance_id.replace("\\", "\\\\").replace("'", "\\'")  # JMESPath raw string literal
    ours = f"Volumes[].Attachments[?InstanceId == '{iid}'][]"
    others = f"Volumes[].Attachments[?InstanceId != '{iid}' && State != 'detached'][]"
    model = WaiterModel(
        {
            "version": 2,
            "waiters": {
                "VolumeAttachedTo": {
                    "operation": "DescribeVolumes",
                    "delay": 1,
                    "maxAttempts": 1,
                    "acceptors": [
                        {
                            "state": "success",
                            "matcher": "pathAny",
                            "argument": f"{ours}.State",
                            "expected": "attached",
                        },
                        {
                            "state": "failure",
                            "matcher": "pathAny",
                            "argument": f"{ours}.State",
                            "expected": "detaching",
                        },
                        {
                            "state": "failure",
                            "matcher": "path",
                            "argument": f"length({others}) > `0`",
                            "expected": True,
                        },
                        *(
                            {
                                "state": "failure",
                                "matcher": "pathAny",
                                "argument": "Volumes[].State",
                                "expected": state,
                            }
                            for state in ("deleting", "deleted", "error")
                        ),
                        # A new volume's id may be unknown briefly (eventual consistency).
                        {
                            "state": "retry",
                            "matcher": "error",
                            "expected": "InvalidVolume.NotFound",
                        },
                    ],
                }
            },
        }
    )
    return model.get_waiter("VolumeAttachedTo")


def while_not_found(
    call: Callable[[], Any],
    codes: tuple[str, ...],
    poll_interval: float,
    timeout: float = EVENTUAL_CONSISTENCY_SECONDS,
) -> Any:
    """``call()``, again while it answers one of the NotFound ``codes`` for a resource this
    process has just created, up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in codes:
                raise
            if time.monotonic() >= deadline:
                raise
        time.sleep(poll_interval)


class _DeadlineReached(Exception):
    """Raised from inside a waiter's operation to stop it at the wall-clock deadline."""


def _matched_state(config: SingleWaiterConfig, response: Mapping[str, Any]) -> str | None:
    for acceptor in config.acceptors:
        if acceptor.matcher_func(response):
            return acceptor.state
    return None


def wait(
    client: Any,
    config: SingleWaiterConfig,
    params: Mapping[str, Any],
    timeout: float,
    *,
    action: str,
    resources: Mapping[str, str],
    observe: Callable[[Mapping[str, Any]], str],
    timeout_hint: str,
    after_poll: Callable[[Mapping[str, Any]], None] | None = None,
    poll_interval: float,
    run_id: str | None,
) -> dict[str, Any]:
    """Run a botocore waiter polling every ``poll_interval`` seconds until ``timeout``;
    return the last (matching) response."""
    operation = NormalizedOperationMethod(getattr(client, xform_name(config.operation)))
    deadline = time.monotonic() + max(timeout, 0.0)
    last: list[dict[str, Any]] = []

    def poll(**kwargs: Any) -> Any:
        # MaxAttempts alone ignores how long each call takes; the deadline keeps
        # ``timeout`` in seconds. The first call always happens.
        if last and time.monotonic() >= deadline:
            raise _DeadlineReached
        response = operation(**kwargs)
        last[:] = [response]
        # Only consulted while the acceptors would keep waiting.
        if after_poll is not None and _matched_state(config, response) is None:
            after_poll(response)
        return response

    max_attempts = max(1, math.ceil(max(timeout, 0.0) / poll_interval) + 1)
    waiter = Waiter(action, config, poll)  # type: ignore[arg-type]  # stub says Mapping
    res = dict(resources)
    with translated(f"ec2:{config.operation}", res, run_id):
        try:
            waiter.wait(
                **params,
                # Delay goes straight to time.sleep(): a float is fine at runtime, even
                # though the stubs and docs call it an integer.
                WaiterConfig={"Delay": poll_interval, "MaxAttempts": max_attempts},
            )
            return last[-1]
        except (WaiterError, _DeadlineReached) as exc:
            response = last[-1] if last else {}
            if "Error" in response:
                # An error response no acceptor expected (e.g. the volume is gone).
                raise ClientError(response, config.operation) from exc  # type: ignore[arg-type]
            seen = _one_line(observe(response) or "nothing", 120)
            if _matched_state(config, response) == "failure":
                raise InvalidResourceStateError(
                    f"gave up waiting for {action}: reached {seen}",
                    run_id=run_id,
                    resources=res,
                    hint="the resource changed under the run; check it in the EC2 console "
                    "and resume or relaunch",
                ) from exc
            raise WaitTimeoutError(
                f"timed out after {timeout:g} s waiting for {action} (last seen: {seen})",
                run_id=run_id,
                resources=res,
                hint=timeout_hint,
            ) from exc
