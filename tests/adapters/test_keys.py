"""The per-run key pair: modes, idempotence, and that asyncssh and OpenSSH can use it."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import asyncssh

from ec2backup.adapters.keys import generate_run_key, remove_run_dir


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generates_ed25519_key_with_private_modes(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "r-123"
    key_path, public_line = generate_run_key(run_dir)

    assert _mode(run_dir) == 0o700
    assert key_path.parent == run_dir
    assert _mode(key_path) == 0o600
    keytype, blob, comment = public_line.split()
    assert keytype == "ssh-ed25519"
    assert comment == "ec2backup-r-123"

    key = asyncssh.read_private_key(key_path)
    assert key.get_algorithm() == "ssh-ed25519"
    assert key.export_public_key().decode().split()[1] == blob
    # The public line is a valid key on its own.
    assert asyncssh.import_public_key(public_line).get_algorithm() == "ssh-ed25519"


def test_key_is_never_world_readable_even_with_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        key_path, _ = generate_run_key(tmp_path / "run")
    finally:
        os.umask(old)
    assert _mode(key_path) == 0o600
    assert _mode(tmp_path / "run") == 0o700
    # No temporary file left behind next to it.
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["id_ed25519", "id_ed25519.pub"]


def test_idempotent_reuses_the_existing_key(tmp_path: Path) -> None:
    first = generate_run_key(tmp_path / "run")
    data = first[0].read_bytes()
    second = generate_run_key(tmp_path / "run")
    assert second == first
    assert first[0].read_bytes() == data


def test_reuse_repairs_loose_modes(tmp_path: Path) -> None:
    key_path, line = generate_run_key(tmp_path / "run")
    os.chmod(tmp_path / "run", 0o755)
    os.chmod(key_path, 0o644)
    assert generate_run_key(tmp_path / "run") == (key_path, line)
    assert _mode(key_path) == 0o600
    assert _mode(tmp_path / "run") == 0o700


def test_different_runs_get_different_keys(tmp_path: Path) -> None:
    assert (
        generate_run_key(tmp_path / "a")[1].split()[1]
        != generate_run_key(tmp_path / "b")[1].split()[1]
    )


def test_openssh_accepts_the_private_key(tmp_path: Path) -> None:
    key_path, line = generate_run_key(tmp_path / "run")
    # ssh-keygen -y derives the public key; it refuses a malformed or unprotected file.
    out = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(key_path)], capture_output=True, text=True, check=True
    ).stdout
    assert out.split()[:2] == line.split()[:2]


def test_remove_run_dir(tmp_path: Path) -> None:
    generate_run_key(tmp_path / "run")
    remove_run_dir(tmp_path / "run")
    assert not (tmp_path / "run").exists()
    remove_run_dir(tmp_path / "run")  # already gone: no error


def test_reuses_a_key_written_by_asyncssh(tmp_path: Path) -> None:
    """Runs started before the key was made with cryptography resume with their own key."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    key = asyncssh.generate_private_key("ssh-ed25519", comment="ec2backup-run")
    (run_dir / "id_ed25519").write_bytes(key.export_private_key("openssh"))
    _, line = generate_run_key(run_dir)
    assert line.split()[:2] == key.export_public_key().decode().split()[:2]
