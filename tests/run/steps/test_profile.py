"""An init's profile step (run/steps/profile.py), for both storage modes: written once, "already
written" on a re-run after a crash, an entry that differs refused; and what a force-clean of a
snapshots-only init undoes at each point of its path. The step on a bench run
(tests/run/cloudsteps.py), whole inits through the commands on the fakes (end to end:
tests/e2e/test_snapshot_init_crash.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ec2backup.commands.backup import start_backup, start_init
from ec2backup.commands.history import list_runs, show_run
from ec2backup.commands.runner import resume
from ec2backup.config import load_profile, read_document, write_profile
from ec2backup.core.states import DELETE_VOLUME, ENDED, WRITE_PROFILE, RunKind, RunState
from ec2backup.core.tags import TAG_KIND, TAG_RUN_ID
from ec2backup.errors import ConfigError
from ec2backup.run import engine
from ec2backup.run.steps.profile import ensure_profile_written
from tests.run.cloudsteps import Bench, make_bench
from tests.run.test_engine import World

PROFILE = "fresh"


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    made = make_bench(tmp_path)
    yield made
    made.store.close()


# --- the step ------------------------------------------------------------------------------


def test_a_snapshots_only_init_writes_its_profile_and_a_rerun_finds_it_written(
    bench: Bench,
) -> None:
    run_id = bench.new_run(RunKind.SNAPSHOT_INIT, WRITE_PROFILE.active)
    config = bench.tmp / "config.toml"
    with bench.context(run_id) as ctx:
        assert ensure_profile_written(ctx) == f"profile 'p' written to {config}"
        assert load_profile(config, "p") == ctx.profile  # no volume_id, storage = "snapshots"
        assert "volume_id" not in read_document(config)["profiles"]["p"]
        written = config.read_bytes()
        # Re-run after a crash between the write and its commit: the same entry is success.
        assert ensure_profile_written(ctx) == f"profile 'p' is already in {config}"
        assert config.read_bytes() == written


def test_an_init_writes_the_volume_it_made_and_refuses_an_entry_naming_another(
    bench: Bench,
) -> None:
    run_id = bench.new_run(RunKind.INIT, WRITE_PROFILE.active)
    config = bench.tmp / "config.toml"
    with bench.context(run_id) as ctx:
        ensure_profile_written(ctx)
        assert load_profile(config, "p").volume_id == bench.volume_id
        assert ensure_profile_written(ctx).endswith("is already in " + str(config))
        write_profile(config, ctx.profile.model_copy(update={"volume_id": "vol-0other"}))
        with pytest.raises(ConfigError, match="names volume vol-0other, not the volume"):
            ensure_profile_written(ctx)


@pytest.mark.parametrize(
    "other",
    [
        'region = "us-east-1"\navailability_zone = "us-east-1a"\nstorage = "snapshots"\n'
        'excludes = ["*.tmp"]\n',  # a valid profile, but not the one this init writes
        'region = "us-east-1"\n',  # not even a valid profile
    ],
)
def test_a_differing_entry_is_refused_in_one_line_and_left_as_it_is(
    bench: Bench, other: str
) -> None:
    run_id = bench.new_run(RunKind.SNAPSHOT_INIT, WRITE_PROFILE.active)
    config = bench.tmp / "config.toml"
    config.write_text("# mine\n[profiles.p]\n" + other)
    with bench.context(run_id) as ctx, pytest.raises(ConfigError) as refused:
        ensure_profile_written(ctx)
    line = refused.value.one_line()
    assert "\n" not in line
    assert f"config {config}" in line and "profile 'p'" in line
    assert "differs from the profile this init writes" in line
    assert f"`ec2backup resume {run_id} --clean`" in line
    assert config.read_text() == "# mine\n[profiles.p]\n" + other


# --- whole snapshots-only inits on the fakes -----------------------------------------------


class Crash(BaseException):
    """Stands for SIGKILL: no handler runs, nothing after it is committed."""


def snapshot_init_killed_at(world: World, monkeypatch: pytest.MonkeyPatch, point: str) -> str:
    """A snapshots-only init killed at ``point`` (a crash point of its machine); its run id."""
    host = world.connector.host
    attach = world.ec2.attach_volume

    def attach_and_appear(volume_id: str, instance_id: str, device: str) -> None:
        attach(volume_id, instance_id, device)
        if volume_id not in host.devices:
            # The init's volume is blank; a backup's, made from the init's snapshot, is not.
            kind = world.ec2.volumes[volume_id].tags.get(TAG_KIND)
            holds = "ext4" if kind == RunKind.SNAPSHOT_BACKUP else None
            host.attach(volume_id, f"/dev/nvme{len(host.devices) + 1}n1", holds=holds)

    def crash_point(name: str) -> None:
        if name == point:
            raise Crash

    monkeypatch.setattr(world.ec2, "attach_volume", attach_and_appear)
    with monkeypatch.context() as during:
        during.setattr(engine, "crash_point", crash_point)
        with pytest.raises(Crash):
            snapshot_init(world)
    (run,) = [r for r in list_runs(world.app) if r["kind"] == RunKind.SNAPSHOT_INIT]
    return str(run["id"])


def snapshot_init(world: World) -> object:
    return start_init(
        world.app,
        PROFILE,
        region="us-east-1",
        availability_zone="us-east-1a",
        size_gib=1,
        sources=[world.app.config_path.parent / "src"],
        allow_ssh_from="203.0.113.7",
        storage="snapshots",
    )


def profiles(world: World) -> dict[str, object]:
    return dict(read_document(world.app.config_path)["profiles"])


def snapshots_of(world: World, run_id: str) -> list[str]:
    return [s.id for s in world.ec2.find_snapshots({TAG_RUN_ID: run_id})]


def test_killed_before_its_profile_step_it_is_resumed_to_its_profile_and_backs_up(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_id = snapshot_init_killed_at(world, monkeypatch, WRITE_PROFILE.before)
    assert show_run(world.app, init_id)["state"] == RunState.WRITING_PROFILE
    (first,) = snapshots_of(world, init_id)
    assert PROFILE not in profiles(world)
    assert resume(world.app, init_id).state == RunState.DONE
    assert load_profile(world.app.config_path, PROFILE).storage == "snapshots"
    backup = start_backup(world.app, PROFILE)
    assert backup.state == RunState.DONE and backup.config["base_snapshot_id"] == first


def test_killed_once_done_it_has_written_its_profile_and_the_next_run_backs_up(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_id = snapshot_init_killed_at(world, monkeypatch, ENDED)
    assert show_run(world.app, init_id)["state"] == RunState.DONE  # resume would refuse it
    assert load_profile(world.app.config_path, PROFILE).storage == "snapshots"
    assert start_backup(world.app, PROFILE).state == RunState.DONE


def test_abandoned_after_its_profile_step_it_is_finished_by_the_next_run(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_id = snapshot_init_killed_at(world, monkeypatch, DELETE_VOLUME.before)
    work = show_run(world.app, init_id)["volume_id"]
    assert PROFILE in profiles(world) and work in world.ec2.volumes
    backup = start_backup(world.app, PROFILE)
    assert backup.state == RunState.DONE
    assert f"healed run {init_id} (snapshot_init, abandoned in deleting_volume): resumed" in (
        " ".join(backup.warnings)
    )
    assert show_run(world.app, init_id)["state"] == RunState.DONE
    assert work not in world.ec2.volumes


@pytest.mark.parametrize(
    ("point", "had_snapshot"),
    [
        ("before:terminate", False),
        ("after:snapshot_work", True),  # the snapshot made, the profile not yet written
        (WRITE_PROFILE.after, True),  # the profile written, its result not committed
        (DELETE_VOLUME.before, True),
    ],
)
def test_resume_clean_leaves_no_volume_no_profile_entry_and_no_snapshot(
    world: World, monkeypatch: pytest.MonkeyPatch, point: str, had_snapshot: bool
) -> None:
    volumes = set(world.ec2.volumes)
    init_id = snapshot_init_killed_at(world, monkeypatch, point)
    assert bool(snapshots_of(world, init_id)) == had_snapshot
    assert resume(world.app, init_id, clean=True).state == RunState.ABORTED
    assert set(world.ec2.volumes) == volumes  # the work volume deleted
    assert PROFILE not in profiles(world) and "p" in profiles(world)  # the others stay
    assert snapshots_of(world, init_id) == []


def test_resume_clean_keeps_an_entry_it_did_not_write_and_leaves_the_snapshot_to_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_id = snapshot_init_killed_at(world, monkeypatch, WRITE_PROFILE.before)
    (first,) = snapshots_of(world, init_id)
    theirs = load_profile(world.app.config_path, "p").model_copy(
        update={"name": PROFILE, "volume_id": None, "storage": "snapshots"}
    )
    write_profile(world.app.config_path, theirs)
    with pytest.raises(ConfigError, match="differs from the profile this init writes"):
        resume(world.app, init_id)
    assert resume(world.app, init_id, clean=True).state == RunState.ABORTED
    assert load_profile(world.app.config_path, PROFILE) == theirs
    assert snapshots_of(world, init_id) == [first]
    aborted = show_run(world.app, init_id)["events"][-1]
    assert f"snapshot {first} kept: profile {PROFILE!r}" in aborted["detail"]


def test_a_new_init_starts_an_abandoned_one_over_and_deletes_its_snapshot(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_id = snapshot_init_killed_at(world, monkeypatch, WRITE_PROFILE.after)
    (old,) = snapshots_of(world, init_id)
    again = snapshot_init(world)
    assert again.state == RunState.DONE  # type: ignore[attr-defined]
    assert show_run(world.app, init_id)["state"] == RunState.ABORTED
    assert old not in world.ec2.snapshots
    assert again.snapshot_id in world.ec2.snapshots  # type: ignore[attr-defined]
    assert load_profile(world.app.config_path, PROFILE).storage == "snapshots"
