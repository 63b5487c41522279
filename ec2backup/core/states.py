"""Run states and the transition table. No I/O here: the store persists, the engine acts.

Every run kind walks a fixed path of *steps*. A step has an *active* state, entered and
committed before its side effect starts (``attaching``), and a *result* state, entered once the
world is observed to be where the step leads (``attached``). A run found in an active state
after a crash re-runs that step's ``ensure_*`` function, which observes first and treats
"already done" as success.

Backup:  created -> launching -> instance_running -> attaching -> attached -> mounting -> mounted
         -> syncing -> synced -> unmounting -> unmounted -> detaching -> detached -> terminating
         -> terminated -> snapshotting -> done
Init:    created -> creating_volume -> volume_created -> writing_profile -> profile_written
         -> launching -> ... -> attached -> formatting -> formatted -> detaching -> ...
         -> terminated -> done (the profile names the volume as soon as it exists)
Restore: created -> creating_volume (from the snapshot) -> ... -> mounting (read-only) ...
         -> syncing (copy back) -> ... -> terminated -> deleting_volume -> done
Verify:  created -> launching -> ... -> mounting (read-only) -> syncing (compare) -> ...
         -> terminated -> done
Snapshots-only storage (no standing volume), each run on a volume of its own:
Snapshot backup: created -> creating_volume (from the latest snapshot) -> launching -> ...
         -> syncing -> ... -> terminated -> snapshotting -> snapshotted -> deleting_volume
         -> done
Snapshot init: created -> creating_volume (empty) -> ... -> formatted -> ... -> terminated
         -> snapshotting -> snapshotted -> writing_profile -> profile_written -> deleting_volume
         -> done (the profile is written once its first snapshot exists)

Any non-final state may ``fail`` (-> failed, the state it failed in is kept as
``failed_from``). ``resume`` takes a failed run back to ``failed_from``. ``clean`` takes any
live or failed run to ``cleaning`` (force-clean: unmount, detach, terminate), which ends in
``aborted``. ``relaunch`` takes a run whose instance died under it (from any
state that needs the instance) back to ``launching``: the steps after it are idempotent, so
they simply run again on the new instance.

This module is the one place that knows the states. What other modules need to know about
them is derived from ``STEPS``: the transition table; the step functions' keys (the ``Step``
constants: ``run/steps/__init__.py`` ``ENSURE``); the crash points of the crash matrix
(``crash_points``: before and after each step, and ``called:<call>`` after each cloud call a
step declares); and which states bill instance time (``BILLED_FROM``, ``BILLED_STATES``,
``BILLING_ENDS``: core/billing.py).
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
    # Snapshots-only storage (no standing volume): each run works on a volume of its own.
    SNAPSHOT_BACKUP = auto()
    SNAPSHOT_INIT = auto()


class RunState(StrEnum):
    CREATED = auto()
    CREATING_VOLUME = auto()
    VOLUME_CREATED = auto()
    WRITING_PROFILE = auto()
    PROFILE_WRITTEN = auto()
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
    SNAPSHOTTED = auto()
    DELETING_VOLUME = auto()
    CLEANING = auto()
    DONE = auto()
    FAILED = auto()
    ABORTED = auto()


# The kinds that back up (and make a snapshot of what they copied).
BACKUP_KINDS = frozenset({RunKind.BACKUP, RunKind.SNAPSHOT_BACKUP})
# The kinds that make a profile ready (its volume, or its first snapshot) and write it.
INIT_KINDS = frozenset({RunKind.INIT, RunKind.SNAPSHOT_INIT})
# The kinds whose volume is their own, made for the run and deleted at its end.
TEMPORARY_VOLUME_KINDS = frozenset(
    {RunKind.RESTORE, RunKind.SNAPSHOT_BACKUP, RunKind.SNAPSHOT_INIT}
)

FINAL_STATES = frozenset({RunState.DONE, RunState.ABORTED})
# A failed run is not final: it can be resumed or force-cleaned.
ENDED_STATES = frozenset({RunState.DONE, RunState.ABORTED, RunState.FAILED})


@dataclass(frozen=True)
class Step:
    name: str
    active: RunState
    result: RunState
    # The cloud calls whose result the step records only once they have returned: a crash in
    # between leaves a resource the database does not name yet, which a resumed step must find
    # again (by ClientToken or by the run's tags). Each has a crash point, ``called:<call>``.
    calls: tuple[str, ...] = ()
    # Results the step records before the cloud need show them (EC2 is eventually
    # consistent): a crash right after leaves an id a resumed step must look for again rather
    # than take for gone. Each has a crash point, ``recorded:<name>``.
    records: tuple[str, ...] = ()

    @property
    def before(self) -> str:
        """The crash point after ``active`` is committed, before the side effect starts."""
        return f"before:{self.name}"

    @property
    def after(self) -> str:
        """The crash point after the side effect, before ``result`` is committed."""
        return f"after:{self.name}"


# Every step, once: the step functions (run/steps/__init__.py ``ENSURE``) are keyed by these.
CREATE_VOLUME = Step(
    "create_volume", RunState.CREATING_VOLUME, RunState.VOLUME_CREATED, calls=("create_volume",)
)
# A temporary volume from the snapshot (none for a restore from the live volume).
RESTORE_VOLUME = Step(
    "restore_volume", RunState.CREATING_VOLUME, RunState.VOLUME_CREATED, calls=("create_volume",)
)
# init: the profile entry naming the new volume, written into the config file (idempotent);
# snapshots-only init: the profile entry (no volume), once its first snapshot exists.
WRITE_PROFILE = Step("write_profile", RunState.WRITING_PROFILE, RunState.PROFILE_WRITTEN)
LAUNCH = Step(
    "launch",
    RunState.LAUNCHING,
    RunState.INSTANCE_RUNNING,
    calls=("run_instance",),
    records=("instance_id",),
)
ATTACH = Step("attach", RunState.ATTACHING, RunState.ATTACHED)
FORMAT = Step("format", RunState.FORMATTING, RunState.FORMATTED)
MOUNT = Step("mount", RunState.MOUNTING, RunState.MOUNTED)
MOUNT_READ_ONLY = Step("mount_ro", RunState.MOUNTING, RunState.MOUNTED)
SYNC = Step("sync", RunState.SYNCING, RunState.SYNCED)
PULL = Step("pull", RunState.SYNCING, RunState.SYNCED)
COMPARE = Step("compare", RunState.SYNCING, RunState.SYNCED)
UNMOUNT = Step("unmount", RunState.UNMOUNTING, RunState.UNMOUNTED)
DETACH = Step("detach", RunState.DETACHING, RunState.DETACHED)
TERMINATE = Step("terminate", RunState.TERMINATING, RunState.TERMINATED)
SNAPSHOT = Step("snapshot", RunState.SNAPSHOTTING, RunState.DONE, calls=("create_snapshot",))
DELETE_VOLUME = Step("delete_volume", RunState.DELETING_VOLUME, RunState.DONE)
# Snapshots-only storage: the run's own volume, made from the profile's latest snapshot (empty
# for init), snapshotted once the copy is on it, then deleted.
WORK_VOLUME = Step(
    "work_volume", RunState.CREATING_VOLUME, RunState.VOLUME_CREATED, calls=("create_volume",)
)
SNAPSHOT_WORK = Step(
    "snapshot_work", RunState.SNAPSHOTTING, RunState.SNAPSHOTTED, calls=("create_snapshot",)
)

STEPS: dict[RunKind, tuple[Step, ...]] = {
    RunKind.BACKUP: (LAUNCH, ATTACH, MOUNT, SYNC, UNMOUNT, DETACH, TERMINATE, SNAPSHOT),
    # A temporary volume from a snapshot (or the live volume) mounted read-only, copied back.
    RunKind.RESTORE: (
        RESTORE_VOLUME,
        LAUNCH,
        ATTACH,
        MOUNT_READ_ONLY,
        PULL,
        UNMOUNT,
        DETACH,
        TERMINATE,
        DELETE_VOLUME,
    ),
    # The live volume mounted read-only and compared with the sources by checksum.
    RunKind.VERIFY: (LAUNCH, ATTACH, MOUNT_READ_ONLY, COMPARE, UNMOUNT, DETACH, TERMINATE),
    RunKind.INIT: (CREATE_VOLUME, WRITE_PROFILE, LAUNCH, ATTACH, FORMAT, DETACH, TERMINATE),
    RunKind.SNAPSHOT_BACKUP: (
        WORK_VOLUME,
        LAUNCH,
        ATTACH,
        MOUNT,
        SYNC,
        UNMOUNT,
        DETACH,
        TERMINATE,
        SNAPSHOT_WORK,
        DELETE_VOLUME,
    ),
    # The first snapshot of a snapshots-only profile: an empty filesystem to start from. Its
    # profile is written as soon as that snapshot exists, not before: a profile in the file
    # always has a snapshot for its next `run` to start from (one written earlier would name
    # nothing, and its `run` could only refuse). `resume --clean` undoes what was made by then.
    RunKind.SNAPSHOT_INIT: (
        WORK_VOLUME,
        LAUNCH,
        ATTACH,
        FORMAT,
        DETACH,
        TERMINATE,
        SNAPSHOT_WORK,
        WRITE_PROFILE,
        DELETE_VOLUME,
    ),
}


def all_steps() -> list[Step]:
    """Every step of every kind, once each, in the order the kinds list them."""
    return list(dict.fromkeys(step for steps in STEPS.values() for step in steps))


# --- crash points -----------------------------------------------------------------------

_CALLS = frozenset(call for step in all_steps() for call in step.calls)


def called(call: str) -> str:
    """The crash point between the cloud call ``call`` and the recording of its result. Only a
    call some step declares in its ``calls`` has one."""
    if call not in _CALLS:
        raise ValueError(f"no step declares the cloud call {call!r} (Step.calls)")
    return f"called:{call}"


# The crash point between a run's last event (done, aborted: committed) and what follows it
# in the same process (the SSH rule removed, retention applied, the run's keys deleted).
ENDED = "ended"
_RECORDS = frozenset(name for step in all_steps() for name in step.records)


def recorded(name: str) -> str:
    """The crash point right after the step records ``name``, before the cloud need show it.
    Only a result some step declares in its ``records`` has one."""
    if name not in _RECORDS:
        raise ValueError(f"no step declares the recorded result {name!r} (Step.records)")
    return f"recorded:{name}"


def crash_points(kind: RunKind) -> list[str]:
    """Every crash point a run of this kind passes, in order: before and after each step's
    side effect, between each declared cloud call and the recording of its result, right
    after each declared recorded result, and once the run has ended (``ENDED``)."""
    points: list[str] = []
    for step in STEPS[kind]:
        inside = (*(called(c) for c in step.calls), *(recorded(r) for r in step.records))
        for point in (step.before, *inside, step.after):
            if point not in points:
                points.append(point)
    return [*points, ENDED]


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
    before_detach = steps[steps.index(DETACH) - 1]
    states = path(kind)
    return states[states.index(RunState.INSTANCE_RUNNING) : states.index(before_detach.active) + 1]


def holds_instance(kind: RunKind) -> list[RunState]:
    """The states in which a run of this kind has its instance: from the launch's result to
    the terminate step's active state (the instance is there until that step ends it)."""
    states = path(kind)
    return states[states.index(LAUNCH.result) : states.index(TERMINATE.active) + 1]


# --- instance time (core/billing.py) ------------------------------------------------------

# A launch bills from the moment its active state is entered (RunInstances follows)...
BILLED_FROM = LAUNCH.active
# ...through the states that hold its instance, of any kind; force-clean (``cleaning``) holds it
# until it terminates it. A failed run resumed or cleaned into one of these bills again...
BILLED_STATES = frozenset(
    {*(state for kind in RunKind for state in holds_instance(kind)), RunState.CLEANING}
)
# ...until one of these is entered: the instance terminated, or the run ended or failed.
BILLING_ENDS = frozenset({TERMINATE.result, *ENDED_STATES})


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
