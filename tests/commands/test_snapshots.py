"""`snapshots` and `prune`: only the profile's own snapshots, pending ones never deleted, a dry
run unless told otherwise; with fakes for the timing and with in-process moto for the adapter."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from moto import mock_aws

from ec2backup.adapters.aws.client import Boto3Ec2
from ec2backup.commands import snapshots as snaps
from ec2backup.commands.app import Adapters, App
from ec2backup.config import load_profile
from ec2backup.core.retention import Policy
from ec2backup.core.tags import TAG_MANAGED, TAG_PROFILE, TAG_RUN_ID
from ec2backup.db.store import open_store
from ec2backup.errors import CloudError, ConfigError, InvalidResourceStateError, UserInputError
from ec2backup.ports import Snapshot
from tests.fakes import FakeConnector, FakeEc2, FakeSyncer

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
CONFIG = '[profiles.p]\nregion = "us-east-1"\navailability_zone = "us-east-1a"\n'


@dataclass
class SnapshotEc2(FakeEc2):
    """FakeEc2 plus delete_snapshot; can ignore tag filters, as a careless adapter might."""

    deleted: list[str] = field(default_factory=list)
    fail_on: set[str] = field(default_factory=set)
    ignore_filters: bool = False

    def delete_snapshot(self, snapshot_id: str) -> None:
        self._call("delete_snapshot")
        if snapshot_id in self.fail_on:
            raise InvalidResourceStateError(
                "the snapshot is in use", resources={"snapshot": snapshot_id}, hint="deregister"
            )
        self.deleted.append(snapshot_id)
        self.snapshots.pop(snapshot_id, None)

    def find_snapshots(self, tags: Mapping[str, str]) -> list[Snapshot]:
        self._call("find_snapshots")
        if self.ignore_filters:
            return list(self.snapshots.values())
        return super().find_snapshots(tags)

    def add(
        self,
        sid: str,
        days_ago: float,
        *,
        state: str = "completed",
        profile: str | None = "p",
        managed: bool = True,
    ) -> Snapshot:
        tags = {TAG_RUN_ID: f"run-{sid}"}
        if profile is not None:
            tags[TAG_PROFILE] = profile
        if managed:
            tags[TAG_MANAGED] = "true"
        snapshot = Snapshot(
            id=sid,
            state=state,
            volume_id="vol-1",
            started_at=NOW - timedelta(days=days_ago),
            size_gib=8,
            tags=tags,
        )
        self.snapshots[sid] = snapshot
        return snapshot


def make_app(tmp_path: Path, ec2: object, config: str = CONFIG) -> App:
    path = tmp_path / "config.toml"
    path.write_text(config)
    return App(
        store=open_store(f"sqlite:///{tmp_path / 'db.sqlite'}"),
        config_path=path,
        data_dir=tmp_path / "data",
        adapters=Adapters(
            ec2=lambda _r, _id: ec2,  # type: ignore[arg-type,return-value]
            connector=FakeConnector,
            syncer=FakeSyncer,
        ),
    )


@pytest.fixture
def ec2() -> SnapshotEc2:
    return SnapshotEc2()


@pytest.fixture
def app(tmp_path: Path, ec2: SnapshotEc2) -> Iterator[App]:
    app = make_app(tmp_path, ec2)
    yield app
    app.store.close()


def test_list_shows_only_the_profiles_managed_snapshots_newest_first(
    app: App, ec2: SnapshotEc2
) -> None:
    ec2.add("old", 3)
    ec2.add("new", 1, state="pending")
    ec2.add("mid", 2)
    ec2.add("other-profile", 0, profile="q")
    ec2.add("unmanaged", 0, managed=False)
    ec2.ignore_filters = True  # the listing checks the tags itself too
    rows = snaps.list_snapshots(app, "p")
    assert [r["id"] for r in rows] == ["new", "mid", "old"]
    assert rows[0] == {
        "id": "new",
        "run_id": "run-new",
        "started_at": (NOW - timedelta(days=1)).isoformat(),
        "size_gib": 8,
        "state": "pending",
        "tier": "standard",
        "restored_until": None,
        "volume_id": "vol-1",
    }


def test_list_reports_the_state_at_each_call(app: App, ec2: SnapshotEc2) -> None:
    ec2.add("s", 0, state="pending")
    assert snaps.list_snapshots(app, "p")[0]["state"] == "pending"
    ec2.add("s", 0, state="completed")
    assert snaps.list_snapshots(app, "p")[0]["state"] == "completed"


def test_list_unknown_profile_is_a_config_error(app: App) -> None:
    with pytest.raises(ConfigError, match="unknown profile 'nope'"):
        snaps.list_snapshots(app, "nope")


def test_prune_is_a_dry_run_by_default(app: App, ec2: SnapshotEc2) -> None:
    for n in range(4):
        ec2.add(f"s{n}", n)
    result = snaps.prune(app, "p", Policy(keep_last=2), now=NOW)
    assert result["dry_run"] is True
    assert ec2.deleted == [] and "delete_snapshot" not in ec2.calls
    actions = {r["id"]: (r["action"], r["reasons"]) for r in result["snapshots"]}
    assert actions == {
        "s0": ("keep", ["last 1 of 2"]),
        "s1": ("keep", ["last 2 of 2"]),
        "s2": ("remove", ["no rule keeps it"]),
        "s3": ("remove", ["no rule keeps it"]),
    }
    assert (result["kept"], result["removed"], result["failed"]) == (2, 2, 0)
    assert result["policy"] == "keep-last 2"


def test_prune_yes_deletes_exactly_what_no_rule_keeps(app: App, ec2: SnapshotEc2) -> None:
    # One a day for ten days, plus an older pending one and another profile's.
    for n in range(10):
        ec2.add(f"d{n}", n)
    ec2.add("stuck", 30, state="pending")
    ec2.add("broken", 0.5, state="error")
    ec2.add("theirs", 40, profile="q")
    result = snaps.prune(app, "p", Policy(keep_last=1, keep_daily=3), yes=True, now=NOW)
    assert sorted(ec2.deleted) == sorted(["broken", *(f"d{n}" for n in range(3, 10))])
    assert set(ec2.snapshots) == {"d0", "d1", "d2", "stuck", "theirs"}
    rows = {r["id"]: r for r in result["snapshots"]}
    assert rows["stuck"]["action"] == "keep"
    assert rows["stuck"]["reasons"] == ["pending (never removed)"]
    assert rows["broken"]["reasons"] == ["state error"]
    assert rows["d5"]["action"] == "deleted"
    assert "theirs" not in rows


def test_prune_never_touches_other_profiles_even_if_the_adapter_ignores_filters(
    app: App, ec2: SnapshotEc2
) -> None:
    ec2.add("mine", 0)
    ec2.add("old-mine", 5)
    ec2.add("theirs", 10, profile="q")
    ec2.add("hand-made", 10, managed=False)
    ec2.ignore_filters = True
    snaps.prune(app, "p", Policy(keep_last=1), yes=True, now=NOW)
    assert ec2.deleted == ["old-mine"]


def test_a_failed_deletion_is_reported_and_the_others_go_on(app: App, ec2: SnapshotEc2) -> None:
    for n in range(4):
        ec2.add(f"s{n}", n)
    ec2.fail_on = {"s2"}
    result = snaps.prune(app, "p", Policy(keep_last=1), yes=True, now=NOW)
    assert ec2.deleted == ["s1", "s3"]
    rows = {r["id"]: r for r in result["snapshots"]}
    assert rows["s2"]["action"] == "failed" and "in use" in rows["s2"]["error"]
    assert (result["removed"], result["failed"]) == (2, 1)


def test_prune_refuses_an_empty_policy(app: App, ec2: SnapshotEc2) -> None:
    ec2.add("s", 0)
    with pytest.raises(UserInputError, match="at least one rule"):
        snaps.prune(app, "p", Policy(), yes=True, now=NOW)
    assert ec2.deleted == []


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ({}, "at least one rule"),
        ({"keep_last": 0, "keep_daily": 0}, "at least one rule"),
        ({"keep_weekly": -1}, "--keep-weekly -1 is negative"),
    ],
)
def test_policy_from_flags_errors(flags: dict[str, int], words: str) -> None:
    with pytest.raises(UserInputError, match=words):
        snaps.policy_from_flags(**flags)


def test_policy_from_flags() -> None:
    assert snaps.policy_from_flags(keep_last=2, keep_monthly=6) == Policy(
        keep_last=2, keep_monthly=6
    )


# --- the profile's retention table ----------------------------------------------------------


def test_retention_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG + "retention = { keep_daily = 7, keep_monthly = 12 }\n")
    retention = load_profile(path, "p").retention
    assert retention is not None
    assert (retention.keep_last, retention.keep_daily, retention.keep_monthly) == (0, 7, 12)
    assert load_profile(write_config(tmp_path, CONFIG), "p").retention is None


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("table", "field_name", "words"),
    [
        ("{ keep_last = 0 }", "retention", "at least one of keep_last"),
        ("{ keep_daily = -1 }", "retention.keep_daily", "greater than or equal to 0"),
        ("{ keep_yearly = 1 }", "retention.keep_yearly", "not a known setting"),
    ],
)
def test_bad_retention_names_the_field(
    tmp_path: Path, table: str, field_name: str, words: str
) -> None:
    path = write_config(tmp_path, CONFIG + f"retention = {table}\n")
    with pytest.raises(ConfigError) as err:
        load_profile(path, "p")
    assert f"field '{field_name}'" in err.value.message and words in err.value.message


def test_apply_profile_retention(tmp_path: Path, ec2: SnapshotEc2) -> None:
    app = make_app(tmp_path, ec2, CONFIG + "retention = { keep_last = 2 }\n")
    for n in range(5):
        ec2.add(f"s{n}", n)
    profile = load_profile(app.config_path, "p")
    result = snaps.apply_profile_retention(app, profile, now=NOW)
    assert result is not None and result["dry_run"] is False
    assert sorted(ec2.deleted) == ["s2", "s3", "s4"]
    app.store.close()


def test_apply_profile_retention_without_a_table_does_nothing(app: App, ec2: SnapshotEc2) -> None:
    ec2.add("s0", 0)
    ec2.add("s1", 1)
    assert snaps.apply_profile_retention(app, load_profile(app.config_path, "p")) is None
    assert ec2.calls == []


def test_apply_profile_retention_logs_instead_of_raising(
    tmp_path: Path, ec2: SnapshotEc2, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(tmp_path, ec2, CONFIG + "retention = { keep_last = 1 }\n")
    ec2.add("s0", 0)

    def broken(name: str) -> None:
        if name == "find_snapshots":
            raise CloudError("ec2:DescribeSnapshots: AWS service error")

    ec2.before = broken
    with caplog.at_level(logging.WARNING, logger="ec2backup"):
        assert snaps.apply_profile_retention(app, load_profile(app.config_path, "p")) is None
    assert "retention (keep-last 1) not applied" in caplog.text
    assert "DescribeSnapshots" in caplog.text
    app.store.close()


# --- against in-process moto ------------------------------------------------------------------


@pytest.fixture
def moto_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[App, Boto3Ec2]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        ec2 = Boto3Ec2("us-east-1", poll_interval=0.001)
        app = make_app(tmp_path, ec2)
        yield app, ec2
        app.store.close()


def test_snapshots_and_prune_with_moto(moto_app: tuple[App, Boto3Ec2]) -> None:
    app, ec2 = moto_app
    volume = ec2.create_volume("us-east-1a", 4, {TAG_MANAGED: "true"}, client_token="v")
    tags = {TAG_MANAGED: "true", TAG_PROFILE: "p"}
    made = [ec2.create_snapshot(volume.id, "d", {**tags, TAG_RUN_ID: f"r{n}"}) for n in range(3)]
    theirs = ec2.create_snapshot(volume.id, "d", {TAG_MANAGED: "true", TAG_PROFILE: "q"})
    loose = ec2.create_snapshot(volume.id, "d", {TAG_PROFILE: "p"})  # not managed

    rows = snaps.list_snapshots(app, "p")
    assert {r["id"] for r in rows} == {s.id for s in made}
    assert {r["run_id"] for r in rows} == {"r0", "r1", "r2"}
    assert all(r["size_gib"] == 4 and r["state"] == "completed" for r in rows)

    dry = snaps.prune(app, "p", Policy(keep_last=1))
    assert len(ec2.find_snapshots(tags)) == 3
    result = snaps.prune(app, "p", Policy(keep_last=1), yes=True)
    assert [r["action"] for r in dry["snapshots"]] == ["keep", "remove", "remove"]
    assert [r["action"] for r in result["snapshots"]] == ["keep", "deleted", "deleted"]
    left = ec2.find_snapshots({TAG_PROFILE: "p"})
    assert {s.id for s in left} == {rows[0]["id"], loose.id}
    assert ec2.find_snapshots({TAG_PROFILE: "q"})[0].id == theirs.id


# --- the command line -------------------------------------------------------------------------


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "config.toml").write_text(CONFIG)
    env = {
        **os.environ,
        "EC2BACKUP_CONFIG": str(tmp_path / "config.toml"),
        "EC2BACKUP_DB": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing here may reach AWS
    }
    return subprocess.run(
        [sys.executable, "-m", "ec2backup", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("prune", "-p", "p"), "prune needs at least one rule above 0"),
        (("prune", "-p", "p", "--keep-last", "0", "--yes"), "prune needs at least one rule"),
        (("prune", "-p", "p", "--keep-daily", "-3"), "--keep-daily -3 is negative"),
        (("snapshots", "-p", "nope"), "unknown profile 'nope'"),
    ],
)
def test_cli_argument_errors_are_one_line(
    tmp_path: Path, args: tuple[str, ...], words: str
) -> None:
    result = cli(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ec2backup: error: ") and words in lines[0]


# --- the archive tier ------------------------------------------------------------------------


def test_prune_archives_the_kept_old_ones_and_states_the_archives_terms(
    app: App, ec2: SnapshotEc2
) -> None:
    for sid, days in (("d0", 0), ("d40", 40), ("d100", 100), ("d200", 200)):
        ec2.add(sid, days)
    policy = Policy(keep_last=3)
    measured: list[str] = []

    dry = snaps.prune_profile(ec2, "p", policy, now=NOW, archive_after_days=30)
    actions = {r["id"]: r["action"] for r in dry["snapshots"]}
    assert actions == {"d0": "keep", "d40": "archive", "d100": "archive", "d200": "remove"}
    assert "archive_snapshot" not in ec2.calls  # a dry run
    terms = dry["archive"]
    assert (terms["after_days"], terms["minimum_days"], terms["restore_hours"]) == (30, 90, 72)
    assert "90 days" in terms["note"] and "72 hours" in terms["note"]

    done = snaps.prune_profile(
        ec2,
        "p",
        policy,
        yes=True,
        now=NOW,
        archive_after_days=30,
        before_archive=lambda s: measured.append(s.id),
    )
    assert {r["id"]: r["action"] for r in done["snapshots"]}["d40"] == "archived"
    assert measured == ["d40", "d100"]  # measured while it can still be read
    assert {s.id: s.storage_tier for s in ec2.snapshots.values()} == {
        "d0": "standard",
        "d40": "archive",
        "d100": "archive",
    }


def test_deleting_an_archived_snapshot_early_says_what_it_bills(app: App, ec2: SnapshotEc2) -> None:
    from dataclasses import replace

    ec2.add("new", 0)
    old = ec2.add("old", 50)
    ec2.snapshots["old"] = replace(old, storage_tier="archive")
    ec2.tier_operations["old"] = ("archival-completed", NOW - timedelta(days=20))
    result = snaps.prune_profile(ec2, "p", Policy(keep_last=1), now=NOW)
    (row,) = [r for r in result["snapshots"] if r["id"] == "old"]
    assert row["action"] == "remove" and row["tier"] == "archive"
    assert "remaining 70 of the archive's 90 minimum days" in "; ".join(row["reasons"])
