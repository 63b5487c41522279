"""One SSH connection for the rsync passes a run makes to one instance: OpenSSH's connection
sharing (``ControlMaster``).

A backup runs rsync more than once per source (the deletion guard's dry run, then the sync,
then a look at the files that changed while it ran), and each rsync starts its own ssh: a key
exchange and a login every time, 0.28 s of a 0.34 s rsync of a small tree on loopback here
(docs/performance.md, benchmark 8), several round trips to a region over the internet. The
first pass makes the connection and keeps it (``ControlMaster=auto``); the next passes open a
session on it. The master ends on its own ``PERSIST_SECONDS`` after its last pass, or with the
instance.

The socket lives in the run's own directory (owner-only, next to its key), named after the
user, host and port, so a new instance of the same run never gets an old one's connection. A
path too long for a Unix socket, or ``EC2BACKUP_NO_FASTPATHS`` (``fastpaths.SSH_MULTIPLEX``),
means no sharing: each pass connects on its own, as plain ``rsync -e ssh`` does.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..fastpaths import SSH_MULTIPLEX, enabled
from ..ports import SshTarget

# Idle seconds before the master ends: the passes of one step follow each other at once.
PERSIST_SECONDS = 5
# sun_path holds 108 bytes, and ssh adds 17 to the name while it makes the socket.
MAX_PATH_BYTES = 90


def control_path(target: SshTarget) -> Path | None:
    """Where the shared connection to ``target`` listens, or None: no sharing."""
    if not enabled(SSH_MULTIPLEX):
        return None
    who = f"{target.user}@{target.host}:{target.port}".encode()
    path = target.key_path.parent / f"mux-{hashlib.sha256(who).hexdigest()[:16]}"
    return path if len(os.fsencode(path)) <= MAX_PATH_BYTES else None
