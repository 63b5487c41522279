"""The next run heals: an earlier run of the profile that no live process drives is resumed or
force-cleaned first (with fakes; end to end: tests/e2e/test_heal.py)."""

from __future__ import annotations

import pytest

from ec2backup.commands.backup import start_backup, start_init
from ec2backup.commands.history import list_runs, show_run
from ec2backup.commands.restore import start_restore
from ec2backup.core.tags import TAG_RUN_ID
from ec2backup.errors import SyncError
from tests.run.test_engine import World, crash_in


def runs_of(world: World) -> dict[str, str]:
    return {r["id"]: r["state"] for r in list_runs(world.app)}


def test_a_backup_killed_mid_copy_is_force_cleaned_and_the_next_run_backs_up(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = crash_in(world, monkeypatch, "syncer", "sync")  # killed: no handler ran
    assert world.ec2.volumes[world.volume_id].attachments  # it holds the volume
    new = start_backup(world.app, "p")
    assert new.state == "done"
    assert runs_of(world)[old] == "aborted"
    (note,) = [w for w in new.warnings if w.startswith("healed run")]
    assert f"healed run {old} (backup, abandoned in syncing): force-cleaned" in note
    assert "did not finish" in note
    assert {i.state for i in world.ec2.instances.values()} == {"terminated"}
    assert len(world.ec2.snapshots) == 1  # the new run's; the unfinished copy made none


def test_a_backup_killed_after_its_copy_is_resumed_to_its_snapshot(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = crash_in(world, monkeypatch, "ec2", "detach_volume")
    new = start_backup(world.app, "p")
    assert runs_of(world)[old] == "done" and new.state == "done"
    assert any(f"healed run {old}" in w and ": resumed, " in w for w in new.warnings)
    assert {s.tags[TAG_RUN_ID] for s in world.ec2.snapshots.values()} == {old, new.id}


def test_a_failed_run_is_healed_too(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    def partial(*_a: object, **_k: object) -> object:
        raise SyncError("rsync failed with exit code 23", rsync_exit=23)

    monkeypatch.setattr(world.syncer, "sync", partial)
    with pytest.raises(SyncError) as info:
        start_backup(world.app, "p")
    monkeypatch.undo()
    new = start_backup(world.app, "p")
    assert new.state == "done" and runs_of(world)[info.value.run_id or ""] == "aborted"


def test_a_run_that_a_live_process_drives_is_left_alone(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    from ec2backup.core.times import utcnow
    from ec2backup.db.leases import Holder
    from ec2backup.db.models import Lease
    from ec2backup.errors import LeaseHeldError

    old = crash_in(world, monkeypatch, "syncer", "sync")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with world.app.store.session() as session:
            now = utcnow()
            for key in (f"run:{old}", f"volume:{world.volume_id}"):
                session.add(
                    Lease(
                        key=key,
                        run_id=old,
                        holder_host=Holder.me().host,
                        holder_pid=holder.pid,
                        acquired_at=now,
                        heartbeat_at=now,
                    )
                )
            session.commit()
        with pytest.raises(LeaseHeldError):
            start_backup(world.app, "p")
        assert runs_of(world)[old] == "syncing"  # untouched
    finally:
        holder.kill()
        holder.wait()
    assert start_backup(world.app, "p").state == "done"  # its process is gone: abandoned now


def test_restore_and_verify_leftovers_are_force_cleaned_by_the_next_run(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    from pathlib import Path

    from ec2backup.run.steps import transfer

    backup = start_backup(world.app, "p")

    class Crash(BaseException):
        pass

    def crash(*_a: object, **_k: object) -> None:
        raise Crash

    attach = world.ec2.attach_volume

    def attach_and_appear(volume_id: str, instance_id: str, device: str) -> None:
        attach(volume_id, instance_id, device)
        world.connector.host.attach(volume_id, "/dev/nvme2n1", holds="ext4")

    monkeypatch.setattr(world.ec2, "attach_volume", attach_and_appear)
    monkeypatch.setattr(transfer, "ensure_pulled", crash)
    monkeypatch.setattr(world.syncer, "sync", crash)
    with pytest.raises(Crash):
        start_restore(world.app, to=Path(str(tmp_path)) / "out", run_id=backup.id)
    monkeypatch.undo()
    (restore_id,) = [r for r, s in runs_of(world).items() if s == "syncing"]
    temporary = show_run(world.app, restore_id)["volume_id"]
    world.connector.host.mounts.clear()
    new = start_backup(world.app, "p")
    assert new.state == "done" and runs_of(world)[restore_id] == "aborted"
    assert temporary not in world.ec2.volumes  # its temporary volume is deleted
    assert any("(restore, abandoned in syncing): force-cleaned" in w for w in new.warnings)


def _init_killed_while_formatting(world: World, monkeypatch: pytest.MonkeyPatch) -> str:
    class Crash(BaseException):
        pass

    def crash(*_a: object, **_k: object) -> None:
        raise Crash

    host = world.connector.host
    attach = world.ec2.attach_volume

    def attach_and_appear(volume_id: str, instance_id: str, device: str) -> None:
        attach(volume_id, instance_id, device)
        if volume_id not in host.devices:
            host.attach(volume_id, f"/dev/nvme{len(host.devices) + 1}n1")  # blank

    monkeypatch.setattr(world.ec2, "attach_volume", attach_and_appear)
    with monkeypatch.context() as during:
        during.setattr(host, "make_filesystem", crash)
        with pytest.raises(Crash):
            init(world)
    (init_id,) = [r for r, s in runs_of(world).items() if s == "formatting"]
    return init_id


def init(world: World) -> object:
    source = world.app.config_path.parent / "src"
    return start_init(
        world.app,
        "fresh",
        region="us-east-1",
        availability_zone="us-east-1a",
        size_gib=1,
        sources=[source],
        allow_ssh_from="203.0.113.7",
    )


def test_an_abandoned_init_is_finished_by_the_next_run_of_its_profile(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_id = _init_killed_while_formatting(world, monkeypatch)
    volume = show_run(world.app, init_id)["volume_id"]
    config = world.app.config_path.read_text()
    assert f'volume_id = "{volume}"' in config  # written as soon as it existed
    assert 'allow_ssh_from = "203.0.113.7/32"' in config
    backup = start_backup(world.app, "fresh")
    assert backup.state == "done" and backup.volume_id == volume
    assert runs_of(world)[init_id] == "done"
    assert any(
        f"healed run {init_id} (init, abandoned in formatting): resumed" in w
        for w in backup.warnings
    )


def test_an_abandoned_init_is_started_over_by_a_new_init(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_id = _init_killed_while_formatting(world, monkeypatch)
    volume = show_run(world.app, init_id)["volume_id"]
    again = init(world)
    assert again.state == "done" and runs_of(world)[init_id] == "aborted"  # type: ignore[attr-defined]
    assert volume not in world.ec2.volumes  # the abandoned init's volume is gone
    config = world.app.config_path.read_text()
    assert f'volume_id = "{again.volume_id}"' in config and volume not in config  # type: ignore[attr-defined]


def test_resume_clean_of_an_init_deletes_its_volume_and_its_profile_entry(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ec2backup.commands.runner import resume

    init_id = _init_killed_while_formatting(world, monkeypatch)
    volume = show_run(world.app, init_id)["volume_id"]
    assert resume(world.app, init_id, clean=True).state == "aborted"
    assert volume not in world.ec2.volumes
    assert "fresh" not in world.app.config_path.read_text()
    assert "[profiles.p]" in world.app.config_path.read_text()  # the others stay


def test_an_init_killed_before_it_recorded_its_volume_is_cleaned_by_its_tags(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ec2backup.commands.runner import resume
    from ec2backup.run.steps import volume as volume_step

    class Crash(BaseException):
        pass

    def crash_point(name: str) -> None:
        if name == "called:create_volume":
            raise Crash

    before = set(world.ec2.volumes)
    with monkeypatch.context() as during:
        during.setattr(volume_step, "crash_point", crash_point)
        with pytest.raises(Crash):
            init(world)
    (init_id,) = [r for r, s in runs_of(world).items() if s == "creating_volume"]
    assert show_run(world.app, init_id)["volume_id"] is None  # made, never recorded
    assert len(set(world.ec2.volumes) - before) == 1
    assert resume(world.app, init_id, clean=True).state == "aborted"
    assert set(world.ec2.volumes) == before  # found by the run's tags and deleted
