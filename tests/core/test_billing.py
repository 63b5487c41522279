"""The arithmetic of the cost estimate: snapshot storage per tier (measured figures first, the
old estimate where there are none), a run's temporary volume, requests, the two modes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ec2backup.core.billing import (
    ARCHIVE,
    DEFAULT_PRICES,
    FROM_ADDED,
    FROM_ADDED_GAP,
    FROM_FULL,
    FROM_NOTHING,
    FROM_SENT,
    FROM_VOLUME_SIZE,
    GIB,
    SECONDS_PER_MONTH,
    STANDARD,
    ChainSnapshot,
    compare_modes,
    gib_months,
    requests_usd,
    snapshot_storage,
    volume_seconds,
)

MIB = 1024**2
T0 = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)


def snap(sid: str, tier: str = STANDARD, **kw: Any) -> ChainSnapshot:
    return ChainSnapshot(id=sid, tier=tier, size_gib=kw.pop("size_gib", 8), **kw)


def test_standard_tier_is_the_oldest_in_full_plus_what_each_later_one_added() -> None:
    chain = [
        snap("s1", added_bytes=300 * MIB),  # a first snapshot: all its blocks
        snap("s2", added_bytes=2 * MIB, compared_with="s1"),
        snap("s3", added_bytes=5 * MIB, compared_with="s2", sent_bytes=GIB),
    ]
    standard = snapshot_storage(chain)[STANDARD]
    assert standard.bytes == 307 * MIB  # rsync's bytes sent are not used once measured
    assert [c.source for c in standard.counted] == [FROM_FULL, FROM_ADDED, FROM_ADDED]
    assert standard.fallbacks() == 0
    assert "3 snapshot(s)" in standard.basis() and "not measured" not in standard.basis()
    assert snapshot_storage(chain)[ARCHIVE].bytes == 0


def test_an_oldest_snapshot_compared_with_a_deleted_one_counts_its_full_size() -> None:
    # s0 was pruned: s1's increment against it is not what the tier now holds for s1.
    chain = [
        snap("s1", added_bytes=2 * MIB, compared_with="s0", full_bytes=400 * MIB),
        snap("s2", added_bytes=MIB, compared_with="s1"),
    ]
    assert snapshot_storage(chain)[STANDARD].bytes == 401 * MIB


def test_an_increment_against_a_deleted_snapshot_is_a_lower_bound_and_says_so() -> None:
    chain = [
        snap("s1", added_bytes=300 * MIB),
        snap("s3", added_bytes=2 * MIB, compared_with="s2"),  # s2 was pruned
        snap("s4", added_bytes=MIB, compared_with="s3"),
    ]
    standard = snapshot_storage(chain)[STANDARD]
    assert standard.bytes == 303 * MIB
    assert [c.source for c in standard.counted] == [FROM_FULL, FROM_ADDED_GAP, FROM_ADDED]
    assert "a lower bound" in standard.basis() and standard.fallbacks() == 0


def test_archived_snapshots_are_billed_whole_and_the_standard_tier_starts_after_them() -> None:
    chain = [
        snap("s1", ARCHIVE, added_bytes=300 * MIB, full_bytes=300 * MIB),
        snap("s2", ARCHIVE, added_bytes=2 * MIB, compared_with="s1", full_bytes=301 * MIB),
        snap("s3", added_bytes=3 * MIB, compared_with="s2", full_bytes=302 * MIB),
        snap("s4", added_bytes=4 * MIB, compared_with="s3"),
    ]
    tiers = snapshot_storage(chain)
    assert tiers[ARCHIVE].bytes == 601 * MIB
    assert [c.source for c in tiers[ARCHIVE].counted] == [FROM_FULL, FROM_FULL]
    assert "each at its full size" in tiers[ARCHIVE].basis()
    assert tiers[STANDARD].bytes == 306 * MIB  # s3 whole (its parent left the tier), s4 added


def test_without_figures_the_old_estimate_and_the_basis_says_so() -> None:
    chain = [
        snap("s1", size_gib=8),  # pending or never measured: the volume's full size
        snap("s2", sent_bytes=3 * MIB),  # rsync's bytes sent
        snap("s3"),  # not even a run here
        snap("s4", ARCHIVE, size_gib=8, added_bytes=MIB, compared_with="s3"),
    ]
    tiers = snapshot_storage(chain)
    assert tiers[STANDARD].bytes == 8 * GIB + 3 * MIB
    assert [c.source for c in tiers[STANDARD].counted] == [
        FROM_VOLUME_SIZE,
        FROM_SENT,
        FROM_NOTHING,
    ]
    assert tiers[STANDARD].fallbacks() == 3
    assert "3 not measured yet, estimated the old way" in tiers[STANDARD].basis()
    # Archived, its increment known but not its full size: the volume's size.
    assert tiers[ARCHIVE].bytes == 8 * GIB and tiers[ARCHIVE].fallbacks() == 1
    assert tiers[STANDARD].gib == pytest.approx(8 + 3 / 1024)


def test_no_snapshots() -> None:
    tiers = snapshot_storage([])
    assert tiers[STANDARD].bytes == tiers[ARCHIVE].bytes == 0
    assert tiers[STANDARD].basis() == "no snapshots in the standard tier"


def events(*steps: tuple[int, str]) -> list[dict[str, Any]]:
    return [
        {"from": None, "to": state, "at": (T0 + timedelta(seconds=s)).isoformat()}
        for s, state in steps
    ]


def test_volume_seconds_from_the_first_step_to_the_end() -> None:
    done = events((0, "created"), (5, "creating_volume"), (300, "deleting_volume"), (305, "done"))
    assert volume_seconds(done) == 300.0
    aborted = events((0, "created"), (10, "launching"), (100, "cleaning"), (130, "aborted"))
    assert volume_seconds(aborted) == 120.0
    assert volume_seconds(events((0, "created"), (1, "launching"), (3, "done"))) == 60.0
    still = events((0, "created"), (10, "launching"), (20, "failed"))
    assert volume_seconds(still) == 0.0
    assert volume_seconds(still, now=T0 + timedelta(seconds=1010)) == 1000.0
    assert volume_seconds(events((0, "created"))) == 0.0


def test_gib_months_and_requests() -> None:
    assert gib_months(10, SECONDS_PER_MONTH) == 10
    assert gib_months(8, 3600) == pytest.approx(8 / 720)
    assert requests_usd(2500, DEFAULT_PRICES) == pytest.approx(2.5 * 0.0006)


def test_default_prices_of_the_tiers_and_requests() -> None:
    assert DEFAULT_PRICES.archive_gb_month == 0.0125
    assert DEFAULT_PRICES.archive_restore_gb == 0.03
    assert DEFAULT_PRICES.ebs_list_requests_1000 == 0.0006


def test_compare_modes() -> None:
    volume, snapshots = compare_modes(
        standing_gib=100,
        temporary_gib_months=0.5,
        snapshots_usd=2.0,
        other_usd=0.1,
        prices=DEFAULT_PRICES,
    )
    assert (volume.storage, snapshots.storage) == ("volume", "snapshots")
    assert volume.monthly_usd == pytest.approx(100 * 0.08 + 2.0 + 0.1)
    assert snapshots.monthly_usd == pytest.approx(0.5 * 0.08 + 2.0 + 0.1)
    assert "100 GiB" in volume.basis and "(0.5 GiB-month)" in snapshots.basis
