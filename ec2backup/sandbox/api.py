"""The Python face of the sandbox, used by the tests, the demo and the CLI. Imports neither
moto nor boto3 (``create_iam_user`` imports boto3 when called): the server runs in its own
process."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import EnvironmentProblem
from .host import Machine, is_running, kill_recorded_machines, release_loops_under
from .layout import CHECKIP_PATH, NEXT_INSTANCE, Layout, read_json
from .settings import CloudSettings

SERVER_MODULE = "ec2backup.sandbox.server"
REQUIRED_TOOLS = (
    "sshd",
    "ssh",
    "ssh-keygen",
    "rsync",
    "losetup",
    "unshare",
    "nsenter",
    "sudo",
    "mkfs.ext4",
)
ACCESS_KEY = "testing"  # moto maps it to its default account, 123456789012

# Server processes started by this process, kept so they are reaped (no zombies, no
# ResourceWarning) when stopped from here.
_children: dict[int, subprocess.Popen[bytes]] = {}


class SandboxError(EnvironmentProblem):
    """The local cloud cannot be started, found or stopped."""


def require_root() -> None:
    if os.geteuid() != 0:
        raise SandboxError(
            "the local cloud needs root (it runs sshd, loop devices and mount namespaces):"
            " run it as root"
        )


def missing_tools() -> list[str]:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [tool for tool in REQUIRED_TOOLS if shutil.which(tool, path=path) is None]


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise SandboxError(
            f"the local cloud needs {', '.join(missing)}: run `make system-deps` as root"
        )


@dataclass(frozen=True)
class Sandbox:
    directory: Path
    region: str
    endpoint_url: str
    default_ami_id: str
    server_pid: int
    iam: bool = False
    """IAM enforced: requests must be signed by an IAM user's key (``create_iam_user``)."""
    access_key_id: str = ACCESS_KEY
    """The key ``env`` holds: in IAM mode, that of an administrator made at start."""
    secret_access_key: str = field(default=ACCESS_KEY, repr=False)
    ami_ids: dict[str, str] = field(default_factory=dict, compare=False)
    """The seeded Ubuntu AMIs by architecture (``x86_64`` is ``default_ami_id``, ``arm64``)."""

    @property
    def env(self) -> dict[str, str]:
        """Environment for boto3 and ec2backup to talk to this sandbox (as its administrator
        in IAM mode)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            # Never let botocore look for credentials on 169.254.169.254.
            "AWS_EC2_METADATA_DISABLED": "true",
            # This host's address as the local cloud sees it (the client_address setting),
            # asked where ec2backup asks checkip.amazonaws.com on AWS.
            "EC2BACKUP_CHECKIP_URL": self.endpoint_url + CHECKIP_PATH,
        }

    @property
    def layout(self) -> Layout:
        return Layout(self.directory)

    @classmethod
    def start(
        cls,
        directory: Path,
        *,
        region: str = "us-east-1",
        timeout: float = 60.0,
        iam: bool = False,
        **settings: Any,
    ) -> Sandbox:
        """Start a sandbox keeping its files in ``directory``; return once it answers.

        ``iam``: enforce IAM (see ``create_iam_user``). ``settings``: fault and timing settings,
        the fields of ``CloudSettings`` (``throttle_rate=0.1, boot_delay=3, ...``); change them
        later with ``configure_faults``."""
        require_root()
        require_tools()
        try:
            initial = CloudSettings(**settings)
        except (TypeError, ValueError) as e:
            raise SandboxError(f"bad sandbox settings: {e}") from None
        layout = Layout(Path(directory).resolve())
        try:
            running: Sandbox | None = cls.open(layout.root)
        except SandboxError:
            running = None
        if running is not None:
            # Starting over it would end the cloud another terminal (or test) is using.
            d = shlex.quote(str(layout.root))
            raise SandboxError(
                f"a sandbox already runs in {layout.root} (server pid {running.server_pid});"
                f' print its variables again with `eval "$(ec2backup sandbox env --dir {d})"`,'
                f" or stop it first with `ec2backup sandbox stop --dir {d}`"
            )
        stop_sandbox(layout.root)  # leftovers of a server that died without cleaning up
        layout.make_dirs()
        initial.save(layout.settings)

        package_parent = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_parent, env.get("PYTHONPATH", "")) if p
        )
        with layout.server_log.open("ab") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    SERVER_MODULE,
                    "--dir",
                    str(layout.root),
                    "--region",
                    region,
                    *(["--iam"] if iam else []),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own session: it outlives us and our process group's signals.
                start_new_session=True,
            )
        _children[proc.pid] = proc

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = read_json(layout.state)
            if state is not None and state.get("pid") == proc.pid:
                return cls.open(layout.root)
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        stop_sandbox(layout.root)
        tail = layout.server_log.read_text(errors="replace")[-3000:].strip()
        raise SandboxError(f"the sandbox server did not start; {layout.server_log}:\n{tail}")

    @classmethod
    def open(cls, directory: Path) -> Sandbox:
        """The sandbox already running in ``directory``."""
        layout = Layout(Path(directory).resolve())
        state = read_json(layout.state)
        if state is None or not _is_server(int(state.get("pid", 0)), layout):
            raise SandboxError(f"no sandbox is running in {layout.root}")
        return cls(
            directory=layout.root,
            region=str(state["region"]),
            endpoint_url=str(state["endpoint_url"]),
            default_ami_id=str(state["default_ami_id"]),
            server_pid=int(state["pid"]),
            iam=bool(state.get("iam", False)),
            access_key_id=str(state.get("access_key_id", ACCESS_KEY)),
            secret_access_key=str(state.get("secret_access_key", ACCESS_KEY)),
            ami_ids={str(k): str(v) for k, v in dict(state.get("ami_ids") or {}).items()},
        )

    # --- faults and timing -------------------------------------------------------------------

    @property
    def settings(self) -> CloudSettings:
        """The fault and timing settings in force."""
        return CloudSettings.load(self.layout.settings)

    def configure_faults(self, **changes: Any) -> CloudSettings:
        """Change fault and timing settings of the running sandbox (fields of
        ``CloudSettings``; the others stay) and return the new settings. The server applies
        them from its next EC2 call: the n-th call of an action then gets the same fault for
        the same ``fault_seed``. Delays apply to state changes started afterwards;
        ``minute_seconds`` to instances booted afterwards."""
        try:
            updated = self.settings.replace(**changes)
        except (TypeError, ValueError) as e:
            raise SandboxError(f"bad sandbox settings: {e}") from None
        updated.save(self.layout.settings)
        return updated

    def reset_faults(self) -> CloudSettings:
        """Back to the defaults: no faults, no delays, a minute of 60 s."""
        CloudSettings().save(self.layout.settings)
        return CloudSettings()

    @contextlib.contextmanager
    def configured(self, **changes: Any) -> Iterator[CloudSettings]:
        """``configure_faults(**changes)`` for the ``with`` block; the settings from before are
        restored after it, also when it fails."""
        before = self.settings
        try:
            yield self.configure_faults(**changes)
        finally:
            before.save(self.layout.settings)

    # --- SSH faults --------------------------------------------------------------------------

    def ssh_connections(self, instance_id: str) -> int:
        """How many SSH connections the instance's sshd serves now."""
        machine = self._machine(instance_id)
        return len(machine.ssh_connections()) if machine else 0

    def cut_ssh(self, instance_id: str) -> int:
        """Drop every SSH connection to the instance, as a network failure would: the clients
        see their connection end (ssh exits 255, rsync 12 or 255) and what ran in the sessions
        sees end of file. The instance stays up and accepts new connections. Returns how many
        connections were cut (0: none open, or no such live instance)."""
        machine = self._machine(instance_id)
        return machine.cut_ssh() if machine else 0

    def _machine(self, instance_id: str) -> Machine | None:
        machine = Machine.load(self.layout.instance_dir(instance_id))
        return machine if machine is not None and machine.alive() else None

    # --- IAM ---------------------------------------------------------------------------------

    def create_iam_user(self, name: str, policy_document: dict[str, Any]) -> dict[str, str]:
        """Create IAM user ``name`` holding ``policy_document`` (an inline policy) with the
        sandbox's administrator key; return its ``AWS_ACCESS_KEY_ID`` and
        ``AWS_SECRET_ACCESS_KEY`` (use with ``{**sandbox.env, **keys}``). Only an IAM sandbox
        (``iam=True``) enforces the policy (per resource, with conditions: ``iam.py``)."""
        import boto3  # here, not at the top: the CLI's --help must not import it

        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )
        iam.create_user(UserName=name)
        iam.put_user_policy(
            UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(policy_document)
        )
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }

    def volume_image(self, volume_id: str) -> Path:
        """The sparse image file backing ``volume_id``."""
        return self.layout.volume_image(volume_id)

    def snapshot_image(self, snapshot_id: str) -> Path:
        """The copy of the volume's image taken when ``snapshot_id`` was created."""
        return self.layout.snapshot_image(snapshot_id)

    def fake_console_host_key(self, instance_id: str | None = None) -> None:
        """Make the console of ``instance_id`` (or, without one, of the next instance
        launched) show a host key other than the one its sshd presents: a man in the middle."""
        self.layout.console_overrides.mkdir(parents=True, exist_ok=True)
        (self.layout.console_overrides / (instance_id or NEXT_INSTANCE)).write_text("impostor\n")

    def kept(self) -> dict[str, list[dict[str, Any]]]:
        """The volumes, snapshots and security groups the sandbox holds (as last recorded by
        its server, at most a moment ago), which a stop and a start keep."""
        return kept_resources(self.directory)

    def stop(self) -> None:
        """Terminate all instances and the server; leaves no process, mount, loop device or
        namespace behind. Volumes, snapshots (their images) and security groups stay: the next
        ``start`` in the directory brings them back with their ids."""
        stop_sandbox(self.directory)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def kept_resources(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """What ``D/resources.json`` records (``resources.py``), those with an image still in D:
    ``{"volumes": [...], "snapshots": [...], "security_groups": [...]}``."""
    layout = Layout(Path(directory).resolve())
    data = read_json(layout.resources) or {}
    return {
        "volumes": [v for v in data.get("volumes", []) if layout.volume_image(v["id"]).exists()],
        "snapshots": [
            s for s in data.get("snapshots", []) if layout.snapshot_image(s["id"]).exists()
        ],
        "security_groups": list(data.get("security_groups", [])),
    }


def _is_server(pid: int, layout: Layout) -> bool:
    if pid <= 0 or not is_running(pid):
        return False
    try:
        line = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in line]
    return SERVER_MODULE in args and str(layout.root) in args


def stop_sandbox(directory: Path, timeout: float = 30.0) -> None:
    """Stop the sandbox in ``directory``, and clean up from its records even if its server
    died without doing so. Safe to call when nothing runs."""
    layout = Layout(Path(directory).resolve())
    pid = 0
    with contextlib.suppress(OSError, ValueError):
        pid = int(layout.server_pid.read_text().strip())
    if _is_server(pid, layout):
        os.kill(pid, signal.SIGTERM)  # the server cleans up after itself
        if not _wait(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait(pid, 5.0)
    child = _children.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(5.0)

    # Whatever the server left (it was killed, or crashed): from the records in D.
    kill_recorded_machines(layout.instances)
    left = release_loops_under(layout.root)
    layout.state.unlink(missing_ok=True)
    layout.server_pid.unlink(missing_ok=True)
    if left:
        raise SandboxError(f"loop devices still busy after stopping: {' '.join(left)}")


def _wait(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_running(pid):
        child = _children.get(pid)
        if child is not None and child.poll() is not None:
            break
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
