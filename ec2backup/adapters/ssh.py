"""SSH to the backup instance with asyncssh: a synchronous connection that runs one command at
a time. ``adapters/host.py`` builds the ``InstanceHost`` port on it.

asyncssh is asynchronous and the engine is not, so every shell owns a private event loop
(an ``asyncio.Runner``) that lives as long as the connection: each ``run()`` drives that loop
until its command ends. While the engine does something else the loop is idle, which is fine:
the TCP connection lives in the kernel, and overdue keepalives go out on the next ``run()``.
A shell is not thread-safe; use it from one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from ..errors import HostKeyError, RemoteCommandError, RemoteError, SshConnectError
from ..ports import SshTarget

log = logging.getLogger(__name__)

# Backoff between connection attempts: a fresh instance becomes reachable within seconds,
# so start short, but do not hammer a host that takes minutes.
FIRST_DELAY = 0.2
MAX_DELAY = 2.0
# One attempt (TCP + SSH handshake + auth) never waits longer than this, so a silently
# dropped SYN is retried instead of eating the whole deadline.
ATTEMPT_TIMEOUT = 15.0
KEEPALIVE_INTERVAL = 15.0
KEEPALIVE_COUNT_MAX = 4

# Failures that retrying cannot fix. HostKeyNotVerifiable is handled on its own (HostKeyError).
_FATAL = (asyncssh.KeyExchangeFailed, asyncssh.ProtocolNotSupported, asyncssh.IllegalUserName)


def _describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"


def _has_pinned_keys(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return False
    return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str


class AsyncsshShell:
    """An open SSH connection; ``run`` executes one command at a time over it."""

    def __init__(
        self, runner: asyncio.Runner, conn: asyncssh.SSHClientConnection, target: SshTarget
    ) -> None:
        self._runner = runner
        self._conn: asyncssh.SSHClientConnection | None = conn
        self.target = target

    @property
    def _resources(self) -> dict[str, str]:
        return {"host": self.target.host}

    def run(
        self,
        command: str,
        *,
        check: bool = True,
        timeout: float | None = None,
        input: str | None = None,
    ) -> CommandResult:
        """Run ``command`` through the remote user's shell, with ``input`` on its stdin (else
        none). ``check`` raises ``RemoteCommandError`` on a non-zero exit; a lost connection
        or ``timeout`` raises ``RemoteError`` so the engine can retry the step.
        """
        if self._conn is None:
            raise RemoteError("the SSH connection is closed", resources=self._resources)
        try:
            done = self._runner.run(self._run(self._conn, command, timeout, input))
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            raise RemoteError(
                f"SSH connection to {self.target.host} failed while running {command!r}: "
                f"{_describe(exc)}",
                resources=self._resources,
            ) from exc

        stdout = str(done.stdout or "")
        stderr = str(done.stderr or "")
        if done.exit_status is not None:
            status = done.exit_status
        elif done.exit_signal:
            # Report a signal death the way a shell does: 128 + signal number.
            name = done.exit_signal[0]
            try:
                status = 128 + int(signal.Signals[f"SIG{name}"])
            except KeyError:
                status = 255
        else:
            raise RemoteError(
                f"command {command!r} on {self.target.host} ended without an exit status "
                "(connection lost?)",
                resources=self._resources,
            )

        result = CommandResult(exit_status=status, stdout=stdout, stderr=stderr)
        if check and status != 0:
            first = next((ln.strip() for ln in stderr.splitlines() if ln.strip()), "")
            raise RemoteCommandError(
                f"command {command!r} on {self.target.host} exited with status {status}"
                + (f": {first}" if first else ""),
                exit_status=status,
                resources=self._resources,
            )
        return result

    @staticmethod
    async def _run(
        conn: asyncssh.SSHClientConnection,
        command: str,
        timeout: float | None,
        input: str | None = None,
    ) -> asyncssh.SSHCompletedProcess:
        # Without input, stdin from /dev/null: a command that reads stdin gets EOF instead of
        # hanging.
        if input is not None:
            return await conn.run(
                command, check=False, input=input, encoding="utf-8", errors="replace",
                timeout=timeout,
            )  # fmt: skip
        return await conn.run(
            command,
            check=False,
            stdin=asyncssh.DEVNULL,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
        )

    def close(self) -> None:
        """Close the connection and its event loop. Safe to call twice."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            # A dead connection has nothing left to release remotely: ignore its errors.
            with contextlib.suppress(asyncssh.Error, OSError, RuntimeError):
                self._runner.run(asyncio.wait_for(conn.wait_closed(), 5.0))
        self._runner.close()

    def __enter__(self) -> AsyncsshShell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncsshConnector:
    """Connects with asyncssh: retries until the deadline, accepts only pinned host keys."""

    def __init__(
        self,
        *,
        attempt_timeout: float = ATTEMPT_TIMEOUT,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
        keepalive_count_max: int = KEEPALIVE_COUNT_MAX,
    ) -> None:
        self.attempt_timeout = attempt_timeout
        self.keepalive_interval = keepalive_interval
        self.keepalive_count_max = keepalive_count_max

    def connect(self, target: SshTarget, deadline: float) -> AsyncsshShell:
        """Connect, retrying refused/reset connections and not-yet-installed keys until
        ``deadline`` (a ``time.monotonic()`` value). The host must present a key pinned in
        ``target.known_hosts_path``: with nothing pinned there, nothing is accepted."""
        resources = {"host": target.host}
        try:
            client_key = asyncssh.read_private_key(target.key_path)
        except (OSError, asyncssh.KeyImportError, ValueError) as exc:
            raise SshConnectError(
                f"cannot read the SSH private key {target.key_path}: {_describe(exc)}",
                resources=resources,
            ) from exc
        if not _has_pinned_keys(target.known_hosts_path):
            raise HostKeyError(
                f"no host key pinned for {target.host} in {target.known_hosts_path}: refusing "
                "to connect to a host that cannot be verified",
                resources=resources,
            )
        try:
            known_hosts = asyncssh.read_known_hosts(str(target.known_hosts_path))
        except (OSError, ValueError) as exc:
            raise HostKeyError(
                f"cannot read the pinned host keys in {target.known_hosts_path}: {_describe(exc)}",
                resources=resources,
            ) from exc

        runner = asyncio.Runner()
        try:
            conn = runner.run(self._connect_loop(target, deadline, client_key, known_hosts))
        except BaseException:
            runner.close()
            raise
        return AsyncsshShell(runner, conn, target)

    async def _connect_loop(
        self,
        target: SshTarget,
        deadline: float,
        client_key: asyncssh.SSHKey,
        known_hosts: asyncssh.SSHKnownHosts,
    ) -> asyncssh.SSHClientConnection:
        resources = {"host": target.host}
        delay = FIRST_DELAY
        attempt = 0
        last_error = "no attempt made"
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            # Always make at least one attempt, even with a deadline already passed.
            attempt_timeout = max(0.5, min(self.attempt_timeout, remaining))
            try:
                return await asyncio.wait_for(
                    self._open(target, client_key, known_hosts, attempt_timeout),
                    attempt_timeout + 1.0,
                )
            except asyncssh.HostKeyNotVerifiable as exc:
                raise HostKeyError(
                    f"the host key presented by {target.host}:{target.port} does not match the "
                    f"key pinned in {target.known_hosts_path}: possibly a man in the middle, or "
                    f"not the instance this run launched ({exc})",
                    resources=resources,
                ) from exc
            except _FATAL as exc:
                raise SshConnectError(
                    f"cannot connect to {target.user}@{target.host}:{target.port}: "
                    f"{_describe(exc)}",
                    resources=resources,
                ) from exc
            except (asyncssh.Error, OSError, TimeoutError) as exc:
                # Refused/reset/timed out, sshd not ready, or cloud-init has not installed
                # our key yet (PermissionDenied): all normal on a booting instance.
                last_error = _describe(exc)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SshConnectError(
                    f"could not connect to {target.user}@{target.host}:{target.port} before the "
                    f"deadline ({attempt} attempts); last error: {last_error}",
                    resources=resources,
                )
            pause = min(delay, remaining)
            log.debug(
                "ssh %s:%s attempt %d failed (%s); retrying in %.1fs",
                target.host,
                target.port,
                attempt,
                last_error,
                pause,
            )
            await asyncio.sleep(pause)
            delay = min(delay * 2, MAX_DELAY)

    async def _open(
        self,
        target: SshTarget,
        client_key: asyncssh.SSHKey,
        known_hosts: asyncssh.SSHKnownHosts,
        timeout: float,
    ) -> asyncssh.SSHClientConnection:
        options: dict[str, Any] = {
            "port": target.port,
            "username": target.user,
            "client_keys": [client_key],
            "known_hosts": known_hosts,
            # Only the run's key: an agent full of keys can exhaust the server's MaxAuthTries.
            "agent_path": None,
            "preferred_auth": "publickey",
            "connect_timeout": timeout,
            "keepalive_interval": self.keepalive_interval,
            "keepalive_count_max": self.keepalive_count_max,
        }
        return await asyncssh.connect(target.host, **options)
