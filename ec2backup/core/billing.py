"""What instance time a run used and what it costs: per second with a 60 s minimum per launch,
from the run's event log. Prices default to us-east-1 on-demand. No I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    pass

MIN_BILLED_SECONDS = 60.0

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
    instance_hourly: dict[str, float] = Field(
        default_factory=lambda: dict(_DEFAULT_INSTANCE_HOURLY)
    )
    # Where these came from: "defaults" or the config file.
    source: str = "defaults"

    def hourly(self, instance_type: str) -> float | None:
        return self.instance_hourly.get(instance_type)


DEFAULT_PRICES = Prices()


# --- one run's instance time --------------------------------------------------------------

_ENDS = frozenset({"terminated", "done", "failed", "aborted"})
# States a failed run can be resumed (or force-cleaned) into while its instance still exists.
_HOLDS_INSTANCE = frozenset(
    {
        "instance_running",
        "attaching",
        "attached",
        "formatting",
        "formatted",
        "mounting",
        "mounted",
        "syncing",
        "synced",
        "unmounting",
        "unmounted",
        "detaching",
        "detached",
        "terminating",
        "cleaning",
    }
)


def _event(ev: Any) -> tuple[str | None, str, datetime]:
    """(from, to, at) of an ``Event`` row or of a ``commands.history.show_run`` timeline entry."""
    if isinstance(ev, Mapping):
        at = ev["at"]
        at = datetime.fromisoformat(at) if isinstance(at, str) else at
        return ev.get("from"), str(ev["to"]), at
    return ev.from_state, str(ev.to_state), ev.at


def instance_seconds(events: Iterable[Any], now: datetime | None = None) -> list[float]:
    """Seconds of instance time per launch, in order. A launch runs from entering
    ``launching`` to entering ``terminated``, ``done``, ``failed`` or ``aborted``. A failed run
    that is resumed (or cleaned) into a state that still has its instance continues that
    launch from the resume; ``launching`` entered again while a launch is open (``relaunch``:
    the instance died under the run) starts a new one. A launch still open at the end is
    counted up to ``now`` (not at all if ``now`` is None)."""
    launches: list[float] = []
    open_at: datetime | None = None
    for ev in events:
        source, to, at = _event(ev)
        if to == "launching":
            if open_at is not None:
                launches[-1] += (at - open_at).total_seconds()
                launches.append(0.0)
            elif not (source == "failed" and launches):
                launches.append(0.0)  # a resumed launch reuses its token: same instance
            open_at = at
        elif to in _ENDS:
            if open_at is not None:
                launches[-1] += (at - open_at).total_seconds()
                open_at = None
        elif open_at is None and launches and source == "failed" and to in _HOLDS_INSTANCE:
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
