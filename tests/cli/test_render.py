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


def test_cost_table_keeps_small_amounts_and_shows_both_modes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ec2backup.cli import views

    def item(name: str, quantity: float, usd: float) -> dict[str, object]:
        return {"item": name, "quantity": quantity, "unit": "GiB-month",
                "unit_price_usd": 0.05, "monthly_usd": usd, "basis": "[prices] b"}  # fmt: skip

    def mode(storage: str, used: bool, usd: float) -> dict[str, object]:
        return {"storage": storage, "used": used, "volume_usd": usd, "snapshots_usd": 0.0,
                "instance_and_requests_usd": 0.0, "monthly_usd": usd, "basis": "m"}  # fmt: skip

    result = {
        "profile": "p",
        "region": "us-east-1",
        "prices": "defaults",
        "items": [item("snapshots (standard)", 0.00263, 0.0001315), item("volume", 8.0, 0.64)],
        "total_monthly_usd": 0.6401315,
        "modes": [mode("volume", True, 0.64), mode("snapshots", False, 0.0000123)],
        "notes": ["archive tier: 90 days"],
    }
    views.cost(result, as_json=False)
    out = capsys.readouterr().out
    assert "0.00263 GiB-month" in out and "8.00 GiB-month" in out
    assert "$0.00013" in out and "$0.64" in out and "$0.000012" in out
    assert "volume (this profile)" in out and "snapshots (this profile)" not in out
    assert "[prices] b" in out and "archive tier: 90 days" in out
    views.cost(result, as_json=True)
    assert json.loads(capsys.readouterr().out) == result
