"""What every command works with: the database, the config file's path, the data directory and
the adapters to the outside world. Nothing heavy is imported here (CLI start-up)."""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..db.store import Store
from ..paths import default_data_dir
from ..ports import Ec2, InstanceConnector, InstanceHost, SshTarget, Syncer


class BackgroundLoadedConnector:
    """The asyncssh connector, its module imported on a thread from now on.

    Importing asyncssh costs ~0.1 s of CPU (a quarter of it waiting for ldconfig and gcc,
    which it runs to look for liboqs). A run needs it only at its first SSH connection, after
    the launch and attach calls, during which this process mostly waits for EC2: the import
    fills that wait instead of adding to it. ``connect`` imports the module itself, so it
    simply waits (on Python's import lock) for an import still under way, and an import that
    failed on the thread fails here again with its real error."""

    def __init__(self) -> None:
        threading.Thread(
            target=_import_quietly,
            args=("ec2backup.adapters.host",),
            name="import-asyncssh",
            daemon=True,
        ).start()

    def connect(self, target: SshTarget, deadline: float) -> InstanceHost:
        from ..adapters.host import SshInstanceConnector

        return SshInstanceConnector().connect(target, deadline)


def _import_quietly(name: str) -> None:
    with contextlib.suppress(Exception):  # reported by the import in connect()
        importlib.import_module(name)


@dataclass
class Adapters:
    """Factories for the outside world, replaceable in tests."""

    ec2: Callable[[str, str | None], Ec2]
    connector: Callable[[], InstanceConnector]
    syncer: Callable[[], Syncer]

    @classmethod
    def real(cls) -> Adapters:
        # Imported when first called, not here: every App builds these, and read-only
        # commands (`runs`, `show`) must not pay for boto3 and asyncssh (~0.3 s).
        def ec2(region: str, run_id: str | None) -> Ec2:
            from ..adapters.aws.session import make_ec2

            return make_ec2(region, run_id)

        def connector() -> InstanceConnector:
            return BackgroundLoadedConnector()

        def syncer() -> Syncer:
            from ..adapters.rsync import RsyncSyncer

            return RsyncSyncer()

        return cls(ec2=ec2, connector=connector, syncer=syncer)


@dataclass
class App:
    store: Store
    config_path: Path
    data_dir: Path = field(default_factory=default_data_dir)
    adapters: Adapters = field(default_factory=Adapters.real)
    progress: Callable[[str], None] = lambda _line: None
    on_state: Callable[[str], None] = lambda _state: None
    keep_instance: bool = False  # a run that fails keeps its instance (--keep-instance)

    def run_dir(self, run_id: str) -> Path:
        # Owner-only all the way down: run directories hold private keys.
        runs = self.data_dir / "runs"
        for directory in (self.data_dir, runs):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.chmod(0o700)
        return runs / run_id
