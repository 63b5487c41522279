"""Run states and the transition table. No I/O here: the store persists, the engine acts.

Every run kind walks a fixed path of *steps*. A step has an *active* state, entered and
committed before its side effect starts (``attaching``), and a *result* state, entered once the
world is observed to be where the step leads (``attached``). A run found in an active state
after a crash re-runs that step's ``ensure_*`` function, which observes first and treats
"already done" as success.

Backup:  created -> launching -> instance_running -> attaching -> attached -> mounting -> mounted
         -> syncing -> synced -> unmounting -> unmounted -> detaching -> detached -> terminating
         -> terminated -> snapshotting -> done
Init:    created -> creating_volume -> volume_created -> launching -> ... -> attached
         -> formatting -> formatted -> detaching -> ... -> terminated -> done
Restore: created -> creating_volume (from the snapshot) -> ... -> mounting (read-only) ...
         -> syncing (copy back) -> ... -> terminated -> deleting_volume -> done
Verify:  created -> launching -> ... -> mounting (read-only) -> syncing (compare) -> ...
         -> terminated -> done

Any non-final state may ``fail`` (-> failed, the state it failed in is kept as
``failed_from``). ``resume`` takes a failed run back to ``failed_from``. ``clean`` takes any
live or failed run to ``cleaning`` (force-clean: unmount, detach, terminate), which ends in
``aborted``. ``relaunch`` takes a run whose instance died under it (from any
state that needs the instance) back to ``launching``: the steps after it are idempotent, so
they simply run again on the new instance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum, auto
from typing import Any

from transitions import EventData, Machine


class RunKind(StrEnum):
    BACKUP = auto()
    INIT = auto()
    RESTORE = auto()
    VERIFY = auto()


class RunState(StrEnum):
    CREATED = auto()
    CREATING_VOLUME = auto()
    VOLUME_CREATED = auto()
    LAUNCHING = auto()
    INSTANCE_RUNNING = auto()
    ATTACHING = auto()
    ATTACHED = auto()
    FORMATTING = auto()
    FORMATTED = auto()
    MOUNTING = auto()
    MOUNTED = auto()
    SYNCING = auto()
    SYNCED = auto()
    UNMOUNTING = auto()
    UNMOUNTED = auto()
    DETACHING = auto()
    DETACHED = auto()
    TERMINATING = auto()
    TERMINATED = auto()
    SNAPSHOTTING = auto()
    DELETING_VOLUME = auto()
    CLEANING = auto()
    DONE = auto()
    FAILED = auto()
    ABORTED = auto()


FINAL_STATES = frozenset({RunState.DONE, RunState.ABORTED})
# A failed run is not final: it can be resumed or force-cleaned.
ENDED_STATES = frozenset({RunState.DONE, RunState.ABORTED, RunState.FAILED})


@dataclass(frozen=True)
class Step:
    name: str
    active: RunState
    result: RunState


_LAUNCH = Step("launch", RunState.LAUNCHING, RunState.INSTANCE_RUNNING)
_ATTACH = Step("attach", RunState.ATTACHING, RunState.ATTACHED)
_DETACH = Step("detach", RunState.DETACHING, RunState.DETACHED)
_TERMINATE = Step("terminate", RunState.TERMINATING, RunState.TERMINATED)
_MOUNT_READ_ONLY = Step("mount_ro", RunState.MOUNTING, RunState.MOUNTED)
_UNMOUNT = Step("unmount", RunState.UNMOUNTING, RunState.UNMOUNTED)

STEPS: dict[RunKind, tuple[Step, ...]] = {
    RunKind.BACKUP: (
        _LAUNCH,
        _ATTACH,
        Step("mount", RunState.MOUNTING, RunState.MOUNTED),
        Step("sync", RunState.SYNCING, RunState.SYNCED),
        _UNMOUNT,
        _DETACH,
        _TERMINATE,
        Step("snapshot", RunState.SNAPSHOTTING, RunState.DONE),
    ),
    # A temporary volume from a snapshot (or the live volume) mounted read-only, copied back.
    RunKind.RESTORE: (
        Step("restore_volume", RunState.CREATING_VOLUME, RunState.VOLUME_CREATED),
        _LAUNCH,
        _ATTACH,
        _MOUNT_READ_ONLY,
        Step("pull", RunState.SYNCING, RunState.SYNCED),
        _UNMOUNT,
        _DETACH,
        _TERMINATE,
        Step("delete_volume", RunState.DELETING_VOLUME, RunState.DONE),
    ),
    # The live volume mounted read-only and compared with the sources by checksum.
    RunKind.VERIFY: (
        _LAUNCH,
        _ATTACH,
        _MOUNT_READ_ONLY,
        Step("compare", RunState.SYNCING, RunState.SYNCED),
        _UNMOUNT,
        _DETACH,
        _TERMINATE,
    ),
    RunKind.INIT: (
        Step("create_volume", RunState.CREATING_VOLUME, RunState.VOLUME_CREATED),
        _LAUNCH,
        _ATTACH,
        Step("format", RunState.FORMATTING, RunState.FORMATTED),
        _DETACH,
        _TERMINATE,
    ),
}


def path(kind: RunKind) -> list[RunState]:
    """The states a successful run of this kind passes through, in order."""
    states = [RunState.CREATED]
    for step in STEPS[kind]:
        states += [step.active, step.result]
    if states[-1] != RunState.DONE:
        states.append(RunState.DONE)
    return states


def transition_table(kind: RunKind) -> list[dict[str, Any]]:
    """The `transitions` table for one run kind, derived from its steps."""
    table: list[dict[str, Any]] = []
    previous = RunState.CREATED
    for step in STEPS[kind]:
        table.append({"trigger": f"begin_{step.name}", "source": previous, "dest": step.active})
        table.append(
            {"trigger": f"complete_{step.name}", "source": step.active, "dest": step.result}
        )
        previous = step.result
    if previous != RunState.DONE:
        table.append({"trigger": "finish", "source": previous, "dest": RunState.DONE})
    walking = [s for s in path(kind) if s not in FINAL_STATES]
    live = [*walking, RunState.CLEANING]
    table.append({"trigger": "fail", "source": live, "dest": RunState.FAILED})
    table.append(
        {"trigger": "clean", "source": [*walking, RunState.FAILED], "dest": RunState.CLEANING}
    )
    table.append({"trigger": "abort", "source": RunState.CLEANING, "dest": RunState.ABORTED})
    table.append(
        {"trigger": "relaunch", "source": needs_instance(kind), "dest": RunState.LAUNCHING}
    )
    for state in live:
        table.append(
            {
                "trigger": "resume",
                "source": RunState.FAILED,
                "dest": state,
                "conditions": _failed_from(state),
            }
        )
    return [_as_plain_strings(t) for t in table]


def needs_instance(kind: RunKind) -> list[RunState]:
    """The states in which losing the instance loses work: from running until the volume is
    left clean (unmounted, or formatted). After that, termination only detaches it early."""
    steps = STEPS[kind]
    before_detach = steps[steps.index(_DETACH) - 1]
    states = path(kind)
    return states[states.index(RunState.INSTANCE_RUNNING) : states.index(before_detach.active) + 1]


def _failed_from(state: RunState) -> Callable[[EventData], bool]:
    def condition(event: EventData) -> bool:
        return bool(getattr(event.model, "failed_from", None) == state)

    return condition


def _as_plain_strings(transition: dict[str, Any]) -> dict[str, Any]:
    # `transitions` treats Enum members by *name*; plain strings keep the stored value
    # ("launching") and the machine's state names identical.
    def plain(v: Any) -> Any:
        if isinstance(v, list):
            return [str(x) for x in v]
        return str(v) if isinstance(v, RunState) else v

    return {k: plain(v) for k, v in transition.items()}


def fire(model: Any, trigger: str, **kwargs: Any) -> None:
    """Fire a trigger that ``build_machine`` added to the model (typed code cannot see them)."""
    getattr(model, trigger)(**kwargs)


def next_step(kind: RunKind, state: RunState) -> Step | None:
    """The step to run from ``state``: the current one if it is active (re-run it, it is
    idempotent), else the one after it. None once there is nothing left to do."""
    previous_result = RunState.CREATED
    for step in STEPS[kind]:
        if state == step.active:
            return step
        if state == previous_result:
            return step
        previous_result = step.result
    return None


def build_machine(
    model: Any,
    kind: RunKind,
    on_change: Callable[[EventData], None] | None = None,
) -> Machine:
    """Bind ``model`` (anything with ``state`` and ``failed_from`` attributes) to the table of
    ``kind``. ``on_change`` runs after every transition with the event (source, dest,
    ``detail=`` keyword): the store uses it to append to the event log and commit."""

    def remember_failed_from(event: EventData) -> None:
        assert event.transition is not None
        model.failed_from = event.transition.source

    machine = Machine(
        model=model,
        states=[s.value for s in RunState],
        transitions=transition_table(kind),
        initial=str(model.state or RunState.CREATED),
        auto_transitions=False,
        send_event=True,
        model_attribute="state",
        after_state_change=on_change,
    )
    for transition in machine.get_transitions(trigger="fail"):
        transition.before.append(remember_failed_from)
    return machine
