"""Whether a lease's holder is alive, from the lease's own fields: the one rule that leases,
``reap`` and ``ec2backup runs`` (which reads SQLite without SQLAlchemy) share. No I/O beyond
asking the kernel whether a pid exists."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

TTL = timedelta(seconds=60)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def holder_alive(
    holder_host: str,
    holder_pid: int,
    heartbeat_at: datetime,
    now: datetime,
    me_host: str,
    me_pid: int,
) -> bool:
    """A lease is live while its heartbeat is younger than ``TTL`` and, on this host, while
    its holder's process exists (seen at once, without waiting for the TTL)."""
    if now - heartbeat_at > TTL:
        return False
    return not (holder_host == me_host and holder_pid != me_pid and not pid_alive(holder_pid))
