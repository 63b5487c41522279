"""Crash points for the crash matrix (tests/e2e/test_crash_matrix.py).

``EC2BACKUP_CRASH_AT=<name>`` makes the process SIGKILL itself when it reaches the point of
that name: no handler, no flush, no cleanup, as a power cut would. Points are placed just
before and just after each step's side effect, and in the windows between a cloud call and
the recording of its result; their names come from the state machine
(``core.states.crash_points``). Unset (always, outside the tests), a point costs one dict
lookup.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "EC2BACKUP_CRASH_AT"
# KILL by default; TERM or INT deliver what a user's `kill` or Ctrl-C would, at that point.
SIGNAL_ENV = "EC2BACKUP_CRASH_SIGNAL"


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get(SIGNAL_ENV, "KILL")))
