"""Eventual consistency (``consistency_lag`` seconds; 0 = none): for that long after a resource
is created, a call naming it by id answers as if it did not exist (``InvalidInstanceID.NotFound``,
``InvalidVolume.NotFound``, ``InvalidGroup.NotFound``, ``InvalidSnapshot.NotFound``, worded as
EC2 words them), and Describe calls filtered by tag leave it out, as EC2's API does right after
RunInstances, CreateVolume, CreateSecurityGroup or CreateSnapshot.

``note`` records a creation (called by the hooks that create); ``check`` runs before every
EC2 call (``LocalCloud.before_action``); ``visible`` filters Describe answers. The lag in
force when the resource was created is the one it gets."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterable
from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.responses import EC2Response

from .faults import CloudFault
from .state import CloudState, Original

# Parameters (botocore names) that name resources by id, and what EC2 answers for each kind.
ID_PARAMETERS = (
    "InstanceId",
    "InstanceIds",
    "VolumeId",
    "VolumeIds",
    "GroupId",
    "GroupIds",
    "SecurityGroupIds",
    "SnapshotId",
    "SnapshotIds",
)
NOT_FOUND = {
    "i-": ("InvalidInstanceID.NotFound", "The instance ID '{}' does not exist"),
    "vol-": ("InvalidVolume.NotFound", "The volume '{}' does not exist."),
    "sg-": ("InvalidGroup.NotFound", "The security group '{}' does not exist"),
    "snap-": ("InvalidSnapshot.NotFound", "The snapshot '{}' does not exist."),
}


class Consistency:
    def __init__(self, state: CloudState) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._visible_at: dict[str, float] = {}  # id -> time.monotonic() it shows from

    def note(self, resource_ids: Iterable[str]) -> None:
        lag = self.state.settings.consistency_lag
        if lag <= 0:
            return
        due = time.monotonic() + lag
        with self._lock:
            for resource_id in resource_ids:
                self._visible_at[resource_id] = due

    def young(self, resource_id: str) -> bool:
        with self._lock:
            due = self._visible_at.get(resource_id)
            if due is None:
                return False
            if time.monotonic() >= due:
                del self._visible_at[resource_id]
                return False
            return True

    def check(self, response: EC2Response) -> None:
        """Answer NotFound for a call that names a resource still too young to be seen."""
        if not self._visible_at:
            return
        named: list[str] = []
        for name in ID_PARAMETERS:
            value = response._get_param(name)
            named += value if isinstance(value, list) else [value] if value else []
        for interface in response._get_param("NetworkInterfaces") or []:
            named += list(interface.get("Groups") or [])  # a launch's groups, on its interface
        for resource_id in map(str, named):
            if not self.young(resource_id):
                continue
            for prefix, (code, message) in NOT_FOUND.items():
                if resource_id.startswith(prefix):
                    raise CloudFault(400, code, message.format(resource_id))

    def _tag_filtered(self, response: EC2Response) -> bool:
        filters = response._get_param("Filters") or []
        return any(str(f.get("Name", "")).startswith("tag") for f in filters)

    def visible(self, response: EC2Response, resources: list[Any]) -> list[Any]:
        """``resources`` less the young ones, if the call filtered by tag."""
        if not self._visible_at or not self._tag_filtered(response):
            return resources
        return [r for r in resources if not self.young(r.id)]

    # --- Describe hooks -------------------------------------------------------------------

    def describe_instances(self, response: EC2Response, original: Original) -> ActionResult:
        result = original()
        answer: Any = result.result
        if not self._visible_at or not self._tag_filtered(response):
            return result
        reservations = []
        for reservation in answer["Reservations"]:
            shown = self.visible(response, list(reservation.instances))
            if shown:
                if len(shown) != len(reservation.instances):
                    reservation = copy.copy(reservation)
                    reservation.instances = shown
                reservations.append(reservation)
        return ActionResult({**answer, "Reservations": reservations})

    def describe_volumes(self, response: EC2Response, original: Original) -> ActionResult:
        result = original()
        answer: Any = result.result
        if not self._visible_at:
            return result
        return ActionResult({**answer, "Volumes": self.visible(response, list(answer["Volumes"]))})
