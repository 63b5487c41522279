"""The cost estimate: instance time from event logs, the price table, the monthly estimate."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from moto import mock_aws

from ec2backup.adapters.aws.client import Boto3Ec2
from ec2backup.commands import cost
from ec2backup.commands.app import Adapters, App
from ec2backup.commands.cost import load_prices
from ec2backup.core.billing import DEFAULT_PRICES, Prices, instance_seconds, run_cost
from ec2backup.core.tags import TAG_MANAGED, TAG_PROFILE, TAG_RUN_ID
from ec2backup.db.models import Event, Run
from ec2backup.db.store import open_store
from ec2backup.errors import ConfigError
from ec2backup.ports import Snapshot
from tests.fakes import FakeBlocks, FakeConnector, FakeEc2, FakeSyncer

T0 = datetime(2025, 3, 1, 3, 0, tzinfo=UTC)
NOW = datetime(2025, 3, 20, 12, 0, tzinfo=UTC)
GIB = 1024**3


def log(*steps: tuple[int, str]) -> list[dict[str, Any]]:
    """Events as `show_run` gives them: (seconds after T0, state entered)."""
    events: list[dict[str, Any]] = []
    previous = None
    for seconds, state in steps:
        at = (T0 + timedelta(seconds=seconds)).isoformat()
        events.append({"from": previous, "to": state, "at": at})
        previous = state
    return events


BACKUP = log(
    (0, "created"),
    (1, "launching"),
    (40, "instance_running"),
    (50, "attaching"),
    (200, "syncing"),
    (280, "terminating"),
    (301, "terminated"),
    (302, "snapshotting"),
    (305, "done"),
)

CASES = [
    ("a whole backup", BACKUP, [300.0]),
    ("nothing launched", log((0, "created"), (1, "failed")), []),
    ("fails while syncing: counted to the failure", log((0, "launching"), (90, "failed")), [90.0]),
    (
        "resumed with its instance: one launch, two stretches",
        log(
            (0, "launching"),
            (100, "syncing"),
            (150, "failed"),
            (1000, "syncing"),
            (1100, "terminating"),
            (1110, "terminated"),
        ),
        [260.0],
    ),
    (
        "resumed into launching: the same launch (same token)",
        log((0, "launching"), (10, "failed"), (500, "launching"), (530, "terminated")),
        [40.0],
    ),
    (
        "relaunch: the instance died, a second launch",
        log(
            (0, "launching"),
            (100, "mounted"),
            (160, "launching"),
            (200, "instance_running"),
            (400, "terminated"),
        ),
        [160.0, 240.0],
    ),
    (
        "force-clean of a failed run",
        log((0, "launching"), (20, "failed"), (100, "cleaning"), (130, "aborted")),
        [50.0],
    ),
    (
        "resumed after termination: no instance any more",
        log((0, "launching"), (30, "terminated"), (35, "failed"), (90, "snapshotting")),
        [30.0],
    ),
    (
        "init: terminated then done",
        log(
            (0, "creating_volume"),
            (5, "launching"),
            (65, "formatting"),
            (125, "terminated"),
            (126, "done"),
        ),
        [120.0],
    ),
]


@pytest.mark.parametrize(("events", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_instance_seconds(events: list[dict[str, Any]], expected: list[float]) -> None:
    assert instance_seconds(events) == expected


def test_a_run_still_going_counts_up_to_now() -> None:
    events = log((0, "launching"), (100, "syncing"))
    assert instance_seconds(events) == [0.0]  # without `now`, the open stretch is not known
    assert instance_seconds(events, now=T0 + timedelta(seconds=700)) == [700.0]


def test_run_cost_bills_per_second_with_a_minute_minimum_per_launch() -> None:
    short = log((0, "launching"), (20, "instance_running"), (25, "terminated"))
    result = run_cost(short, "t3.micro", DEFAULT_PRICES)
    assert (result.launches, result.instance_seconds, result.billed_seconds) == (1, 25.0, 60.0)
    assert result.usd == pytest.approx(60 / 3600 * 0.0104)

    relaunched = log((0, "launching"), (10, "launching"), (100, "terminated"))
    result = run_cost(relaunched, "t3.micro", DEFAULT_PRICES)
    assert (result.launches, result.billed_seconds) == (2, 60.0 + 90.0)

    result = run_cost(BACKUP, "t3.micro", DEFAULT_PRICES)
    assert result.billed_seconds == 300.0
    assert result.usd == pytest.approx(300 / 3600 * 0.0104)
    assert result.hourly_usd == 0.0104


def test_run_cost_unknown_instance_type_has_no_price() -> None:
    result = run_cost(BACKUP, "x9.mega", DEFAULT_PRICES)
    assert result.hourly_usd is None and result.usd is None and result.billed_seconds == 300.0


def test_run_cost_takes_event_rows_too() -> None:
    rows = [
        SimpleNamespace(from_state=e["from"], to_state=e["to"], at=datetime.fromisoformat(e["at"]))
        for e in BACKUP
    ]
    assert run_cost(rows, "t3.micro", DEFAULT_PRICES) == run_cost(
        BACKUP, "t3.micro", DEFAULT_PRICES
    )


# --- prices ---------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_default_prices() -> None:
    assert (DEFAULT_PRICES.volume_gb_month, DEFAULT_PRICES.snapshot_gb_month) == (0.08, 0.05)
    assert DEFAULT_PRICES.hourly("t3.micro") == 0.0104


def test_prices_from_the_config_override_and_extend_the_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[prices]\nvolume_gb_month = 0.0952\n"
        '[prices.instance_hourly]\n"t3.micro" = 0.0118\n"r7i.large" = 0.1764\n',
    )
    prices = load_prices(path)
    assert prices.volume_gb_month == 0.0952
    assert prices.snapshot_gb_month == 0.05  # not given: the default
    assert prices.hourly("t3.micro") == 0.0118
    assert prices.hourly("r7i.large") == 0.1764
    assert prices.hourly("t3.small") == 0.0208  # the other defaults stay
    assert str(path) in prices.source
    assert load_prices(write(tmp_path, "")) == DEFAULT_PRICES
    assert load_prices(tmp_path / "missing.toml") == DEFAULT_PRICES


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ('prices = "cheap"\n', "prices", "must be a table"),
        ("[prices]\nvolume_gb_month = -1\n", "prices.volume_gb_month", "greater than"),
        ('[prices]\nsnapshot_gb_month = "a lot"\n', "prices.snapshot_gb_month", "number"),
        ("[prices]\nvolume_gb = 0.1\n", "prices.volume_gb", "not a known price"),
        ('[prices]\nsource = "me"\n', "prices.source", "not a known price"),
        ('[prices.instance_hourly]\n"t3.micro" = "x"\n', "prices.instance_hourly.t3.micro", ""),
    ],
)
def test_bad_prices_name_the_field(tmp_path: Path, text: str, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_prices(write(tmp_path, text))
    assert f"field '{field}'" in err.value.message and words in err.value.message


# --- the monthly estimate -------------------------------------------------------------------

CONFIG = (
    '[profiles.p]\nregion = "us-east-1"\navailability_zone = "us-east-1a"\nvolume_id = "{volume}"\n'
)


def add_run(
    app: App,
    run_id: str,
    started: datetime,
    *,
    seconds: int,
    snapshot_id: str | None = None,
    bytes_sent: int | None = None,
    instance_type: str = "t3.micro",
    profile: str = "p",
    stats: dict[str, Any] | None = None,
    kind: str = "backup",
) -> None:
    states = [(0, "created"), (1, "launching"), (1 + seconds, "terminated"), (seconds + 2, "done")]
    with app.store.session() as session:
        session.add(
            Run(
                id=run_id,
                kind=kind,
                profile=profile,
                state="done",
                host="h",
                launch_attempt=1,
                warnings=[],
                config={"profile": {"instance_type": instance_type}},
                created_at=started,
                updated_at=started,
                snapshot_id=snapshot_id,
                bytes_sent=bytes_sent,
                snapshot_stats=stats,
            )
        )
        previous = None
        for offset, state in states:
            session.add(
                Event(
                    run_id=run_id,
                    from_state=previous,
                    to_state=state,
                    at=started + timedelta(seconds=offset),
                )
            )
            previous = state
        session.commit()


def make_app(tmp_path: Path, ec2: object, config: str, blocks: object = None) -> App:
    return App(
        store=open_store(f"sqlite:///{tmp_path / 'db.sqlite'}"),
        config_path=write(tmp_path, config),
        data_dir=tmp_path / "data",
        adapters=Adapters(
            ec2=lambda _r, _id: ec2,  # type: ignore[arg-type,return-value]
            connector=FakeConnector,
            syncer=FakeSyncer,
            blocks=None if blocks is None else lambda _r, _id: blocks,  # type: ignore[arg-type,return-value]
        ),
    )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[App, FakeEc2]]:
    ec2 = FakeEc2()
    volume = ec2.add_volume(size_gib=100)
    app = make_app(tmp_path, ec2, CONFIG.format(volume=volume.id))
    yield app, ec2
    app.store.close()


def add_snapshot(
    ec2: FakeEc2, sid: str, started: datetime, profile: str = "p", tier: str = "standard"
) -> None:
    ec2.snapshots[sid] = Snapshot(
        id=sid,
        state="completed",
        volume_id="vol-1",
        started_at=started,
        size_gib=100,
        tags={TAG_MANAGED: "true", TAG_PROFILE: profile, TAG_RUN_ID: f"run-{sid}"},
        storage_tier=tier,
    )


def by_item(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["item"]: i for i in result["items"]}


def grew(added: int, against: str | None, requests: int = 1, **more: Any) -> dict[str, Any]:
    """Stats as commands/growth.py records them."""
    return {
        "added_bytes": added,
        "blocks": added // (512 * 1024),
        "block_size": 512 * 1024,
        "compared_with": against,
        "method": "ListChangedBlocks" if against else "ListSnapshotBlocks",
        "requests": requests,
        "measured_at": (NOW - timedelta(hours=1)).isoformat(),
        **more,
    }


MIB = 1024**2
DAY = timedelta(days=1)


def test_estimate(world: tuple[App, FakeEc2]) -> None:
    app, ec2 = world
    for n, sid in enumerate(["s-old", "s-mid", "s-new"]):
        add_snapshot(ec2, sid, NOW - (3 - n) * DAY)
    add_snapshot(ec2, "s-other", NOW, profile="q")
    # The EBS direct APIs' figures, recorded on the runs: a first snapshot of 3 GiB, then 2 MiB
    # and 5 MiB. rsync's bytes sent (much more: whole files) are not what EBS bills.
    long_ago = (NOW - 39 * DAY).isoformat()
    add_run(app, "r-old", NOW - 40 * DAY, seconds=3600, snapshot_id="s-old", bytes_sent=3 * GIB,
            stats=grew(3 * GIB, None, requests=7, measured_at=long_ago))  # fmt: skip
    add_run(app, "r-mid", NOW - 2 * DAY, seconds=1800, snapshot_id="s-mid", bytes_sent=GIB,
            stats=grew(2 * MIB, "s-old", requests=2))  # fmt: skip
    add_run(app, "r-new", NOW - 1 * DAY, seconds=30, snapshot_id="s-new", bytes_sent=5 * GIB,
            stats=grew(5 * MIB, "s-mid", requests=1))  # fmt: skip
    add_run(app, "r-q", NOW - 1 * DAY, seconds=9999, profile="q")

    result = cost.estimate(app, "p", now=NOW)
    items = by_item(result)
    assert [i["item"] for i in result["items"]] == [
        "volume",
        "snapshots (standard)",
        "snapshots (archive)",
        "instance time",
        "requests",
    ]
    assert items["volume"]["quantity"] == 100.0
    assert items["volume"]["monthly_usd"] == pytest.approx(8.0)
    standard = items["snapshots (standard)"]
    assert standard["bytes"] == 3 * GIB + 7 * MIB
    assert standard["quantity"] == pytest.approx(3 + 7 / 1024)
    assert standard["monthly_usd"] == pytest.approx((3 + 7 / 1024) * 0.05)
    assert [s["bytes"] for s in standard["snapshots"]] == [3 * GIB, 2 * MIB, 5 * MIB]
    assert "not measured" not in standard["basis"]
    assert items["snapshots (archive)"]["quantity"] == 0.0
    # The last 30 days: r-mid (1800 s) and r-new (30 s, billed 60 s); r-old is older.
    billed = 1800 + 60
    assert items["instance time"]["quantity"] == pytest.approx(billed / 3600)
    assert items["instance time"]["monthly_usd"] == pytest.approx(billed / 3600 * 0.0104)
    assert "2 run(s)" in items["instance time"]["basis"]
    # The calls made measuring r-mid and r-new; r-old's were made 39 days ago.
    assert items["requests"]["quantity"] == pytest.approx(3 / 1000)
    assert items["requests"]["monthly_usd"] == pytest.approx(3 / 1000 * 0.0006)
    assert "3 ListChangedBlocks/ListSnapshotBlocks call(s)" in items["requests"]["basis"]
    snapshots_usd = (3 + 7 / 1024) * 0.05
    other = billed / 3600 * 0.0104 + 3 / 1000 * 0.0006
    assert result["total_monthly_usd"] == pytest.approx(8.0 + snapshots_usd + other)
    assert result["prices"] == "defaults"
    assert any("90 days" in n and "72 hours" in n and "$0.03/GB" in n for n in result["notes"])
    assert not any("not measured" in n for n in result["notes"])

    volume_mode, snapshots_mode = result["modes"]
    assert (volume_mode["storage"], volume_mode["used"]) == ("volume", True)
    assert volume_mode["monthly_usd"] == pytest.approx(result["total_monthly_usd"])
    assert (snapshots_mode["storage"], snapshots_mode["used"]) == ("snapshots", False)
    # One 100 GiB volume per backup of the last 30 days, for as long as each run went on
    # (r-mid 1801 s, r-new 60 s at least), instead of the standing volume.
    temporary = 100 * (1801 + 60) / (30 * 86400) * 0.08
    assert snapshots_mode["volume_usd"] == pytest.approx(temporary)
    assert snapshots_mode["monthly_usd"] == pytest.approx(temporary + snapshots_usd + other)


def test_archived_snapshots_at_their_full_size(world: tuple[App, FakeEc2]) -> None:
    app, ec2 = world
    add_snapshot(ec2, "s1", NOW - 100 * DAY, tier="archive")
    add_snapshot(ec2, "s2", NOW - 99 * DAY)
    add_snapshot(ec2, "s3", NOW - DAY)
    add_run(app, "r1", NOW - 100 * DAY, seconds=60, snapshot_id="s1",
            stats=grew(GIB, None, full_bytes=GIB))  # fmt: skip
    add_run(app, "r2", NOW - 99 * DAY, seconds=60, snapshot_id="s2",
            stats=grew(4 * MIB, "s1", full_bytes=GIB + 2 * MIB))  # fmt: skip
    add_run(app, "r3", NOW - DAY, seconds=60, snapshot_id="s3", stats=grew(MIB, "s2"))
    items = by_item(cost.estimate(app, "p", now=NOW))
    archive = items["snapshots (archive)"]
    assert archive["bytes"] == GIB and archive["unit_price_usd"] == 0.0125
    assert archive["monthly_usd"] == pytest.approx(0.0125)
    # s2 heads the standard tier now that s1 left it: in full, then s3's increment.
    assert items["snapshots (standard)"]["bytes"] == GIB + 3 * MIB


def test_estimate_falls_back_to_the_old_estimate_and_says_so(
    world: tuple[App, FakeEc2],
) -> None:
    app, ec2 = world
    add_snapshot(ec2, "s1", NOW - 2 * DAY)
    add_snapshot(ec2, "s2", NOW - DAY)
    add_snapshot(ec2, "s3", NOW - DAY / 2)
    add_run(app, "r2", NOW - DAY, seconds=60, snapshot_id="s2", bytes_sent=3 * MIB)
    add_run(app, "r3", NOW - DAY / 2, seconds=60, snapshot_id="s3", stats=grew(MIB, "s2"))
    result = cost.estimate(app, "p", now=NOW)  # no EBS direct APIs: nothing measured now
    standard = by_item(result)["snapshots (standard)"]
    # s1 (no run here): the volume's 100 GiB; s2: rsync's bytes sent; s3: measured.
    assert standard["bytes"] == 100 * GIB + 3 * MIB + MIB
    assert [s["source"] for s in standard["snapshots"]] == [
        "estimate: the volume's full size",
        "estimate: rsync's bytes sent",
        "EBS direct APIs (added to the chain)",
    ]
    assert "2 not measured yet, estimated the old way" in standard["basis"]
    assert any("not measured yet" in n for n in result["notes"])


def test_estimate_measures_what_is_not_measured_yet(tmp_path: Path) -> None:
    ec2 = FakeEc2()
    blocks = FakeBlocks(ec2)
    volume = ec2.add_volume(size_gib=100)
    app = make_app(tmp_path, ec2, CONFIG.format(volume=volume.id), blocks)
    add_snapshot(ec2, "s1", NOW - 2 * DAY)
    add_snapshot(ec2, "s2", NOW - DAY)
    blocks.blocks["s1"] = {0: b"a", 1: b"b", 2: b"c"}
    blocks.blocks["s2"] = {0: b"a", 1: b"B", 2: b"c"}
    add_run(app, "r1", NOW - 2 * DAY, seconds=60, snapshot_id="s1", bytes_sent=GIB)
    add_run(app, "r2", NOW - DAY, seconds=60, snapshot_id="s2", bytes_sent=GIB)
    standard = by_item(cost.estimate(app, "p", now=NOW))["snapshots (standard)"]
    block = 512 * 1024
    assert standard["bytes"] == 3 * block + block
    assert sorted(blocks.calls, key=str) == sorted([(None, "s1"), ("s1", "s2")], key=str)
    with app.store.session() as session:  # recorded: not measured twice
        assert app.store.get_run(session, "r2").snapshot_stats["added_bytes"] == block
    blocks.calls.clear()
    cost.estimate(app, "p", now=NOW)
    assert blocks.calls == []
    app.store.close()


SNAPSHOTS_CONFIG = (
    '[profiles.p]\nregion = "us-east-1"\navailability_zone = "us-east-1a"\nstorage = "snapshots"\n'
)


def test_snapshots_only_profile_has_no_standing_volume(tmp_path: Path) -> None:
    ec2 = FakeEc2()
    ec2.add_volume(size_gib=100)  # someone else's: never looked at
    app = make_app(tmp_path, ec2, SNAPSHOTS_CONFIG)
    add_snapshot(ec2, "s1", NOW - 2 * DAY)
    add_snapshot(ec2, "s2", NOW - DAY)
    add_run(app, "r1", NOW - 2 * DAY, seconds=600, snapshot_id="s1",
            stats=grew(GIB, None), kind="snapshot_init")  # fmt: skip
    add_run(app, "r2", NOW - DAY, seconds=1200, snapshot_id="s2",
            stats=grew(MIB, "s1"), kind="snapshot_backup")  # fmt: skip
    result = cost.estimate(app, "p", now=NOW)
    items = by_item(result)
    # Only the backup's own volume (snapshot_init is not a backup): 100 GiB for 1201 s.
    gib_month = 100 * 1201 / (30 * 86400)
    assert items["volume"]["quantity"] == pytest.approx(gib_month)
    assert "no standing volume" in items["volume"]["basis"]
    assert items["snapshots (standard)"]["bytes"] == GIB + MIB
    volume_mode, snapshots_mode = result["modes"]
    assert (volume_mode["used"], snapshots_mode["used"]) == (False, True)
    assert volume_mode["volume_usd"] == pytest.approx(100 * 0.08)  # the snapshots' volume size
    assert snapshots_mode["monthly_usd"] == pytest.approx(result["total_monthly_usd"])
    app.store.close()


def test_estimate_says_what_it_could_not_count(world: tuple[App, FakeEc2]) -> None:
    app, ec2 = world
    add_snapshot(ec2, "s1", NOW - timedelta(days=2))
    add_snapshot(ec2, "s2", NOW - timedelta(days=1))
    add_run(app, "r1", NOW - timedelta(days=1), seconds=600, instance_type="z9.huge")
    app.config_path.write_text(app.config_path.read_text().replace("us-east-1", "eu-west-1"))
    result = cost.estimate(app, "p", now=NOW)
    items = by_item(result)
    assert "no figure (counted as 0)" in str(items["snapshots (standard)"]["snapshots"])
    assert items["snapshots (standard)"]["quantity"] == 100.0
    assert items["instance time"]["monthly_usd"] is None
    assert any("z9.huge" in n and "[prices.instance_hourly]" in n for n in result["notes"])
    assert any("set [prices] in the config for eu-west-1" in n for n in result["notes"])
    assert result["total_monthly_usd"] == pytest.approx(8.0 + 5.0)


def test_estimate_without_volume_or_snapshots(tmp_path: Path) -> None:
    app = make_app(tmp_path, FakeEc2(), CONFIG.replace('volume_id = "{volume}"\n', ""))
    items = by_item(cost.estimate(app, "p", now=NOW))
    assert items["volume"]["monthly_usd"] is None
    assert "no volume_id" in items["volume"]["basis"]
    assert items["snapshots (standard)"]["quantity"] == 0.0
    assert items["instance time"]["quantity"] == 0.0
    assert items["requests"]["quantity"] == 0.0
    app.store.close()


def test_estimate_with_moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        ec2 = Boto3Ec2("us-east-1", poll_interval=0.001)
        volume = ec2.create_volume("us-east-1a", 20, {TAG_MANAGED: "true"}, client_token="v")
        ec2.create_snapshot(volume.id, "d", {TAG_MANAGED: "true", TAG_PROFILE: "p"})
        app = make_app(tmp_path, ec2, CONFIG.format(volume=volume.id))
        items = by_item(cost.estimate(app, "p"))
        app.store.close()
    assert items["volume"]["quantity"] == 20.0
    assert items["snapshots (standard)"]["quantity"] == 20.0


def test_prices_model_rejects_negative() -> None:
    with pytest.raises(ValueError):
        Prices(volume_gb_month=-0.1)


def test_the_head_of_the_standard_tier_is_measured_in_full(tmp_path: Path) -> None:
    ec2 = FakeEc2()
    blocks = FakeBlocks(ec2)
    volume = ec2.add_volume(size_gib=100)
    app = make_app(tmp_path, ec2, CONFIG.format(volume=volume.id), blocks)
    add_snapshot(ec2, "s1", NOW - 2 * DAY, tier="archive")
    add_snapshot(ec2, "s2", NOW - DAY)
    blocks.blocks["s2"] = {0: b"a", 1: b"b", 2: b"c"}
    add_run(app, "r1", NOW - 2 * DAY, seconds=60, snapshot_id="s1",
            stats=grew(3 * MIB, None, full_bytes=3 * MIB))  # fmt: skip
    add_run(app, "r2", NOW - DAY, seconds=60, snapshot_id="s2", stats=grew(MIB, "s1"))
    # s1 left the standard tier: s2's increment against it is not what the tier holds.
    standard = by_item(cost.estimate(app, "p", now=NOW))["snapshots (standard)"]
    assert blocks.calls == [(None, "s2")]  # ListSnapshotBlocks of s2, recorded
    assert standard["snapshots"] == [
        {"snapshot_id": "s2", "bytes": 3 * 512 * 1024, "source": "EBS direct APIs (all blocks)"}
    ]
    blocks.calls.clear()
    cost.estimate(app, "p", now=NOW)
    assert blocks.calls == []
    app.store.close()
