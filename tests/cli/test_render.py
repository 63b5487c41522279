"""Tables and JSON: what a person and a script read."""

from __future__ import annotations

import json

import pytest

from ec2backup.cli.render import emit, short_time


def test_a_small_cost_keeps_its_digits_and_seconds_read_to_a_tenth(
    capsys: pytest.CaptureFixture[str],
) -> None:
    row = {"usd": 0.000173, "seconds": 12.345, "none": None, "zero": 0.0}
    emit([row], as_json=False, columns=[(k, k.upper()) for k in row])
    out = capsys.readouterr().out
    assert "0.000173" in out and "12.3" in out and "12.345" not in out
    assert " - " in out and "0.0" in out


def test_json_is_the_data_untouched(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"usd": 0.000173, "at": "2026-11-28T04:15:00.123+00:00"}]
    emit(rows, as_json=True, columns=[("usd", "USD")])
    assert json.loads(capsys.readouterr().out) == rows


def test_short_time() -> None:
    assert short_time("2026-11-28T04:15:00.123+00:00") == "2026-11-28 04:15:00"
    assert short_time(None) is None
