"""The transition table on its own: no database, no cloud."""

from dataclasses import dataclass

import pytest
from transitions import MachineError

from ec2backup.core.states import (
    BILLED_FROM,
    BILLED_STATES,
    BILLING_ENDS,
    FINAL_STATES,
    LAUNCH,
    STEPS,
    TERMINATE,
    RunKind,
    RunState,
    build_machine,
    called,
    crash_points,
    needs_instance,
    next_step,
    path,
    recorded,
    transition_table,
)

BACKUP_PATH = [
    "created",
    "launching",
    "instance_running",
    "attaching",
    "attached",
    "mounting",
    "mounted",
    "syncing",
    "synced",
    "unmounting",
    "unmounted",
    "detaching",
    "detached",
    "terminating",
    "terminated",
    "snapshotting",
    "done",
]


@dataclass
class Model:
    state: str | None = None
    failed_from: str | None = None


def machine_for(
    kind: RunKind, state: str | None = None
) -> tuple[Model, list[tuple[str, str, str | None]]]:
    model = Model(state=state)
    log: list[tuple[str, str, str | None]] = []
    build_machine(
        model,
        kind,
        on_change=lambda e: log.append(
            (e.transition.source, e.transition.dest, e.kwargs.get("detail"))
        ),
    )
    return model, log


def test_backup_path_is_the_documented_one() -> None:
    assert [str(s) for s in path(RunKind.BACKUP)] == BACKUP_PATH


def test_init_path_creates_and_formats_without_mounting_or_syncing() -> None:
    states = path(RunKind.INIT)
    assert states[:3] == [RunState.CREATED, RunState.CREATING_VOLUME, RunState.VOLUME_CREATED]
    assert RunState.FORMATTING in states and RunState.SYNCING not in states
    assert RunState.SNAPSHOTTING not in states and states[-1] == RunState.DONE


@pytest.mark.parametrize("kind", list(RunKind))
def test_walking_every_step_reaches_done_and_logs_each_transition(kind: RunKind) -> None:
    model, log = machine_for(kind)
    for step in STEPS[kind]:
        getattr(model, f"begin_{step.name}")()
        getattr(model, f"complete_{step.name}")(detail=step.name)
    if model.state != RunState.DONE:
        model.finish()
    assert model.state == RunState.DONE
    visited = [log[0][0]] + [dest for _src, dest, _d in log]
    assert visited == [str(s) for s in path(kind)]
    assert isinstance(model.state, str) and not isinstance(model.state, RunState)


def test_steps_cannot_be_skipped_or_reordered() -> None:
    model, _ = machine_for(RunKind.BACKUP)
    with pytest.raises(MachineError):
        model.begin_attach()
    model.begin_launch()
    with pytest.raises(MachineError):
        model.begin_mount()
    assert model.state == "launching"


def test_fail_keeps_the_state_it_failed_in_and_resume_returns_there() -> None:
    model, log = machine_for(RunKind.BACKUP, "syncing")
    model.fail(detail="rsync exit 23")
    assert (model.state, model.failed_from) == ("failed", "syncing")
    model.resume()
    assert model.state == "syncing"
    assert log == [("syncing", "failed", "rsync exit 23"), ("failed", "syncing", None)]


def test_final_states_accept_no_trigger() -> None:
    for final in FINAL_STATES:
        model, _ = machine_for(RunKind.BACKUP, str(final))
        for trigger in ("fail", "abort", "clean", "resume", "begin_launch", "relaunch"):
            with pytest.raises(MachineError):
                getattr(model, trigger)()


def test_force_clean_goes_through_cleaning_to_aborted() -> None:
    for start in ("failed", "mounted", "created"):
        model, log = machine_for(RunKind.BACKUP, start)
        model.clean()
        model.abort()
        assert [dest for _s, dest, _d in log] == ["cleaning", "aborted"]
    model, _ = machine_for(RunKind.BACKUP, "mounted")
    with pytest.raises(MachineError):
        model.abort()  # only a cleaned-up run is aborted


def test_a_failed_clean_resumes_cleaning_not_the_backup() -> None:
    model, _ = machine_for(RunKind.BACKUP, "syncing")
    model.clean()
    model.fail()
    assert model.failed_from == "cleaning"
    model.resume()
    assert model.state == "cleaning"


def test_relaunch_only_while_the_volume_depends_on_the_instance() -> None:
    states = [str(s) for s in needs_instance(RunKind.BACKUP)]
    assert states[0] == "instance_running" and states[-1] == "unmounting"
    model, _ = machine_for(RunKind.BACKUP, "syncing")
    model.relaunch()
    assert model.state == "launching"
    model, _ = machine_for(RunKind.BACKUP, "unmounted")
    with pytest.raises(MachineError):
        model.relaunch()


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("created", "launch"),
        ("launching", "launch"),  # active: re-run, it is idempotent
        ("instance_running", "attach"),
        ("syncing", "sync"),
        ("synced", "unmount"),
        ("terminated", "snapshot"),
        ("snapshotting", "snapshot"),
    ],
)
def test_next_step(state: str, expected: str) -> None:
    step = next_step(RunKind.BACKUP, RunState(state))
    assert step is not None and step.name == expected


def test_next_step_is_none_when_nothing_is_left() -> None:
    assert next_step(RunKind.BACKUP, RunState.DONE) is None
    assert next_step(RunKind.INIT, RunState.TERMINATED) is None  # then `finish`


def test_table_uses_plain_state_values() -> None:
    for transition in transition_table(RunKind.BACKUP):
        sources = (
            transition["source"]
            if isinstance(transition["source"], list)
            else [transition["source"]]
        )
        assert all(type(s) is str for s in [*sources, transition["dest"]])


def test_a_backup_crashes_before_and_after_each_step_and_after_its_launch_and_snapshot() -> None:
    steps = [step.name for step in STEPS[RunKind.BACKUP]]
    points = crash_points(RunKind.BACKUP)
    inside = ("called:", "recorded:")
    assert [p for p in points if not p.startswith(inside)] == [
        *(f"{when}:{step}" for step in steps for when in ("before", "after")),
        "ended",  # once the last event is committed, before what follows it
    ]
    assert [p for p in points if p.startswith("recorded:")] == ["recorded:instance_id"]
    assert [p for p in points if p.startswith("called:")] == [
        "called:run_instance",
        "called:create_snapshot",
    ]
    assert points.index("called:run_instance") == points.index("before:launch") + 1
    assert points.index("recorded:instance_id") == points.index("called:run_instance") + 1


def test_only_a_declared_recorded_result_has_a_crash_point() -> None:
    assert recorded("instance_id") == "recorded:instance_id"
    with pytest.raises(ValueError, match="volume_id"):
        recorded("volume_id")


def test_only_a_declared_cloud_call_has_a_crash_point() -> None:
    assert called("create_volume") == "called:create_volume"
    with pytest.raises(ValueError, match="attach_volume"):
        called("attach_volume")


@pytest.mark.parametrize("kind", list(RunKind))
def test_instance_time_is_billed_from_launching_until_terminated(kind: RunKind) -> None:
    states = path(kind)
    launching, terminated = states.index(LAUNCH.active), states.index(TERMINATE.result)
    assert states[launching] == BILLED_FROM
    assert set(states[launching + 1 : terminated]) <= BILLED_STATES
    assert not set(states[:launching] + states[terminated:]) & BILLED_STATES
    assert states[terminated] in BILLING_ENDS and states[-1] in BILLING_ENDS


def test_billed_states_cover_every_kind_and_force_clean() -> None:
    assert {RunState.FORMATTING, RunState.FORMATTED, RunState.SYNCING} <= BILLED_STATES
    assert RunState.CLEANING in BILLED_STATES  # force-clean terminates the instance itself
    assert {RunState.LAUNCHING, RunState.CREATING_VOLUME, RunState.DELETING_VOLUME}.isdisjoint(
        BILLED_STATES
    )
    assert {"terminated", "done", "failed", "aborted"} == BILLING_ENDS
