"""The per-run SSH key pairs (the client key the instance authorizes, the host key it presents):
made once per run, reused when the run resumes.

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
# The run's host key: handed to the instance in its user data, pinned before it is reached.
HOST_KEY_NAME = "ssh_host_ed25519_key"


def _public_line(key: Ed25519PrivateKey, comment: str) -> str:
    blob = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return f"{blob.decode('ascii')} {comment}"


def _load_or_make(path: Path) -> Ed25519PrivateKey:
    """The ed25519 key in ``path``, made (mode 0600 from the start) the first time."""
    if path.exists():
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an ed25519 key")
        # A key copied around may have picked up looser permissions; ssh refuses those.
        os.chmod(path, 0o600)
        return key
    key = Ed25519PrivateKey.generate()
    write_atomically(path, _pem(key), 0o600)
    return key


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


def generate_host_key(directory: Path) -> tuple[str, str]:
    """``(private key in OpenSSH PEM, public line)`` of the run's host key in ``directory``
    (made once per run, like the client key, so a relaunched instance presents the same key).
    The directory must exist (``generate_run_key`` makes it)."""
    path = Path(directory) / HOST_KEY_NAME
    key = _load_or_make(path)
    # The file's own text, not a new export: OpenSSH's format has a random check word, and a
    # retried launch must send the very same user data as the first try (ClientToken).
    return path.read_text(encoding="ascii"), _public_line(
        key, f"ec2backup-host-{Path(directory).name}"
    )


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

    key = _load_or_make(private)
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
