"""What each backup's snapshot added to the chain: which snapshot it is compared with, when it
can be measured (completed snapshots only), and how `show` reports it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ec2backup.commands.app import Adapters, App
from ec2backup.commands.growth import fill_in
from ec2backup.commands.history import show_run
from ec2backup.config import Profile
from ec2backup.core.tags import TAG_MANAGED, TAG_PROFILE, TAG_RUN_ID
from ec2backup.db.models import Run
from ec2backup.db.store import open_store
from ec2backup.errors import CloudError
from tests.fakes import FakeBlocks, FakeConnector, FakeEc2, FakeSyncer

T0 = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
BLOCK = 512 * 1024
PROFILE = Profile(name="p", region="us-east-1", availability_zone="us-east-1a")


@pytest.fixture
def ec2() -> FakeEc2:
    return FakeEc2()


@pytest.fixture
def blocks(ec2: FakeEc2) -> FakeBlocks:
    return FakeBlocks(ec2)


@pytest.fixture
def app(tmp_path: Path, ec2: FakeEc2, blocks: FakeBlocks) -> Iterator[App]:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield App(
        store=store,
        config_path=tmp_path / "config.toml",
        data_dir=tmp_path / "data",
        adapters=Adapters(
            ec2=lambda _region, _run: ec2,
            connector=FakeConnector,
            syncer=FakeSyncer,
            blocks=lambda _region, _run: blocks,
        ),
    )
    store.close()


def backup(
    app: App,
    ec2: FakeEc2,
    run_id: str,
    volume_id: str,
    hours: int,
    *,
    state: str = "completed",
    base: str | None = None,
) -> str:
    """A finished backup run of profile p whose snapshot of ``volume_id`` started ``hours``
    after T0; returns the snapshot id."""
    tags = {TAG_MANAGED: "true", TAG_PROFILE: "p", TAG_RUN_ID: run_id}
    snapshot = ec2.create_snapshot(volume_id, "backup", tags)
    ec2.snapshots[snapshot.id] = replace(
        snapshot, state=state, started_at=T0 + timedelta(hours=hours)
    )
    config: dict[str, Any] = {"profile": PROFILE.model_dump(mode="json")}
    if base:
        config["base_snapshot_id"] = base
    with app.store.session() as session:
        session.add(
            Run(
                id=run_id,
                kind="backup",
                profile="p",
                state="done",
                host="h",
                volume_id=volume_id,
                snapshot_id=snapshot.id,
                launch_attempt=1,
                warnings=[],
                config=config,
                created_at=T0 + timedelta(hours=hours),
            )
        )
        session.commit()
    return snapshot.id


def stats(app: App, run_id: str) -> dict[str, Any] | None:
    with app.store.session() as session:
        return app.store.get_run(session, run_id).snapshot_stats


def test_a_first_snapshot_counts_all_its_blocks_the_next_one_what_changed(
    app: App, ec2: FakeEc2, blocks: FakeBlocks
) -> None:
    volume = ec2.add_volume().id
    first = backup(app, ec2, "r1", volume, 0)
    second = backup(app, ec2, "r2", volume, 24)
    blocks.blocks[first] = {0: b"a", 1: b"b", 2: b"c"}
    blocks.blocks[second] = {0: b"a", 1: b"B", 2: b"c", 9: b"new"}

    assert fill_in(app, PROFILE) == {}

    assert sorted(blocks.calls, key=str) == sorted([(None, first), (first, second)], key=str)
    one, two = stats(app, "r1"), stats(app, "r2")
    assert one is not None and two is not None
    assert (one["added_bytes"], one["method"], one["compared_with"]) == (
        3 * BLOCK,
        "ListSnapshotBlocks",
        None,
    )
    assert (two["added_bytes"], two["blocks"], two["compared_with"]) == (2 * BLOCK, 2, first)
    assert fill_in(app, PROFILE) == {} and len(blocks.calls) == 2  # recorded: never again


def test_a_pending_snapshot_is_measured_once_it_has_completed(
    app: App, ec2: FakeEc2, blocks: FakeBlocks
) -> None:
    volume = ec2.add_volume().id
    first = backup(app, ec2, "r1", volume, 0)
    second = backup(app, ec2, "r2", volume, 24, state="pending")
    blocks.blocks[second] = {4: b"x"}

    notes = fill_in(app, PROFILE)

    assert "pending" in notes["r2"] and stats(app, "r2") is None
    assert blocks.calls == [(None, first)]
    ec2.snapshots[second] = replace(ec2.snapshots[second], state="completed")
    assert fill_in(app, PROFILE) == {}
    assert (stats(app, "r2") or {})["added_bytes"] == BLOCK


def test_only_earlier_snapshots_of_the_same_volume_are_its_parent(
    app: App, ec2: FakeEc2, blocks: FakeBlocks
) -> None:
    old, new = ec2.add_volume().id, ec2.add_volume().id
    backup(app, ec2, "r1", old, 0)
    later_of_old = backup(app, ec2, "r3", old, 48)
    first_of_new = backup(app, ec2, "r2", new, 24)
    fill_in(app, PROFILE)
    assert (stats(app, "r2") or {})["compared_with"] is None  # another volume: a first one
    assert (stats(app, "r3") or {})["compared_with"] != first_of_new
    assert later_of_old in {c[1] for c in blocks.calls}


def test_in_snapshots_only_storage_the_parent_is_the_snapshot_the_volume_was_made_from(
    app: App, ec2: FakeEc2, blocks: FakeBlocks
) -> None:
    base = backup(app, ec2, "r1", ec2.add_volume().id, 0)
    made = backup(app, ec2, "r2", ec2.add_volume().id, 24, base=base)
    fill_in(app, PROFILE, ["r2"])
    assert blocks.calls == [(base, made)]


def test_show_measures_a_run_not_measured_yet_and_then_reads_the_record(
    app: App, ec2: FakeEc2, blocks: FakeBlocks
) -> None:
    volume = ec2.add_volume().id
    snapshot = backup(app, ec2, "r1", volume, 0)
    blocks.blocks[snapshot] = {0: b"a", 1: b"b"}

    shown = show_run(app, "r1")

    assert shown["stats"]["snapshot_added_bytes"] == 2 * BLOCK
    assert shown["stats"]["snapshot_added"]["method"] == "ListSnapshotBlocks"
    assert show_run(app, "r1")["stats"]["snapshot_added_bytes"] == 2 * BLOCK
    assert len(blocks.calls) == 1


def test_show_says_why_when_the_figure_cannot_be_had(
    app: App, ec2: FakeEc2, blocks: FakeBlocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    backup(app, ec2, "r1", ec2.add_volume().id, 0)

    def denied(*_args: object) -> Any:
        raise CloudError("not authorized to call ebs:ListSnapshotBlocks (AccessDeniedException)")

    monkeypatch.setattr(blocks, "added_blocks", denied)
    shown = show_run(app, "r1")
    assert shown["stats"]["snapshot_added_bytes"] is None
    assert "ebs:ListSnapshotBlocks" in shown["stats"]["snapshot_added"]["note"]
    assert stats(app, "r1") is None  # tried again next time


def test_a_run_measures_the_earlier_backups_on_a_thread_and_records_them_at_its_end(
    app: App, ec2: FakeEc2, blocks: FakeBlocks
) -> None:
    import threading

    from ec2backup.commands.growth import Prefetch

    volume = ec2.add_volume().id
    backup(app, ec2, "r1", volume, 0)
    current = backup(app, ec2, "r2", volume, 24)
    threads: list[str] = []
    real = blocks.added_blocks

    def on_thread(*args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(*args)

    blocks.added_blocks = on_thread  # type: ignore[method-assign]
    prefetch = Prefetch(app, PROFILE, exclude="r2")
    prefetch.finish(app)

    assert threads == ["snapshot-growth"]  # not on the run's thread
    assert stats(app, "r1") is not None
    assert stats(app, "r2") is None and current not in {c[1] for c in blocks.calls}
