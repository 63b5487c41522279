"""Reap: each rule on its own, then a sweep over fakes with decoys."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ec2backup.commands.reap import judge_one, parse_duration, reap_region
from ec2backup.core.tags import TAG_EXPIRES_AT, TAG_MANAGED, TAG_RUN_ID
from ec2backup.db.leases import Holder
from ec2backup.db.models import Lease, Run
from ec2backup.db.store import Store, open_store
from ec2backup.errors import AbandonedRunError, UserInputError
from ec2backup.ports import Attachment, Instance, LaunchSpec
from tests.fakes import FakeEc2

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def instance(run_id: str | None = "r1", **tags: str) -> Instance:
    all_tags = {TAG_MANAGED: "true", **({TAG_RUN_ID: run_id} if run_id else {}), **tags}
    return Instance(
        "i-1", "running", "us-east-1a", tags=all_tags, launch_time=NOW - timedelta(hours=1)
    )


def run(state: str) -> Run:
    return Run(id="r1", kind="backup", profile="p", state=state, host="h", config={}, warnings=[])


def lease() -> Lease:
    return Lease(
        key="run:r1", run_id="r1", holder_host="h", holder_pid=1, acquired_at=NOW, heartbeat_at=NOW
    )


@pytest.mark.parametrize(
    ("inst", "the_run", "the_lease", "older_than", "orphan", "words"),
    [
        (instance(), run("syncing"), lease(), None, False, "holds a live lease"),
        # a live lease wins even over a passed expiry tag
        (
            instance(**{TAG_EXPIRES_AT: "2026-11-28T11:00:00Z"}),
            run("syncing"),
            lease(),
            None,
            False,
            "live lease",
        ),
        (instance(), None, None, timedelta(hours=2), False, "launched less than"),
        (
            instance(**{TAG_EXPIRES_AT: "2026-11-28T11:00:00Z"}),
            run("syncing"),
            None,
            None,
            True,
            "expires-at",
        ),
        (
            instance(**{TAG_EXPIRES_AT: "2026-11-28T13:00:00Z"}),
            None,
            None,
            None,
            True,
            "unknown to this database",
        ),
        (instance(run_id=None), None, None, None, True, "no ec2backup:run-id tag"),
        (instance(), run("done"), None, None, True, "is done"),
        (instance(), run("failed"), None, None, True, "is failed"),
        (instance(), run("syncing"), None, None, True, "abandoned"),
        (instance(), None, None, timedelta(minutes=30), True, "unknown"),
    ],
)
def test_rules(
    inst: Instance,
    the_run: Run | None,
    the_lease: Lease | None,
    older_than: timedelta | None,
    orphan: bool,
    words: str,
) -> None:
    verdict, reason = judge_one(inst, the_run, the_lease, now=NOW, older_than=older_than)
    assert verdict is orphan and words in reason


def test_parse_duration() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("1w") == timedelta(weeks=1)
    with pytest.raises(UserInputError, match="not a duration"):
        parse_duration("2 hours")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield s
    s.close()


def launch(ec2: FakeEc2, token: str, tags: dict[str, str]) -> Instance:
    inst = ec2.run_instance(LaunchSpec("ami-1", "t3.micro", "us-east-1a", token, tags))
    return ec2.wait_instance_running(inst.id, 1)


def test_a_sweep_ends_orphans_only_and_marks_abandoned_runs(store: Store) -> None:
    from ec2backup.core.tags import TAG_ROLE

    ec2 = FakeEc2()
    decoy = launch(ec2, "decoy", {"Name": "not ours"})
    decoy_with_run_tag = launch(ec2, "decoy2", {TAG_RUN_ID: "abandoned"})  # no managed tag
    live = launch(ec2, "live", {TAG_MANAGED: "true", TAG_RUN_ID: "live"})
    abandoned = launch(ec2, "abandoned", {TAG_MANAGED: "true", TAG_RUN_ID: "abandoned"})
    stranger = launch(ec2, "stranger", {TAG_MANAGED: "true", TAG_RUN_ID: "from-another-db"})
    ours = ec2.add_volume(tags={TAG_MANAGED: "true", TAG_ROLE: "data"})
    theirs = ec2.add_volume()
    ec2.volumes[ours.id] = replace(
        ours, state="in-use", attachments=(Attachment(abandoned.id, "/dev/sdf", "attached"),)
    )
    # The orphan's root volume, tagged by the launch: terminating the instance ends it.
    root = ec2.add_volume(tags={TAG_MANAGED: "true", TAG_RUN_ID: "abandoned"})
    ec2.volumes[root.id] = replace(
        root, state="in-use", attachments=(Attachment(abandoned.id, "/dev/sda1", "attached"),)
    )
    ec2.volumes[theirs.id] = replace(
        theirs, state="in-use", attachments=(Attachment(decoy.id, "/dev/sdf", "attached"),)
    )
    # Not ours, on an orphan: terminating the instance releases it; reap never detaches it.
    untagged = ec2.add_volume()
    ec2.volumes[untagged.id] = replace(
        untagged, state="in-use", attachments=(Attachment(stranger.id, "/dev/sdg", "attached"),)
    )

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with store.session() as session:
            for run_id, state in (("live", "syncing"), ("abandoned", "syncing")):
                session.add(
                    Run(
                        id=run_id,
                        kind="backup",
                        profile="p",
                        state=state,
                        host="h",
                        config={},
                        warnings=[],
                    )
                )
            session.add(
                Lease(
                    key="run:live",
                    run_id="live",
                    holder_host=Holder.me().host,
                    holder_pid=holder.pid,
                )
            )
            session.commit()

        dry = reap_region(store, ec2, act=False)
        assert {v.instance.id for v in dry if v.orphan} == {abandoned.id, stranger.id}
        assert {i.state for i in ec2.instances.values()} == {"running"}  # a dry run changes nothing
        assert "terminate_instances" not in ec2.calls

        done = reap_region(store, ec2, act=True)
        by_id = {v.instance.id: v for v in done}
        assert by_id[abandoned.id].action == "detached and terminated"
        assert by_id[abandoned.id].volumes == [ours.id]
        assert (by_id[stranger.id].action, by_id[stranger.id].volumes) == ("terminated", [])
        assert ec2.calls.count("find_volumes") == 2  # one listing of our volumes per sweep
        assert by_id[live.id].action == "left alone"
        states = {i.id: i.state for i in ec2.instances.values()}
        assert states == {
            decoy.id: "running",
            decoy_with_run_tag.id: "running",
            live.id: "running",
            abandoned.id: "terminated",
            stranger.id: "terminated",
        }
        assert ec2.volumes[theirs.id].attachments != ()  # never touched
        assert ec2.calls.count("terminate_instances") == 1  # one batch
        with store.session() as session:
            marked = session.get(Run, "abandoned")
            assert marked is not None
            assert (marked.state, marked.failed_from, marked.error_type) == (
                "failed",
                "syncing",
                AbandonedRunError.__name__,
            )
            assert marked.error is not None and abandoned.id in marked.error
            assert "ec2backup resume abandoned" in marked.error
            assert session.get(Run, "live").state == "syncing"  # type: ignore[union-attr]
    finally:
        holder.kill()
        holder.wait()


def test_a_sweep_with_an_empty_database_uses_the_tags_alone(store: Store) -> None:
    ec2 = FakeEc2()
    ours = launch(ec2, "a", {TAG_MANAGED: "true", TAG_RUN_ID: "r-lost"})
    verdicts = reap_region(store, ec2, act=True)
    assert [(v.instance.id, v.orphan) for v in verdicts] == [(ours.id, True)]
    assert ec2.instances[ours.id].state == "terminated"


def test_abandoned_restore_volumes_are_deleted_and_the_backup_volume_never(store: Store) -> None:
    from ec2backup.commands.reap import reap_restore_volumes
    from ec2backup.core.tags import TAG_ROLE

    ec2 = FakeEc2()
    backup = ec2.add_volume(tags={TAG_MANAGED: "true", TAG_ROLE: "data", TAG_RUN_ID: "r-old"})
    orphan = ec2.add_volume(tags={TAG_MANAGED: "true", TAG_ROLE: "restore", TAG_RUN_ID: "r-old"})
    busy = ec2.add_volume(tags={TAG_MANAGED: "true", TAG_ROLE: "restore", TAG_RUN_ID: "r-2"})
    ec2.volumes[busy.id] = replace(
        busy, state="in-use", attachments=(Attachment("i-1", "/dev/sdf", "attached"),)
    )
    foreign = ec2.add_volume(tags={TAG_ROLE: "restore", TAG_RUN_ID: "r-old"})  # not managed
    # A backup's own volume in snapshots-only storage, of a run this database never saw.
    work = ec2.add_volume(tags={TAG_MANAGED: "true", TAG_ROLE: "work", TAG_RUN_ID: "r-lost"})

    dry = {v.volume_id: v.action for v in reap_restore_volumes(store, ec2, act=False)}
    assert dry == {orphan.id: "would delete", busy.id: "left alone", work.id: "would delete"}
    reap_restore_volumes(store, ec2, act=True)
    assert set(ec2.volumes) == {backup.id, busy.id, foreign.id}


def test_an_orphans_root_volume_is_never_detached(store: Store) -> None:
    """The launch tags the root volume too; detaching it from a running instance is refused
    (OperationNotPermitted), and terminating the instance deletes it."""
    ec2 = FakeEc2()
    orphan = launch(ec2, "o", {TAG_MANAGED: "true", TAG_RUN_ID: "r-lost"})
    ec2.instances[orphan.id] = replace(ec2.instances[orphan.id], root_device="/dev/sda1")
    root = ec2.add_volume(tags={TAG_MANAGED: "true", TAG_RUN_ID: "r-lost"})
    data = ec2.add_volume(tags={TAG_MANAGED: "true"})
    for volume, device in ((root, "/dev/sda1"), (data, "/dev/sdf")):
        ec2.volumes[volume.id] = replace(
            volume, state="in-use", attachments=(Attachment(orphan.id, device, "attached"),)
        )
    (verdict,) = reap_region(store, ec2, act=True)
    assert verdict.volumes == [data.id]
    assert ec2.calls.count("detach_volume") == 1  # the data volume's; the root goes with it
    assert ec2.instances[orphan.id].state == "terminated"


def _runs(store: Store, *runs: tuple[str, str, str]) -> None:
    with store.session() as session:
        for run_id, kind, state in runs:
            session.add(
                Run(
                    id=run_id,
                    kind=kind,
                    profile="p",
                    state=state,
                    host="h",
                    config={},
                    warnings=[],
                )
            )
        session.commit()


def test_an_inits_volume_is_deleted_only_when_no_profile_and_no_live_run_owns_it(
    store: Store, tmp_path: Path
) -> None:
    from ec2backup.commands.reap import reap_init_volumes
    from ec2backup.core.tags import TAG_KIND, TAG_ROLE

    def init_volume(run_id: str) -> str:
        tags = {TAG_MANAGED: "true", TAG_ROLE: "data", TAG_KIND: "init", TAG_RUN_ID: run_id}
        return ec2.add_volume(tags=tags).id

    ec2 = FakeEc2()
    abandoned = init_volume("i-abandoned")  # its init died before the profile named it
    named = init_volume("i-named")  # killed after writing the profile: may hold backups
    finished = init_volume("i-done")
    used = init_volume("i-used")  # a backup ran on it
    unknown = init_volume("i-unknown")  # an init this database never saw
    _runs(
        store,
        ("i-abandoned", "init", "formatting"),
        ("i-named", "init", "formatting"),
        ("i-done", "init", "done"),
        ("i-used", "init", "failed"),
    )
    with store.session() as session:
        session.add(
            Run(
                id="b1",
                kind="backup",
                profile="p",
                state="done",
                host="h",
                config={},
                warnings=[],
                volume_id=used,
            )
        )
        session.commit()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[profiles.p]\nregion = "us-east-1"\navailability_zone = "us-east-1a"\n'
        f'volume_id = "{named}"\nsources = []\n'
    )
    dry = {v.volume_id: v for v in reap_init_volumes(store, ec2, config, act=False)}
    assert {v for v, verdict in dry.items() if verdict.orphan} == {abandoned}
    assert dry[abandoned].action == "would delete" and abandoned in ec2.volumes  # dry run
    assert "names it" in dry[named].reason and "finished" in dry[finished].reason
    assert "backups were made" in dry[used].reason and "unknown" in dry[unknown].reason
    reap_init_volumes(store, ec2, config, act=True)
    assert set(ec2.volumes) == {named, finished, used, unknown}


def test_ssh_rules_are_removed_once_their_run_is_not_live(store: Store) -> None:
    from ec2backup.commands.reap import reap_ssh_rules
    from ec2backup.core.tags import TAG_PROFILE

    ec2 = FakeEc2()
    group = "sg-1"
    tags = {TAG_MANAGED: "true", TAG_PROFILE: "p"}
    inits = ec2.authorize_ssh(group, "203.0.113.7/32", {})  # init's own: no run tag
    dead = ec2.authorize_ssh(group, "198.51.100.20/32", {**tags, TAG_RUN_ID: "r-dead"})
    live = ec2.authorize_ssh(group, "198.51.100.21/32", {**tags, TAG_RUN_ID: "r-live"})
    _runs(store, ("r-dead", "backup", "syncing"), ("r-live", "backup", "syncing"))
    with store.session() as session:
        session.add(
            Lease(key="run:r-live", run_id="r-live", holder_host=Holder.me().host, holder_pid=1)
        )
        session.commit()
    dry = {v.rule_id: v for v in reap_ssh_rules(store, ec2, act=False)}
    assert set(dry) == {dead, live}
    assert dry[dead].orphan and not dry[live].orphan and set(ec2.rules) == {inits, dead, live}
    reap_ssh_rules(store, ec2, act=True)
    assert set(ec2.rules) == {inits, live}
