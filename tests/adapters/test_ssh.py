"""AsyncsshConnector and its shell against a real OpenSSH server on loopback."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from ec2backup.adapters.hostkeys import known_hosts_lines
from ec2backup.adapters.keys import generate_run_key
from ec2backup.adapters.ssh import AsyncsshConnector, AsyncsshShell
from ec2backup.errors import HostKeyError, RemoteCommandError, RemoteError, SshConnectError
from ec2backup.ports import SshTarget

# tests/ is on sys.path without a package, or the repository root with one.
try:
    from sshd import SshServer, free_port, sshd_unavailable_reason
except ImportError:  # pragma: no cover
    from tests.sshd import SshServer, free_port, sshd_unavailable_reason

needs_sshd = pytest.mark.skipif(
    sshd_unavailable_reason() is not None, reason=sshd_unavailable_reason() or ""
)


@pytest.fixture
def run_key(tmp_path: Path) -> tuple[Path, str]:
    return generate_run_key(tmp_path / "run key")


@pytest.fixture
def server(run_key: tuple[Path, str]) -> Iterator[SshServer]:
    with SshServer(authorized_keys=[run_key[1]]) as srv:
        yield srv


def target_for(srv_host: str, port: int, run_key: tuple[Path, str], tmp_path: Path) -> SshTarget:
    return SshTarget(
        host=srv_host,
        user="root",
        key_path=run_key[0],
        known_hosts_path=tmp_path / "run key" / "known_hosts",
        port=port,
    )


@pytest.fixture
def pinned(server: SshServer, run_key: tuple[Path, str], tmp_path: Path) -> SshTarget:
    target = target_for(server.host, server.port, run_key, tmp_path)
    target.known_hosts_path.write_text(server.known_hosts_line())
    return target


def random_host_key() -> tuple[str, str]:
    """A valid ed25519 public key that no server here holds."""
    keytype, blob = asyncssh.generate_private_key("ssh-ed25519").export_public_key().split()[:2]
    return keytype.decode(), blob.decode()


def connect(target: SshTarget, within: float = 20.0) -> AsyncsshShell:
    shell = AsyncsshConnector().connect(target, time.monotonic() + within)
    assert isinstance(shell, AsyncsshShell)
    return shell


@needs_sshd
def test_run_returns_output_and_status(pinned: SshTarget) -> None:
    with connect(pinned) as shell:
        ok = shell.run("echo hello; echo oops >&2; whoami")
        assert ok.exit_status == 0
        assert ok.stdout == "hello\nroot\n"
        assert ok.stderr == "oops\n"
        # The same connection serves many commands.
        failed = shell.run("echo partial; exit 3", check=False)
        assert (failed.exit_status, failed.stdout) == (3, "partial\n")
        # stdin is closed: a command reading it ends instead of hanging.
        assert shell.run("cat; echo done").stdout == "done\n"


@needs_sshd
def test_check_raises_remote_command_error(pinned: SshTarget) -> None:
    with connect(pinned) as shell:
        with pytest.raises(RemoteCommandError) as info:
            shell.run("echo 'mount: /mnt: wrong fs type' >&2; echo second >&2; exit 32")
        assert info.value.exit_status == 32
        # Only the first stderr line, after the command and its status.
        assert info.value.message.endswith("status 32: mount: /mnt: wrong fs type")
        assert "32" in info.value.message
        assert info.value.resources == {"host": pinned.host}


@needs_sshd
def test_wrong_pinned_key_fails_fast_with_host_key_error(
    server: SshServer, run_key: tuple[Path, str], tmp_path: Path
) -> None:
    target = target_for(server.host, server.port, run_key, tmp_path)
    target.known_hosts_path.write_text(
        known_hosts_lines(server.host, server.port, [random_host_key()])
    )
    started = time.monotonic()
    with pytest.raises(HostKeyError) as info:
        connect(target, within=30.0)
    assert time.monotonic() - started < 5.0, "a host key mismatch must not be retried"
    assert "does not match" in info.value.message
    assert info.value.resources == {"host": server.host}


@pytest.mark.parametrize("initial", [None, "", "# pinned keys follow\n"])
def test_nothing_pinned_is_refused_before_any_connection(
    run_key: tuple[Path, str], tmp_path: Path, initial: str | None
) -> None:
    """No trust on first use: with no key pinned, the host is not even contacted."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        target = target_for("127.0.0.1", listener.getsockname()[1], run_key, tmp_path)
        if initial is not None:
            target.known_hosts_path.write_text(initial)
        with pytest.raises(HostKeyError, match="no host key pinned"):
            connect(target)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    if initial is None:
        assert not target.known_hosts_path.exists()
    else:
        assert target.known_hosts_path.read_text() == initial  # nothing was pinned


@needs_sshd
def test_connection_refused_until_deadline(run_key: tuple[Path, str], tmp_path: Path) -> None:
    target = target_for("127.0.0.1", free_port(), run_key, tmp_path)
    target.known_hosts_path.write_text(
        known_hosts_lines("127.0.0.1", target.port, [random_host_key()])
    )
    started = time.monotonic()
    with pytest.raises(SshConnectError) as info:
        connect(target, within=1.5)
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 5.0
    assert "127.0.0.1" in info.value.message
    assert "ConnectionRefused" in info.value.message or "refused" in info.value.message.lower()
    # Retried with a short backoff (0.2, 0.4, 0.8 s ...), not a single try.
    assert int(info.value.message.split(" attempts")[0].rsplit("(", 1)[1]) >= 3


@needs_sshd
def test_key_not_yet_authorized_is_retried(
    server: SshServer, run_key: tuple[Path, str], tmp_path: Path
) -> None:
    """Like cloud-init installing the key a moment after sshd is up."""
    server.set_authorized_keys([])
    target = target_for(server.host, server.port, run_key, tmp_path)
    target.known_hosts_path.write_text(server.known_hosts_line())
    attempts = _AttemptWatcher()
    result: dict[str, object] = {}

    def worker() -> None:
        try:
            with connect(target, within=30.0) as shell:
                result["out"] = shell.run("echo in").stdout
        except BaseException as exc:
            result["error"] = exc

    with attempts:
        thread = threading.Thread(target=worker)
        thread.start()
        assert attempts.failed.wait(20), "no failed attempt was logged"
        assert "PermissionDenied" in attempts.last
        server.set_authorized_keys([run_key[1]])
        thread.join(30)
    assert result == {"out": "in\n"}


@needs_sshd
def test_permission_denied_until_deadline(
    server: SshServer, run_key: tuple[Path, str], tmp_path: Path
) -> None:
    server.set_authorized_keys([])
    target = target_for(server.host, server.port, run_key, tmp_path)
    target.known_hosts_path.write_text(server.known_hosts_line())
    with pytest.raises(SshConnectError) as info:
        connect(target, within=1.0)
    assert "PermissionDenied" in info.value.message


@needs_sshd
def test_server_that_starts_late_still_gets_connected(
    run_key: tuple[Path, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    late = SshServer(authorized_keys=[run_key[1]])  # port reserved, not listening yet
    request.addfinalizer(late.cleanup)
    target = target_for(late.host, late.port, run_key, tmp_path)
    target.known_hosts_path.write_text(late.known_hosts_line())
    attempts = _AttemptWatcher()
    result: dict[str, object] = {}

    def worker() -> None:
        try:
            with connect(target, within=30.0) as shell:
                result["out"] = shell.run("echo late").stdout
        except BaseException as exc:
            result["error"] = exc

    with attempts:
        thread = threading.Thread(target=worker)
        thread.start()
        assert attempts.failed.wait(20), "no failed attempt was logged"
        assert "refused" in attempts.last.lower()
        late.start()
        thread.join(30)
    assert result == {"out": "late\n"}
    assert attempts.count >= 1


@needs_sshd
def test_dropped_connection_raises_remote_error(pinned: SshTarget) -> None:
    with connect(pinned) as shell:
        # Kill the sshd session process serving this connection.
        with pytest.raises(RemoteError) as info:
            shell.run("kill -9 $PPID; sleep 5")
        assert not isinstance(info.value, RemoteCommandError)
        with pytest.raises(RemoteError):
            shell.run("true")


@needs_sshd
def test_closed_shell_refuses_commands(pinned: SshTarget) -> None:
    shell = connect(pinned)
    shell.close()
    shell.close()  # twice is fine
    with pytest.raises(RemoteError):
        shell.run("true")


class _AttemptWatcher(logging.Handler):
    """Signals when the connector logs a failed attempt, so tests wait on events, not time."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.failed = threading.Event()
        self.count = 0
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "attempt" in message and "failed" in message:
            self.count += 1
            self.last = message
            self.failed.set()

    def __enter__(self) -> _AttemptWatcher:
        logger = logging.getLogger("ec2backup.adapters.ssh")
        self._old_level = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger("ec2backup.adapters.ssh")
        logger.removeHandler(self)
        logger.setLevel(self._old_level)
