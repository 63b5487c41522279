"""The run's private SSH key lives only in the run's directory (mode 0700), never in the
database: not in the database file, not in its write-ahead log (where a SQLite transaction
lives until a checkpoint copies it over), not in any encoding, not even for a moment during the
run. Checked after a real run on the local cloud, and on a run killed half-way, whose WAL is
left exactly as the process wrote it."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.e2e.helpers import Cli, make_sample_tree

pytestmark = pytest.mark.e2e


def key_needles(pem: bytes) -> dict[str, bytes]:
    """The key in every form it could take in the database, by name: the key file, its
    decoded content and the raw private key, each as bytes, hex or base64; the file's lines."""
    key = serialization.load_ssh_private_key(pem, password=None)
    raw = key.private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    body = [line for line in pem.splitlines() if line and not line.startswith(b"-----")]
    forms = {
        "the key file": pem,
        "the decoded key file": base64.b64decode(b"".join(body)),
        "the raw private key": raw,
    }
    encodings = {
        "": lambda b: b,
        " in hex": lambda b: b.hex().encode(),
        " in upper-case hex": lambda b: b.hex().upper().encode(),
        " in base64": lambda b: base64.b64encode(b).rstrip(b"="),
        " in url-safe base64": lambda b: base64.urlsafe_b64encode(b).rstrip(b"="),
    }
    needles = {
        f"{form}{encoding}": encode(data)
        for form, data in forms.items()
        for encoding, encode in encodings.items()
    }
    needles["the PEM header"] = b"PRIVATE KEY"
    needles["the key file's base64 in one piece"] = b"".join(body)
    needles |= {f"line {i} of the key file": line for i, line in enumerate(body, 1)}
    return needles


def database_files(db: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-journal"))
        if p.exists()
    }


def assert_no_key(db: Path, needles: dict[str, bytes]) -> dict[str, bytes]:
    files = database_files(db)
    assert db.name in files
    found = [
        f"{what} is in {name}"
        for name, content in files.items()
        for what, needle in needles.items()
        if needle in content
    ]
    assert found == []
    return files


def the_only_run_dir(runs: Path) -> Path:
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    return run_dir


def test_no_private_key_in_the_database_or_its_wal(cli: Cli, sandbox: Any, tmp_path: Path) -> None:
    source = tmp_path / "home"
    source.mkdir()
    make_sample_tree(source)
    cli("init", "--profile", "k", "--az", "us-east-1a", "--size", "1", "--source", str(source))
    db, runs = tmp_path / "ec2backup.db", tmp_path / "data" / "runs"

    # A whole run: its key is read while the run goes on (it is deleted at the end).
    proc = subprocess.Popen(
        [sys.executable, "-m", "ec2backup", "run", "--profile", "k"],
        env={**os.environ, **cli.env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (runs.is_dir() and list(runs.glob("*/id_ed25519"))):
            assert proc.poll() is None, "the run ended before its key was seen"
            assert time.monotonic() < deadline, "the run never wrote its key"
            time.sleep(0.01)
        (key_file,) = runs.glob("*/id_ed25519")
        needles = key_needles(key_file.read_bytes())
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert cli.json("show", out.strip())["state"] == "done"
    assert_no_key(db, needles)

    # A run killed half-way, its copy done: the key still on disk, the WAL as it was left.
    crashed = replace(cli, env={**cli.env, "EC2BACKUP_CRASH_AT": "after:sync"})
    result = crashed("run", "--profile", "k", check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr
    run_dir = the_only_run_dir(runs)
    needles = key_needles((run_dir / "id_ed25519").read_bytes())
    # Looked at before anything opens the database again (the last connection to close
    # checkpoints the WAL into the file and removes it).
    files = assert_no_key(db, needles)
    assert len(files.get("ec2backup.db-wal", b"")) > 0, "the killed run left no WAL to look at"

    cli("resume", run_dir.name)
    assert cli.json("show", run_dir.name)["state"] == "done"
    assert not run_dir.exists()
    assert_no_key(db, needles)
