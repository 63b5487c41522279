"""What a failed or interrupted run says it left in the cloud (``errors.aftermath_of``): what
EC2 showed once the engine released what it could, else what the run's record says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ec2backup.commands.backup import start_backup
from ec2backup.commands.restore import start_restore
from ec2backup.commands.runner import left_by, resume
from ec2backup.errors import (
    Aftermath,
    CloudError,
    InsufficientSpaceError,
    Interrupted,
    SyncError,
    Terminated,
    aftermath_of,
)
from tests.run.test_engine import World, failing_sync, kept_after_a_failed_sync


def facts(exc: BaseException) -> tuple[tuple[str, ...] | None, bool, bool, bool]:
    """What the error says the run left: (left, observed, ended, resumable)."""
    left = aftermath_of(exc)
    assert left is not None
    return left.left, left.observed, left.ended, left.resumable


def test_a_failure_no_resume_fixes_is_cleaned_up_and_says_it_is_over(world: World) -> None:
    source = Path(world.app.config_path.parent / "src")
    (source / "big.bin").write_bytes(b"x" * 100_000)
    world.connector.host.free = 50_000  # a resume cannot make it fit
    with pytest.raises(InsufficientSpaceError) as info:
        start_backup(world.app, "p")
    assert facts(info.value) == ((), True, True, False)


@pytest.mark.parametrize("signal", [KeyboardInterrupt, Terminated])
def test_an_interrupted_run_says_what_it_left(
    world: World, signal: type[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(*_a: object, **_k: object) -> object:
        raise signal()

    monkeypatch.setattr(world.syncer, "sync", interrupt)
    with pytest.raises(Interrupted) as info:
        start_backup(world.app, "p")
    assert info.value.signal_name == ("SIGTERM" if signal is Terminated else "Ctrl-C")
    assert facts(info.value) == ((), True, False, True)


def test_an_unexpected_error_carries_what_the_run_left(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(*_a: object, **_k: object) -> object:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(world.syncer, "sync", bug)
    world.app.keep_instance = True
    with pytest.raises(ZeroDivisionError) as info:
        start_backup(world.app, "p")
    (instance,) = world.ec2.instances.values()
    kept = f"instance {instance.id} with volume {world.volume_id} attached"
    assert facts(info.value) == ((kept,), True, False, True)


def test_where_ec2_cannot_be_asked_the_record_says_what_was_left(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken: list[bool] = []

    def sync_then_ec2_breaks(*_a: object, **_k: object) -> object:
        broken.append(True)
        raise SyncError("rsync failed with exit code 23", rsync_exit=23)

    def ec2_down(name: str) -> None:
        if broken:
            raise CloudError(f"{name}: EC2 is not answering")

    find = world.ec2.find_instances

    def find_instances(*a: Any, **k: Any) -> Any:
        ec2_down("DescribeInstances")
        return find(*a, **k)

    monkeypatch.setattr(world.syncer, "sync", sync_then_ec2_breaks)
    world.ec2.before = ec2_down
    monkeypatch.setattr(world.ec2, "find_instances", find_instances)
    with pytest.raises(SyncError) as info:
        start_backup(world.app, "p")
    (instance,) = world.ec2.instances.values()
    assert instance.state == "running"  # the release could not end it
    recorded = f"instance {instance.id} with volume {world.volume_id} attached"
    assert facts(info.value) == ((recorded,), False, False, True)


def test_a_failure_before_the_engine_is_bound_is_said_from_the_record(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ec2backup.adapters.keys as keys

    def no_key(_directory: Path) -> tuple[Path, str]:
        raise PermissionError("cannot write the run's key")

    monkeypatch.setattr(keys, "generate_run_key", no_key)
    with pytest.raises(PermissionError) as info:
        start_backup(world.app, "p")
    assert facts(info.value) == ((), False, False, True)
    assert world.ec2.instances == {}


def test_a_failed_force_clean_says_what_is_still_running_and_only_clean_ends_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = kept_after_a_failed_sync(world, monkeypatch)

    def no_terminate(name: str) -> None:
        if name == "terminate_instance":
            raise CloudError("TerminateInstances: throttled for good")

    world.ec2.before = no_terminate
    with pytest.raises(CloudError) as cleaning:
        resume(world.app, run_id, clean=True)
    (instance,) = world.ec2.instances.values()
    # Detached, not terminated; resuming a force-clean is not continuing the run.
    assert facts(cleaning.value) == ((f"instance {instance.id}",), True, False, False)


def test_a_restore_that_failed_names_its_temporary_volume(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    backup = start_backup(world.app, "p")
    host, attach = world.connector.host, world.ec2.attach_volume

    def attach_and_appear(volume_id: str, instance_id: str, device: str) -> None:
        attach(volume_id, instance_id, device)  # a volume made from the snapshot holds ext4
        host.attach(volume_id, f"/dev/nvme{len(host.devices) + 1}n1", holds="ext4")

    monkeypatch.setattr(world.ec2, "attach_volume", attach_and_appear)
    failing_sync(world, monkeypatch)
    with pytest.raises(SyncError) as info:
        start_restore(world.app, to=tmp_path / "restored", run_id=backup.id)
    (temporary,) = [v for v in world.ec2.volumes if v != world.volume_id]
    billed = f"temporary volume {temporary} (billed until deleted)"
    assert facts(info.value) == ((billed,), True, False, True)


def test_where_neither_ec2_nor_the_record_answers_what_is_left_is_unknown() -> None:
    class Unreadable:
        @property
        def state(self) -> str:
            raise RuntimeError("database is gone")

    left = left_by("r-1", Unreadable(), SyncError("x"), None)  # type: ignore[arg-type]
    assert left == Aftermath("r-1", None, observed=False, ended=False, resumable=True)
