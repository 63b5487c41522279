"""A real sshd on loopback (``tests/sshd.py``) with a per-benchmark key, as an ``SshTarget``
for ``RsyncSyncer`` and as a plain ``ssh`` command line for the raw-rsync baseline."""

from __future__ import annotations

import shlex
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .common import ROOT

sys.path.insert(0, str(ROOT / "tests"))
from sshd import SshServer, sshd_unavailable_reason

from ec2backup.adapters.keys import generate_run_key
from ec2backup.ports import SshTarget


@dataclass
class Host:
    server: SshServer
    target: SshTarget
    workdir: Path

    def raw_ssh(self, *options: str) -> str:
        """The ``-e`` of a plain ``rsync -a``: the same key and pinned host, default ssh
        options otherwise (plus whatever ``options`` adds, e.g. ``-c chacha20-...``)."""
        argv = [
            "ssh",
            "-i", str(self.target.key_path),
            "-o", f"UserKnownHostsFile={self.target.known_hosts_path}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-p", str(self.target.port),
            *options,
        ]  # fmt: skip
        return shlex.join(argv)

    def remote(self, path: Path | str) -> str:
        return f"{self.target.user}@{self.target.host}:{str(path).rstrip('/')}/"


def unavailable() -> str | None:
    return sshd_unavailable_reason()


@contextmanager
def ssh_host() -> Iterator[Host]:
    with tempfile.TemporaryDirectory(prefix="ec2backup-bench-ssh-") as tmp:
        key_path, public = generate_run_key(Path(tmp) / "key")
        with SshServer(authorized_keys=[public]) as server:
            known = Path(tmp) / "known_hosts"
            known.write_text(server.known_hosts_line())
            target = SshTarget(
                host=server.host,
                user="root",
                key_path=key_path,
                known_hosts_path=known,
                port=server.port,
            )
            yield Host(server=server, target=target, workdir=Path(tmp))
