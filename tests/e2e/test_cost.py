"""`cost` on the local cloud: the snapshot rows are the EBS direct APIs' figures, the same ones
`show` reports for each backup; once the older snapshot is archived it is billed whole in the
archive tier and the newer one heads the standard tier at its full size."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.helpers import Cli, make_sample_tree

pytestmark = pytest.mark.e2e


def test_cost_uses_the_growth_show_reports(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "home"
    source.mkdir()
    make_sample_tree(source)
    cli(
        "init",
        "--profile",
        "cost-e2e",
        "--az",
        "us-east-1a",
        "--size",
        "1",
        "--source",
        str(source),
    )
    first = cli.json("show", cli("run", "--profile", "cost-e2e").stdout.strip())
    (source / "docs" / "later.txt").write_text("written after the first backup\n")
    second = cli.json("show", cli("run", "--profile", "cost-e2e").stdout.strip())
    added = [r["stats"]["snapshot_added_bytes"] for r in (first, second)]
    assert all(added), added

    result = cli.json("cost", "--profile", "cost-e2e")
    items = {i["item"]: i for i in result["items"]}
    standard = items["snapshots (standard)"]
    assert [(s["snapshot_id"], s["bytes"]) for s in standard["snapshots"]] == [
        (first["snapshot_id"], added[0]),  # a first snapshot: all its blocks
        (second["snapshot_id"], added[1]),
    ]
    assert standard["bytes"] == sum(added)
    assert all(s["source"].startswith("EBS direct APIs") for s in standard["snapshots"])
    assert items["volume"]["quantity"] == 1.0
    assert items["requests"]["quantity"] > 0  # the ListSnapshotBlocks/ListChangedBlocks calls
    assert [(m["storage"], m["used"]) for m in result["modes"]] == [
        ("volume", True),
        ("snapshots", False),
    ]
    assert result["modes"][0]["monthly_usd"] == pytest.approx(result["total_monthly_usd"])

    cli("prune", "--profile", "cost-e2e", "--keep-last", "5", "--archive-after-days", "0", "--yes")
    items = {i["item"]: i for i in cli.json("cost", "--profile", "cost-e2e")["items"]}
    archive, standard = items["snapshots (archive)"], items["snapshots (standard)"]
    assert [(s["snapshot_id"], s["bytes"]) for s in archive["snapshots"]] == [
        (first["snapshot_id"], added[0])
    ]
    ((head,),) = [standard["snapshots"]]
    assert head["snapshot_id"] == second["snapshot_id"]
    assert head["source"] == "EBS direct APIs (all blocks)" and head["bytes"] >= added[1]

    table = cli("cost", "--profile", "cost-e2e").stdout
    assert "snapshots (archive)" in table and "snapshots (this profile)" not in table
    assert "volume (this profile)" in table
