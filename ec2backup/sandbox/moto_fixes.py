"""Where moto departs from EC2 in a way ec2backup's calls meet, set right.

* TerminateInstances of an instance already terminated: EC2 answers it again (terminated ->
  terminated) and does nothing; moto deletes its network interfaces a second time and answers
  ``InvalidNetworkInterfaceID.NotFound`` when they were created with DeleteOnTermination.
* A launch whose security groups are given on its network interface (``NetworkInterfaces[0]
  .Groups``): EC2 shows them as the instance's ``SecurityGroups`` too; moto shows none
  (``groups_from_interface``, called by the RunInstances hook).
"""

from __future__ import annotations

import copy
from typing import Any

from moto.ec2.models.instances import Instance

_original_terminate = Instance.terminate


def _terminate(self: Any) -> Any:
    if self._state.name == "terminated":
        return copy.copy(self._state)
    return _original_terminate(self)


def groups_from_interface(instance: Any) -> None:
    if not instance.security_groups and instance.nics:
        primary = instance.nics.get(0) or next(iter(instance.nics.values()))
        instance.security_groups = list(primary._group_set)


def install() -> None:
    """Idempotent; also used by tests that run moto in-process."""
    setattr(Instance, "terminate", _terminate)  # noqa: B010 (mypy rejects assigning to a method)
