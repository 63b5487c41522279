"""Leases: at most one process drives a run, and at most one run drives a volume.

A lease is a row keyed by what it protects (``run:<id>``, ``volume:<vol-id>``). Taking one is
an INSERT, atomic on every database through the primary key. A held lease is refreshed by a
heartbeat thread; a lease whose heartbeat stopped (TTL passed, or its process on this host is
gone) may be taken over with a compare-and-swap UPDATE, so two processes racing for a stale
lease cannot both win. Stale leases are never guessed at: "stale" is one of those two facts.

The database does the arbitration, so this holds across machines sharing one database server
(docs/fleet.md). On PostgreSQL, concurrent INSERTs of one key wait on the unique index and all
but the first fail; concurrent takeover UPDATEs wait on the row lock, and each one after the
first re-checks its WHERE against the row the winner wrote and matches nothing. Heartbeats are
compared against this host's clock, so the hosts' clocks must agree to well within ``TTL``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from ..core.times import utcnow
from ..errors import LeaseHeldError
from .models import Lease
from .store import Store

log = logging.getLogger(__name__)

TTL = timedelta(seconds=60)
HEARTBEAT_SECONDS = 10.0


def run_key(run_id: str) -> str:
    return f"run:{run_id}"


def volume_key(volume_id: str) -> str:
    return f"volume:{volume_id}"


def profile_key(profile: str) -> str:
    """One run at a time of a profile in snapshots-only storage: each starts from the
    profile's latest snapshot, so two at once would each miss the other's."""
    key = f"profile:{profile}"
    if len(key) <= 80:  # Lease.key's length
        return key
    import hashlib

    return "profile:" + hashlib.sha256(profile.encode()).hexdigest()


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int

    @classmethod
    def me(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(lease: Lease, now: datetime, me: Holder) -> bool:
    if now - lease.heartbeat_at > TTL:
        return True
    # On this host we can see whether the holder still exists, without waiting for the TTL.
    return (
        lease.holder_host == me.host
        and lease.holder_pid != me.pid
        and not _pid_alive(lease.holder_pid)
    )


def describe(lease: Lease, now: datetime) -> str:
    age = int((now - lease.heartbeat_at).total_seconds())
    return (
        f"run {lease.run_id} (pid {lease.holder_pid} on {lease.holder_host}, "
        f"last heartbeat {age}s ago)"
    )


def _take(store: Store, key: str, run_id: str, me: Holder) -> None:
    now = utcnow()
    with store.session() as session:
        session.add(
            Lease(
                key=key,
                run_id=run_id,
                holder_host=me.host,
                holder_pid=me.pid,
                acquired_at=now,
                heartbeat_at=now,
            )
        )
        try:
            session.commit()
            return
        except IntegrityError:
            session.rollback()
        current = session.get(Lease, key)
        if current is None:  # released in between: try once more
            return _take(store, key, run_id, me)
        if (current.holder_host, current.holder_pid) == (me.host, me.pid):
            return
        if not is_stale(current, now, me):
            what = key.replace(":", " ", 1)
            raise LeaseHeldError(
                f"{what} is in use by {describe(current, now)}",
                hint="wait for it to finish; a lease whose heartbeat stops expires after "
                f"{int(TTL.total_seconds())}s",
            )
        taken = session.execute(
            update(Lease)
            .where(
                Lease.key == key,
                Lease.holder_pid == current.holder_pid,
                Lease.holder_host == current.holder_host,
                Lease.heartbeat_at == current.heartbeat_at,
            )
            .values(
                run_id=run_id,
                holder_host=me.host,
                holder_pid=me.pid,
                acquired_at=now,
                heartbeat_at=now,
            )
        )
        session.commit()
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            raise LeaseHeldError(
                f"{key} was taken over by another process just now", hint="try again"
            )
        log.warning("took over the stale lease on %s from %s", key, describe(current, now))


def release(store: Store, keys: Sequence[str], me: Holder | None = None) -> None:
    me = me or Holder.me()
    with store.session() as session:
        session.execute(
            delete(Lease).where(
                Lease.key.in_(keys), Lease.holder_host == me.host, Lease.holder_pid == me.pid
            )
        )
        session.commit()


def live_leases(store: Store) -> dict[str, Lease]:
    """Run id -> its live lease (any key), for reap."""
    now, me = utcnow(), Holder.me()
    with store.session() as session:
        leases = session.scalars(select(Lease)).all()
    return {lease.run_id: lease for lease in leases if not is_stale(lease, now, me)}


class _Heartbeat(threading.Thread):
    def __init__(self, store: Store, keys: Sequence[str], me: Holder) -> None:
        super().__init__(name="ec2backup-lease-heartbeat", daemon=True)
        self.store, self.keys, self.me = store, list(keys), me
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(HEARTBEAT_SECONDS):
            try:
                with self.store.session() as session:
                    beat = session.execute(
                        update(Lease)
                        .where(
                            Lease.key.in_(self.keys),
                            Lease.holder_host == self.me.host,
                            Lease.holder_pid == self.me.pid,
                        )
                        .values(heartbeat_at=utcnow())
                    )
                    session.commit()
                if beat.rowcount != len(self.keys):  # type: ignore[attr-defined]
                    log.error(
                        "lost a lease: %d of %s no longer held by this process (taken over "
                        "after missed heartbeats?)",
                        len(self.keys) - beat.rowcount,  # type: ignore[attr-defined]
                        ", ".join(self.keys),
                    )
            except Exception as exc:  # a missed beat is not fatal; the TTL is 6 beats long
                log.warning("lease heartbeat failed: %s", exc)


@contextmanager
def held(store: Store, run_id: str, keys: Sequence[str]) -> Iterator[None]:
    """Take every lease in ``keys`` (all or none), keep them alive, release them at the end."""
    me = Holder.me()
    taken: list[str] = []
    try:
        for key in keys:
            _take(store, key, run_id, me)
            taken.append(key)
    except BaseException:
        release(store, taken, me)
        raise
    heartbeat = _Heartbeat(store, taken, me)
    heartbeat.start()
    try:
        yield
    finally:
        heartbeat.stopping.set()
        heartbeat.join()
        release(store, taken, me)
