"""A real OpenSSH server for tests: its own config, host key and authorized keys, on a free
loopback port, stopped and cleaned up however the test ends.

    with SshServer(authorized_keys=[public_line]) as server:
        server.port, server.host_key_line, server.known_hosts_line()

Or as a pytest fixture in a test module::

    @pytest.fixture
    def sshd(tmp_path):
        with SshServer(authorized_keys=[...]) as server:
            yield server

``SshServer(...)`` picks the port without starting, for tests that need a host that starts
listening only after a client began trying; ``start()`` then brings it up.
Requires root (sshd privilege separation, login as root) and ``/usr/sbin/sshd``.

``SshServer(..., instance=True)`` runs the sshd as the local cloud runs an instance's: in its
own mount and pid namespaces (its processes, pkill's and pgrep's included, see only each
other), with a user ``ubuntu`` who has passwordless sudo as on Ubuntu's cloud images (private
copies of /etc/passwd, group, shadow and sudoers.d), and private /mnt, /home,
/dev/disk/by-id (``server.by_id``, a directory of this host) and /run/blkid
(``server.blkid_dir``). ``server.inside(...)`` runs a command in there as root. Everything
in the namespaces, mounts included, ends with the sshd.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
# What an instance's namespaces need, as the local cloud's instances do.
INSTANCE_TOOLS = ("unshare", "nsenter", "sudo")
# Mount points an instance gets private copies of: they must exist on this host.
INSTANCE_DIRS = ("/dev/disk/by-id", "/run/blkid", "/etc/sudoers.d")
ETC_COPIES = ("passwd", "group", "shadow", "sudoers.d")


def sshd_unavailable_reason(*, instance: bool = False) -> str | None:
    """Why a real sshd cannot run here, or None if it can (for ``pytest.skip``)."""
    if os.geteuid() != 0:
        return "needs root to run sshd and log in as root"
    if not os.path.exists(SSHD):
        return "sshd is not installed (apt install openssh-server)"
    if not os.path.exists(SSH_KEYGEN):
        return "ssh-keygen is not installed (apt install openssh-client)"
    missing = [tool for tool in INSTANCE_TOOLS if instance and shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt install util-linux sudo)"
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
        instance: bool = False,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.start_timeout = start_timeout
        self.instance = instance
        self.dir = Path(tempfile.mkdtemp(prefix="ec2backup-sshd-"))
        self.by_id = self.dir / "by-id"  # /dev/disk/by-id inside an instance
        self.blkid_dir = self.dir / "blkid"  # /run/blkid inside an instance
        self.sshd_pid: int | None = None  # of an instance's sshd, pid 1 of its namespace
        self._created_dirs: list[Path] = []
        self.config_path = self.dir / "sshd_config"
        self.host_key_path = self.dir / "ssh_host_ed25519_key"
        self.authorized_keys_path = self.dir / "authorized_keys"
        self.pid_path = self.dir / "sshd.pid"
        self.log_path = self.dir / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._spawned: list[subprocess.Popen[str]] = []
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
        if self.instance:
            self._prepare_instance()
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

    def _prepare_instance(self) -> None:
        from ec2backup.sandbox.users import UBUNTU_UID, write_user_db

        # sshd reads authorized_keys as the user logging in: let ubuntu through to it (the
        # host's private key stays 0600).
        self.dir.chmod(0o711)
        self.authorized_keys_path.chmod(0o644)
        etc = self.dir / "etc"
        write_user_db(etc)
        self.by_id.mkdir()
        self.blkid_dir.mkdir()
        q = shlex.quote
        lines = [
            "set -e",
            "mount -t tmpfs -o mode=0755 tmpfs /mnt",
            "mount -t tmpfs -o mode=0755 tmpfs /home",
            f"mkdir -m 0755 /home/ubuntu && chown {UBUNTU_UID}:{UBUNTU_UID} /home/ubuntu",
            f"mount --bind {q(str(self.by_id))} /dev/disk/by-id",
            f"mount --bind {q(str(self.blkid_dir))} /run/blkid",
            *(f"mount --bind {q(str(etc / name))} /etc/{name}" for name in ETC_COPIES),
            f"exec {q(SSHD)} -D -e -f {q(str(self.config_path))}",
            "",
        ]
        (self.dir / "boot.sh").write_text("\n".join(lines))

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
        argv = [SSHD, "-D", "-e", "-f", str(self.config_path)]
        if self.instance:
            for name in INSTANCE_DIRS:
                self._make_dir(Path(name))
            argv = [
                "unshare",
                "--mount",
                "--pid",
                "--fork",
                "--kill-child",  # if unshare ends, so does the sshd, and with it the namespace
                "--mount-proc",
                "--propagation",
                "private",
                "sh",
                str(self.dir / "boot.sh"),
            ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self._wait_ready()
        if self.instance:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            self.sshd_pid = int(children.read_text().split()[0])
        return self

    def _make_dir(self, path: Path) -> None:
        """Make ``path`` (a mount point for the namespace) if missing; removed at cleanup."""
        if path.is_dir():
            return
        self._make_dir(path.parent)
        path.mkdir(mode=0o755)
        self._created_dirs.append(path)

    def inside(
        self, *argv: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as root inside an instance's mount and pid namespaces."""
        assert self.sshd_pid is not None, "not an instance, or not started"
        return subprocess.run(
            ["nsenter", "-t", str(self.sshd_pid), "-m", "-p", "--", *argv],
            capture_output=True,
            text=True,
            check=check,
            input=input,
            timeout=60,
        )

    def spawn_inside(self, *argv: str) -> subprocess.Popen[str]:
        """Start ``argv`` inside an instance's namespaces, its stdin and stdout piped. It
        ends with the namespace at the latest (``stop``)."""
        assert self.sshd_pid is not None, "not an instance, or not started"
        proc = subprocess.Popen(
            ["nsenter", "-t", str(self.sshd_pid), "-m", "-p", "--", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._spawned.append(proc)
        return proc

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
        """Stop sshd (the listener; sessions it forked die with their connections). An
        instance's namespace ends with its pid 1, the sshd: every process in it, and so every
        mount of it, is gone once unshare has reaped it."""
        proc, self.proc = self.proc, None
        if self.sshd_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.sshd_pid, signal.SIGKILL)
            self.sshd_pid = None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for spawned in self._spawned:
            with contextlib.suppress(OSError):
                spawned.kill()  # nsenter itself; what it ran died with the namespace
            spawned.wait(timeout=10)
            for pipe in (spawned.stdin, spawned.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        self._spawned.clear()

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            for path in reversed(self._created_dirs):
                with contextlib.suppress(OSError):
                    path.rmdir()
            self._created_dirs.clear()
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
