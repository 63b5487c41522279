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

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..config import Profile, load_profile, read_document
from ..core.billing import _DEFAULT_INSTANCE_HOURLY, DEFAULT_PRICES, Prices, run_cost
from ..errors import ConfigError, Ec2BackupError
from ..ports import Ec2, Snapshot

if TYPE_CHECKING:
    from .app import App


GIB = 1024**3
WINDOW = timedelta(days=30)
DEFAULTS_REGION = "us-east-1"


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
    from ..db.models import Run
    from .owned import profile_snapshots

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
