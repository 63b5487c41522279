"""What a run that stopped has left in the cloud, read from its record alone: the states it
entered (its event log), its resource ids and its kind. No I/O: the message after a failure is
written from this, so it says what the record says, whoever released what since.

A state entered means its step may have acted: ``launching`` may have started an instance (the
run names it once RunInstances returned), ``attaching`` may have attached the volume, and
``creating_volume`` of a restore may have made its temporary volume. Entering ``terminated``
ends the instance (and with it the attachment), ``detached`` the attachment, and ``aborted`` or
``done`` everything the run made for itself (force-clean terminates, detaches and deletes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .states import TEMPORARY_VOLUME_KINDS, RunState

_OVER = frozenset({RunState.ABORTED, RunState.DONE})


@dataclass(frozen=True)
class Leftovers:
    instance_id: str | None = None  # still running, billed by the second
    attached_volume_id: str | None = None  # attached to that instance
    temporary_volume_id: str | None = None  # a volume the run made for itself

    @property
    def empty(self) -> bool:
        return not (self.instance_id or self.attached_volume_id or self.temporary_volume_id)

    def describe(self) -> str:
        """``instance i-1 (running, billed) with volume vol-2 attached``, or ``nothing``."""
        temporary = self.temporary_volume_id
        parts = []
        if self.instance_id:
            text = f"instance {self.instance_id} (running, billed)"
            if self.attached_volume_id:
                what = "temporary volume" if self.attached_volume_id == temporary else "volume"
                text += f" with {what} {self.attached_volume_id} attached"
            parts.append(text)
        if temporary and temporary != self.attached_volume_id:
            parts.append(f"temporary volume {temporary} (billed until deleted)")
        return " and ".join(parts) or "nothing"


def leftovers(
    kind: str,
    states_entered: Iterable[str],
    *,
    instance_id: str | None,
    volume_id: str | None,
    temporary_volume: bool,
) -> Leftovers:
    """What the run left, from the states it entered in order. ``temporary_volume``: the
    run's ``volume_id`` is one it made for itself (a restore from a snapshot, a backup or init
    of snapshots-only storage)."""
    instance = attached = made_volume = False
    for entered in states_entered:
        state = RunState(entered)
        if state == RunState.LAUNCHING:  # a relaunch: the old instance, and its attachment, died
            instance, attached = True, False
        elif state == RunState.ATTACHING:
            attached = True
        elif state == RunState.DETACHED:
            attached = False
        elif state == RunState.TERMINATED:
            instance = attached = False
        elif state == RunState.CREATING_VOLUME and kind in TEMPORARY_VOLUME_KINDS:
            made_volume = temporary_volume
        elif state in _OVER:
            instance = attached = made_volume = False
    running = instance_id if instance else None
    return Leftovers(
        instance_id=running,
        attached_volume_id=volume_id if running and attached else None,
        temporary_volume_id=volume_id if made_volume else None,
    )
