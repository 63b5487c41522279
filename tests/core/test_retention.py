"""The retention policy on its own: restic's forget rules, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ec2backup.core.retention import Policy, select, sort_newest_first
from ec2backup.ports import Snapshot

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def snap(sid: str, when: str | None, state: str = "completed") -> Snapshot:
    started = datetime.fromisoformat(when) if when else None
    if started is not None and started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    return Snapshot(id=sid, state=state, volume_id="vol-1", started_at=started, size_gib=8)


# Two snapshots a day on Jan 1, 2, 3 and 5 (none on Jan 4), newest last.
DAYS = [
    snap("a1", "2025-01-01T01:00"),
    snap("a2", "2025-01-01T13:00"),
    snap("b1", "2025-01-02T01:00"),
    snap("b2", "2025-01-02T13:00"),
    snap("c1", "2025-01-03T01:00"),
    snap("c2", "2025-01-03T13:00"),
    snap("e1", "2025-01-05T01:00"),
    snap("e2", "2025-01-05T13:00"),
]

# One snapshot on each Monday and Saturday over the ISO-week year boundary: 2024-12-30 (Mon)
# is in 2025-W01, 2025-01-05 (Sun) too, 2025-01-06 (Mon) is in 2025-W02.
WEEKS = [
    snap("w51", "2024-12-21T10:00"),  # Sat, 2024-W51
    snap("w52", "2024-12-23T10:00"),  # Mon, 2024-W52
    snap("w01a", "2024-12-30T10:00"),  # Mon, 2025-W01
    snap("w01b", "2025-01-05T23:59"),  # Sun, 2025-W01
    snap("w02", "2025-01-06T00:00"),  # Mon, 2025-W02
]

MONTHS = [
    snap("nov", "2024-11-30T23:00"),
    snap("dec1", "2024-12-01T00:00"),
    snap("dec2", "2024-12-31T23:59"),
    snap("feb", "2025-02-10T00:00"),  # no snapshot in January: a gap
    snap("mar", "2025-03-01T00:00"),
]

CASES = [
    # name, snapshots, policy, kept ids
    ("last 2", DAYS, Policy(keep_last=2), {"e2", "e1"}),
    ("last more than there are", DAYS[:3], Policy(keep_last=10), {"a1", "a2", "b1"}),
    ("last 0 is off", DAYS, Policy(keep_last=0, keep_daily=1), {"e2"}),
    ("daily 3: newest of each day", DAYS, Policy(keep_daily=3), {"e2", "c2", "b2"}),
    ("daily skips days without snapshots", DAYS, Policy(keep_daily=4), {"e2", "c2", "b2", "a2"}),
    ("daily more than days", DAYS, Policy(keep_daily=30), {"e2", "c2", "b2", "a2"}),
    ("weekly: ISO weeks across the year", WEEKS, Policy(keep_weekly=3), {"w02", "w01b", "w52"}),
    ("weekly 1", WEEKS, Policy(keep_weekly=1), {"w02"}),
    ("monthly skips empty months", MONTHS, Policy(keep_monthly=3), {"mar", "feb", "dec2"}),
    ("monthly all", MONTHS, Policy(keep_monthly=12), {"mar", "feb", "dec2", "nov"}),
    (
        "rules add up: last 1 + daily 2 + weekly 2",
        DAYS,
        # e2 (last, daily, weekly W01), c2 (daily), weekly W01 also holds e2; the previous
        # week is 2025-W01 too (Jan 1-5), so weekly's second slot finds nothing older.
        Policy(keep_last=1, keep_daily=2, keep_weekly=2),
        {"e2", "c2"},
    ),
    (
        "all rules",
        [*MONTHS[:3], *DAYS, snap("f", "2025-02-10T00:00"), snap("g", "2025-02-20T00:00")],
        Policy(keep_last=2, keep_daily=3, keep_weekly=2, keep_monthly=4),
        # last: g, f; daily: g, f, e2; weekly: g (W08), f (W07); monthly: g (Feb),
        # e2 (Jan), dec2 (Dec), nov (Nov).
        {"g", "f", "e2", "dec2", "nov"},
    ),
    (
        "ties on time: the larger id counts as newer",
        [snap("s-a", "2025-01-01T00:00"), snap("s-b", "2025-01-01T00:00")],
        Policy(keep_last=1),
        {"s-b"},
    ),
    (
        "ties on time in daily",
        [snap("s-b", "2025-01-01T00:00"), snap("s-a", "2025-01-01T00:00")],
        Policy(keep_daily=1),
        {"s-b"},
    ),
    (
        "pending is kept and does not use a slot",
        [*DAYS[-2:], snap("p", "2025-01-06T00:00", "pending")],
        Policy(keep_last=1),
        {"p", "e2"},
    ),
    (
        "error is removed and does not use a slot",
        [*DAYS[-2:], snap("x", "2025-01-06T00:00", "error")],
        Policy(keep_last=1, keep_daily=1),
        {"e2"},
    ),
    (
        "other states are kept",
        [*DAYS[-2:], snap("r", "2025-01-06T00:00", "recoverable")],
        Policy(keep_last=1),
        {"r", "e2"},
    ),
    (
        "times are compared in UTC",
        [
            snap("late-jan5", "2025-01-06T01:00+02:00"),  # 2025-01-05 23:00 UTC
            snap("jan5", "2025-01-05T12:00"),
            snap("jan6", "2025-01-05T23:30-02:00"),  # 2025-01-06 01:30 UTC
        ],
        Policy(keep_daily=2),
        {"jan6", "late-jan5"},
    ),
    (
        "no start time counts as now",
        [snap("old", "2025-01-01T00:00"), snap("unknown", None)],
        Policy(keep_last=1),
        {"unknown"},
    ),
    ("no snapshots", [], Policy(keep_last=3), set()),
]


@pytest.mark.parametrize(
    ("snapshots", "policy", "kept"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_select(snapshots: list[Snapshot], policy: Policy, kept: set[str]) -> None:
    keep, remove = select(snapshots, policy, NOW)
    assert set(keep) == kept
    # Every snapshot is in exactly one of the two, and every kept one says why.
    assert {s.id for s in remove} | set(keep) == {s.id for s in snapshots}
    assert not {s.id for s in remove} & set(keep)
    assert all(keep.values())
    # Removals come newest first.
    assert remove == sort_newest_first(remove, NOW)


def test_reasons_name_every_rule_that_keeps_a_snapshot() -> None:
    keep, _ = select(DAYS, Policy(keep_last=2, keep_daily=2, keep_weekly=1, keep_monthly=1), NOW)
    assert keep["e2"] == [
        "last 1 of 2",
        "daily 2025-01-05 (1 of 2)",
        "weekly 2025-W01 (1 of 1)",
        "monthly 2025-01 (1 of 1)",
    ]
    assert keep["e1"] == ["last 2 of 2"]
    assert keep["c2"] == ["daily 2025-01-03 (2 of 2)"]


def test_pending_reason() -> None:
    keep, remove = select([snap("p", "2025-01-01", "pending")], Policy(keep_last=1), NOW)
    assert keep == {"p": ["pending (never removed)"]} and remove == []


def test_an_empty_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one rule"):
        select(DAYS, Policy(), NOW)


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="keep_daily"):
        Policy(keep_daily=-1)


def test_describe() -> None:
    assert Policy(keep_last=3, keep_monthly=6).describe() == "keep-last 3, keep-monthly 6"


# --- the archive tier ------------------------------------------------------------------------


def test_kept_snapshots_old_enough_are_archived_but_never_the_newest() -> None:
    from dataclasses import replace
    from datetime import timedelta

    from ec2backup.core.retention import to_archive

    now = datetime(2026, 6, 1, tzinfo=UTC)

    def snap(sid: str, days: int, **kw: str) -> Snapshot:
        return Snapshot(sid, kw.get("state", "completed"), "vol-1", now - timedelta(days=days))

    snapshots = [
        snap("young", 3),
        snap("old", 40),
        snap("older", 100),
        replace(snap("archived", 200), storage_tier="archive"),
        snap("pending", 300, state="pending"),
        snap("dropped", 400),
    ]
    kept = {"young", "old", "older", "archived", "pending"}
    assert [s.id for s in to_archive(snapshots, kept, 30, now)] == ["old", "older"]
    # However old, the newest completed one stays in the standard tier.
    assert [s.id for s in to_archive(snapshots[1:], kept, 30, now)] == ["older"]
