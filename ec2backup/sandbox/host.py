"""The real machinery behind the sandbox's instances and volumes, on this host.

An instance is an OpenSSH sshd in its own mount and pid namespaces; a volume is a sparse image
behind a loop device. Nothing here imports moto: ``Sandbox.stop`` uses these functions to clean
up from the records in D even after the server process died.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .layout import read_json, write_json
from .resize2fs import write_resize2fs
from .users import UBUNTU_UID, write_user_db

DEVICE_DIR = "/dev/disk/by-id"
NITRO_PREFIX = "nvme-Amazon_Elastic_Block_Store_"
MACHINE_RECORD = "machine.json"
CLOUD_INIT_LOG = "cloud-init-output.log"  # what the stages' commands printed
STANDIN_DIR = "/usr/local/sbin"
# What OpenSSH calls its per-connection processes (9.8+ split them into sshd-session/-auth).
SSHD_CONNECTION_NAMES = frozenset({"sshd", "sshd-session", "sshd-auth"})


class HostError(RuntimeError):
    """A host-side step (sshd, losetup, nsenter) failed."""


def nitro_device_name(volume_id: str) -> str:
    """``vol-0abc`` -> ``nvme-Amazon_Elastic_Block_Store_vol0abc``, the name under by-id."""
    return NITRO_PREFIX + volume_id.replace("-", "")


def run(args: Sequence[str]) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HostError(f"{shlex.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def sshd_path() -> str:
    return shutil.which("sshd") or "/usr/sbin/sshd"


# --- processes --------------------------------------------------------------------------------


def cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def is_running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def kill_if_ours(pid: int, marker: str) -> bool:
    """SIGKILL ``pid`` only if its command line names ``marker`` (guards against pid reuse)."""
    line = cmdline(pid)
    if line is None or marker not in line:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def wait_gone(pids: Sequence[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(is_running(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --- addresses --------------------------------------------------------------------------------


class AddressPool:
    """Hands out 127.0.X.Y addresses, never the same one twice in a sandbox's lifetime.

    Every 127/8 address answers on loopback with no set-up. Each sandbox starts at a random X
    so that two sandboxes on one machine rarely meet, and skips any address whose port 22 is
    already taken (another sandbox's live instance)."""

    def __init__(self) -> None:
        self._third = random.randint(1, 254)
        self._fourth = 0
        self._given = 0

    def allocate(self) -> str:
        while self._given < 254 * 254:
            self._fourth += 1
            if self._fourth > 254:
                self._fourth = 1
                self._third = self._third % 254 + 1
            self._given += 1
            address = f"127.0.{self._third}.{self._fourth}"
            if port_22_free(address):
                return address
        raise HostError("no free 127.0.X.Y address left")


def port_22_free(address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, 22))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


# --- host keys --------------------------------------------------------------------------------


def make_host_key(path: Path, comment: str) -> str:
    """Create an ed25519 key pair at ``path`` and return its public line."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path.with_name(path.name + ".pub").read_text().strip()


def fingerprint(public_line: str) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` prints it."""
    blob = base64.b64decode(public_line.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


# --- instances --------------------------------------------------------------------------------


@dataclass
class Machine:
    """One instance's sshd. ``unshare_pid`` is our child; ``sshd_pid`` is pid 1 of the
    instance's pid namespace, so killing it ends every process and mount of the instance."""

    instance_id: str
    directory: Path
    address: str
    unshare_pid: int
    sshd_pid: int
    host_key_public: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def marker(self) -> str:
        # Both the unshare and the sshd command lines name the instance directory.
        return str(self.directory)

    def alive(self) -> bool:
        return is_running(self.sshd_pid)

    @property
    def state_dir(self) -> Path:
        """Its service manager's state, kept by the stand-ins (``standin.py``)."""
        return self.directory / "systemd"

    def run_inside(self, argv: Sequence[str], path: str) -> subprocess.Popen[bytes]:
        """Start ``argv`` as root inside the instance (its mount and pid namespaces), with
        ``path`` as PATH and output appended to its cloud-init log; not waited for."""
        with (self.directory / CLOUD_INIT_LOG).open("ab") as log:
            return subprocess.Popen(
                [
                    *("nsenter", "-t", str(self.sshd_pid), "-m", "-p", "--"),
                    *("env", "-i", f"PATH={path}", "HOME=/root", "LANG=C.UTF-8"),
                    *argv,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def link_device(self, device: str, name: str) -> None:
        # nsenter: the symlink must land in the instance's private /dev/disk/by-id tmpfs.
        run(
            [
                "nsenter",
                "-t",
                str(self.sshd_pid),
                "-m",
                "--",
                "ln",
                "-sfn",
                device,
                self._link(name),
            ]
        )

    def install_authorized_keys(self, keys: Sequence[str]) -> None:
        """What cloud-init does at the end of its run: ``ubuntu``'s authorized keys in place
        (until then, logins as ubuntu are refused)."""
        keys_file = self.directory / "authorized_keys"
        keys_file.write_text("".join(k.strip() + "\n" for k in keys))
        target = "/home/ubuntu/.ssh/authorized_keys"
        script = (
            f"cp {shlex.quote(str(keys_file))} {target} && chown {UBUNTU_UID}:{UBUNTU_UID} "
            f"{target} && chmod 600 {target}"
        )
        run(["nsenter", "-t", str(self.sshd_pid), "-m", "--", "sh", "-c", script])

    def unlink_device(self, name: str) -> None:
        if self.alive():
            run(
                [
                    "nsenter",
                    "-t",
                    str(self.sshd_pid),
                    "-m",
                    "--",
                    "rm",
                    "-f",
                    f"{DEVICE_DIR}/{name}",
                ]
            )

    @staticmethod
    def _link(name: str) -> str:
        return f"{DEVICE_DIR}/{name}"

    def has_mounted(self, device: str) -> bool:
        """Whether a filesystem on ``device`` is mounted inside the instance."""
        try:
            rdev = os.stat(device).st_rdev
            mountinfo = Path(f"/proc/{self.sshd_pid}/mountinfo").read_text()
        except OSError:
            return False
        wanted = f"{os.major(rdev)}:{os.minor(rdev)}"
        return any(line.split()[2] == wanted for line in mountinfo.splitlines())

    def processes(self) -> list[tuple[int, int, str]]:
        """(pid, parent pid, command name) of every process of the instance but its sshd."""
        try:
            namespace = os.readlink(f"/proc/{self.sshd_pid}/ns/pid")
        except OSError:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == self.sshd_pid:
                continue
            try:
                if os.readlink(entry / "ns" / "pid") != namespace:
                    continue
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z":
                found.append((int(entry.name), int(fields[1]), name))
        return found

    def ssh_connections(self) -> list[int]:
        """Pids of the per-connection sshd processes (children of the listening sshd)."""
        return [
            pid
            for pid, parent, name in self.processes()
            if parent == self.sshd_pid and name in SSHD_CONNECTION_NAMES
        ]

    def cut_ssh(self) -> int:
        """Drop every SSH connection to the instance, as a network failure would; the
        listening sshd stays, so new connections are accepted. Kills the connections' sshd
        processes only: what ran in a session (rsync, a shell) sees its connection end.
        Returns the number of connections cut."""
        connections = self.ssh_connections()
        if not connections:
            return 0
        doomed = set(connections)
        processes = self.processes()
        grew = True
        while grew:  # their sshd descendants (the unprivileged per-session child)
            grew = False
            for pid, parent, name in processes:
                if parent in doomed and pid not in doomed and name in SSHD_CONNECTION_NAMES:
                    doomed.add(pid)
                    grew = True
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(connections)

    def kill(self, timeout: float = 10.0) -> None:
        # Kill pid 1 of the namespace; unshare then reaps it and exits by itself. Killing
        # unshare first would leave the sshd's zombie to whoever inherits it.
        kill_if_ours(self.sshd_pid, self.marker)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        if not wait_gone([self.unshare_pid], timeout):
            kill_if_ours(self.unshare_pid, self.marker)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        wait_gone([self.sshd_pid, self.unshare_pid], timeout)

    def save(self) -> None:
        write_json(
            self.directory / MACHINE_RECORD,
            {
                "instance_id": self.instance_id,
                "address": self.address,
                "unshare_pid": self.unshare_pid,
                "sshd_pid": self.sshd_pid,
                "host_key_public": self.host_key_public,
            },
        )

    @classmethod
    def load(cls, directory: Path) -> Machine | None:
        data = read_json(directory / MACHINE_RECORD)
        if data is None:
            return None
        return cls(
            instance_id=str(data["instance_id"]),
            directory=directory,
            address=str(data["address"]),
            unshare_pid=int(data["unshare_pid"]),
            sshd_pid=int(data["sshd_pid"]),
            host_key_public=str(data["host_key_public"]),
        )


def boot_machine(
    directory: Path,
    instance_id: str,
    address: str,
    hostname: str,
    authorized_keys: Sequence[str],
    host_keys: Sequence[tuple[str, str, str]] = (),
    bootcmd: str = "",
    timeout: float = 10.0,
) -> Machine:
    """Start the instance's sshd on ``address``:22 and return once it listens. ``host_keys``
    (type, private key, public line) are the sshd's keys, as cloud-init's ``ssh_keys`` makes
    them; none given: an ed25519 key is generated. ``bootcmd`` (a shell script) runs as root
    before the sshd starts, with the stand-ins of ``standin.py`` on its PATH."""
    directory.mkdir(parents=True, exist_ok=True)
    key_files = []
    for key_type, private, public_line in host_keys:
        path = directory / f"ssh_host_{key_type}_key"
        path.write_text(private)
        path.chmod(0o600)
        path.with_name(path.name + ".pub").write_text(public_line.strip() + "\n")
        key_files.append(path)
    if not key_files:
        key_files.append(directory / "ssh_host_ed25519_key")
        make_host_key(key_files[0], f"root@{hostname}")
    public = key_files[0].with_name(key_files[0].name + ".pub").read_text().strip()
    keys_file = directory / "authorized_keys"
    keys_file.write_text("".join(k.strip() + "\n" for k in authorized_keys))
    etc = directory / "etc"
    write_user_db(etc)
    config = directory / "sshd_config"
    config.write_text(sshd_config(address, key_files))
    (directory / "bootcmd.sh").write_text(bootcmd)
    boot = directory / "boot.sh"
    resize = write_resize2fs(directory)
    boot.write_text(boot_script(etc, keys_file, config, directory, resize))
    log_path = directory / "sshd.log"
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir

    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--pid",
                "--fork",
                "--kill-child",  # if unshare is killed, so is the sshd (pid 1 inside)
                "--mount-proc",
                "--propagation",
                "private",
                "sh",
                str(boot),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    machine = Machine(instance_id, directory, address, proc.pid, 0, public, proc)
    try:
        machine.sshd_pid = _wait_for_sshd(proc, log_path, address, timeout)
    except BaseException:
        machine.kill()
        raise
    machine.save()
    return machine


def _wait_for_sshd(
    proc: subprocess.Popen[bytes], log_path: Path, address: str, timeout: float
) -> int:
    deadline = time.monotonic() + timeout
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    listening = f"Server listening on {address} port 22"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with contextlib.suppress(OSError):
            pids = children.read_text().split()
            if pids and listening in log_path.read_text(errors="replace"):
                return int(pids[0])
        time.sleep(0.01)
    tail = log_path.read_text(errors="replace")[-2000:]
    raise HostError(f"sshd for {address} did not start: {tail.strip()}")


def sshd_config(address: str, host_keys: Sequence[Path]) -> str:
    return "\n".join(
        [
            f"ListenAddress {address}:22",
            *(f"HostKey {key}" for key in host_keys),
            "AuthorizedKeysFile .ssh/authorized_keys",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
            # PAM would want a full login stack; StrictModes would reject D's permissions.
            "UsePAM no",
            "StrictModes no",
            "PidFile none",
            "PrintMotd no",
            "X11Forwarding no",
            "MaxStartups 50:30:200",
            "Subsystem sftp /usr/lib/openssh/sftp-server",
            "",
        ]
    )


def boot_script(
    etc: Path,
    keys_file: Path,
    config: Path,
    directory: Path,
    resize2fs: tuple[Path, str] | None = None,
) -> str:
    """Runs as root inside the fresh namespaces: the instance's private mounts, the network
    stage's ``bootcmd`` (its failures logged, as cloud-init does), then becomes the sshd (pid
    1 there)."""
    q = shlex.quote
    lines = [
        "set -e",
        f"cd {q(str(directory))}",
        # The stand-ins for systemd's tools (standin.py), first on root's and sudo's PATH.
        f"mkdir -p {STANDIN_DIR}",
        f"mount --bind {q(str(directory / 'sbin'))} {STANDIN_DIR}",
        "mount -t tmpfs -o mode=0755 tmpfs /mnt",
        # Creates an empty /dev/disk/by-id on the host's /dev once; the tmpfs hides it here.
        f"mkdir -p {DEVICE_DIR}",
        f"mount -t tmpfs -o mode=0755 tmpfs {DEVICE_DIR}",
        "mount -t tmpfs -o mode=0755 tmpfs /home",
        # Each instance its own (empty) blkid cache, as a fresh EC2 instance has: the host's
        # describes whatever last had a /dev/loopN name, possibly another volume.
        "mkdir -p /run/blkid",
        "mount -t tmpfs -o mode=0755 tmpfs /run/blkid",
        "mkdir -p /home/ubuntu/.ssh",
        f"cp {q(str(keys_file))} /home/ubuntu/.ssh/authorized_keys",
        f"chown -R {UBUNTU_UID}:{UBUNTU_UID} /home/ubuntu",
        "chmod 700 /home/ubuntu/.ssh",
        "chmod 600 /home/ubuntu/.ssh/authorized_keys",
        # The ubuntu user exists only in here: private copies of the user database and sudoers.d.
        f"mount --bind {q(str(etc / 'passwd'))} /etc/passwd",
        f"mount --bind {q(str(etc / 'group'))} /etc/group",
        f"mount --bind {q(str(etc / 'shadow'))} /etc/shadow",
        f"mount --bind {q(str(etc / 'sudoers.d'))} /etc/sudoers.d",
        *(
            [f"mount --bind {q(str(resize2fs[0]))} {q(resize2fs[1])}"]
            if resize2fs is not None
            else []
        ),
        f"sh bootcmd.sh >>{CLOUD_INIT_LOG} 2>&1 || true",
        f"exec {q(sshd_path())} -D -e -f {q(str(config))}",
        "",
    ]
    return "\n".join(lines)


# --- loop devices -----------------------------------------------------------------------------


def attach_loop(image: Path) -> str:
    return run(["losetup", "-f", "--show", str(image)]).strip()


def loops_backed_under(root: Path) -> list[str]:
    """Loop devices whose backing file lies under ``root`` (also if it was deleted)."""
    out = run(["losetup", "--list", "--json", "--output", "NAME,BACK-FILE"])
    prefix = str(root.resolve()) + "/"
    devices = json.loads(out).get("loopdevices", []) if out.strip() else []
    return [d["name"] for d in devices if str(d.get("back-file") or "").startswith(prefix)]


def detach_loop(device: str) -> None:
    """Release ``device``. If a filesystem on it is still mounted in a dying namespace, the
    kernel detaches it when that mount goes away (autoclear)."""
    proc = subprocess.run(["losetup", "-d", device], capture_output=True, text=True, check=False)
    if proc.returncode != 0 and "No such device" not in proc.stderr:
        raise HostError(f"losetup -d {device} failed: {proc.stderr.strip()}")


def release_loops_under(root: Path, timeout: float = 10.0) -> list[str]:
    """Detach every loop device backed by a file under ``root``; return those still left."""
    deadline = time.monotonic() + timeout
    while True:
        left = loops_backed_under(root)
        if not left or time.monotonic() > deadline:
            return left
        for device in left:
            with contextlib.suppress(HostError):
                detach_loop(device)
        time.sleep(0.05)


def copy_sparse(source: Path, target: Path) -> None:
    tmp = target.with_name(target.name + ".tmp")
    run(["cp", "--sparse=always", "--reflink=auto", str(source), str(tmp)])
    os.replace(tmp, target)


def make_sparse(path: Path, size_gib: int) -> None:
    """Create ``path`` as a sparse file of ``size_gib``, or grow it to that size."""
    path.touch(exist_ok=True)
    if path.stat().st_size < size_gib * 1024**3:
        os.truncate(path, size_gib * 1024**3)


def kill_recorded_machines(instances_dir: Path, timeout: float = 10.0) -> None:
    """Kill every instance recorded under ``instances_dir`` that still runs."""
    machines = [m for d in sorted(instances_dir.glob("*")) if (m := Machine.load(d))]
    for m in machines:
        kill_if_ours(m.sshd_pid, m.marker)
    unshares = [m.unshare_pid for m in machines]
    if not wait_gone(unshares, timeout):
        for m in machines:
            kill_if_ours(m.unshare_pid, m.marker)
    wait_gone([p for m in machines for p in (m.sshd_pid, m.unshare_pid)], timeout)
