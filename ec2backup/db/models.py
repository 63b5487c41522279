"""The state store's tables: runs and their append-only transition log.

A ``Run`` is the model of a `transitions` machine (see ``states.py``): its ``state`` column is
the machine's state, and ``store.RunRecorder`` appends an ``Event`` and commits in the same
transaction on every transition.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from ..core.times import utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC (SQLite has no time zones), returned timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_created_at", "created_at"),
        Index("ix_runs_host_created_at", "host", "created_at"),
        Index("ix_runs_profile_created_at", "profile", "created_at"),
        Index("ix_runs_state", "state"),
        Index("ix_runs_volume_id", "volume_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    profile: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(32))
    # The state a failed run failed in; `resume` returns there.
    failed_from: Mapped[str | None] = mapped_column(String(32))
    host: Mapped[str] = mapped_column(String(255))

    volume_id: Mapped[str | None] = mapped_column(String(32))
    instance_id: Mapped[str | None] = mapped_column(String(32))
    snapshot_id: Mapped[str | None] = mapped_column(String(32))
    ssh_address: Mapped[str | None] = mapped_column(String(64))
    # Recorded before RunInstances is called, so a retried or resumed launch reuses it.
    launch_token: Mapped[str | None] = mapped_column(String(64))
    launch_attempt: Mapped[int] = mapped_column(Integer, default=0)
    host_key_source: Mapped[str | None] = mapped_column(String(16))  # console | tofu

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    error: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str | None] = mapped_column(String(64))
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The profile as resolved when the run started: a resume uses this, not today's file.
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    files_transferred: Mapped[int | None] = mapped_column(Integer)
    bytes_sent: Mapped[int | None] = mapped_column(Integer)
    total_size: Mapped[int | None] = mapped_column(Integer)
    # What the run's snapshot added to the snapshot chain, from the EBS direct APIs
    # (commands/growth.py); None until measured (the snapshot may still be pending).
    snapshot_stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    events: Mapped[list[Event]] = relationship(
        back_populates="run", order_by="Event.id", cascade="all, delete-orphan"
    )

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.kind} {self.state}>"


class Event(Base):
    __tablename__ = "run_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    detail: Mapped[str | None] = mapped_column(Text)

    run: Mapped[Run] = relationship(back_populates="events")


class Lease(Base):
    """Who is driving a run or a volume right now. One row per key (``run:<id>``,
    ``volume:<vol-id>``): the primary key makes taking a lease atomic on any database."""

    __tablename__ = "leases"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(40), index=True)
    holder_host: Mapped[str] = mapped_column(String(255))
    holder_pid: Mapped[int] = mapped_column(Integer)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
