"""A real OpenSSH server for tests: its own config, host key and authorized keys, on a free
loopback port, stopped and cleaned up however the test ends.

    with SshServer(authorized_keys=[public_line]) as server:
        server.port, server.host_key_line, server.known_hosts_line()

Or as a pytest fixture in a test module::

    @pytest.fixture
    def sshd(tmp_path):
        with SshServer(authorized_keys=[...]) as server:
            yield server

``SshServer.reserve()`` picks the port without starting, for tests that need a host that
starts listening only after a client began trying; ``start()`` then brings it up.
Requires root (sshd privilege separation, login as root) and ``/usr/sbin/sshd``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def sshd_unavailable_reason() -> str | None:
    """Why a real sshd cannot run here, or None if it can (for ``pytest.skip``)."""
    if os.geteuid() != 0:
        return "needs root to run sshd and log in as root"
    if not os.path.exists(SSHD):
        return "sshd is not installed (apt install openssh-server)"
    if not os.path.exists(SSH_KEYGEN):
        return "ssh-keygen is not installed (apt install openssh-client)"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel picks it; tiny race accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class SshServer:
    def __init__(
        self,
        authorized_keys: Iterable[str] = (),
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.start_timeout = start_timeout
        self.dir = Path(tempfile.mkdtemp(prefix="ec2backup-sshd-"))
        self.config_path = self.dir / "sshd_config"
        self.host_key_path = self.dir / "ssh_host_ed25519_key"
        self.authorized_keys_path = self.dir / "authorized_keys"
        self.pid_path = self.dir / "sshd.pid"
        self.log_path = self.dir / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self._prepare(authorized_keys)
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _prepare(self, authorized_keys: Iterable[str]) -> None:
        keygen = [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "test-host"]
        subprocess.run(
            [*keygen, "-f", str(self.host_key_path)],
            check=True,
            capture_output=True,
        )
        self.set_authorized_keys(authorized_keys)
        self.config_path.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.host}",
                    f"HostKey {self.host_key_path}",
                    f"AuthorizedKeysFile {self.authorized_keys_path}",
                    f"PidFile {self.pid_path}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitRootLogin prohibit-password",
                    "UseDNS no",
                    "LogLevel VERBOSE",
                    # Sessions log in as this host's root: keep its dotfiles out. bash sources
                    # ~/.bashrc for a command sent over SSH only as a top-level shell, and a
                    # developer's .bashrc can cost far more than the command (pyenv init: 0.1 s
                    # per command on the benchmark VM), skewing timings against raw rsync.
                    "SetEnv SHLVL=1",
                    # Tests open many connections at once; do not throttle them.
                    "MaxStartups 100",
                    "",
                ]
            )
        )

    def set_authorized_keys(self, lines: Iterable[str]) -> None:
        """Replace the authorized keys (sshd rereads the file on every login)."""
        self.authorized_keys_path.write_text("".join(line.strip() + "\n" for line in lines))

    @property
    def host_key_line(self) -> str:
        """The server's public host key, ``ssh-ed25519 AAAA... comment``."""
        return self.host_key_path.with_suffix(".pub").read_text().strip()

    @property
    def host_key(self) -> tuple[str, str]:
        """``(type, base64)`` of the server's host key."""
        keytype, blob = self.host_key_line.split()[:2]
        return keytype, blob

    def known_hosts_line(self) -> str:
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        keytype, blob = self.host_key
        return f"{name} {keytype} {blob}\n"

    def start(self) -> SshServer:
        """Start sshd and return once it answers with an SSH banner."""
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"sshd exited with {self.proc.returncode} at start:\n{self.log()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    sock.settimeout(max(0.1, deadline - time.monotonic()))
                    if sock.recv(64).startswith(b"SSH-"):
                        return
            except OSError as exc:
                last = exc
                # Poll, with a short wait so a slow start does not spin the CPU.
                _wait_for_exit(self.proc, 0.02)
        self.stop()
        raise RuntimeError(f"sshd did not come up on port {self.port}: {last}\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Stop sshd (the listener; sessions it forked die with their connections)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SshServer:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


def _wait_for_exit(proc: subprocess.Popen[bytes], seconds: float) -> None:
    """Wait up to ``seconds``, returning early if the process exits (no blind sleep)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=seconds)
