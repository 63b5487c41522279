"""The engine's control flow with fakes: order of steps, commits, failure, resume, relaunch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ec2backup.commands.app import Adapters, App
from ec2backup.commands.backup import start_backup
from ec2backup.commands.history import list_runs, show_run
from ec2backup.commands.runner import resume
from ec2backup.core.states import RunKind, path
from ec2backup.core.times import utcnow
from ec2backup.db.store import open_store
from ec2backup.errors import (
    Aftermath,
    CloudError,
    Interrupted,
    RemoteCommandError,
    RemoteError,
    RunStateError,
    aftermath_of,
)
from tests.fakes import FakeConnector, FakeEc2, FakeSyncer


@dataclass
class World:
    app: App
    ec2: FakeEc2
    connector: FakeConnector
    syncer: FakeSyncer
    volume_id: str


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    ec2, connector, syncer = FakeEc2(), FakeConnector(), FakeSyncer()
    volume = ec2.add_volume()
    connector.host.attach(volume.id, holds="ext4")
    source = tmp_path / "src"
    source.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[profiles.p]\nregion = "us-east-1"\navailability_zone = "us-east-1a"\n'
        f'volume_id = "{volume.id}"\nsources = [{{ path = "{source}", dest = "src" }}]\n'
    )
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    app = App(
        store=store,
        config_path=config,
        data_dir=tmp_path / "data",
        adapters=Adapters(
            ec2=lambda _r, _id: ec2, connector=lambda: connector, syncer=lambda: syncer
        ),
    )
    yield World(app, ec2, connector, syncer, volume.id)
    store.close()


def test_a_run_walks_the_whole_path_and_cleans_up(world: World) -> None:
    run = start_backup(world.app, "p")
    shown = show_run(world.app, run.id)
    assert [e["to"] for e in shown["events"]] == [str(s) for s in path(RunKind.BACKUP)]
    assert shown["state"] == "done" and shown["finished_at"] is not None
    stats = shown["stats"]
    assert (stats["files_transferred"], stats["bytes_sent"], stats["total_size"]) == (2, 100, 1000)
    assert stats["snapshot_added_bytes"] is None  # no EBS direct APIs in this world
    assert all(e["seconds_in_state"] is not None for e in shown["events"][:-1])
    assert [i.state for i in world.ec2.instances.values()] == ["terminated"]
    assert world.ec2.volumes[world.volume_id].attachments == ()
    assert len(world.ec2.snapshots) == 1
    assert not world.app.run_dir(run.id).exists()  # the run's private key is gone
    assert [m.read_only for m in world.connector.host.mount_log] == [False]


@pytest.mark.parametrize("source", ["snapshot", "live volume", "verify"])
def test_restore_and_verify_mount_the_volume_read_only(
    world: World, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ec2backup.commands.backup import start_verify
    from ec2backup.commands.restore import start_restore

    backup = start_backup(world.app, "p")
    host = world.connector.host
    host.mount_log.clear()
    attach = world.ec2.attach_volume

    def attach_and_appear(volume_id: str, instance_id: str, device: str) -> None:
        attach(volume_id, instance_id, device)  # a volume made from the snapshot holds ext4
        host.attach(volume_id, f"/dev/nvme{len(host.devices) + 1}n1", holds="ext4")

    monkeypatch.setattr(world.ec2, "attach_volume", attach_and_appear)
    if source == "snapshot":
        run = start_restore(world.app, to=tmp_path / "restored", run_id=backup.id)
        assert run.volume_id != world.volume_id
    elif source == "live volume":
        run = start_restore(world.app, to=tmp_path / "restored", live=True, profile_name="p")
    else:
        run = start_verify(world.app, "p")
    assert run.state == "done"
    assert [m.read_only for m in host.mount_log] == [True]


def fail_once(world: World, call: str) -> None:
    def before(name: str) -> None:
        if name == call:
            world.ec2.before = lambda _n: None
            raise CloudError(f"{call} broke")  # a definite error: not retried

    world.ec2.before = before


def test_a_failure_is_recorded_and_resume_finishes_the_run(world: World) -> None:
    fail_once(world, "detach_volume")
    with pytest.raises(CloudError) as info:
        start_backup(world.app, "p")
    run_id = info.value.run_id
    assert run_id is not None
    shown = show_run(world.app, run_id)
    assert (shown["state"], shown["failed_from"]) == ("failed", "detaching")
    assert "detach_volume broke" in shown["error"]
    assert world.app.run_dir(run_id).exists()  # kept for the resume

    resumed = resume(world.app, run_id)
    assert resumed.state == "done" and resumed.error is None
    states = [e["to"] for e in show_run(world.app, run_id)["events"]]
    assert states[states.index("failed") :][:3] == ["failed", "detaching", "detached"]
    assert world.ec2.calls.count("run_instance") == 1  # resume did not launch again


def test_resume_after_the_instance_died_relaunches(world: World) -> None:
    fail_once(world, "create_snapshot")  # any late failure; then kill the instance
    world.ec2.before = lambda name: None
    calls: list[str] = []

    def die_while_syncing(source: Path, target: object, remote_dir: str, **kw: object) -> object:
        calls.append(remote_dir)
        if len(calls) == 1:
            instance_id = next(iter(world.ec2.instances))
            world.ec2.terminate_instance(instance_id)
            raise RemoteCommandError("rsync lost its instance", exit_status=255)
        return FakeSyncer.sync(world.syncer, source, target, remote_dir)  # type: ignore[arg-type]

    world.syncer.sync = die_while_syncing  # type: ignore[method-assign]
    with pytest.raises(RemoteError) as info:
        start_backup(world.app, "p")
    run_id = info.value.run_id or ""
    world.connector.host.mounts.clear()  # the old instance's mounts died with it
    run = resume(world.app, run_id)
    assert run.state == "done"
    events = [e["to"] for e in show_run(world.app, run_id)["events"]]
    assert events[events.index("failed") + 1 : events.index("failed") + 4] == [
        "syncing",
        "launching",
        "instance_running",
    ]
    assert len(world.ec2.instances) == 2 and run.launch_attempt == 2


def test_interrupt_is_recorded_as_failed_with_its_cause(world: World) -> None:
    def interrupt(name: str) -> None:
        if name == "attach_volume":
            raise KeyboardInterrupt

    world.ec2.before = interrupt
    with pytest.raises(Interrupted) as info:
        start_backup(world.app, "p")
    shown = show_run(world.app, info.value.run_id or "")
    assert (shown["state"], shown["failed_from"]) == ("failed", "attaching")
    assert shown["error"] == "interrupted by Ctrl-C"


def test_resume_of_a_finished_run_is_refused(world: World) -> None:
    run = start_backup(world.app, "p")
    with pytest.raises(RunStateError, match="already done"):
        resume(world.app, run.id)


def test_a_crash_leaves_the_active_state_and_resume_reobserves(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that dies without any handler (as under SIGKILL) after the attach call."""

    class Crash(BaseException):
        pass

    def crash(*_args: object) -> None:
        raise Crash

    monkeypatch.setattr(world.ec2, "wait_volume_attached", crash)
    with pytest.raises(Crash):
        start_backup(world.app, "p")
    (row,) = list_runs(world.app)
    assert row["state"] == "attaching"  # the last committed state, not `failed`
    monkeypatch.undo()

    run = resume(world.app, row["id"])
    assert run.state == "done"
    assert world.ec2.calls.count("attach_volume") == 1  # observed as attached, not redone
    assert world.ec2.calls.count("run_instance") == 1


def test_a_run_of_a_volume_held_by_a_live_process_is_refused(world: World) -> None:
    import subprocess
    import sys

    from ec2backup.db.leases import Holder
    from ec2backup.db.models import Lease
    from ec2backup.errors import LeaseHeldError

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with world.app.store.session() as session:
            now = utcnow()
            session.add(
                Lease(
                    key=f"volume:{world.volume_id}",
                    run_id="someone",
                    holder_host=Holder.me().host,
                    holder_pid=holder.pid,
                    acquired_at=now,
                    heartbeat_at=now,
                )
            )
            session.commit()
        with pytest.raises(LeaseHeldError, match="in use by run someone"):
            start_backup(world.app, "p")
        assert list_runs(world.app) == []  # nothing recorded
        assert world.ec2.calls == []  # nothing touched
    finally:
        holder.kill()
        holder.wait()


def crash_in(world: World, monkeypatch: pytest.MonkeyPatch, target: str, method: str) -> str:
    """Run a backup that dies (no handler, as under SIGKILL) when ``target.method`` is called."""

    class Crash(BaseException):
        pass

    def crash(*_args: object, **_kw: object) -> None:
        raise Crash

    obj = {"ec2": world.ec2, "syncer": world.syncer}[target]
    monkeypatch.setattr(obj, method, crash)
    with pytest.raises(Crash):
        start_backup(world.app, "p")
    monkeypatch.undo()
    (row,) = list_runs(world.app)
    return str(row["id"])


def test_clean_from_mounted_unmounts_detaches_terminates_and_makes_no_snapshot(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = crash_in(world, monkeypatch, "syncer", "sync")
    assert world.connector.host.mounts  # the crashed run left the volume mounted
    run = resume(world.app, run_id, clean=True)
    assert run.state == "aborted"
    assert world.connector.host.mounts == {}
    assert world.ec2.volumes[world.volume_id].attachments == ()
    assert {i.state for i in world.ec2.instances.values()} == {"terminated"}
    assert world.ec2.snapshots == {}
    events = [e["to"] for e in show_run(world.app, run_id)["events"]]
    assert events[-3:] == ["syncing", "cleaning", "aborted"]
    assert not world.app.run_dir(run_id).exists()


def test_clean_after_the_sync_finished_keeps_the_snapshot(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = crash_in(world, monkeypatch, "ec2", "detach_volume")
    resume(world.app, run_id, clean=True)
    assert len(world.ec2.snapshots) == 1


def test_clean_snapshots_an_unfinished_sync_only_when_asked(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = crash_in(world, monkeypatch, "syncer", "sync")
    resume(world.app, run_id, clean=True, snapshot=True)
    assert len(world.ec2.snapshots) == 1


def test_clean_forces_a_detach_that_hangs_and_says_so(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ec2backup.errors import WaitTimeoutError
    from ec2backup.run import engine

    run_id = crash_in(world, monkeypatch, "syncer", "sync")
    world.connector.host.mounts.clear()
    detach = world.ec2.detach_volume
    forced: list[bool] = []

    def stuck_detach(volume_id: str, instance_id: str, force: bool = False) -> None:
        forced.append(force)
        if force:
            detach(volume_id, instance_id, force)

    def wait(volume_id: str, timeout: float) -> object:
        if world.ec2.volumes[volume_id].attachments:
            raise WaitTimeoutError(f"volume {volume_id} still detaching")
        return world.ec2.volumes[volume_id]

    monkeypatch.setattr(world.ec2, "detach_volume", stuck_detach)
    monkeypatch.setattr(world.ec2, "wait_volume_available", wait)
    monkeypatch.setattr(engine, "CLEAN_DETACH_SECONDS", 0.0)
    resume(world.app, run_id, clean=True)
    assert forced == [False, True]
    shown = show_run(world.app, run_id)
    assert shown["state"] == "aborted"
    assert any("forced the detach" in w for w in shown["warnings"])


def test_a_failed_clean_resumes_as_a_clean(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = crash_in(world, monkeypatch, "syncer", "sync")
    fail_once(world, "terminate_instance")
    with pytest.raises(CloudError):
        resume(world.app, run_id, clean=True)
    assert show_run(world.app, run_id)["failed_from"] == "cleaning"
    run = resume(world.app, run_id)  # plain resume continues the cleanup
    assert run.state == "aborted"
    assert world.ec2.calls.count("run_instance") == 1


def test_clean_of_a_finished_run_is_refused(world: World) -> None:
    run = start_backup(world.app, "p")
    with pytest.raises(RunStateError, match="nothing to clean up"):
        resume(world.app, run.id, clean=True)


def test_a_dropped_connection_during_sync_is_retried_and_recorded(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ec2backup.errors import SyncError
    from ec2backup.run import engine

    monkeypatch.setattr(engine, "STEP_RETRY_DELAYS", (0.0, 0.0))
    real_sync = world.syncer.sync
    failures = [SyncError("connection unexpectedly closed", rsync_exit=12)]

    def flaky(*args: object, **kw: object) -> object:
        if failures:
            raise failures.pop()
        return real_sync(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(world.syncer, "sync", flaky)
    run = start_backup(world.app, "p")
    assert run.state == "done"
    assert world.connector.connects == 2  # a fresh connection for the retry
    assert any("sync retried after" in w for w in run.warnings)


@pytest.mark.parametrize(("rsync_exit", "tries"), [(255, 3), (12, 3), (23, 1), (24, 1)])
def test_retries_are_bounded_and_definite_errors_are_not_retried(
    world: World, monkeypatch: pytest.MonkeyPatch, rsync_exit: int, tries: int
) -> None:
    from ec2backup.errors import SyncError
    from ec2backup.run import engine

    monkeypatch.setattr(engine, "STEP_RETRY_DELAYS", (0.0, 0.0))
    calls: list[int] = []

    def sync(*_a: object, **_k: object) -> object:
        calls.append(rsync_exit)
        raise SyncError("broken", rsync_exit=rsync_exit)

    monkeypatch.setattr(world.syncer, "sync", sync)
    with pytest.raises(SyncError):
        start_backup(world.app, "p")
    assert len(calls) == tries


def test_the_profiles_retention_applies_after_a_successful_run(world: World) -> None:
    world.app.config_path.write_text(
        world.app.config_path.read_text() + "retention = { keep_last = 1 }\n"
    )
    first = start_backup(world.app, "p")
    second = start_backup(world.app, "p")
    (kept,) = world.ec2.snapshots.values()
    assert kept.id == second.snapshot_id != first.snapshot_id


def test_data_that_does_not_fit_stops_before_rsync_and_cleans_up(world: World) -> None:
    from ec2backup.errors import InsufficientSpaceError

    source = Path(world.app.config_path.parent / "src")
    (source / "big.bin").write_bytes(b"x" * 100_000)
    world.connector.host.free = 50_000
    with pytest.raises(InsufficientSpaceError, match="need about") as info:
        start_backup(world.app, "p")
    assert world.syncer.calls == []  # rsync never started
    shown = show_run(world.app, info.value.run_id or "")
    assert shown["state"] == "aborted"  # resuming cannot make it fit: cleaned up at once
    assert {i.state for i in world.ec2.instances.values()} == {"terminated"}
    assert world.ec2.snapshots == {}


def test_data_larger_than_the_whole_volume_is_refused_before_anything(world: World) -> None:
    from dataclasses import replace

    from ec2backup.errors import InsufficientSpaceError

    source = Path(world.app.config_path.parent / "src")
    (source / "big.bin").write_bytes(b"x" * 100_000)
    volume = world.ec2.volumes[world.volume_id]
    world.ec2.volumes[world.volume_id] = replace(volume, size_gib=0)
    with pytest.raises(InsufficientSpaceError, match="more than volume"):
        start_backup(world.app, "p")
    assert list_runs(world.app) == [] and world.ec2.instances == {}


def test_a_missing_ami_is_refused_before_anything(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ec2backup.errors import ResourceNotFoundError

    def missing(ami: str) -> str:
        raise ResourceNotFoundError(f"AMI {ami} not found")

    monkeypatch.setattr(world.ec2, "resolve_image", missing)
    with pytest.raises(ResourceNotFoundError):
        start_backup(world.app, "p")
    assert list_runs(world.app) == [] and world.ec2.instances == {}


def test_show_reports_instance_time_and_its_cost(world: World) -> None:
    run = start_backup(world.app, "p")
    cost = show_run(world.app, run.id)["cost"]
    assert cost["instance_type"] == "t3.micro"
    assert 0 <= cost["instance_seconds"] < 60  # fakes are instant
    assert cost["billed_seconds"] == 60  # the per-launch minimum
    assert cost["usd"] == pytest.approx(60 / 3600 * 0.0104, abs=1e-6)  # rounded to 6 places


def seen(exc: BaseException) -> tuple[str, ...] | None:
    """What the error says the run left, as EC2 showed it after the release."""
    left = aftermath_of(exc)
    assert left is not None and left.observed, left
    return left.left


def failing_sync(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from ec2backup.errors import SyncError

    def partial(*_a: object, **_k: object) -> object:
        raise SyncError(
            "rsync failed with exit code 23: some files could not be read", rsync_exit=23
        )

    monkeypatch.setattr(world.syncer, "sync", partial)


def test_a_failed_step_releases_the_cloud_and_resume_relaunches(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ec2backup.errors import SyncError

    failing_sync(world, monkeypatch)
    with pytest.raises(SyncError) as info:
        start_backup(world.app, "p")
    run_id = info.value.run_id or ""
    # What the message says: nothing is left running, and resume continues.
    assert aftermath_of(info.value) == Aftermath(
        run_id, (), observed=True, ended=False, resumable=True
    )
    shown = show_run(world.app, run_id)
    assert (shown["state"], shown["failed_from"]) == ("failed", "syncing")  # progress kept
    assert {i.state for i in world.ec2.instances.values()} == {"terminated"}
    assert world.ec2.volumes[world.volume_id].attachments == ()
    assert world.connector.host.mounts == {}  # unmounted before the detach
    assert any(w.startswith("after the failure: ") for w in shown["warnings"])
    monkeypatch.undo()
    run = resume(world.app, run_id)
    assert run.state == "done" and run.launch_attempt == 2  # relaunched


def kept_after_a_failed_sync(world: World, monkeypatch: pytest.MonkeyPatch) -> str:
    """A backup whose sync failed under ``--keep-instance``: its run id."""
    from ec2backup.errors import SyncError

    failing_sync(world, monkeypatch)
    world.app.keep_instance = True
    with pytest.raises(SyncError) as info:
        start_backup(world.app, "p")
    (instance,) = world.ec2.instances.values()
    assert instance.state == "running"
    assert world.ec2.volumes[world.volume_id].attachment_to(instance.id) is not None
    assert seen(info.value) == (f"instance {instance.id} with volume {world.volume_id} attached",)
    return info.value.run_id or ""


def test_keep_instance_keeps_it_and_the_error_says_what_still_runs(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = kept_after_a_failed_sync(world, monkeypatch)
    # The one command that ends it.
    assert resume(world.app, run_id, clean=True).state == "aborted"
    assert {i.state for i in world.ec2.instances.values()} == {"terminated"}


def test_ctrl_c_releases_the_cloud_too(world: World) -> None:
    def interrupt(name: str) -> None:
        if name == "detach_volume" and not interrupted:
            interrupted.append(name)
            raise KeyboardInterrupt

    interrupted: list[str] = []
    world.ec2.before = interrupt
    with pytest.raises(Interrupted) as info:
        start_backup(world.app, "p")
    assert seen(info.value) == ()
    assert {i.state for i in world.ec2.instances.values()} == {"terminated"}


def test_a_release_that_fails_says_what_is_still_running(world: World) -> None:
    from ec2backup.errors import SyncError

    def broken(*_a: object, **_k: object) -> object:
        raise SyncError("rsync failed with exit code 23", rsync_exit=23)

    world.syncer.sync = broken  # type: ignore[method-assign]

    def no_terminate(name: str) -> None:
        if name == "terminate_instance":
            raise CloudError("TerminateInstances: throttled for good")

    world.ec2.before = no_terminate
    with pytest.raises(SyncError) as info:
        start_backup(world.app, "p")
    (instance,) = world.ec2.instances.values()
    assert seen(info.value) == (f"instance {instance.id}",)  # detached, not terminated
    shown = show_run(world.app, info.value.run_id or "")
    assert any("the release failed" in w for w in shown["warnings"])
