"""What a profile costs per month, estimated from AWS and from the run history.

Three parts:

* **volume**: the profile's volume size (DescribeVolumes) x the GB-month price;
* **snapshots**: EBS snapshots are incremental, so the sum of their sizes overstates the bill.
  The estimate is the newest snapshot's full size plus the data the runs of the older (still
  existing) snapshots sent (rsync ``bytes_sent``); the result says which estimate it used;
* **instance time**: the runs of the last 30 days; each run's instance-seconds come from its
  event log (``run_cost``), billed per second with a 60 s minimum per launch.

Prices default to us-east-1 on-demand and can be overridden by a top-level ``[prices]`` table
in the config file (see docs/configuration.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import Profile, load_profile, read_document
from .errors import ConfigError, Ec2BackupError
from .ports import Ec2, Snapshot

if TYPE_CHECKING:
    from .service import App

__all__ = [
    "DEFAULT_PRICES",
    "MIN_BILLED_SECONDS",
    "Prices",
    "RunCost",
    "estimate",
    "instance_seconds",
    "load_prices",
    "run_cost",
]

GIB = 1024**3
MIN_BILLED_SECONDS = 60.0
WINDOW = timedelta(days=30)
DEFAULTS_REGION = "us-east-1"

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


def load_prices(config_path: Path) -> Prices:
    """The defaults, overridden by the config's ``[prices]`` table if there is one."""
    if not config_path.exists():
        return DEFAULT_PRICES
    table = read_document(config_path).get("prices")
    if table is None:
        return DEFAULT_PRICES
    file = str(config_path)
    if not isinstance(table, dict):
        raise ConfigError("must be a table", file=file, field="prices")
    if "source" in table:
        raise ConfigError("is not a known price", file=file, field="prices.source")
    data = dict(table)
    hourly = data.get("instance_hourly", {})
    if isinstance(hourly, dict):
        data["instance_hourly"] = {**_DEFAULT_INSTANCE_HOURLY, **hourly}
    try:
        prices = Prices.model_validate({**data, "source": f"{file} [prices] over the defaults"})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(["prices", *(str(p) for p in first["loc"])])
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "is not a known price (see docs/configuration.md)"
        raise ConfigError(message, file=file, field=field) from None
    return prices


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
    """(from, to, at) of an ``models.Event`` or of a ``service.show_run`` timeline entry."""
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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_cost(
    events: Iterable[Any], instance_type: str, prices: Prices, now: datetime | None = None
) -> RunCost:
    """The instance cost of one run from its event log (``Event`` rows or the ``events`` of
    ``service.show_run``)."""
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


# --- the monthly estimate -----------------------------------------------------------------


def _item(
    item: str,
    quantity: float | None,
    unit: str,
    unit_price: float | None,
    basis: str,
) -> dict[str, Any]:
    monthly = None if quantity is None or unit_price is None else quantity * unit_price
    return {
        "item": item,
        "quantity": quantity,
        "unit": unit,
        "unit_price_usd": unit_price,
        "monthly_usd": monthly,
        "basis": basis,
    }


def _volume_item(profile: Profile, ec2: Ec2, prices: Prices) -> dict[str, Any]:
    unit = "GiB-month"
    if profile.volume_id is None:
        return _item("volume", None, unit, prices.volume_gb_month, "no volume_id in the profile")
    volume = ec2.get_volume(profile.volume_id)
    if volume is None:
        return _item("volume", None, unit, prices.volume_gb_month, f"{profile.volume_id} not found")
    return _item(
        "volume",
        float(volume.size_gib),
        unit,
        prices.volume_gb_month,
        f"{volume.id}: {volume.size_gib} GiB provisioned (DescribeVolumes)",
    )


def _snapshot_item(
    snapshots: Sequence[Snapshot], sent_by_snapshot: Mapping[str, int | None], prices: Prices
) -> dict[str, Any]:
    unit = "GiB-month"
    billed = [s for s in snapshots if s.state != "error"]
    sized = [s for s in billed if s.size_gib is not None]
    if not sized:
        return _item("snapshots", 0.0, unit, prices.snapshot_gb_month, "no snapshots")
    newest, older = sized[0], sized[1:]
    newest_gib = newest.size_gib or 0
    all_gib = sum(s.size_gib or 0 for s in sized)
    sent = [sent_by_snapshot.get(s.id) for s in older]
    known = [b for b in sent if b is not None]
    changed_gib = sum(known) / GIB
    basis = (
        f"incremental estimate: newest full ({newest_gib} GiB) + sent by the runs of "
        f"{len(older)} older ({changed_gib:.2f} GiB); sum of sizes {all_gib} GiB"
    )
    if len(known) < len(older):
        basis += f"; {len(older) - len(known)} older snapshot(s) have no run here (counted as 0)"
    item = _item("snapshots", newest_gib + changed_gib, unit, prices.snapshot_gb_month, basis)
    item["estimate"] = "incremental"
    item["upper_bound_gib"] = float(all_gib)
    return item


def estimate(app: App, profile_name: str, now: datetime | None = None) -> dict[str, Any]:
    """``ec2backup cost``: the estimated monthly bill of a profile."""
    from .models import Run
    from .snapshots import profile_snapshots

    now = now or datetime.now(UTC)
    profile = load_profile(app.config_path, profile_name)
    prices = load_prices(app.config_path)
    ec2 = app.adapters.ec2(profile.region, None)
    notes: list[str] = []

    volume = _volume_item(profile, ec2, prices)
    try:
        snapshots = profile_snapshots(ec2, profile.name, now)
    except Ec2BackupError as exc:
        snapshots = []
        notes.append(f"snapshots not counted: {exc.one_line()}")

    since = now - WINDOW
    instance_total = 0.0
    billed_total = 0.0
    usd_total = 0.0
    runs_counted = 0
    unpriced: set[str] = set()
    types: set[str] = set()
    with app.store.session() as session:
        runs: list[Run] = app.store.list_runs(session, profile=profile.name)
        sent_by_snapshot = {r.snapshot_id: r.bytes_sent for r in runs if r.snapshot_id}
        for run in runs:
            if run.created_at < since:
                continue
            instance_type = (
                (run.config or {}).get("profile", {}).get("instance_type", profile.instance_type)
            )
            cost = run_cost(run.events, instance_type, prices, now=now)
            if not cost.launches:
                continue
            runs_counted += 1
            types.add(instance_type)
            instance_total += cost.instance_seconds
            billed_total += cost.billed_seconds
            if cost.usd is None:
                unpriced.add(instance_type)
            else:
                usd_total += cost.usd

    snapshot = _snapshot_item(snapshots, sent_by_snapshot, prices)
    if snapshot.get("estimate") == "incremental":
        notes.append(
            "snapshots are incremental: estimated as the newest snapshot's full size plus the "
            "data the runs of the older ones sent (rsync bytes sent). Usually an overestimate "
            "(EBS bills only written blocks); an underestimate if rsync compression saved much. "
            "The sum of all snapshot sizes is an upper bound"
        )
    hours = billed_total / 3600
    # Mixed instance types have no one unit price: the monthly figure is their sum.
    hourly = None if len(types) > 1 else prices.hourly(next(iter(types), profile.instance_type))
    instance = _item(
        "instance time",
        hours,
        "hours",
        hourly,
        f"{runs_counted} run(s) in the last 30 days: {instance_total / 3600:.2f} h measured, "
        f"{hours:.2f} h billed (per second, 60 s minimum per launch)",
    )
    instance["monthly_usd"] = None if unpriced else usd_total
    if unpriced:
        notes.append(
            f"no price for instance type(s) {', '.join(sorted(unpriced))}: add them under "
            "[prices.instance_hourly] in the config"
        )
    if prices.source == "defaults" and profile.region != DEFAULTS_REGION:
        notes.append(
            f"prices are {DEFAULTS_REGION} on-demand defaults; set [prices] in the config for "
            f"{profile.region}"
        )
    items = [volume, snapshot, instance]
    known = [i["monthly_usd"] for i in items if i["monthly_usd"] is not None]
    if len(known) < len(items):
        notes.append("the total leaves out the items without a price or a quantity")
    return {
        "profile": profile.name,
        "region": profile.region,
        "prices": prices.source,
        "items": items,
        "total_monthly_usd": sum(known),
        "notes": notes,
    }
