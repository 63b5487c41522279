"""One SSH connection for the rsync passes a run makes to one instance: OpenSSH's connection
sharing (``ControlMaster``).

A backup runs rsync more than once per source (the deletion guard's dry run, then the sync,
then a look at the files that changed while it ran), and each rsync starts its own ssh: a key
exchange and a login every time, 0.28 s of a 0.34 s rsync of a small tree on a loopback
of the test machine, several round trips to a region over the internet. The
first pass makes the connection and keeps it (``ControlMaster=auto``); the next passes open a
session on it. The master ends on its own ``PERSIST_SECONDS`` after its last pass, or with the
instance.

The socket lives in the run's own directory (owner-only, next to its key) when its path fits
in a Unix socket's name, else in this user's ``$TMPDIR/ec2backup-ssh-UID`` (made owner-only;
not used unless it is this user's and no one else's). It is named after the run directory,
user, host and port, so another run, or a new instance of the same run, never gets an old
connection. No such place, or ``EC2BACKUP_NO_FASTPATHS`` (``fastpaths.SSH_MULTIPLEX``), means
no sharing: each pass connects on its own, as plain ``rsync -e ssh`` does.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
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
    run_dir = target.key_path.parent
    who = f"{run_dir}\0{target.user}@{target.host}:{target.port}".encode()
    name = f"mux-{hashlib.sha256(who).hexdigest()[:16]}"
    if _fits(run_dir / name):
        return run_dir / name
    shared = _private_tmp()
    return shared / name if shared is not None and _fits(shared / name) else None


def _fits(path: Path) -> bool:
    return len(os.fsencode(path)) <= MAX_PATH_BYTES


def _private_tmp() -> Path | None:
    """``$TMPDIR/ec2backup-ssh-UID``, made owner-only; None if it is anything else (another
    user's, a symlink, open to others)."""
    path = Path(tempfile.gettempdir()) / f"ec2backup-ssh-{os.geteuid()}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    st = path.lstat()
    mine = stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
    return path if mine and stat.S_IMODE(st.st_mode) & 0o077 == 0 else None
