"""The sync and compare steps' guard and reports, against the fakes: an emptied source or a
mass deletion refused before anything is copied, rsync's lines about files kept on the run,
files changed during the copy, and what verify adds to rsync's compare (holes, joined links)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ec2backup.config import Source
from ec2backup.errors import DeletionRefusedError, SyncError
from ec2backup.ports import Difference, TreeFacts
from ec2backup.run.context import StepContext
from ec2backup.run.steps.transfer import ensure_compared, ensure_synced, tree_bytes
from tests.fakes import FakeConnector, FakeSyncer
from tests.run import test_steps

ctx = test_steps.ctx  # the same fixture: a backup run, its context on the fakes


def with_source(ctx: StepContext, path: Path, dest: str = "home") -> None:
    path.mkdir(parents=True, exist_ok=True)
    ctx.profile = ctx.profile.model_copy(update={"sources": (Source(path=path, dest=dest),)})


def mounted(ctx: StepContext) -> tuple[FakeConnector, FakeSyncer]:
    """Launched, attached and mounted: where the sync step starts."""
    return test_steps._mounted(ctx)


# --- the guard -------------------------------------------------------------------------------


def test_an_emptied_source_is_refused_before_anything_is_copied(
    ctx: StepContext, tmp_path: Path
) -> None:
    connector, syncer = mounted(ctx)
    with_source(ctx, tmp_path / "unmounted drive")
    connector.host.files = {"home": 1234}
    with pytest.raises(DeletionRefusedError) as info:
        ensure_synced(ctx)
    message = info.value.one_line()
    assert f"source {tmp_path / 'unmounted drive'} is empty" in message
    assert "holds 1,234 files" in message and "nothing was copied or deleted" in message
    assert "ec2backup run --profile p --allow-deletions" in message
    assert not info.value.resumable  # the engine cleans the run up: no snapshot
    assert syncer.calls == []


def test_an_empty_source_with_an_empty_copy_is_fine(ctx: StepContext, tmp_path: Path) -> None:
    _, syncer = mounted(ctx)
    with_source(ctx, tmp_path / "new and empty")
    ensure_synced(ctx)
    assert syncer.counted == []  # nothing on the volume to lose: no dry run
    assert [c[1] for c in syncer.calls][:1] == ["/mnt/ec2backup/home"]


@pytest.mark.parametrize(
    ("deleted", "limit", "refused"), [(6, 50, True), (5, 50, False), (10, 100, False), (1, 0, True)]
)
def test_deleting_more_than_max_delete_percent_of_a_copy_is_refused(
    ctx: StepContext, tmp_path: Path, deleted: int, limit: int, refused: bool
) -> None:
    connector, syncer = mounted(ctx)
    with_source(ctx, tmp_path / "photos", dest="photos")
    (tmp_path / "photos" / "kept.jpg").write_text("jpeg")
    ctx.profile = ctx.profile.model_copy(update={"max_delete_percent": limit})
    connector.host.files = {"photos": 10}
    syncer.deletions = deleted
    if refused:
        with pytest.raises(DeletionRefusedError) as info:
            ensure_synced(ctx)
        message = info.value.one_line()
        assert f"would delete {deleted} of the 10 files in its copy (photos" in message
        assert f"more than max_delete_percent ({limit}%)" in message
        assert "--allow-deletions" in message and "raise max_delete_percent" in message
        assert syncer.calls == []
    else:
        ensure_synced(ctx)
        assert syncer.calls[0][1] == "/mnt/ec2backup/photos"
    # At 100% no share is too much: no dry run.
    assert syncer.counted == ([] if limit == 100 else ["/mnt/ec2backup/photos"])


def test_allow_deletions_skips_the_guard(ctx: StepContext, tmp_path: Path) -> None:
    connector, syncer = mounted(ctx)
    with_source(ctx, tmp_path / "emptied")
    connector.host.files = {"home": 50}
    syncer.deletions = 50
    ctx.run.config = {**ctx.run.config, "allow_deletions": True}
    ensure_synced(ctx)
    assert syncer.counted == [] and syncer.calls[0][1] == "/mnt/ec2backup/home"


# --- rsync's lines about files ---------------------------------------------------------------


UNREADABLE = 'rsync: [sender] send_files failed to open "/src/secret": Permission denied (13)'


def test_files_rsync_could_not_read_are_named_on_the_run(ctx: StepContext) -> None:
    _, syncer = mounted(ctx)
    syncer.exit_code, syncer.problems = 23, (UNREADABLE,)
    with pytest.raises(SyncError) as info:
        ensure_synced(ctx)
    assert "/src/secret" in info.value.message
    assert UNREADABLE in ctx.run.warnings  # committed: `show` lists it


def test_vanished_files_are_listed_as_warnings(ctx: StepContext) -> None:
    _, syncer = mounted(ctx)
    syncer.exit_code, syncer.problems = 24, ('file has vanished: "/src/tmp/x"',)
    ensure_synced(ctx)
    assert any("some files vanished" in w for w in ctx.run.warnings)
    assert 'file has vanished: "/src/tmp/x"' in ctx.run.warnings


def test_files_changed_while_the_copy_ran_are_warnings(ctx: StepContext, tmp_path: Path) -> None:
    _, syncer = mounted(ctx)
    source = tmp_path / "busy"
    with_source(ctx, source)
    (source / "log.txt").write_text("growing\n")  # changed just now: looked at again
    syncer.differences = [
        Difference("log.txt", ("size differs", "modification time differs")),
        Difference("appeared.txt", ("missing on the volume",)),  # created after the listing
    ]
    ensure_synced(ctx)
    checked = syncer.kwargs[-1]
    assert checked["checksum"] is False and checked["only"] == ["log.txt"]
    (warning,) = [w for w in ctx.run.warnings if "changed while the backup ran" in w]
    assert warning.endswith(f"{source}/log.txt")


def test_nothing_changed_means_no_second_look(ctx: StepContext, tmp_path: Path) -> None:
    _, syncer = mounted(ctx)
    with_source(ctx, tmp_path / "still")
    os.utime(tmp_path / "still", (0, 0))  # its own ctime moves; a directory is not looked at
    ensure_synced(ctx)
    assert len(syncer.calls) == 1  # the sync, no compare


# --- verify ----------------------------------------------------------------------------------


def test_verify_adds_holes_and_joined_links_to_rsyncs_differences(
    ctx: StepContext, tmp_path: Path
) -> None:
    connector, syncer = mounted(ctx)
    source = tmp_path / "tree"
    with_source(ctx, source)
    with (source / "disk.img").open("wb") as f:
        f.truncate(16 * 2**20)
        f.write(b"boot")
    (source / "a").write_text("same\n")
    (source / "b").write_text("same\n")  # separate files here...
    syncer.differences = [Difference("notes.txt", ("permissions differ",))]
    connector.host.facts = TreeFacts(
        groups=(("a", "b"),),  # ...one inode on the volume
        facts={"disk.img": ("1:9", 16 * 2**20)},  # stored with its holes filled in
    )
    ensure_compared(ctx)
    found = [w.removeprefix("differs: ") for w in ctx.run.warnings]
    assert found == [
        "home/b: hard link joined (one file with a on the volume, separate in the source)",
        f"home/disk.img: holes not kept ({16 * 2**20 - 4096:,} bytes of holes stored as data)",
        "home/notes.txt: permissions differ",
    ]
    assert ctx.run.files_transferred == 3
    assert connector.host.calls[-1] == "tree_facts /mnt/ec2backup/home"


def test_a_copy_that_keeps_the_holes_matches(ctx: StepContext, tmp_path: Path) -> None:
    connector, _ = mounted(ctx)
    source = tmp_path / "tree"
    with_source(ctx, source)
    with (source / "disk.img").open("wb") as f:
        f.truncate(16 * 2**20)
        f.write(b"boot")
    connector.host.facts = TreeFacts(facts={"disk.img": ("1:9", 8192)})  # a block or two
    assert ensure_compared(ctx) == "the volume matches the sources"


def test_the_space_a_sparse_file_needs_is_its_data(tmp_path: Path) -> None:
    with (tmp_path / "vm.img").open("wb") as f:
        f.truncate(2**30)
        f.write(os.urandom(10_000))
    (tmp_path / "plain").write_bytes(b"x" * 5000)
    assert 15_000 <= tree_bytes(tmp_path) <= 5000 + 64 * 1024
