"""Eventual consistency, seen from the steps: for a while after a create, EC2 may answer
NotFound for the new id (and leave it out of tag-filtered listings). A resource the run created
less than ``EVENTUAL_CONSISTENCY`` ago and that does not show is looked for again until then,
rather than taken for gone: a resumed run must not launch a second instance, nor restore skip
deleting its temporary volume, because EC2 had not caught up yet. The moment of each create is
recorded on the run (``run.config[key]``, UTC ISO) before the call is made."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from ...db.models import utcnow
from ..context import StepContext

T = TypeVar("T")

EVENTUAL_CONSISTENCY = timedelta(seconds=60)
POLL_SECONDS = 0.5
LAUNCHED_AT = "launched_at"
VOLUME_CREATED_AT = "volume_created_at"


def note_create(ctx: StepContext, key: str) -> None:
    """Record, on the run, that a create is about to be sent (saved by the caller)."""
    ctx.run.config = {**ctx.run.config, key: utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")}


def _created(ctx: StepContext, key: str) -> datetime | None:
    value = ctx.run.config.get(key)
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def until_visible(ctx: StepContext, key: str, lookup: Callable[[], T | None]) -> T | None:
    """``lookup()``; while it finds nothing and the create recorded under ``key`` is recent,
    again, until it finds something or the create is ``EVENTUAL_CONSISTENCY`` old."""
    return while_recent(_created(ctx, key), lookup)


def while_recent(created: datetime | None, lookup: Callable[[], T | None]) -> T | None:
    """``lookup()``, again while it finds nothing and ``created`` (UTC) is recent."""
    found = lookup()
    if found is not None or created is None:
        return found
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    while utcnow() < created + EVENTUAL_CONSISTENCY:
        time.sleep(POLL_SECONDS)
        found = lookup()
        if found is not None:
            return found
    return None
