"""Reap never ends an instance whose run holds a live lease, whatever the database records for
that run: any state (done, failed, aborted included), a state this version does not know, or
no row at all. The leases are held by another live process through ``leases.held``, as a
running ec2backup holds them; every other fact points at "orphan" (launched long ago, its
expires-at tag passed)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from ec2backup.commands.app import Adapters, App
from ec2backup.commands.reap import reap
from ec2backup.core.states import RunKind, RunState, path
from ec2backup.core.tags import TAG_EXPIRES_AT, TAG_MANAGED, TAG_ROLE, TAG_RUN_ID
from ec2backup.db.models import Run, utcnow
from ec2backup.db.store import Store, open_store
from ec2backup.ports import Attachment, LaunchSpec
from tests.children import Child
from tests.fakes import FakeEc2, FakeSyncer

# What the database may say of a run whose lease is live: every state, one it cannot know
# (written by a newer version), and nothing (the row is gone, or was never in this database).
RECORDED = [*(str(s) for s in RunState), "paused-by-a-newer-version", None]

HOLDER = """
import sys
from contextlib import ExitStack
from ec2backup.db import leases
from ec2backup.db.store import open_store
store = open_store(sys.argv[1])
with ExitStack() as stack:
    for run_id in sys.argv[2:]:
        stack.enter_context(leases.held(store, run_id, [leases.run_key(run_id)]))
    print("held", flush=True)
    sys.stdin.readline()  # until the test has looked
"""


def run_id_for(recorded: str | None) -> str:
    return f"r-{recorded or 'no-row'}"


def kind_for(state: str) -> RunKind:
    """A kind of run that can be in ``state`` (formatting: init; deleting_volume: restore)."""
    return next((k for k in RunKind if state in path(k)), RunKind.BACKUP)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield s
    s.close()


@pytest.fixture
def holder(store: Store, tmp_path: Path) -> Iterator[Child]:
    """Another process holding the run lease of every run of RECORDED."""
    child = Child(HOLDER, f"sqlite:///{tmp_path / 'db.sqlite'}", *map(run_id_for, RECORDED))
    try:
        assert child.read_line(time.monotonic() + 60) == "held"
        yield child
    finally:
        child.finish()


def test_reap_leaves_every_instance_whose_run_holds_a_live_lease(
    store: Store, holder: Child, tmp_path: Path
) -> None:
    ec2 = FakeEc2()
    long_ago = utcnow() - timedelta(days=30)
    passed = (utcnow() - timedelta(days=29)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def instance_of(run_id: str) -> tuple[str, str, str]:
        """An instance of the run that every fact but the lease calls an orphan, with our
        volume attached, and the run's temporary restore volume."""
        tags = {TAG_MANAGED: "true", TAG_RUN_ID: run_id, TAG_EXPIRES_AT: passed}
        inst = ec2.run_instance(LaunchSpec("ami-1", "t3.micro", ec2.az, run_id, tags))
        ec2.instances[inst.id] = replace(inst, state="running", launch_time=long_ago)
        attached = ec2.add_volume(
            tags={TAG_MANAGED: "true", TAG_ROLE: "data"},
            state="in-use",
            attachments=(Attachment(inst.id, "/dev/sdf", "attached"),),
        )
        temporary = ec2.add_volume(
            tags={TAG_MANAGED: "true", TAG_ROLE: "restore", TAG_RUN_ID: run_id}
        )
        return inst.id, attached.id, temporary.id

    held = {run_id_for(r): instance_of(run_id_for(r)) for r in RECORDED}
    # The control: the same facts without a lease. Reap does end this one.
    orphan, orphan_volume, orphan_temporary = instance_of("r-not-held")
    with store.session() as session:
        for run_id, state in [
            *((run_id_for(r), r) for r in RECORDED if r is not None),
            ("r-not-held", "syncing"),
        ]:
            session.add(
                Run(
                    id=run_id,
                    kind=kind_for(state),
                    profile="p",
                    state=state,
                    host="h",
                    config={},
                    warnings=[],
                )
            )
        session.commit()

    app = App(
        store=store,
        config_path=tmp_path / "config.toml",
        data_dir=tmp_path / "data",
        adapters=Adapters(ec2=lambda _region, _run: ec2, connector=lambda: None, syncer=FakeSyncer),
    )
    rows = reap(app, regions=["us-east-1"], act=True, older_than=None)

    by_resource = {row["resource"]: row for row in rows}
    ended = {
        recorded: by_resource[inst]["action"]
        for recorded, (inst, _v, _t) in zip(RECORDED, held.values(), strict=True)
        if ec2.instances[inst].state != "running"
    }
    assert ended == {}, "reap ended instances of runs holding a live lease"
    for recorded, (inst, attached, temporary) in zip(RECORDED, held.values(), strict=True):
        assert by_resource[inst]["orphan"] is False, recorded
        assert "holds a live lease" in by_resource[inst]["reason"], recorded
        assert ec2.volumes[attached].attachments, f"{recorded}: our volume was detached"
        assert temporary in ec2.volumes, f"{recorded}: its temporary volume was deleted"
    with store.session() as session:
        for recorded in RECORDED:
            run = session.get(Run, run_id_for(recorded))
            if recorded is None:
                assert run is None
            else:
                assert run is not None and (run.state, run.error) == (recorded, None)

    # The control went: it is the lease, and only the lease, that kept the others.
    assert ec2.instances[orphan].state == "terminated"
    assert not ec2.volumes[orphan_volume].attachments
    assert orphan_temporary not in ec2.volumes
    assert holder.proc.poll() is None  # the leases were live throughout
