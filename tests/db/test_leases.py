"""Leases on a real SQLite file and a real PostgreSQL server (``db_url``: tests/databases.py), with
real processes where liveness matters."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timedelta

import pytest

from ec2backup.core.times import utcnow
from ec2backup.db import leases
from ec2backup.db.leases import Holder
from ec2backup.db.models import Lease
from ec2backup.db.store import Store, open_store
from ec2backup.errors import LeaseHeldError
from tests.children import Child
from tests.databases import PostgresServer


@pytest.fixture
def store(db_url: str) -> Store:
    s = open_store(db_url)
    yield s  # type: ignore[misc]
    s.close()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def put(
    store: Store, key: str, *, host: str, pid: int, age: float = 0.0, run_id: str = "other"
) -> None:
    at = utcnow() - timedelta(seconds=age)
    with store.session() as session:
        session.add(
            Lease(
                key=key,
                run_id=run_id,
                holder_host=host,
                holder_pid=pid,
                acquired_at=at,
                heartbeat_at=at,
            )
        )
        session.commit()


def rows(store: Store) -> list[tuple[str, str, int]]:
    with store.session() as session:
        return [(r.key, r.run_id, r.holder_pid) for r in session.query(Lease).order_by(Lease.key)]


def test_held_takes_and_releases_all_keys(store: Store) -> None:
    with leases.held(store, "r1", ["run:r1", "volume:vol-1"]):
        assert rows(store) == [
            ("run:r1", "r1", Holder.me().pid),
            ("volume:vol-1", "r1", Holder.me().pid),
        ]
    assert rows(store) == []


def test_released_when_the_body_raises(store: Store) -> None:
    with pytest.raises(RuntimeError), leases.held(store, "r1", ["run:r1"]):
        raise RuntimeError("boom")
    assert rows(store) == []


def test_a_live_holder_is_refused_with_its_name(store: Store) -> None:
    me = Holder.me()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        put(store, "volume:vol-1", host=me.host, pid=proc.pid, run_id="20261128T000000Z-aaaaaa")
        with (
            pytest.raises(LeaseHeldError) as info,
            leases.held(store, "r2", ["run:r2", "volume:vol-1"]),
        ):
            pass
        line = info.value.one_line()
        assert "volume vol-1 is in use by run 20261128T000000Z-aaaaaa" in line
        assert f"pid {proc.pid} on {me.host}" in line
        # all or none: the run lease taken first was given back
        assert rows(store) == [("volume:vol-1", "20261128T000000Z-aaaaaa", proc.pid)]
    finally:
        proc.kill()
        proc.wait()


def test_a_dead_holder_on_this_host_is_taken_over_at_once(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    dead = dead_pid()
    put(store, "run:r1", host=Holder.me().host, pid=dead, run_id="r1", age=30)
    with (
        caplog.at_level("WARNING", logger="ec2backup.db.leases"),
        leases.held(store, "r1", ["run:r1"]),
    ):
        assert rows(store) == [("run:r1", "r1", Holder.me().pid)]
    # The note names the holder that died, and how long ago it last beat; not the new one.
    (note,) = [r.getMessage() for r in caplog.records if "took over" in r.getMessage()]
    assert f"(pid {dead} on {Holder.me().host}, last heartbeat 30s ago)" in note, note


def test_another_hosts_lease_counts_until_its_ttl(store: Store) -> None:
    put(store, "volume:vol-1", host="elsewhere", pid=1, age=5)
    with (
        pytest.raises(LeaseHeldError, match="elsewhere"),
        leases.held(store, "r2", ["volume:vol-1"]),
    ):
        pass
    with store.session() as session:
        lease = session.get(Lease, "volume:vol-1")
        assert lease is not None
        lease.heartbeat_at = utcnow() - leases.TTL - timedelta(seconds=1)
        session.commit()
    with leases.held(store, "r2", ["volume:vol-1"]):
        assert rows(store)[0][1] == "r2"


def test_the_heartbeat_keeps_the_lease_fresh(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leases, "HEARTBEAT_SECONDS", 0.05)
    with leases.held(store, "r1", ["run:r1"]):
        with store.session() as session:
            first = session.get(Lease, "run:r1").heartbeat_at  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while True:
            with store.session() as session:
                now = session.get(Lease, "run:r1").heartbeat_at  # type: ignore[union-attr]
            if now > first:
                break
            assert time.monotonic() < deadline, "heartbeat never refreshed the lease"
            time.sleep(0.02)


# Each racer opens the store, says "ready", waits for "go" (sent to all at once), tries, and
# reports. A winner holds the lease until told to let go (its stdin closes): only once every
# racer has reported, so that a slow one cannot find the lease already given back.
RACER = """
import sys
from ec2backup.db import leases
from ec2backup.errors import LeaseHeldError
from ec2backup.db.store import open_store
store = open_store(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
try:
    with leases.held(store, sys.argv[2], ["volume:vol-race"]):
        print("won", flush=True)
        sys.stdin.readline()
except LeaseHeldError:
    print("lost", flush=True)
"""

DEADLINE = 120.0  # for any one exchange with the racers, however loaded the machine


def start_racers(url: str, n: int, script: str, first: int = 0) -> list[Child]:
    racers = [Child(script, url, f"r{first + i}") for i in range(n)]
    deadline = time.monotonic() + DEADLINE
    for racer in racers:
        assert racer.read_line(deadline) == "ready"
    return racers


def race(racers: list[Child]) -> list[str]:
    """Let every racer go at once; what each reported, in order."""
    for racer in racers:
        racer.send("go")
    deadline = time.monotonic() + DEADLINE
    return [racer.read_line(deadline) for racer in racers]


def finish(racers: list[Child]) -> None:
    codes = [racer.finish() for racer in racers]
    assert codes == [0] * len(racers), [racer.stderr for racer in racers]


def assert_one_winner_holds_it(url: str, racers: list[Child], outcomes: list[str]) -> None:
    assert sorted(outcomes) == ["lost"] * (len(racers) - 1) + ["won"], outcomes
    winner = outcomes.index("won")
    # Every racer has reported and the winner still holds the lease: a newcomer loses too.
    store = open_store(url)
    try:
        assert rows(store) == [("volume:vol-race", f"r{winner}", racers[winner].pid)]
    finally:
        store.close()
    (late,) = start_racers(url, 1, RACER, first=len(racers))
    try:
        assert race([late]) == ["lost"]
    finally:
        finish([late])


def test_processes_racing_for_one_volume_exactly_one_wins(store: Store, db_url: str) -> None:
    racers = start_racers(db_url, 3, RACER)
    try:
        outcomes = race(racers)
        assert_one_winner_holds_it(db_url, racers, outcomes)
    finally:
        finish(racers)
    assert rows(store) == []  # the winner gave it back


def test_two_processes_through_one_postgresql_server_exactly_one_proceeds(
    postgres_server: PostgresServer,
) -> None:
    """The fleet case: two ec2backup processes (think: two hosts) take the same volume's
    lease through one PostgreSQL server at the same instant."""
    database = postgres_server.create_database()
    try:
        url = postgres_server.url(database)
        open_store(url).close()
        racers = start_racers(url, 2, RACER)
        try:
            assert_one_winner_holds_it(url, racers, race(racers))
        finally:
            finish(racers)
    finally:
        postgres_server.drop_database(database)


TAKEOVER = """
import sys
from ec2backup.db import leases
from ec2backup.errors import LeaseHeldError
from ec2backup.db.store import open_store
store = open_store(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
try:
    leases._take(store, "volume:vol-stale", sys.argv[2], leases.Holder.me())
    print("won", flush=True)
except LeaseHeldError:
    print("lost", flush=True)
"""


def test_processes_racing_to_take_over_a_stale_lease_exactly_one_wins(
    store: Store, db_url: str
) -> None:
    put(store, "volume:vol-stale", host="elsewhere", pid=1, age=3600)
    racers = start_racers(db_url, 3, TAKEOVER)
    try:
        outcomes = race(racers)
    finally:
        finish(racers)
    assert sorted(outcomes) == ["lost", "lost", "won"], outcomes
    ((key, run_id, pid),) = rows(store)
    assert key == "volume:vol-stale" and run_id == f"r{outcomes.index('won')}" and pid != 1


def test_a_takeover_that_loses_the_compare_and_swap_is_refused(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between our read of the stale lease and our UPDATE, another host takes it over: the
    UPDATE must match nothing, and we must not believe we hold it."""
    put(store, "volume:vol-1", host="elsewhere", pid=1, age=3600)
    real_is_stale = leases.is_stale

    def rival_takes_it_first(lease: Lease, now: datetime, me: Holder) -> bool:
        stale = real_is_stale(lease, now, me)
        with store.session() as session:  # the rival's own transaction, committed
            rival = session.get(Lease, "volume:vol-1")
            assert rival is not None
            rival.holder_host, rival.holder_pid, rival.heartbeat_at = "rival", 7, utcnow()
            session.commit()
        return stale

    monkeypatch.setattr(leases, "is_stale", rival_takes_it_first)
    with (
        pytest.raises(LeaseHeldError, match="taken over by another process"),
        leases.held(store, "r2", ["volume:vol-1"]),
    ):
        pass
    with store.session() as session:
        lease = session.get(Lease, "volume:vol-1")
        assert lease is not None and (lease.holder_host, lease.holder_pid) == ("rival", 7)


def test_the_heartbeat_never_refreshes_another_hosts_lease_with_the_same_pid(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our lease on vol-1 went stale and a host where the pid happens to be the same took it
    over: our heartbeat must not keep *their* lease alive."""
    monkeypatch.setattr(leases, "HEARTBEAT_SECONDS", 0.05)
    me = Holder.me()
    put(store, "run:r1", host=me.host, pid=me.pid, age=30, run_id="r1")
    put(store, "volume:vol-1", host="elsewhere", pid=me.pid, age=30)

    def beat(key: str) -> object:
        with store.session() as session:
            return session.get(Lease, key).heartbeat_at  # type: ignore[union-attr]

    mine, theirs = beat("run:r1"), beat("volume:vol-1")
    heartbeat = leases._Heartbeat(store, ["run:r1", "volume:vol-1"], me)
    heartbeat.start()
    try:
        deadline = time.monotonic() + 10
        while beat("run:r1") == mine:
            assert time.monotonic() < deadline, "heartbeat never refreshed our lease"
            time.sleep(0.02)
    finally:
        heartbeat.stopping.set()
        heartbeat.join()
    assert beat("volume:vol-1") == theirs


def test_another_hosts_fresh_lease_is_live_for_reap_on_any_host(store: Store) -> None:
    put(store, "run:far", host="web7", pid=4242, age=5, run_id="far")
    put(store, "run:farold", host="web8", pid=4242, age=3600, run_id="farold")
    live = leases.live_leases(store)
    assert set(live) == {"far"}
    assert live["far"].holder_host == "web7"


def test_live_leases_lists_only_live_ones(store: Store) -> None:
    put(store, "run:dead", host=Holder.me().host, pid=dead_pid(), run_id="dead")
    put(store, "run:old", host="elsewhere", pid=1, age=3600, run_id="old")
    with leases.held(store, "mine", ["run:mine"]):
        assert set(leases.live_leases(store)) == {"mine"}
