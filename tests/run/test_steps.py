"""Each ensure_* step on its own, against in-memory fakes: observe, check origin, skip what is
already done, act."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ec2backup.config import Profile, Source
from ec2backup.core.tags import TAG_MANAGED, TAG_RUN_ID
from ec2backup.core.times import utcnow
from ec2backup.db.models import Run
from ec2backup.db.recorder import RunRecorder
from ec2backup.db.store import open_store
from ec2backup.errors import (
    DeviceNotFoundError,
    InvalidResourceStateError,
    NotInBackupError,
    RemoteCommandError,
    ResourceNotFoundError,
    UnformattedVolumeError,
)
from ec2backup.ports import Attachment, DeviceContents
from ec2backup.run.context import StepContext
from ec2backup.run.steps.attachment import ensure_attached, ensure_detached
from ec2backup.run.steps.filesystem import ensure_formatted, ensure_mounted, ensure_unmounted
from ec2backup.run.steps.instance import ensure_instance_running, ensure_terminated
from ec2backup.run.steps.snapshot import ensure_snapshot
from ec2backup.run.steps.transfer import ensure_compared, ensure_pulled, ensure_synced
from ec2backup.run.userdata import HostKeyPair
from tests.fakes import FakeConnector, FakeEc2, FakeMount, FakeSyncer


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[StepContext]:
    ec2 = FakeEc2()
    volume = ec2.add_volume()
    profile = Profile(
        name="p",
        region="us-east-1",
        availability_zone="us-east-1a",
        volume_id=volume.id,
        sources=(Source(path=tmp_path, dest="home"),),
    )
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with store.session() as session:
        run = Run(
            id="20261128T000000Z-abcdef",
            kind="backup",
            profile="p",
            state="launching",
            host="h",
            volume_id=volume.id,
            launch_attempt=0,
            warnings=[],
            config={},
        )
        session.add(run)
        session.commit()
        connector = FakeConnector()
        context = StepContext(
            run=run,
            recorder=RunRecorder(session, run),
            profile=profile,
            ec2=ec2,
            connector=connector,
            syncer=FakeSyncer(),
            run_dir=tmp_path / "run",
            key_path=tmp_path / "run" / "id_ed25519",
            public_key="ssh-ed25519 AAAA test",
            host_key=host_key_pair(tmp_path / "run"),
        )
        yield context
        context.close_host()  # and its keeper thread
    store.close()


def host_key_pair(directory: Path) -> HostKeyPair:
    from ec2backup.adapters.keys import generate_host_key

    directory.mkdir(mode=0o700, exist_ok=True)
    return HostKeyPair(*generate_host_key(directory))


def fake(ctx: StepContext) -> FakeEc2:
    assert isinstance(ctx.ec2, FakeEc2)
    return ctx.ec2


def test_launch_records_token_before_the_call_and_tags_in_the_call(ctx: StepContext) -> None:
    seen: list[tuple[str | None, str | None]] = []
    fake(ctx).before = lambda name: seen.append((ctx.run.launch_token, ctx.run.instance_id))
    ensure_instance_running(ctx)
    assert seen == [(f"{ctx.run.id}-1", None)]
    instance = fake(ctx).instances[ctx.run.instance_id or ""]
    assert instance.tags[TAG_RUN_ID] == ctx.run.id and instance.tags[TAG_MANAGED] == "true"
    assert ctx.run.ssh_address == instance.public_ip
    assert ctx.run.config["image_id"].startswith("ami-")


def test_launch_carries_the_dead_mans_switch(ctx: StepContext) -> None:
    from datetime import datetime, timedelta

    from ec2backup.core.tags import TAG_EXPIRES_AT

    specs = []
    run_instance = fake(ctx).run_instance
    fake(ctx).run_instance = lambda spec: specs.append(spec) or run_instance(spec)  # type: ignore[method-assign]
    ensure_instance_running(ctx)
    (spec,) = specs
    import yaml

    booted = yaml.safe_load(spec.user_data)
    assert booted["ssh_authorized_keys"] == [f"restrict {ctx.public_key}"]  # commands only
    assert booted["ssh_keys"]["ed25519_public"] == ctx.host_key.public  # type: ignore[union-attr]
    assert "bootcmd" not in booted  # runs before D-Bus: a timer armed there would not exist
    idle, ceiling = booted["runcmd"]
    assert "--unit=ec2backup-idle --on-active=1200s" in " ".join(idle)
    assert "--unit=ec2backup-lifetime" in ceiling and "--on-active=172800s" in ceiling
    expires = datetime.fromisoformat(spec.tags[TAG_EXPIRES_AT].replace("Z", "+00:00"))
    assert abs(expires - (utcnow() + timedelta(minutes=2880))) < timedelta(minutes=1)
    # a retry of the same attempt sends the same expiry (same ClientToken, same parameters)
    ctx.run.instance_id = None
    fake(ctx).instances.clear()  # as if the lookup by tag found nothing yet
    fake(ctx).tokens.clear()
    ensure_instance_running(ctx)
    assert specs[1].tags[TAG_EXPIRES_AT] == spec.tags[TAG_EXPIRES_AT]
    assert specs[1].client_token == spec.client_token
    assert specs[1].user_data == spec.user_data


def test_launch_adopts_the_instance_of_a_crash_between_launch_and_record(ctx: StepContext) -> None:
    ensure_instance_running(ctx)
    first = ctx.run.instance_id
    ctx.run.instance_id = None  # as if the process died before recording it
    ensure_instance_running(ctx)
    assert ctx.run.instance_id == first
    assert fake(ctx).calls.count("run_instance") == 1
    assert ctx.run.launch_attempt == 1


def test_launch_starts_a_new_attempt_when_the_instance_is_gone(ctx: StepContext) -> None:
    ensure_instance_running(ctx)
    first = ctx.run.instance_id or ""
    fake(ctx).terminate_instance(first)
    ensure_instance_running(ctx)
    assert ctx.run.instance_id != first
    assert ctx.run.launch_token == f"{ctx.run.id}-2"


def test_launch_refuses_a_volume_attached_elsewhere(ctx: StepContext) -> None:
    volume_id = ctx.run.volume_id or ""
    ec2 = fake(ctx)
    ec2.volumes[volume_id] = replace(
        ec2.volumes[volume_id],
        state="in-use",
        attachments=(Attachment("i-other", "/dev/sdf", "attached"),),
    )
    with pytest.raises(InvalidResourceStateError, match="attached to instance i-other"):
        ensure_instance_running(ctx)
    assert "run_instance" not in ec2.calls


def test_launch_refuses_a_volume_in_another_zone(ctx: StepContext) -> None:
    ec2 = fake(ctx)
    volume_id = ctx.run.volume_id or ""
    ec2.volumes[volume_id] = replace(ec2.volumes[volume_id], availability_zone="us-east-1b")
    with pytest.raises(InvalidResourceStateError, match="us-east-1b"):
        ensure_instance_running(ctx)


def test_missing_volume_is_not_found(ctx: StepContext) -> None:
    fake(ctx).volumes.clear()
    with pytest.raises(ResourceNotFoundError):
        ensure_instance_running(ctx)


def test_attach_is_skipped_when_already_attached(ctx: StepContext) -> None:
    ensure_instance_running(ctx)
    ensure_attached(ctx)
    ensure_attached(ctx)
    assert fake(ctx).calls.count("attach_volume") == 1


def _attached_and_visible(ctx: StepContext, connector: FakeConnector) -> str:
    ensure_instance_running(ctx)
    ensure_attached(ctx)
    return connector.host.attach(ctx.run.volume_id or "")


def _mounted(ctx: StepContext) -> tuple[FakeConnector, FakeSyncer]:
    """Launched, attached, formatted and mounted: where the sync step starts."""
    connector, syncer = ctx.connector, ctx.syncer
    assert isinstance(connector, FakeConnector) and isinstance(syncer, FakeSyncer)
    device = _attached_and_visible(ctx, connector)
    connector.host.contents[device] = DeviceContents(filesystem="ext4")
    ensure_mounted(ctx)
    return connector, syncer


def _connector(ctx: StepContext) -> FakeConnector:
    assert isinstance(ctx.connector, FakeConnector)
    return ctx.connector


def test_mount_refuses_a_volume_without_filesystem(ctx: StepContext) -> None:
    connector = _connector(ctx)
    _attached_and_visible(ctx, connector)
    with pytest.raises(UnformattedVolumeError, match="no filesystem"):
        ensure_mounted(ctx)
    assert not any(c.startswith("make_filesystem") for c in connector.host.calls)
    assert connector.host.mounts == {}


def test_mount_probes_the_filesystem_only_when_mount_fails(ctx: StepContext) -> None:
    connector = _connector(ctx)
    device = _attached_and_visible(ctx, connector)
    connector.host.contents[device] = DeviceContents(partition_table="gpt")
    with pytest.raises(RemoteCommandError, match="could not mount") as info:
        ensure_mounted(ctx)
    assert f"device_contents {device}" in connector.host.calls  # probed to say why
    assert info.value.run_id == ctx.run.id and info.value.resources["volume"] == ctx.run.volume_id
    connector.host.contents[device] = DeviceContents(filesystem="ext4")
    before = len(connector.host.calls)
    ensure_mounted(ctx)
    assert connector.host.calls[before:] == [
        f"find_device {ctx.run.volume_id}",
        "mounted_device /mnt/ec2backup",
        f"mount {device} /mnt/ec2backup rw",
    ]


def test_mount_refuses_a_mount_point_holding_another_device(ctx: StepContext) -> None:
    connector = _connector(ctx)
    device = _attached_and_visible(ctx, connector)
    connector.host.contents[device] = DeviceContents(filesystem="ext4")
    connector.host.mounts["/mnt/ec2backup"] = FakeMount("/dev/nvme9n1")
    with pytest.raises(InvalidResourceStateError, match="already a mount of /dev/nvme9n1"):
        ensure_mounted(ctx)
    assert connector.host.mount_log == []


def test_format_never_formats_over_an_existing_filesystem(ctx: StepContext) -> None:
    connector = _connector(ctx)
    device = _attached_and_visible(ctx, connector)
    assert "made ext4" in ensure_formatted(ctx)
    assert "already has a ext4" in ensure_formatted(ctx)
    assert [c for c in connector.host.calls if c.startswith("make_filesystem")] == [
        f"make_filesystem {device} ec2backup"
    ]


@pytest.mark.parametrize(
    ("holds", "said"),
    [
        (DeviceContents(partition_table="gpt"), "partition table (gpt)"),
        (DeviceContents(filesystem="xfs"), "xfs"),
    ],
)
def test_format_leaves_a_partitioned_or_other_device_alone(
    ctx: StepContext, holds: DeviceContents, said: str
) -> None:
    connector = _connector(ctx)
    device = _attached_and_visible(ctx, connector)
    connector.host.contents[device] = holds
    assert f"already has a {said}" in ensure_formatted(ctx)
    assert not any(c.startswith("make_filesystem") for c in connector.host.calls)


def test_format_refuses_when_the_probe_fails(ctx: StepContext) -> None:
    connector = _connector(ctx)
    device = _attached_and_visible(ctx, connector)
    connector.host.unreadable.add(device)
    with pytest.raises(RemoteCommandError, match=r"could not tell what \S+ holds") as info:
        ensure_formatted(ctx)
    assert not any(c.startswith("make_filesystem") for c in connector.host.calls)
    assert info.value.run_id == ctx.run.id and info.value.resources["volume"] == ctx.run.volume_id


def test_a_volume_that_never_appears_is_device_not_found(ctx: StepContext) -> None:
    ensure_instance_running(ctx)
    ensure_attached(ctx)
    with pytest.raises(DeviceNotFoundError) as info:
        ensure_formatted(ctx)
    assert info.value.run_id == ctx.run.id


def test_mount_sync_unmount_are_idempotent(ctx: StepContext) -> None:
    connector = _connector(ctx)
    device = _attached_and_visible(ctx, connector)
    connector.host.contents[device] = DeviceContents(filesystem="ext4")
    ensure_mounted(ctx)
    assert "already mounted" in ensure_mounted(ctx)
    assert connector.host.mounts == {"/mnt/ec2backup": FakeMount(device, read_only=False)}
    ensure_synced(ctx)
    assert ctx.run.files_transferred == 2 and ctx.run.total_size == 1000
    ensure_unmounted(ctx)
    ensure_unmounted(ctx)
    assert connector.host.mounts == {}
    assert connector.connects == 1  # one SSH session for the whole run
    assert ctx.run.host_key_source == "user-data"
    keytype, blob = ctx.host_key.public.split()[:2]  # type: ignore[union-attr]
    assert connector.pinned == {ctx.known_hosts: [(keytype, blob)]}
    assert ctx.run.config["console_checked"] == ctx.run.instance_id
    assert connector.host.idle_armed == [20 * 60]  # armed once, by the new session


@pytest.mark.parametrize("needs_sudo", [True, False])
def test_rsync_runs_with_sudo_exactly_when_the_host_says(
    ctx: StepContext, needs_sudo: bool
) -> None:
    connector, syncer = _mounted(ctx)
    connector.host.rsync_needs_sudo = needs_sudo
    ensure_synced(ctx)
    ensure_compared(ctx)
    ctx.run.config = {**ctx.run.config, "to": str(ctx.run_dir / "restored")}
    ensure_pulled(ctx)
    # The sync, the compare, the pull (and the look at files changed during the sync: the
    # source holds the database being written).
    assert len(syncer.remote_sudo) >= 3 and set(syncer.remote_sudo) == {needs_sudo}


def test_sync_refuses_to_copy_onto_the_root_disk(ctx: StepContext) -> None:
    connector = _connector(ctx)
    _attached_and_visible(ctx, connector)
    with pytest.raises(InvalidResourceStateError, match="not mounted"):
        ensure_synced(ctx)
    assert isinstance(ctx.syncer, FakeSyncer) and ctx.syncer.calls == []


def test_sync_prepares_the_instance_in_one_call(ctx: StepContext) -> None:
    connector, _ = _mounted(ctx)
    before = len(connector.host.calls)
    ensure_synced(ctx)
    assert connector.host.calls[before:] == ["prepare_sync /mnt/ec2backup home"]


def test_sync_unlinks_names_no_longer_one_file_at_the_source_before_rsync(
    ctx: StepContext, tmp_path: Path
) -> None:
    connector, syncer = _mounted(ctx)
    (tmp_path / "a").write_text("replaced")
    (tmp_path / "b").write_text("kept")
    connector.host.hard_links = (("/mnt/ec2backup/home/a", "/mnt/ec2backup/home/b"),)
    removed_when_copying: list[list[str]] = []
    real_sync = syncer.sync

    def sync(*args: Any, **kw: Any) -> Any:
        removed_when_copying.append(list(connector.host.removed))
        return real_sync(*args, **kw)

    syncer.sync = sync  # type: ignore[method-assign]
    ensure_synced(ctx)
    # Removed before the copy writes in place, in one more round trip.
    assert removed_when_copying == [["/mnt/ec2backup/home/b"]]
    assert connector.host.calls[-1] == "remove_files /mnt/ec2backup/home/b"


def test_unmount_ends_a_leftover_rsync_holding_the_mount(ctx: StepContext) -> None:
    connector, _ = _mounted(ctx)
    connector.host.leftover_rsync = True
    assert ensure_unmounted(ctx) == "/mnt/ec2backup unmounted"
    assert connector.host.mounts == {} and not connector.host.leftover_rsync


def test_unmount_held_by_something_else_than_rsync_fails(ctx: StepContext) -> None:
    connector, _ = _mounted(ctx)
    connector.host.held_open = True
    with pytest.raises(RemoteCommandError, match="still busy"):
        ensure_unmounted(ctx)
    assert "/mnt/ec2backup" in connector.host.mounts


def test_unmount_is_one_call(ctx: StepContext) -> None:
    connector, _ = _mounted(ctx)
    before = len(connector.host.calls)
    assert ensure_unmounted(ctx) == "/mnt/ec2backup unmounted"
    assert connector.host.mounts == {}
    assert connector.host.calls[before:] == ["unmount /mnt/ec2backup"]


def test_sync_stops_when_a_leftover_rsync_does_not_end(ctx: StepContext) -> None:
    connector, syncer = _mounted(ctx)
    connector.host.leftover_rsync = connector.host.rsync_stuck = True
    with pytest.raises(RemoteCommandError, match="earlier rsync on the instance did not end"):
        ensure_synced(ctx)
    assert syncer.calls == []


def test_sync_stops_when_the_free_space_cannot_be_read(ctx: StepContext) -> None:
    connector, syncer = _mounted(ctx)
    connector.host.space_unreadable = True
    with pytest.raises(RemoteCommandError, match="could not read the free space"):
        ensure_synced(ctx)
    assert syncer.calls == []


def test_pull_copies_the_asked_directory_and_refuses_a_missing_one(ctx: StepContext) -> None:
    connector, syncer = _mounted(ctx)
    connector.host.directories.add("/mnt/ec2backup/home/docs")
    ctx.run.config = {**ctx.run.config, "to": str(ctx.run_dir / "restored"), "path": "home/docs"}
    ensure_pulled(ctx)
    assert syncer.calls == [(ctx.run_dir / "restored", "/mnt/ec2backup/home/docs")]
    ctx.run.config = {**ctx.run.config, "path": "home/nope"}
    with pytest.raises(NotInBackupError, match="the backup has no directory 'home/nope'") as info:
        ensure_pulled(ctx)
    # Bad input, which no resume can fix; the hint says what the nearest directory holds.
    assert info.value.exit_code == 2 and not info.value.resumable
    assert info.value.hint == "under 'home' it holds: docs/; give --path one of those"
    assert len(syncer.calls) == 1


def test_a_whole_restore_leaves_out_the_filesystems_lost_and_found(ctx: StepContext) -> None:
    connector, syncer = _mounted(ctx)
    ctx.run.config = {**ctx.run.config, "to": str(ctx.run_dir / "restored"), "path": ""}
    ensure_pulled(ctx)
    ctx.run.config = {**ctx.run.config, "path": "home"}
    connector.host.directories.add("/mnt/ec2backup/home")
    ensure_pulled(ctx)
    # Only at the filesystem's top: a directory of the user's may have that name below.
    assert [o["excludes"] for o in syncer.kwargs] == [("/lost+found",), ()]


def test_vanished_files_are_a_warning(ctx: StepContext) -> None:
    _, syncer = _mounted(ctx)
    syncer.exit_code = 24
    ensure_synced(ctx)
    assert any("vanished" in w for w in ctx.run.warnings)


def test_detach_and_terminate_treat_done_as_success(ctx: StepContext) -> None:
    ensure_instance_running(ctx)
    ensure_attached(ctx)
    ensure_detached(ctx)
    ensure_detached(ctx)
    assert fake(ctx).calls.count("detach_volume") == 1
    ensure_terminated(ctx)
    ensure_terminated(ctx)
    assert fake(ctx).instances[ctx.run.instance_id or ""].state == "terminated"
    assert "wait_instance_terminated" not in fake(ctx).calls  # shutting-down is enough


def test_terminate_waits_only_if_the_instance_is_not_even_shutting_down(
    ctx: StepContext,
) -> None:
    ensure_instance_running(ctx)
    fake(ctx).terminate_answer = "pending"  # what EC2 could answer for a stopped one starting
    ensure_terminated(ctx)
    assert fake(ctx).calls.count("wait_instance_terminated") == 1


def test_launch_finds_its_instance_by_tag_when_the_record_is_lost(ctx: StepContext) -> None:
    ensure_instance_running(ctx)
    first = ctx.run.instance_id or ""
    ctx.run.instance_id = None
    ctx.run.launch_token = None  # a lost record: the next launch uses a new token
    ctx.run.launch_attempt = 5
    ensure_instance_running(ctx)
    assert ctx.run.instance_id == first  # found by tag, not launched again
    assert len(fake(ctx).instances) == 1


def test_terminate_also_ends_instances_of_earlier_attempts(ctx: StepContext) -> None:
    ensure_instance_running(ctx)
    leaked = ctx.run.instance_id or ""
    ctx.run.instance_id, ctx.run.launch_token = None, f"{ctx.run.id}-other"
    fake(ctx).instances[leaked] = replace(fake(ctx).instances[leaked], state="stopped")
    ensure_instance_running(ctx)  # a stopped instance is not usable: a new one
    assert ctx.run.instance_id != leaked
    ensure_terminated(ctx)
    assert {i.state for i in fake(ctx).instances.values()} == {"terminated"}


def test_snapshot_is_looked_up_before_one_is_created(ctx: StepContext) -> None:
    ensure_snapshot(ctx)
    first = ctx.run.snapshot_id
    ctx.run.snapshot_id = None  # as if the process died before recording it
    ensure_snapshot(ctx)
    assert ctx.run.snapshot_id == first
    assert fake(ctx).calls.count("create_snapshot") == 1
    assert fake(ctx).snapshots[first or ""].tags[TAG_RUN_ID] == ctx.run.id


def test_snapshot_off(ctx: StepContext) -> None:
    ctx.profile = ctx.profile.model_copy(update={"snapshot": False})
    assert "off" in ensure_snapshot(ctx)
    assert fake(ctx).snapshots == {}


def test_a_console_showing_another_host_key_stops_the_run_before_any_connection(
    ctx: StepContext,
) -> None:
    from ec2backup.errors import HostKeyError
    from tests.fakes import another_host_key

    connector = _connector(ctx)
    _attached_and_visible(ctx, connector)
    fake(ctx).console = [another_host_key()]  # an instance that did not take our key
    with pytest.raises(HostKeyError, match="do not match the key this run gave it") as info:
        ensure_mounted(ctx)
    assert not info.value.resumable
    assert connector.connects == 0


def test_no_keys_on_the_console_yet_connects_with_the_pinned_key_and_checks_later(
    ctx: StepContext,
) -> None:
    connector = _connector(ctx)
    device = _attached_and_visible(ctx, connector)
    connector.host.contents[device] = DeviceContents(filesystem="ext4")
    fake(ctx).console = []  # cloud-init prints the keys only at the end of boot
    ensure_mounted(ctx)
    assert connector.connects == 1 and "console_checked" not in ctx.run.config
    fake(ctx).console = None  # printed now: the instance's own key
    ensure_synced(ctx)
    assert ctx.run.config["console_checked"] == ctx.run.instance_id


def test_nothing_pinned_means_no_connection(ctx: StepContext) -> None:
    from ec2backup.errors import HostKeyError

    connector = _connector(ctx)
    _attached_and_visible(ctx, connector)
    ctx.host_key = None  # a run that never made its host key cannot trust any
    with pytest.raises(HostKeyError, match="no host key is pinned"):
        ensure_mounted(ctx)
    assert connector.connects == 0


def test_no_capacity_falls_back_to_the_next_type_with_a_new_token(ctx: StepContext) -> None:
    from ec2backup.errors import CapacityError

    ctx.profile = ctx.profile.model_copy(
        update={"instance_type": "t3.micro", "fallback_instance_types": ("t3a.micro", "t3.small")}
    )
    specs = []
    run_instance = fake(ctx).run_instance

    def no_t3(spec):  # type: ignore[no-untyped-def]
        specs.append(spec)
        if spec.instance_type.startswith("t3."):
            raise CapacityError("InsufficientInstanceCapacity")
        return run_instance(spec)

    fake(ctx).run_instance = no_t3  # type: ignore[method-assign]
    assert "(t3a.micro)" in ensure_instance_running(ctx)
    assert [s.instance_type for s in specs] == ["t3.micro", "t3a.micro"]
    assert specs[0].client_token != specs[1].client_token  # other parameters, other token
    assert any("no capacity for t3.micro" in w for w in ctx.run.warnings)


def test_no_capacity_for_any_type_names_them_all(ctx: StepContext) -> None:
    from ec2backup.errors import CapacityError

    ctx.profile = ctx.profile.model_copy(update={"fallback_instance_types": ("t3a.micro",)})

    def never(spec):  # type: ignore[no-untyped-def]
        raise CapacityError("InsufficientInstanceCapacity")

    fake(ctx).run_instance = never  # type: ignore[method-assign]
    with pytest.raises(CapacityError, match=r"no capacity in us-east-1a for t3\.micro, t3a\.micro"):
        ensure_instance_running(ctx)
