"""The step functions and the crash points match the steps of core/states.py: every step has
its function, and each ``called:<call>`` point lies between that cloud call and the recording
of its result (the crash matrix kills ec2backup there; here a signal stands for the kill)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ec2backup.core.states import STEPS, RunKind, Step, all_steps, called, crash_points
from ec2backup.core.tags import TAG_RUN_ID
from ec2backup.faults import CRASH_ENV, SIGNAL_ENV
from ec2backup.run.engine import run_step
from ec2backup.run.steps import ENSURE
from tests.run.cloudsteps import Bench, make_bench, recorded


def test_every_step_of_every_kind_has_its_function_and_no_function_is_unused() -> None:
    steps = {step for kind_steps in STEPS.values() for step in kind_steps}
    missing = sorted(s.name for s in steps - set(ENSURE))
    unused = sorted(s.name for s in set(ENSURE) - steps)
    assert (missing, unused) == ([], [])
    assert all(callable(f) for f in ENSURE.values())
    # Two steps may share a name only if they are the same step (one trigger per name).
    assert len({s.name for s in all_steps()}) == len(all_steps())


class Crashed(BaseException):
    """The process died at the crash point (the crash matrix sends SIGKILL: nothing after it
    runs, nothing uncommitted survives). A BaseException: no ``except Exception`` sees it."""


@pytest.fixture
def crash_at(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``crash_at(point)``: the next time the process reaches ``point``, it stops there."""

    def die(_signum: int, _frame: object) -> None:
        raise Crashed

    previous = signal.signal(signal.SIGUSR1, die)

    def arm(point: str | None) -> None:
        if point is None:
            monkeypatch.delenv(CRASH_ENV, raising=False)
        else:
            monkeypatch.setenv(CRASH_ENV, point)
            monkeypatch.setenv(SIGNAL_ENV, "USR1")

    try:
        yield arm
    finally:
        signal.signal(signal.SIGUSR1, previous)


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    made = make_bench(tmp_path)
    yield made
    made.store.close()


# Where the cloud keeps what each call makes, and which column of the run records it.
RESULT_OF = {
    "run_instance": ("instances", "instance_id"),
    "create_volume": ("volumes", "volume_id"),
    "create_snapshot": ("snapshots", "snapshot_id"),
}


def _ours(bench: Bench, call: str, run_id: str) -> list[str]:
    pool: dict[str, Any] = getattr(bench.ec2, RESULT_OF[call][0])
    return [r.id for r in pool.values() if r.tags.get(TAG_RUN_ID) == run_id]


DECLARED = [
    pytest.param(kind, step, call, id=f"{kind}-{step.name}-{call}")
    for kind, steps in STEPS.items()
    for step in steps
    for call in step.calls
]


def test_the_crash_points_of_each_kind_are_its_steps_and_their_declared_calls() -> None:
    for kind, steps in STEPS.items():
        points = crash_points(kind)
        for step in steps:
            assert points.index(step.before) < points.index(step.after)
            for call in step.calls:
                assert points.index(step.before) < points.index(called(call))
                assert points.index(called(call)) < points.index(step.after)
    declared = {call for step in all_steps() for call in step.calls}
    assert declared == set(RESULT_OF), "teach RESULT_OF where a new call's result is kept"


@pytest.mark.parametrize(("kind", "step", "call"), DECLARED)
def test_each_called_point_lies_between_the_call_and_the_recording_of_its_result(
    bench: Bench, crash_at: Any, kind: RunKind, step: Step, call: str
) -> None:
    run_id = bench.new_run(kind, step.active)
    crash_at(called(call))
    with pytest.raises(Crashed), bench.context(run_id) as ctx:
        run_step(ctx, step)
    made = _ours(bench, call, run_id)
    assert len(made) == 1, f"{call} had not made its resource when the point was reached"
    column = RESULT_OF[call][1]
    at_crash = recorded(bench.url, run_id)
    assert at_crash[column] is None, f"{column} was already recorded at {called(call)}"
    assert at_crash["state"] == step.active

    # Resumed: the step finds what the call made (token or tags) instead of making another.
    crash_at(None)
    with bench.context(run_id) as ctx:
        run_step(ctx, step)
    assert _ours(bench, call, run_id) == made
    assert recorded(bench.url, run_id)[column] == made[0]
