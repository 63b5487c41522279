"""The one line after a stopped run's error: what it left in the cloud, and the one command
that continues it or ends it (cli/main.py ``aftermath_text``)."""

from __future__ import annotations

import pytest

from ec2backup.cli.main import aftermath_text, error_line, interrupted_line, unexpected_line
from ec2backup.errors import (
    Aftermath,
    DeletionRefusedError,
    Interrupted,
    SyncError,
    Terminated,
    set_aftermath,
)

RUN = "20261128T000000Z-aaaaaa"
RESUME = f"`ec2backup resume {RUN}` to continue"
CLEAN = f"`ec2backup resume {RUN} --clean` ends it"
KEPT = ("instance i-0abc with volume vol-0def attached",)


def left(
    items: tuple[str, ...] | None = (),
    *,
    observed: bool = True,
    ended: bool = False,
    resumable: bool = True,
) -> Aftermath:
    return Aftermath(RUN, items, observed=observed, ended=ended, resumable=resumable)


@pytest.mark.parametrize(
    ("value", "line"),
    [
        # Released after a failure a resume can fix: nothing billed, resume continues.
        (left(), f" [run {RUN}: nothing of it is left running; {RESUME}]"),
        # Kept (--keep-instance) or a release that failed: what still bills, and the end of it.
        (left(KEPT), f" [run {RUN}: still running: {KEPT[0]}; {CLEAN}]"),
        (left(KEPT, resumable=False), f" [run {RUN}: still running: {KEPT[0]}; {CLEAN}]"),
        # Not resumable but not over (a failed force-clean): only --clean ends it.
        (left(resumable=False), f" [run {RUN}: nothing of it is left running; {CLEAN}]"),
        # Cleaned up and aborted (or done): nothing to run, nothing billed.
        (left(ended=True, resumable=False), f" [run {RUN}: nothing of it is left in the cloud]"),
        # Over, yet EC2 still shows something: reap ends what no live run owns.
        (
            left(("instance i-1",), ended=True, resumable=False),
            f" [run {RUN}: still running: instance i-1; `ec2backup reap --yes` ends it]",
        ),
        # EC2 could not be asked: the record speaks, and says so.
        (
            left(KEPT, observed=False),
            f" [run {RUN}: left in the cloud, by its record: {KEPT[0]}; {CLEAN}]",
        ),
        (
            left(observed=False),
            f" [run {RUN}: nothing of it is left in the cloud, by its record; {RESUME}]",
        ),
        (
            left(observed=False, ended=True, resumable=False),
            f" [run {RUN}: nothing of it is left in the cloud, by its record]",
        ),
        # Neither EC2 nor the database answered.
        (
            left(None, observed=False),
            f" [run {RUN}: what it left in the cloud is unknown (neither EC2 nor its record "
            f"could be read); {CLEAN}]",
        ),
        # No run was stopped: nothing to say.
        (None, ""),
    ],
)
def test_the_line_says_what_is_left_and_the_one_command(value: Aftermath | None, line: str) -> None:
    assert aftermath_text(value) == line


@pytest.mark.parametrize("resumable", [True, False])
@pytest.mark.parametrize("ended", [True, False])
@pytest.mark.parametrize("items", [(), KEPT, None])
@pytest.mark.parametrize("observed", [True, False])
def test_resume_to_continue_only_for_a_run_that_can_be_continued_with_nothing_left(
    resumable: bool, ended: bool, items: tuple[str, ...] | None, observed: bool
) -> None:
    line = aftermath_text(left(items, observed=observed, ended=ended, resumable=resumable))
    assert (RESUME in line) == (resumable and not ended and items == ())
    assert line.startswith(f" [run {RUN}: ") and line.endswith("]") and "\n" not in line
    assert line.count("`") <= 2  # one command at the most
    assert ("--clean" in line) == (not ended and RESUME not in line)


def test_an_error_line_ends_with_what_the_run_left() -> None:
    exc = SyncError("rsync could not copy everything (exit code 23)", rsync_exit=23, run_id=RUN)
    set_aftermath(exc, left())
    assert error_line(exc) == (
        f"rsync could not copy everything (exit code 23) [run {RUN}: nothing of it is left "
        f"running; {RESUME}]"
    )
    refused = DeletionRefusedError("source is empty", run_id=RUN, hint="fix it")
    set_aftermath(refused, left(ended=True, resumable=False))
    assert error_line(refused) == (
        f"source is empty; fix it [run {RUN}: nothing of it is left in the cloud]"
    )


def test_an_error_that_stopped_no_run_has_no_aftermath() -> None:
    # A run id alone (say, a run another process drives) is no run this command stopped.
    assert error_line(SyncError("boom", run_id=RUN)) == "boom"


@pytest.mark.parametrize(
    ("exc", "name"),
    [
        (Interrupted("Ctrl-C", RUN), "Ctrl-C"),
        (Interrupted("SIGTERM", RUN), "SIGTERM"),
        (KeyboardInterrupt(), "Ctrl-C"),  # reached the run outside the engine
        (Terminated(), "SIGTERM"),
    ],
)
def test_an_interrupted_run_says_its_state_is_recorded_and_what_it_left(
    exc: BaseException, name: str
) -> None:
    set_aftermath(exc, left())
    assert interrupted_line(exc) == (
        f"run {RUN} interrupted by {name}; its state is recorded "
        f"[run {RUN}: nothing of it is left running; {RESUME}]"
    )


def test_an_interrupt_outside_any_run_is_one_word() -> None:
    assert interrupted_line(KeyboardInterrupt()) == "interrupted"
    assert interrupted_line(Interrupted("Ctrl-C")) == "interrupted"


def test_an_unexpected_error_that_stopped_a_run_says_what_it_left() -> None:
    exc = ValueError("bad value")
    set_aftermath(exc, left(KEPT))
    assert unexpected_line(exc, debug=False) == (
        f"unexpected error: ValueError: bad value (--debug shows where) "
        f"[run {RUN}: still running: {KEPT[0]}; {CLEAN}]"
    )
    assert unexpected_line(RuntimeError("x"), debug=True) == "unexpected error: RuntimeError: x"
