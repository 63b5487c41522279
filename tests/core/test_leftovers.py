"""What a stopped run left in the cloud, read from its record (the states it entered)."""

from __future__ import annotations

from ec2backup.core.leftovers import leftovers
from ec2backup.core.states import RunKind, RunState, path

BACKUP = [str(s) for s in path(RunKind.BACKUP)]
RESTORE = [str(s) for s in path(RunKind.RESTORE)]


def _until(states: list[str], last: str) -> list[str]:
    return states[: states.index(last) + 1]


def test_a_backup_stopped_while_syncing_left_its_instance_with_the_volume_attached() -> None:
    left = leftovers(
        "backup",
        [*_until(BACKUP, "syncing"), "failed"],
        instance_id="i-1",
        volume_id="vol-1",
        temporary_volume=False,
    )
    assert (left.instance_id, left.attached_volume_id) == ("i-1", "vol-1")
    assert left.items() == ("instance i-1 with volume vol-1 attached",)


def test_after_the_detach_only_the_instance_is_left_and_after_terminate_nothing() -> None:
    detached = leftovers(
        "backup",
        [*_until(BACKUP, "terminating"), "failed"],
        instance_id="i-1",
        volume_id="vol-1",
        temporary_volume=False,
    )
    assert (detached.instance_id, detached.attached_volume_id) == ("i-1", None)
    gone = leftovers(
        "backup",
        [*_until(BACKUP, "snapshotting"), "failed"],
        instance_id="i-1",
        volume_id="vol-1",
        temporary_volume=False,
    )
    assert gone.empty and gone.items() == ()


def test_a_launch_that_failed_before_an_instance_was_recorded_left_nothing() -> None:
    left = leftovers(
        "backup",
        ["created", "launching", "failed"],
        instance_id=None,
        volume_id="vol-1",
        temporary_volume=False,
    )
    assert left.empty


def test_a_force_cleaned_run_left_nothing() -> None:
    states = [*_until(BACKUP, "mounted"), "failed", "cleaning", "aborted"]
    left = leftovers("backup", states, instance_id="i-1", volume_id="vol-1", temporary_volume=False)
    assert left.empty


def test_a_restore_from_a_snapshot_leaves_its_temporary_volume_until_it_is_deleted() -> None:
    syncing = leftovers(
        "restore",
        [*_until(RESTORE, "syncing"), "failed"],
        instance_id="i-2",
        volume_id="vol-tmp",
        temporary_volume=True,
    )
    assert syncing.items() == ("instance i-2 with temporary volume vol-tmp attached",)
    deleting = leftovers(
        "restore",
        [*_until(RESTORE, "deleting_volume"), "failed"],
        instance_id="i-2",
        volume_id="vol-tmp",
        temporary_volume=True,
    )
    assert deleting.items() == ("temporary volume vol-tmp (billed until deleted)",)
    live = leftovers(
        "restore",
        [*_until(RESTORE, "deleting_volume"), "failed"],
        instance_id="i-2",
        volume_id="vol-live",
        temporary_volume=False,
    )
    assert live.empty


def test_a_relaunched_run_left_its_new_instance_without_the_old_attachment() -> None:
    states = [*_until(BACKUP, "mounted"), "launching", "instance_running", "failed"]
    assert str(RunState.ATTACHED) in states
    left = leftovers(
        "backup", states, instance_id="i-new", volume_id="vol-1", temporary_volume=False
    )
    assert (left.instance_id, left.attached_volume_id) == ("i-new", None)


def test_what_a_stopped_run_allows_follows_its_state_and_its_error() -> None:
    from ec2backup.core.leftovers import aftermath

    def allows(state: str, failed_from: str | None, resumable: bool) -> tuple[bool, bool]:
        left = aftermath("r", state, failed_from, (), observed=True, error_resumable=resumable)
        return left.ended, left.resumable

    assert allows("failed", "syncing", True) == (False, True)
    assert allows("failed", "syncing", False) == (False, False)  # kept, yet no resume fixes it
    assert allows("failed", "cleaning", True) == (False, False)  # a force-clean is ended
    assert allows("cleaning", None, True) == (False, False)
    assert allows("aborted", "cleaning", False) == (True, False)
    assert allows("done", None, True) == (True, False)  # a failure after it was done
