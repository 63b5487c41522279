"""What each backup's snapshot added to the snapshot chain, as EBS counts it, recorded on the
run (``Run.snapshot_stats``; ``show``'s ``stats.snapshot_added_bytes``).

A snapshot is compared with the one before it in its chain (ListChangedBlocks, counting the
512 KiB blocks the newer one holds): for a backup of the standing volume, the newest earlier
snapshot of the same volume among the profile's; for a backup in snapshots-only storage, the
snapshot its volume was made from (or, if that one was deleted, the newest earlier one of the
profile: they are all one lineage). A first snapshot is a full one: all its blocks
(ListSnapshotBlocks). Snapshots ec2backup did not make are not seen.

The EBS direct APIs read completed snapshots only, and a snapshot stays pending for minutes to
hours on AWS. So the figure is filled in when it can be: at the end of the run if its snapshot
completed by then, else by the next run of the profile, by ``ec2backup show`` of that run, or by
``ec2backup cost``, whichever comes first. Measuring never fails a command: a snapshot that
cannot be read yet is left for later, and an error is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..core.times import as_utc, iso
from ..errors import Ec2BackupError
from ..ports import Ec2, Snapshot, SnapshotBlocks

if TYPE_CHECKING:
    from ..config import Profile
    from ..db.models import Run
    from .app import App

log = logging.getLogger(__name__)

PENDING_NOTE = (
    "not measured yet: the snapshot (or the one it is compared with) is still pending; filled "
    "in by the next run of the profile, `ec2backup show` or `ec2backup cost`"
)


@dataclass(frozen=True)
class Measured:
    stats: dict[str, Any] | None  # what to record; None: try again later
    note: str = ""  # why it is not measured (yet)


def chain_parent(run: Run, snapshot: Snapshot, snapshots: Sequence[Snapshot]) -> Snapshot | None:
    """The snapshot before ``snapshot`` in its chain, among the profile's ``snapshots``."""
    by_id = {s.id: s for s in snapshots}
    base = (run.config or {}).get("base_snapshot_id")
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
    blocks: SnapshotBlocks, run: Run, snapshots: Sequence[Snapshot], now: datetime | None = None
) -> Measured:
    """What ``run``'s snapshot added to its chain, if both it and the one before it can be
    read now. ``snapshots``: the profile's, fresh from DescribeSnapshots."""
    snapshot = next((s for s in snapshots if s.id == run.snapshot_id), None)
    if snapshot is None:
        return Measured({"added_bytes": None, "note": "the snapshot was deleted unmeasured"})
    if snapshot.state == "error":
        return Measured({"added_bytes": None, "note": "the snapshot failed (state error)"})
    parent = chain_parent(run, snapshot, snapshots)
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


def _unmeasured(run: Run) -> bool:
    from ..core.states import BACKUP_KINDS, RunState

    return (
        run.kind in BACKUP_KINDS
        and run.state == RunState.DONE
        and run.snapshot_id is not None
        and run.snapshot_stats is None
    )


def fill_in(app: App, profile: Profile, run_ids: Sequence[str] | None = None) -> dict[str, str]:
    """Measure the profile's backup runs not measured yet (only ``run_ids`` if given) and record
    what was measured. Returns, for each run left unmeasured, why. Never raises."""
    notes: dict[str, str] = {}
    if app.adapters.blocks is None:
        return notes
    from .snapshots import profile_snapshots

    try:
        with app.store.session() as session:
            runs = [
                r
                for r in app.store.list_runs(session, profile=profile.name)
                if _unmeasured(r) and (run_ids is None or r.id in run_ids)
            ]
            if not runs:
                return notes
            ec2: Ec2 = app.adapters.ec2(profile.region, None)
            blocks = app.adapters.blocks(profile.region, None)
            snapshots = profile_snapshots(ec2, profile.name)
            for run in runs:
                try:
                    measured = measure(blocks, run, snapshots)
                except Ec2BackupError as exc:
                    notes[run.id] = f"not measured: {exc.one_line()}"
                    log.warning("run %s: snapshot growth %s", run.id, notes[run.id])
                    continue
                if measured.stats is None:
                    notes[run.id] = measured.note
                    continue
                run.snapshot_stats = measured.stats
                session.commit()
    except Ec2BackupError as exc:
        note = f"not measured: {exc.one_line()}"
        log.warning("snapshot growth of profile %s %s", profile.name, note)
        notes.update(dict.fromkeys(run_ids or [], note))
    return notes


def added_row(run: Run, note: str | None = None) -> dict[str, Any]:
    """``show``'s view of the figure: the recorded stats, or why there are none."""
    if run.snapshot_stats is not None:
        return dict(run.snapshot_stats)
    if run.snapshot_id is None:
        return {"added_bytes": None, "note": "this run made no snapshot"}
    return {"added_bytes": None, "note": note or PENDING_NOTE}
