"""Which snapshots to keep: restic's ``forget`` rules as one pure function.

* ``keep_last N``: the N newest snapshots.
* ``keep_daily N`` / ``keep_weekly N`` / ``keep_monthly N``: the newest snapshot of each of
  the last N days / ISO weeks / calendar months *that have snapshots* (a gap of a week with no
  backup does not use up a daily slot). Days, weeks and months are UTC.
* A snapshot kept by any rule is kept; every rule that keeps it is given as a reason.
* Only ``completed`` snapshots count for the rules. A ``pending`` one is always kept (it may
  still fail, so it must not push a good snapshot out), as is one in any other state EBS may
  report (``recoverable``, ``recovering``); an ``error`` one is always removed (it holds no
  usable backup).

Snapshots are ordered newest first by start time, then by id, so ties are decided the same way
on every run. A snapshot without a start time is taken as started ``now``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from .times import as_utc

__all__ = [
    "ARCHIVE_MINIMUM_DAYS",
    "ARCHIVE_RESTORE_HOURS",
    "Policy",
    "select",
    "sort_newest_first",
    "to_archive",
]

# EBS Snapshots Archive: an archived snapshot is billed for at least 90 days (deleting it or
# restoring it for good sooner bills the remaining days), and bringing one back to the standard
# tier takes up to 72 hours, depending on its size.
ARCHIVE_MINIMUM_DAYS = 90
ARCHIVE_RESTORE_HOURS = 72


class Dated(Protocol):
    """What the rules look at: ``ports.Snapshot`` is one."""

    @property
    def id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def started_at(self) -> datetime | None: ...


SnapshotT = TypeVar("SnapshotT", bound=Dated)


class Tiered(Dated, Protocol):
    """A snapshot with its storage tier (``standard`` or ``archive``)."""

    @property
    def storage_tier(self) -> str: ...


TieredT = TypeVar("TieredT", bound=Tiered)


@dataclass(frozen=True)
class Policy:
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0

    def __post_init__(self) -> None:
        for name, value in self.rules():
            if value < 0:
                raise ValueError(f"{name} must be 0 or more, not {value}")

    def rules(self) -> list[tuple[str, int]]:
        return [
            ("keep_last", self.keep_last),
            ("keep_daily", self.keep_daily),
            ("keep_weekly", self.keep_weekly),
            ("keep_monthly", self.keep_monthly),
        ]

    def is_empty(self) -> bool:
        return not any(value for _name, value in self.rules())

    def describe(self) -> str:
        return ", ".join(f"{name.replace('_', '-')} {n}" for name, n in self.rules() if n) or (
            "no rule"
        )


def sort_newest_first(snapshots: Sequence[SnapshotT], now: datetime) -> list[SnapshotT]:
    def key(s: SnapshotT) -> tuple[datetime, str]:
        return (as_utc(s.started_at or now), s.id)

    return sorted(snapshots, key=key, reverse=True)


def _day(t: datetime) -> tuple[Hashable, str]:
    return t.date(), t.strftime("%Y-%m-%d")


def _week(t: datetime) -> tuple[Hashable, str]:
    iso = t.isocalendar()
    return (iso.year, iso.week), f"{iso.year}-W{iso.week:02d}"


def _month(t: datetime) -> tuple[Hashable, str]:
    return (t.year, t.month), t.strftime("%Y-%m")


_BUCKETS: dict[str, tuple[str, Callable[[datetime], tuple[Hashable, str]]]] = {
    "keep_daily": ("daily", _day),
    "keep_weekly": ("weekly", _week),
    "keep_monthly": ("monthly", _month),
}


def select(
    snapshots: Sequence[SnapshotT], policy: Policy, now: datetime
) -> tuple[dict[str, list[str]], list[SnapshotT]]:
    """Apply ``policy``. Returns (kept snapshot id -> the reasons it is kept, in rule order;
    the snapshots to remove, newest first). Every snapshot given is in exactly one of them.

    An empty policy is refused (``ValueError``): it would remove every snapshot."""
    if policy.is_empty():
        raise ValueError("a retention policy needs at least one rule above 0")
    ordered = sort_newest_first(snapshots, now)
    keep: dict[str, list[str]] = {}
    for s in ordered:
        if s.state not in ("completed", "error"):
            keep[s.id] = [f"{s.state} (never removed)"]
    counted = [s for s in ordered if s.state == "completed"]

    for i, s in enumerate(counted[: policy.keep_last]):
        keep.setdefault(s.id, []).append(f"last {i + 1} of {policy.keep_last}")

    for rule, (label, bucket) in _BUCKETS.items():
        limit = getattr(policy, rule)
        seen: list[Hashable] = []
        for s in counted:
            if len(seen) >= limit:
                break
            key, name = bucket(as_utc(s.started_at or now))
            if seen and seen[-1] == key:
                continue  # an older snapshot of a period already kept
            seen.append(key)
            keep.setdefault(s.id, []).append(f"{label} {name} ({len(seen)} of {limit})")

    remove = [s for s in ordered if s.id not in keep]
    return keep, remove


def to_archive(
    snapshots: Sequence[TieredT], kept: Iterable[str], archive_after_days: int, now: datetime
) -> list[TieredT]:
    """The kept snapshots to move to the archive tier, newest first: completed, in the standard
    tier, started ``archive_after_days`` or more ago. Never the newest completed snapshot: a
    backup in snapshots-only storage starts from it, and a restore from it should not wait for
    the archive."""
    keep = set(kept)
    ordered = sort_newest_first(snapshots, now)
    completed = [s for s in ordered if s.state == "completed"]
    newest = completed[0].id if completed else None
    cutoff = now - timedelta(days=archive_after_days)
    return [
        s
        for s in completed
        if s.id in keep
        and s.id != newest
        and s.storage_tier == "standard"
        and as_utc(s.started_at or now) <= cutoff
    ]
