"""The per-run SSH key pair: made once per run, reused when the run resumes.

The private key never exists with wider permissions than 0600, not even for an instant: it is
written to a file created with that mode and then renamed into place, so a crash half-way
never leaves a truncated key that a resumed run would try to reuse.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..paths import write_atomically

PRIVATE_KEY_NAME = "id_ed25519"
PUBLIC_KEY_NAME = "id_ed25519.pub"


def _public_line(key: Ed25519PrivateKey, comment: str) -> str:
    blob = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return f"{blob.decode('ascii')} {comment}"


def generate_run_key(directory: Path) -> tuple[Path, str]:
    """Return ``(private key path, OpenSSH public key line)`` for the run in ``directory``.

    Creates the directory (mode 0700) and a fresh ed25519 key pair the first time; later calls
    return the existing key so a resumed run keeps the key its instance already trusts.
    """
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask and ignored for an existing directory.
    os.chmod(directory, 0o700)
    private = directory / PRIVATE_KEY_NAME
    public = directory / PUBLIC_KEY_NAME

    if private.exists():
        key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{private} is not an ed25519 key")
        # A key copied around may have picked up looser permissions; ssh refuses those.
        os.chmod(private, 0o600)
    else:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        write_atomically(private, pem, 0o600)

    line = _public_line(key, f"ec2backup-{directory.name}")
    # The .pub file is a convenience for humans; the line returned is derived from the
    # private key itself, so a stale or missing .pub file cannot mislead.
    if not public.exists() or public.read_text(encoding="ascii").strip() != line:
        write_atomically(public, (line + "\n").encode("ascii"), 0o644)
    return private, line


def remove_run_dir(directory: Path) -> None:
    """Delete a run's key directory; a directory already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(directory)
