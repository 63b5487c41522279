"""What a profile costs per month, from AWS's figures and the run history. This module gathers
the figures (DescribeVolumes, DescribeSnapshots, the EBS direct APIs' figures recorded on the
runs, the runs' event logs); the arithmetic is core/billing.py's.

* **volume**: the standing volume's size (DescribeVolumes); in snapshots-only storage none, but
  each run's own volume for as long as the run held it (its event log);
* **snapshots** in each tier: the standard tier holds the oldest standard snapshot in full and
  what each later one added to the chain (ListSnapshotBlocks / ListChangedBlocks, recorded on
  the runs by commands/growth.py, measured now if not yet); an archived snapshot is billed at
  its full size (recorded when it was archived). The old estimate (the volume's size, rsync's
  bytes sent) only where no figure is known, and the row's basis says so;
* **instance time**: the runs of the last 30 days, from their event logs (``run_cost``);
* **requests**: the EBS direct API calls the growth figures took (recorded with them).

Then the monthly total of the same data under both storage modes, side by side.

Prices default to us-east-1 on-demand and can be overridden by a top-level ``[prices]`` table
in the config file (see docs/configuration.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..config import Profile, load_profile, read_document
from ..core.billing import (
    _DEFAULT_INSTANCE_HOURLY,
    ARCHIVE,
    DEFAULT_PRICES,
    STANDARD,
    ChainSnapshot,
    Prices,
    TierStorage,
    compare_modes,
    gib_months,
    run_cost,
    snapshot_storage,
    volume_seconds,
)
from ..core.retention import ARCHIVE_MINIMUM_DAYS, ARCHIVE_RESTORE_HOURS
from ..errors import ConfigError, Ec2BackupError
from ..ports import Ec2, Snapshot

if TYPE_CHECKING:
    from ..db.models import Run
    from .app import App


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


def _standing_volume(profile: Profile, ec2: Ec2, prices: Prices) -> dict[str, Any]:
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


def _chain(snapshots: Sequence[Snapshot], runs: Sequence[Run]) -> list[ChainSnapshot]:
    """The profile's snapshots oldest first (failed ones hold nothing), with what the runs that
    made them recorded."""
    by_snapshot = {r.snapshot_id: r for r in runs if r.snapshot_id}
    chain = []
    for s in reversed(snapshots):  # profile_snapshots: newest first
        if s.state == "error":
            continue
        run = by_snapshot.get(s.id)
        stats = (run.snapshot_stats if run is not None else None) or {}
        chain.append(
            ChainSnapshot(
                id=s.id,
                tier=s.storage_tier,
                size_gib=s.size_gib,
                added_bytes=stats.get("added_bytes"),
                compared_with=stats.get("compared_with"),
                full_bytes=stats.get("full_bytes"),
                sent_bytes=run.bytes_sent if run is not None else None,
            )
        )
    return chain


def _tier_item(storage: TierStorage, price: float) -> dict[str, Any]:
    item = _item(f"snapshots ({storage.tier})", storage.gib, "GiB-month", price, storage.basis())
    item["bytes"] = storage.bytes
    item["snapshots"] = [
        {"snapshot_id": c.snapshot_id, "bytes": c.bytes, "source": c.source}
        for c in storage.counted
    ]
    return item


def _measure_oldest(app: App, profile: Profile, snapshots: Sequence[Snapshot]) -> None:
    """Fill in what is not measured yet: each backup's growth, and the full size of the oldest
    standard snapshot (the base of the standard tier) if its run has none."""
    from .growth import fill_in, record_full_size

    fill_in(app, profile)
    standard = [s for s in snapshots if s.state == "completed" and s.storage_tier == "standard"]
    if not standard:
        return
    oldest = standard[-1]
    with app.store.session() as session:
        runs = app.store.list_runs(session, profile=profile.name)
        run = next((r for r in runs if r.snapshot_id == oldest.id), None)
        stats = (run.snapshot_stats or {}) if run is not None else {}
        known = "full_bytes" in stats or (
            stats.get("added_bytes") is not None and stats.get("compared_with") is None
        )
    if run is not None and not known:
        record_full_size(app, profile, oldest)


def _temporary_volumes(
    runs: Sequence[Run], size_gib: float, since: datetime, now: datetime
) -> tuple[float, int, float]:
    """(GiB-months, backups, seconds) of one volume per backup of the last 30 days, each for
    as long as its run went on."""
    from ..core.states import BACKUP_KINDS

    counted = [r for r in runs if r.kind in BACKUP_KINDS and _as_utc(r.created_at) >= since]
    seconds = sum(volume_seconds(r.events, now) for r in counted)
    return gib_months(size_gib, seconds), len(counted), seconds


def _as_utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def estimate(app: App, profile_name: str, now: datetime | None = None) -> dict[str, Any]:
    """``ec2backup cost``: the monthly bill of a profile, by component, and under both
    storage modes."""
    from .owned import profile_snapshots

    now = now or datetime.now(UTC)
    profile = load_profile(app.config_path, profile_name)
    prices = load_prices(app.config_path)
    ec2 = app.adapters.ec2(profile.region, None)
    notes: list[str] = []

    try:
        snapshots = profile_snapshots(ec2, profile.name, now)
    except Ec2BackupError as exc:
        snapshots = []
        notes.append(f"snapshots not counted: {exc.one_line()}")
    if snapshots:
        _measure_oldest(app, profile, snapshots)

    since = now - WINDOW
    instance_total = 0.0
    billed_total = 0.0
    usd_total = 0.0
    runs_counted = 0
    requests = 0
    unpriced: set[str] = set()
    types: set[str] = set()
    with app.store.session() as session:
        runs: list[Run] = app.store.list_runs(session, profile=profile.name)
        chain = _chain(snapshots, runs)
        newest_gib = float(next((s.size_gib for s in snapshots if s.size_gib), 0))
        if profile.storage == "volume":
            volume = _standing_volume(profile, ec2, prices)
            standing_gib = volume["quantity"] or 0.0
        else:
            standing_gib = newest_gib
        temporary = _temporary_volumes(runs, standing_gib, since, now)
        for run in runs:
            measured_at = (run.snapshot_stats or {}).get("measured_at")
            if measured_at and _as_utc(datetime.fromisoformat(measured_at)) >= since:
                requests += int((run.snapshot_stats or {}).get("requests") or 0)
            if _as_utc(run.created_at) < since:
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

    if profile.storage == "snapshots":
        gib_month, backups, seconds = temporary
        volume = _item(
            "volume",
            gib_month,
            "GiB-month",
            prices.volume_gb_month,
            f"no standing volume (storage = snapshots): {backups} backup(s) in the last 30 days, "
            f"each on its own {standing_gib:g} GiB volume, {seconds / 3600:.2f} h in all "
            "(the runs' event logs)",
        )
    storage = snapshot_storage(chain)
    standard = _tier_item(storage[STANDARD], prices.snapshot_gb_month)
    archive = _tier_item(storage[ARCHIVE], prices.archive_gb_month)

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
    request_item = _item(
        "requests",
        requests / 1000,
        "1,000 requests",
        prices.ebs_list_requests_1000,
        f"{requests} ListChangedBlocks/ListSnapshotBlocks call(s) in the last 30 days, as "
        "recorded with each backup's growth figure (EC2 API calls are free)",
    )
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
    if storage[STANDARD].fallbacks() or storage[ARCHIVE].fallbacks():
        notes.append(
            "some snapshots are not measured yet (pending, or the EBS direct APIs could not "
            "read them): estimated from the volume's size (a full one) or rsync's bytes sent "
            "(an increment); `ec2backup cost` measures them once they complete"
        )
    notes.append(
        f"archive tier: ${prices.archive_gb_month}/GB-month, billed for at least "
        f"{ARCHIVE_MINIMUM_DAYS} days per snapshot (deleting or restoring one for good sooner "
        f"bills the rest); restoring one takes up to {ARCHIVE_RESTORE_HOURS} hours and costs "
        f"${prices.archive_restore_gb}/GB restored"
    )
    items = [volume, standard, archive, instance, request_item]
    known = [i["monthly_usd"] for i in items if i["monthly_usd"] is not None]
    if len(known) < len(items):
        notes.append("the total leaves out the items without a price or a quantity")
    other = sum(i["monthly_usd"] or 0.0 for i in (instance, request_item))
    modes = compare_modes(
        standing_gib=standing_gib,
        temporary_gib_months=temporary[0],
        snapshots_usd=(standard["monthly_usd"] or 0.0) + (archive["monthly_usd"] or 0.0),
        other_usd=other,
        prices=prices,
    )
    return {
        "profile": profile.name,
        "region": profile.region,
        "storage": profile.storage,
        "prices": prices.source,
        "items": items,
        "total_monthly_usd": sum(known),
        "modes": [
            {
                "storage": m.storage,
                "used": m.storage == profile.storage,
                "volume_usd": m.volume_usd,
                "snapshots_usd": m.snapshots_usd,
                "instance_and_requests_usd": m.other_usd,
                "monthly_usd": m.monthly_usd,
                "basis": m.basis,
            }
            for m in modes
        ],
        "notes": notes,
    }
