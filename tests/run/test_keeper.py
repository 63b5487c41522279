"""The idle keeper: re-arms the instance's dead-man's switch on its own thread and connection,
rides through failed re-arms, and stops (so that an orphan powers itself off)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ec2backup.errors import RemoteError
from ec2backup.ports import SshTarget
from ec2backup.run.keeper import IdleKeeper


@dataclass
class Session:
    log: list[tuple[str, int]]
    fail: bool = False
    closed: bool = False

    def arm_idle_timer(self, seconds: int) -> None:
        if self.fail:
            raise RemoteError("connection lost")
        self.log.append((threading.current_thread().name, seconds))

    def close(self) -> None:
        self.closed = True


@dataclass
class Connector:
    sessions: list[Session] = field(default_factory=list)
    arms: list[tuple[str, int]] = field(default_factory=list)
    fail_first: int = 0

    def connect(self, target: SshTarget, deadline: float) -> Session:
        session = Session(self.arms, fail=len(self.sessions) < self.fail_first)
        self.sessions.append(session)
        return session


def target(tmp_path: Path, host: str = "127.0.9.1") -> SshTarget:
    return SshTarget(host, "ubuntu", tmp_path / "key", tmp_path / "known_hosts")


def wait_for(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_rearms_from_its_own_thread_and_connection_until_stopped(tmp_path: Path) -> None:
    connector = Connector()
    keeper = IdleKeeper(connector, idle_minutes=1, interval=0.02)  # type: ignore[arg-type]
    keeper.watch(target(tmp_path))
    wait_for(lambda: len(connector.arms) >= 3)
    keeper.stop()
    assert len(connector.sessions) == 1  # one connection for every re-arm
    assert {seconds for _, seconds in connector.arms} == {60}
    assert {name for name, _ in connector.arms} == {"ec2backup-idle-keeper"}
    assert connector.sessions[0].closed
    after = len(connector.arms)
    time.sleep(0.1)  # the experiment: nothing may happen once stopped
    assert len(connector.arms) == after


def test_a_failed_rearm_reconnects_at_the_next_beat(tmp_path: Path) -> None:
    connector = Connector(fail_first=2)
    keeper = IdleKeeper(connector, idle_minutes=1, interval=0.02)  # type: ignore[arg-type]
    keeper.watch(target(tmp_path))
    wait_for(lambda: connector.arms)
    keeper.stop()
    assert len(connector.sessions) == 3
    assert all(s.closed for s in connector.sessions)


def test_watching_another_instance_switches_to_it(tmp_path: Path) -> None:
    connector = Connector()
    keeper = IdleKeeper(connector, idle_minutes=1, interval=0.02)  # type: ignore[arg-type]
    first, second = target(tmp_path), target(tmp_path, "127.0.9.2")
    keeper.watch(first)
    keeper.watch(first)  # the same: nothing changes
    assert keeper.watching == first
    keeper.watch(second)
    assert keeper.watching == second
    keeper.stop()
    assert keeper.watching is None


def test_the_default_beat_is_a_tenth_of_the_idle_bound() -> None:
    assert IdleKeeper(Connector(), idle_minutes=20).interval == 120  # type: ignore[arg-type]
    assert IdleKeeper(Connector(), idle_minutes=1).interval == 6  # type: ignore[arg-type]
