"""What people read: `runs` at 80 columns, abandoned runs, reap with nothing to do."""

from __future__ import annotations

import re

import pytest

from ec2backup.cli import views


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> int:
    """stdout as a terminal of 80 columns (rich reads both from the environment)."""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "80")
    return 80


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _run(i: int, **fields: object) -> dict[str, object]:
    return {
        "id": f"20261201T10{i:02d}05Z-33c0{i:02d}",
        "kind": "restore",
        "profile": "laptop",
        "host": "a-rather-long-host-name.example.org",
        "state": "done",
        "started_at": "2026-12-01T10:17:05.123+00:00",
        "finished_at": None,
        "instance_id": "i-98f0fd446ca9ef2c4",
        "volume_id": "vol-498520bf9e8374542",
        "snapshot_id": "snap-fafaae71bb2ce7e20",
        "error": None,
        "abandoned": False,
        **fields,
    }


def test_runs_fit_80_columns_without_folding_an_id(
    terminal: int, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        _run(1),
        _run(2, state="attaching", abandoned=True),
        _run(3, state="failed", error="ec2:RunInstances: no capacity in us-east-1a " * 3),
    ]
    views.runs(rows, as_json=False)
    lines = _plain(capsys.readouterr().out).splitlines()
    assert max(len(line) for line in lines) <= terminal, "\n".join(lines)
    header = lines[0]
    for word in ("RUN", "PROFILE", "STATE", "ERROR"):
        assert word in header.split(), header
    for row in rows:  # each id whole, on one line
        assert sum(str(row["id"]) in line for line in lines) == 1
    # A run no live process drives, in its last recorded state.
    assert any("abandoned (attaching)" in line for line in lines)
    assert any(line.rstrip().endswith("ec2:RunInstances:…") for line in lines)  # cut, not folded
    assert len(lines) == 2 + len(rows)


def test_runs_show_every_column_where_there_is_room(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "220")
    views.runs([_run(1)], as_json=False)
    header = _plain(capsys.readouterr().out).splitlines()[0]
    for word in ("HOST", "INSTANCE", "SNAPSHOT", "STARTED"):
        assert word in header


def test_runs_json_keeps_the_recorded_state(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    views.runs([_run(2, state="attaching", abandoned=True)], as_json=True)
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["state"], row["abandoned"]) == ("attaching", True)


def test_reap_with_nothing_to_do_prints_no_table(capsys: pytest.CaptureFixture[str]) -> None:
    views.reap([], as_json=False, acted=False, regions=["us-east-1"])
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith("nothing to reap in us-east-1")


def test_reap_lists_volumes_as_words(capsys: pytest.CaptureFixture[str]) -> None:
    row = {
        "resource": "i-1",
        "state": "running",
        "run_id": "r1",
        "action": "would detach and terminate",
        "reason": "run r1 is failed",
        "volumes": ["vol-1", "vol-2"],
        "orphan": True,
    }
    views.reap([row], as_json=False, acted=False, regions=["us-east-1"])
    out = capsys.readouterr()
    assert "vol-1, vol-2" in out.out and "[" not in out.out
    assert "dry run" in out.err
