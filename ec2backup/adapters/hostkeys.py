"""Host keys from cloud-init's console output, and the known_hosts file that pins them.

cloud-init prints the instance's public host keys to the serial console between
``-----BEGIN SSH HOST KEY KEYS-----`` and ``-----END SSH HOST KEY KEYS-----``. The console is
a noisy, shared stream: kernel messages with ``[   12.345678] `` timestamps, ``ec2: `` or
``ci-info: `` prefixes and ``\\r\\n`` line ends all occur, and only the last 64 KB are kept,
so a block may be cut off at its start. Only complete blocks are trusted, and every key is
checked to decode as the SSH public key type it claims to be.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import asyncssh

from ..paths import write_atomically
from ..ports import HostKey

BEGIN_MARKER = "-----BEGIN SSH HOST KEY KEYS-----"
END_MARKER = "-----END SSH HOST KEY KEYS-----"

# Key types OpenSSH servers use as host keys. Anything else in the block is ignored.
KNOWN_KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)

# A key type followed by its base64 blob, anywhere on the line: whatever prefix the console
# added before it (timestamp, "ec2: ") is skipped without having to know its shape.
_KEY_RE = re.compile(
    r"(?<![\w-])([a-z0-9-]+(?:@[a-z0-9.-]+)?)\s+(AAAA[A-Za-z0-9+/]+={0,2})(?=\s|$)"
)


def _validate(keytype: str, blob: str) -> bool:
    try:
        key = asyncssh.import_public_key(f"{keytype} {blob}")
    except (asyncssh.KeyImportError, ValueError):
        return False
    # The blob carries its own type; it must be the one the line claims.
    return key.get_algorithm() == keytype


def parse_console_host_keys(console_output: str) -> list[HostKey]:
    """Return the host keys of the last complete key block in ``console_output``.

    Returns ``[]`` when there is no complete block (some AMIs print none, or it scrolled out
    of the 64 KB the console keeps). Keys of unknown types and blobs that do not decode are
    left out. Order is kept, duplicates dropped.
    """
    blocks: list[list[HostKey]] = []
    current: list[HostKey] | None = None
    for raw in console_output.replace("\r", "\n").split("\n"):
        if BEGIN_MARKER in raw:
            # A second BEGIN without an END (a reboot mid-print) restarts the block.
            current = []
            continue
        if END_MARKER in raw:
            if current is not None:
                blocks.append(current)
            current = None
            continue
        if current is None:
            continue
        for match in _KEY_RE.finditer(raw):
            keytype, blob = match.group(1), match.group(2)
            if keytype not in KNOWN_KEY_TYPES or not _validate(keytype, blob):
                continue
            if (keytype, blob) not in current:
                current.append((keytype, blob))
    # The last block is the current boot's; earlier ones may come from a previous boot.
    return blocks[-1] if blocks else []


def known_hosts_host(host: str, port: int) -> str:
    """The host field of a known_hosts line: ``host``, or ``[host]:port`` off port 22."""
    return host if port == 22 else f"[{host}]:{port}"


def known_hosts_lines(host: str, port: int, keys: Iterable[HostKey]) -> str:
    """OpenSSH known_hosts text pinning ``keys`` for ``host``:``port``, one line per key."""
    name = known_hosts_host(host, port)
    return "".join(f"{name} {keytype} {blob}\n" for keytype, blob in keys)


def write_known_hosts(path: Path, host: str, port: int, keys: Sequence[HostKey]) -> None:
    """Write a known_hosts file (mode 0600) holding exactly ``keys`` for ``host``:``port``.

    Replaces the file atomically. Refuses an empty key list: pinning nothing is not a pin.
    """
    if not keys:
        raise ValueError("no host keys to pin")
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, known_hosts_lines(host, port, keys).encode("ascii"), 0o600)
