"""What a profile's backups cost, as arithmetic on figures already gathered (no I/O):

* instance time of a run: per second with a 60 s minimum per launch, from its event log;
* snapshot storage per tier: the oldest standard snapshot at its full size plus what each later
  one added to the chain (the EBS direct APIs' figures), and every archived snapshot at its full
  size; the old estimate (the volume's size, rsync's bytes sent) only where no figure is known;
* a run's temporary volume (snapshots-only storage): its size for as long as the run held it;
* EBS direct API requests, per 1,000;
* the monthly total under each storage mode, for the same data.

Prices default to us-east-1 on-demand."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .states import BILLED_FROM, BILLED_STATES, BILLING_ENDS, FINAL_STATES, RunState

MIN_BILLED_SECONDS = 60.0
GIB = 1024**3
# EBS prorates GB-month prices by the second over a 30-day month (AWS's pricing examples).
SECONDS_PER_MONTH = 30 * 24 * 3600
STANDARD, ARCHIVE = "standard", "archive"

# us-east-1, Linux on-demand, USD per hour.
_DEFAULT_INSTANCE_HOURLY = {
    "t2.micro": 0.0116,
    "t3.nano": 0.0052,
    "t3.micro": 0.0104,
    "t3.small": 0.0208,
    "t3.medium": 0.0416,
    "t3.large": 0.0832,
    "t3a.nano": 0.0047,
    "t3a.micro": 0.0094,
    "t3a.small": 0.0188,
    "t3a.medium": 0.0376,
    "t4g.nano": 0.0042,
    "t4g.micro": 0.0084,
    "t4g.small": 0.0168,
    "t4g.medium": 0.0336,
    "m5.large": 0.096,
    "m6i.large": 0.096,
    "c5.large": 0.085,
    "c6i.large": 0.085,
}


class Prices(BaseModel):
    """USD prices. ``instance_hourly`` from the config is merged over the defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    volume_gb_month: float = Field(default=0.08, ge=0)  # gp3 storage
    snapshot_gb_month: float = Field(default=0.05, ge=0)  # standard snapshot storage
    archive_gb_month: float = Field(default=0.0125, ge=0)  # archive tier snapshot storage
    archive_restore_gb: float = Field(default=0.03, ge=0)  # per GB restored from the archive
    # ListChangedBlocks and ListSnapshotBlocks (EBS direct APIs), per 1,000 requests.
    ebs_list_requests_1000: float = Field(default=0.0006, ge=0)
    instance_hourly: dict[str, float] = Field(
        default_factory=lambda: dict(_DEFAULT_INSTANCE_HOURLY)
    )
    # Where these came from: "defaults" or the config file.
    source: str = "defaults"

    def hourly(self, instance_type: str) -> float | None:
        return self.instance_hourly.get(instance_type)


DEFAULT_PRICES = Prices()


# --- one run's instance time --------------------------------------------------------------
# Which states bill is the state machine's to say (core/states.py): BILLED_FROM, BILLED_STATES
# and BILLING_ENDS are derived from its steps.


def _event(ev: Any) -> tuple[str | None, str, datetime]:
    """(from, to, at) of an ``Event`` row or of a ``commands.history.show_run`` timeline entry."""
    if isinstance(ev, Mapping):
        at = ev["at"]
        at = datetime.fromisoformat(at) if isinstance(at, str) else at
        return ev.get("from"), str(ev["to"]), at
    return ev.from_state, str(ev.to_state), ev.at


def instance_seconds(events: Iterable[Any], now: datetime | None = None) -> list[float]:
    """Seconds of instance time per launch, in order. A launch runs from entering
    ``launching`` (``BILLED_FROM``) to entering ``terminated``, ``done``, ``failed`` or
    ``aborted`` (``BILLING_ENDS``). A failed run that is resumed (or cleaned) into a state
    that still has its instance (``BILLED_STATES``) continues that launch from the resume;
    ``launching`` entered again while a launch is open (``relaunch``: the instance died under
    the run) starts a new one. A launch still open at the end is counted up to ``now`` (not at
    all if ``now`` is None)."""
    launches: list[float] = []
    open_at: datetime | None = None
    for ev in events:
        source, to, at = _event(ev)
        if to == BILLED_FROM:
            if open_at is not None:
                launches[-1] += (at - open_at).total_seconds()
                launches.append(0.0)
            elif not (source == RunState.FAILED and launches):
                launches.append(0.0)  # a resumed launch reuses its token: same instance
            open_at = at
        elif to in BILLING_ENDS:
            if open_at is not None:
                launches[-1] += (at - open_at).total_seconds()
                open_at = None
        elif open_at is None and launches and source == RunState.FAILED and to in BILLED_STATES:
            open_at = at
    if open_at is not None and now is not None:
        launches[-1] += max(0.0, (now - open_at).total_seconds())
    return [max(0.0, s) for s in launches]


@dataclass(frozen=True)
class RunCost:
    instance_type: str
    launches: int
    instance_seconds: float  # as measured
    billed_seconds: float  # per second, at least 60 s per launch
    hourly_usd: float | None  # None: no price for this instance type
    usd: float | None


def run_cost(
    events: Iterable[Any], instance_type: str, prices: Prices, now: datetime | None = None
) -> RunCost:
    """The instance cost of one run from its event log (``Event`` rows or the ``events`` of
    ``commands.history.show_run``)."""
    per_launch = instance_seconds(events, now)
    billed = sum(max(MIN_BILLED_SECONDS, s) for s in per_launch)
    hourly = prices.hourly(instance_type)
    return RunCost(
        instance_type=instance_type,
        launches=len(per_launch),
        instance_seconds=sum(per_launch),
        billed_seconds=billed,
        hourly_usd=hourly,
        usd=None if hourly is None else billed / 3600 * hourly,
    )


# --- snapshot storage per tier --------------------------------------------------------------


@dataclass(frozen=True)
class ChainSnapshot:
    """One of a profile's snapshots, with what is known of its size."""

    id: str
    tier: str  # standard | archive
    size_gib: int | None  # of the volume it was taken from (DescribeSnapshots)
    # What it added to the chain (EBS direct APIs), against ``compared_with`` (None: all its
    # blocks, a first snapshot).
    added_bytes: int | None = None
    compared_with: str | None = None
    full_bytes: int | None = None  # all its blocks (ListSnapshotBlocks), if recorded
    sent_bytes: int | None = None  # what its run's rsync sent: the old estimate

    @property
    def all_blocks(self) -> int | None:
        if self.full_bytes is not None:
            return self.full_bytes
        if self.added_bytes is not None and self.compared_with is None:
            return self.added_bytes
        return None


@dataclass(frozen=True)
class Counted:
    snapshot_id: str
    tier: str
    bytes: int
    source: str  # where the figure comes from


@dataclass(frozen=True)
class TierStorage:
    tier: str
    counted: tuple[Counted, ...]

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.counted)

    @property
    def gib(self) -> float:
        return self.bytes / GIB

    def fallbacks(self) -> int:
        return sum(1 for c in self.counted if not c.source.startswith("EBS direct APIs"))

    def basis(self) -> str:
        if not self.counted:
            return f"no snapshots in the {self.tier} tier"
        how = (
            "the oldest at its full size, each later one at what it added to the chain"
            if self.tier == STANDARD
            else "each at its full size"
        )
        by_source: dict[str, int] = {}
        for c in self.counted:
            by_source[c.source] = by_source.get(c.source, 0) + 1
        sources = "; ".join(f"{n} from {source}" for source, n in by_source.items())
        text = f"{len(self.counted)} snapshot(s), {how}: {sources}"
        if self.fallbacks():
            text += f"; {self.fallbacks()} not measured yet, estimated the old way"
        return text


FROM_ADDED = "EBS direct APIs (added to the chain)"
FROM_FULL = "EBS direct APIs (all blocks)"
FROM_ADDED_GAP = "EBS direct APIs (added since a snapshot deleted since: a lower bound)"
FROM_VOLUME_SIZE = "estimate: the volume's full size"
FROM_SENT = "estimate: rsync's bytes sent"
FROM_NOTHING = "no figure (counted as 0)"


def _full(s: ChainSnapshot) -> Counted:
    blocks = s.all_blocks
    if blocks is not None:
        return Counted(s.id, s.tier, blocks, FROM_FULL)
    return Counted(s.id, s.tier, (s.size_gib or 0) * GIB, FROM_VOLUME_SIZE)


def _added(s: ChainSnapshot) -> Counted:
    if s.added_bytes is not None:
        return Counted(s.id, s.tier, s.added_bytes, FROM_ADDED)
    if s.sent_bytes is not None:
        return Counted(s.id, s.tier, s.sent_bytes, FROM_SENT)
    return Counted(s.id, s.tier, 0, FROM_NOTHING)


def snapshot_storage(chain: Iterable[ChainSnapshot]) -> dict[str, TierStorage]:
    """What each tier stores of the profile's snapshots (``chain``: oldest first, failed ones
    left out). The standard tier holds the oldest standard snapshot's blocks in full and, for
    each later one, the blocks it added; an archived snapshot is stored (and billed) whole, on
    its own. Where no measured figure is known: the volume's size for a full one, rsync's bytes
    sent for an increment."""
    standard = [s for s in chain if s.tier != ARCHIVE]
    archive = [s for s in chain if s.tier == ARCHIVE]
    counted = [_full(s) if i == 0 else _added(s) for i, s in enumerate(standard)]
    for i, s in enumerate(standard[1:], start=1):
        if s.compared_with not in (None, standard[i - 1].id) and s.added_bytes is not None:
            # Counted against a snapshot since deleted: blocks that one held and this one
            # still uses are stored but not in the figure.
            counted[i] = Counted(s.id, s.tier, s.added_bytes, FROM_ADDED_GAP)
    return {
        STANDARD: TierStorage(STANDARD, tuple(counted)),
        ARCHIVE: TierStorage(ARCHIVE, tuple(_full(s) for s in archive)),
    }


# --- a run's temporary volume ---------------------------------------------------------------


def volume_seconds(events: Iterable[Any], now: datetime | None = None) -> float:
    """How long a run would hold a volume of its own: from its first step (entering the first
    state after ``created``) to its end (``done`` or ``aborted``), at least 60 s as EBS bills.
    A run not ended yet counts up to ``now`` (0 if ``now`` is None)."""
    start: datetime | None = None
    end: datetime | None = None
    for ev in events:
        _source, to, at = _event(ev)
        if start is None and to != RunState.CREATED:
            start = at
        if to in FINAL_STATES:
            end = at
            break
    if start is None:
        return 0.0
    if end is None:
        end = now
    if end is None:
        return 0.0
    return max(MIN_BILLED_SECONDS, (end - start).total_seconds())


def gib_months(gib: float, seconds: float) -> float:
    return gib * seconds / SECONDS_PER_MONTH


# --- the two storage modes ------------------------------------------------------------------


@dataclass(frozen=True)
class ModeTotal:
    storage: str  # volume | snapshots
    volume_usd: float  # the standing volume, or the runs' temporary volumes
    snapshots_usd: float
    other_usd: float  # instance time and requests: the same in both modes
    basis: str

    @property
    def monthly_usd(self) -> float:
        return self.volume_usd + self.snapshots_usd + self.other_usd


def compare_modes(
    *,
    standing_gib: float,
    temporary_gib_months: float,
    snapshots_usd: float,
    other_usd: float,
    prices: Prices,
) -> list[ModeTotal]:
    """The monthly total of the same data under ``storage = "volume"`` (a standing volume of
    ``standing_gib`` plus the snapshots) and ``storage = "snapshots"`` (the snapshots plus
    each run's temporary volume, ``temporary_gib_months`` in all)."""
    return [
        ModeTotal(
            "volume",
            standing_gib * prices.volume_gb_month,
            snapshots_usd,
            other_usd,
            f"a standing {standing_gib:g} GiB volume all month + the snapshots",
        ),
        ModeTotal(
            "snapshots",
            temporary_gib_months * prices.volume_gb_month,
            snapshots_usd,
            other_usd,
            f"the snapshots + each run's own volume while it runs "
            f"({temporary_gib_months:.3g} GiB-month)",
        ),
    ]


def requests_usd(requests: int, prices: Prices) -> float:
    return requests / 1000 * prices.ebs_list_requests_1000
