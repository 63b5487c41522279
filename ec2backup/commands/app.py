"""What every command works with: the database, the config file's path, the data directory and
the adapters to the outside world. Nothing heavy is imported here (CLI start-up)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..db.store import Store
from ..paths import default_data_dir
from ..ports import Ec2, InstanceConnector, SnapshotBlocks, Syncer, TransferNote


@dataclass
class Adapters:
    """Factories for the outside world, replaceable in tests."""

    ec2: Callable[[str, str | None], Ec2]
    connector: Callable[[], InstanceConnector]
    syncer: Callable[[], Syncer]
    # The EBS direct APIs (what each snapshot adds to the chain); None: not measured.
    blocks: Callable[[str, str | None], SnapshotBlocks] | None = None

    @classmethod
    def real(cls) -> Adapters:
        # Imported when first called, not here: every App builds these, and read-only
        # commands (`runs`, `show`) must not pay for boto3 and asyncssh (~0.3 s).
        def ec2(region: str, run_id: str | None) -> Ec2:
            from ..adapters.aws.session import make_ec2

            return make_ec2(region, run_id)

        def connector() -> InstanceConnector:
            from ..adapters.host import SshInstanceConnector

            return SshInstanceConnector()

        def syncer() -> Syncer:
            from ..adapters.rsync import RsyncSyncer

            return RsyncSyncer()

        def blocks(region: str, run_id: str | None) -> SnapshotBlocks:
            from ..adapters.aws.session import make_blocks

            return make_blocks(region, run_id)

        return cls(ec2=ec2, connector=connector, syncer=syncer, blocks=blocks)


@dataclass
class App:
    store: Store
    config_path: Path
    data_dir: Path = field(default_factory=default_data_dir)
    adapters: Adapters = field(default_factory=Adapters.real)
    progress: Callable[[str], None] = lambda _line: None
    on_state: Callable[[str], None] = lambda _state: None
    on_transfer: Callable[[TransferNote], None] = lambda _note: None
    keep_instance: bool = False  # a run that fails keeps its instance (--keep-instance)

    def run_dir(self, run_id: str) -> Path:
        # Owner-only all the way down: run directories hold private keys.
        runs = self.data_dir / "runs"
        for directory in (self.data_dir, runs):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.chmod(0o700)
        return runs / run_id
