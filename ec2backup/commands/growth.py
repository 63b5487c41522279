"""What each backup's snapshot added to the snapshot chain, as EBS counts it, recorded on the
run (``Run.snapshot_stats``; ``show``'s ``stats.snapshot_added_bytes``).

A snapshot is compared with the one before it in its chain (ListChangedBlocks, counting the
512 KiB blocks the newer one holds): for a backup of the standing volume, the newest earlier
snapshot of the same volume among the profile's; for a backup in snapshots-only storage, the
snapshot its volume was made from (or, if that one was deleted, the newest earlier one of the
profile: they are all one lineage). A first snapshot is a full one: all its blocks
(ListSnapshotBlocks). Snapshots ec2backup did not make are not seen.

The EBS direct APIs read completed snapshots only, and a snapshot stays pending for minutes to
hours on AWS, well past the end of its run. So the figure is filled in later, by whichever
comes first: ``ec2backup show`` of that run, ``ec2backup cost`` of the profile, or the next
backup of the profile (on a thread, while that run waits for EC2 and rsync). Measuring never
fails a command: a snapshot that cannot be read yet is left for later, and an error is logged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..core.times import as_utc, iso
from ..errors import Ec2BackupError
from ..ports import Ec2, Snapshot, SnapshotBlocks

if TYPE_CHECKING:
    from ..config import Profile
    from .app import App

log = logging.getLogger(__name__)

# How long the end of a run waits for the measuring of earlier runs (Prefetch) to finish.
PREFETCH_WAIT_SECONDS = 10.0
PENDING_NOTE = (
    "not measured yet: the snapshot (or the one it is compared with) is still pending; filled "
    "in by the next run of the profile, `ec2backup show` or `ec2backup cost`"
)


@dataclass(frozen=True)
class Measured:
    stats: dict[str, Any] | None  # what to record; None: try again later
    note: str = ""  # why it is not measured (yet)


@dataclass(frozen=True)
class Unmeasured:
    """A finished backup whose snapshot's growth is not recorded yet."""

    run_id: str
    snapshot_id: str
    base_snapshot_id: str | None  # snapshots-only storage: what its volume was made from


def chain_parent(
    item: Unmeasured, snapshot: Snapshot, snapshots: Sequence[Snapshot]
) -> Snapshot | None:
    """The snapshot before ``snapshot`` in its chain, among the profile's ``snapshots``."""
    by_id = {s.id: s for s in snapshots}
    base = item.base_snapshot_id
    if base and base in by_id:
        return by_id[base]
    started = as_utc(snapshot.started_at or datetime.now(UTC))
    earlier = [
        s
        for s in snapshots
        if s.id != snapshot.id
        and s.state != "error"
        and s.started_at is not None
        and as_utc(s.started_at) < started
        and (base or s.volume_id == snapshot.volume_id)  # snapshots-only: one lineage
    ]
    return max(earlier, key=lambda s: (as_utc(s.started_at or started), s.id), default=None)


def measure(
    blocks: SnapshotBlocks,
    item: Unmeasured,
    snapshots: Sequence[Snapshot],
    now: datetime | None = None,
) -> Measured:
    """What ``item``'s snapshot added to its chain, if both it and the one before it can be
    read now. ``snapshots``: the profile's, fresh from DescribeSnapshots."""
    snapshot = next((s for s in snapshots if s.id == item.snapshot_id), None)
    if snapshot is None:
        return Measured({"added_bytes": None, "note": "the snapshot was deleted unmeasured"})
    if snapshot.state == "error":
        return Measured({"added_bytes": None, "note": "the snapshot failed (state error)"})
    parent = chain_parent(item, snapshot, snapshots)
    if snapshot.state != "completed" or (parent is not None and parent.state != "completed"):
        return Measured(None, PENDING_NOTE)
    for one in (snapshot, parent):
        if one is not None and one.storage_tier == "archive":
            return Measured(None, f"not measured: {one.id} is in the archive tier")
    count = blocks.added_blocks(parent.id if parent else None, snapshot.id)
    return Measured(
        {
            "added_bytes": count.bytes,
            "blocks": count.blocks,
            "block_size": count.block_size,
            "compared_with": parent.id if parent else None,
            "method": "ListChangedBlocks" if parent else "ListSnapshotBlocks",
            "requests": count.requests,
            "measured_at": iso(now or datetime.now(UTC)),
        }
    )


def unmeasured(
    app: App, profile_name: str, run_ids: Sequence[str] | None = None, exclude: str | None = None
) -> list[Unmeasured]:
    from ..core.states import BACKUP_KINDS, RunState

    with app.store.session() as session:
        return [
            Unmeasured(r.id, r.snapshot_id, (r.config or {}).get("base_snapshot_id"))
            for r in app.store.list_runs(session, profile=profile_name)
            if r.kind in BACKUP_KINDS
            and r.state == RunState.DONE
            and r.snapshot_id is not None
            and "added_bytes" not in (r.snapshot_stats or {})
            and r.id != exclude
            and (run_ids is None or r.id in run_ids)
        ]


def measure_all(
    app: App, profile: Profile, items: Sequence[Unmeasured]
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """(run id -> stats to record, run id -> why it is not measured); cloud calls only, no
    database. Never raises."""
    measured: dict[str, dict[str, Any]] = {}
    notes: dict[str, str] = {}
    if not items or app.adapters.blocks is None:
        return measured, notes
    from .owned import profile_snapshots

    try:
        ec2: Ec2 = app.adapters.ec2(profile.region, None)
        blocks = app.adapters.blocks(profile.region, None)
        snapshots = profile_snapshots(ec2, profile.name)
    except Ec2BackupError as exc:
        note = f"not measured: {exc.one_line()}"
        log.warning("snapshot growth of profile %s %s", profile.name, note)
        return measured, dict.fromkeys((i.run_id for i in items), note)
    for item in items:
        try:
            result = measure(blocks, item, snapshots)
        except Ec2BackupError as exc:
            notes[item.run_id] = f"not measured: {exc.one_line()}"
            log.warning("run %s: snapshot growth %s", item.run_id, notes[item.run_id])
            continue
        if result.stats is None:
            notes[item.run_id] = result.note
        else:
            measured[item.run_id] = result.stats
    return measured, notes


def record(app: App, measured: dict[str, dict[str, Any]]) -> None:
    if not measured:
        return
    with app.store.session() as session:
        for run_id, stats in measured.items():
            run = app.store.get_run(session, run_id)
            run.snapshot_stats = {**(run.snapshot_stats or {}), **stats}
        session.commit()


def fill_in(app: App, profile: Profile, run_ids: Sequence[str] | None = None) -> dict[str, str]:
    """Measure the profile's backups not measured yet (only ``run_ids`` if given) and record
    what was measured. Returns, for each run left unmeasured, why. Never raises a cloud error."""
    measured, notes = measure_all(app, profile, unmeasured(app, profile.name, run_ids))
    record(app, measured)
    return notes


class Prefetch:
    """The earlier backups of a profile measured on a thread while a run goes on: the run
    spends most of its time waiting for EC2 and rsync, so the calls cost it no time. Only the
    cloud calls run on the thread; ``finish`` records the results from the caller's."""

    def __init__(self, app: App, profile: Profile, exclude: str) -> None:
        self._items = unmeasured(app, profile.name, exclude=exclude)
        self._result: tuple[dict[str, dict[str, Any]], dict[str, str]] = ({}, {})
        self._thread = threading.Thread(
            target=self._measure, args=(app, profile), name="snapshot-growth", daemon=True
        )
        if self._items:
            self._thread.start()

    def _measure(self, app: App, profile: Profile) -> None:
        try:
            self._result = measure_all(app, profile, self._items)
        except Exception:  # never the run's failure: measured again next time
            log.exception("measuring snapshot growth failed")

    def finish(self, app: App, timeout: float = PREFETCH_WAIT_SECONDS) -> None:
        if not self._items:
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.info("snapshot growth not measured in %.0f s; left for later", timeout)
            return
        record(app, self._result[0])


def added_row(
    stats: dict[str, Any] | None, snapshot_id: str | None, note: str | None = None
) -> dict[str, Any]:
    """``show``'s view of the figure: the recorded stats, or why there are none."""
    if stats is not None and "added_bytes" in stats:
        return dict(stats)
    if snapshot_id is None:
        return {"added_bytes": None, "note": "this run made no snapshot"}
    return {**(stats or {}), "added_bytes": None, "note": note or PENDING_NOTE}


def record_full_size(app: App, profile: Profile, snapshot: Snapshot) -> None:
    """All the blocks of ``snapshot`` (ListSnapshotBlocks), recorded as ``full_bytes`` on the
    run that made it: what the archive tier stores and bills for it. Never raises."""
    if app.adapters.blocks is None or snapshot.storage_tier != "standard":
        return
    try:
        count = app.adapters.blocks(profile.region, None).added_blocks(None, snapshot.id)
    except Ec2BackupError as exc:
        log.warning("snapshot %s: full size not measured: %s", snapshot.id, exc.one_line())
        return
    from sqlalchemy import select

    from ..db.models import Run

    with app.store.session() as session:
        run = session.scalars(select(Run).where(Run.snapshot_id == snapshot.id)).first()
        if run is not None:
            run.snapshot_stats = {**(run.snapshot_stats or {}), "full_bytes": count.bytes}
            session.commit()
