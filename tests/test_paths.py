"""The ground floor's file writing: whole or not at all, with the mode it must have."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from ec2backup.paths import write_atomically


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_has_its_mode_from_the_start(tmp_path: Path) -> None:
    target = tmp_path / "key"
    write_atomically(target, b"secret", 0o600)
    assert target.read_bytes() == b"secret"
    assert mode(target) == 0o600


def test_without_a_mode_a_replaced_file_keeps_its_own(tmp_path: Path) -> None:
    target = tmp_path / "config.toml"
    target.write_text("old")
    target.chmod(0o600)  # the user made it private
    write_atomically(target, b"new")
    assert target.read_text() == "new"
    assert mode(target) == 0o600
    fresh = tmp_path / "fresh.toml"
    write_atomically(fresh, b"x")
    assert mode(fresh) == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "known_hosts"
    target.write_bytes(b"pinned")

    def disk_full(_fd: int, _data: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("ec2backup.paths.os.write", disk_full)
    with pytest.raises(OSError):
        write_atomically(target, b"half", 0o600)
    assert target.read_bytes() == b"pinned"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["known_hosts"]
