"""What a run that stopped has left in the cloud, read from its record alone: the states it
entered (its event log), its resource ids and its kind. No I/O. The message after a failure
says what EC2 showed once the run released what it could; this is what it says instead where
EC2 could not be asked.

A state entered means its step may have acted: ``launching`` may have started an instance (the
run names it once RunInstances returned), ``attaching`` may have attached the volume, and
``creating_volume`` of a restore may have made its temporary volume. Entering ``terminated``
ends the instance (and with it the attachment), ``detached`` the attachment, and ``aborted`` or
``done`` everything the run made for itself (force-clean terminates, detaches and deletes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import Aftermath
from .states import FINAL_STATES, TEMPORARY_VOLUME_KINDS, RunState

_OVER = frozenset({RunState.ABORTED, RunState.DONE})


def instance_item(instance_id: str, attached_volume_id: str | None, *, temporary: bool) -> str:
    """``instance i-1 with volume vol-2 attached``: one thing a run left, worded alike whether
    EC2 showed it or the record says so."""
    if not attached_volume_id:
        return f"instance {instance_id}"
    what = "temporary volume" if temporary else "volume"
    return f"instance {instance_id} with {what} {attached_volume_id} attached"


def temporary_volume_item(volume_id: str) -> str:
    return f"temporary volume {volume_id} (billed until deleted)"


@dataclass(frozen=True)
class Leftovers:
    instance_id: str | None = None  # still running, billed by the second
    attached_volume_id: str | None = None  # attached to that instance
    temporary_volume_id: str | None = None  # a volume the run made for itself

    @property
    def empty(self) -> bool:
        return not (self.instance_id or self.attached_volume_id or self.temporary_volume_id)

    def items(self) -> tuple[str, ...]:
        """``("instance i-1 with volume vol-2 attached",)``, or ``()`` for nothing."""
        temporary = self.temporary_volume_id
        found = []
        if self.instance_id:
            attached = self.attached_volume_id
            found.append(instance_item(self.instance_id, attached, temporary=attached == temporary))
        if temporary and temporary != self.attached_volume_id:
            found.append(temporary_volume_item(temporary))
        return tuple(found)


def aftermath(
    run_id: str,
    state: str,
    failed_from: str | None,
    left: tuple[str, ...] | None,
    *,
    observed: bool,
    error_resumable: bool,
) -> Aftermath:
    """What a stopped run left (``left``, from EC2 or from the record) with what its state
    allows: a run over is not continued, and a failed force-clean is ended, not resumed."""
    cleaning = RunState.CLEANING in (state, failed_from)
    return Aftermath(
        run_id=run_id,
        left=left,
        observed=observed,
        ended=state in FINAL_STATES,
        resumable=error_resumable and not cleaning and state not in FINAL_STATES,
    )


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
