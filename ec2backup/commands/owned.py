"""A profile's snapshots as EC2 shows them, the one place that decides which are the profile's.

Only snapshots tagged ``ec2backup:managed=true`` *and* ``ec2backup:profile=<name>`` count, so
nothing built on this list (prune, cost, growth, snapshots-only storage) can touch a snapshot
ec2backup did not make for that profile."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from ..core.retention import sort_newest_first
from ..core.tags import TAG_MANAGED, TAG_PROFILE
from ..ports import Ec2, Snapshot

__all__ = ["owned_by", "profile_snapshots"]


def _owner_tags(profile_name: str) -> dict[str, str]:
    return {TAG_MANAGED: "true", TAG_PROFILE: profile_name}


def owned_by(tags: Mapping[str, str], profile_name: str) -> bool:
    return all(tags.get(k) == v for k, v in _owner_tags(profile_name).items())


def profile_snapshots(ec2: Ec2, profile_name: str, now: datetime | None = None) -> list[Snapshot]:
    """The profile's snapshots, newest first. The tag filter is checked again here: whatever
    the adapter returns, nothing outside the profile gets through."""
    found = ec2.find_snapshots(_owner_tags(profile_name))
    mine = [s for s in found if owned_by(s.tags, profile_name)]
    return sort_newest_first(mine, now or datetime.now(UTC))
