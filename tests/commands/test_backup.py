"""The commands' own helpers (the commands themselves: tests/run/test_engine.py and tests/e2e)."""

from __future__ import annotations

import pytest

from ec2backup.commands import backup as backup_command
from ec2backup.commands.backup import ssh_cidr
from ec2backup.errors import UserInputError


def test_ssh_cidr_normalises_what_it_is_given() -> None:
    assert ssh_cidr("203.0.113.7") == "203.0.113.7/32"
    assert ssh_cidr("203.0.113.9/24") == "203.0.113.0/24"
    with pytest.raises(UserInputError, match="not an address or network"):
        ssh_cidr("everywhere")


def test_ssh_cidr_without_checkip_asks_for_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup_command, "CHECKIP_URL", "http://127.0.0.1:9")  # refuses at once
    with pytest.raises(UserInputError) as info:
        ssh_cidr(None)
    assert "--allow-ssh-from" in info.value.one_line()
