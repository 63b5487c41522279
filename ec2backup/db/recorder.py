"""Persisting run transitions: the event log and the run's new state in one commit."""

from __future__ import annotations

from sqlalchemy.orm import Session
from transitions import EventData

from ..core.states import ENDED_STATES
from ..core.times import utcnow
from ..paths import DB_ENV as DB_ENV
from ..paths import default_db_url as default_db_url
from .models import Event, Run
from .sqlite_runs import SCHEMA_HEAD as SCHEMA_HEAD


class RunRecorder:
    """The ``after_state_change`` callback of a run's machine: appends the transition to the
    event log and commits it together with the run's new state."""

    def __init__(self, session: Session, run: Run) -> None:
        self.session = session
        self.run = run

    def __call__(self, event_data: EventData) -> None:
        now = utcnow()
        detail = event_data.kwargs.get("detail")
        assert event_data.transition is not None
        self.run.updated_at = now
        if self.run.state in ENDED_STATES:
            self.run.finished_at = now
        else:
            self.run.finished_at = None
        self.session.add(
            Event(
                run_id=self.run.id,
                from_state=str(event_data.transition.source),
                to_state=str(event_data.transition.dest),
                at=now,
                detail=detail,
            )
        )
        self.session.commit()

    def save(self) -> None:
        """Commit changes to the run that are not transitions (resource ids, statistics)."""
        self.run.updated_at = utcnow()
        self.session.commit()
