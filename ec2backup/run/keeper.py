"""Keeps the run's instance alive while this process works: re-arms its dead-man's switch
(``InstanceHost.arm_idle_timer``) every ``core.deadman.rearm_interval`` seconds, from its own
thread over its own SSH connection.

Its own thread, because the work it must not let the switch cut is not made of short steps: an
rsync of a large tree can stay silent for many minutes (building its file list, checksumming a
big file's blocks) and a wait for EC2 can last as long as its timeout; a re-arm from the main
thread between steps or from rsync's progress lines would leave those gaps. Its own connection,
because a session (``InstanceHost``) is not thread-safe. It is given the SSH target, never the
run (a database row belongs to the main thread's session).

If this process dies (SIGKILL, power cut, a lost laptop) the re-arming stops with it, and the
instance powers itself off ``instance_idle_minutes`` after the last re-arm at most.
"""

from __future__ import annotations

import logging
import threading
import time

from ..core.deadman import rearm_interval
from ..ports import InstanceConnector, InstanceHost, SshTarget

log = logging.getLogger(__name__)

CONNECT_SECONDS = 30.0  # how long one re-arm may try to connect
STOP_WAIT_SECONDS = 5.0


class IdleKeeper:
    def __init__(
        self, connector: InstanceConnector, idle_minutes: int, interval: float | None = None
    ) -> None:
        self.connector = connector
        self.idle_seconds = idle_minutes * 60
        self.interval = interval if interval is not None else rearm_interval(idle_minutes)
        self._target: SshTarget | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.rearms = 0  # how many re-arms succeeded (for tests and the debug log)

    @property
    def watching(self) -> SshTarget | None:
        return self._target if self._thread is not None else None

    def watch(self, target: SshTarget) -> None:
        """Keep the instance at ``target`` alive from now on (another one: switch to it)."""
        if self._thread is not None and self._target == target:
            return
        self.stop()
        self._target = target
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(target, self._stopping), name="ec2backup-idle-keeper"
        )
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        """Stop re-arming (the instance then powers off one idle bound after the last re-arm,
        unless someone re-arms it). Waits for the thread to end."""
        thread, self._thread = self._thread, None
        self._stopping.set()
        if thread is not None and thread is not threading.current_thread():
            # A re-arm under way ends within its connection's deadline; never wait longer
            # than a moment for it (it re-arms nothing once told to stop).
            thread.join(STOP_WAIT_SECONDS)

    def _run(self, target: SshTarget, stopping: threading.Event) -> None:
        host: InstanceHost | None = None
        try:
            while not stopping.wait(self.interval):
                try:
                    if host is None:
                        deadline = time.monotonic() + min(self.interval, CONNECT_SECONDS)
                        host = self.connector.connect(target, deadline)
                    if stopping.is_set():
                        break
                    host.arm_idle_timer(self.idle_seconds)
                    self.rearms += 1
                    log.debug("re-armed the idle timer of %s", target.host)
                except Exception as exc:  # the next beat tries again; the bound has room
                    log.warning("could not re-arm the idle timer of %s: %s", target.host, exc)
                    if host is not None:
                        host.close()
                        host = None
        finally:
            if host is not None:
                host.close()
