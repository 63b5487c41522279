"""What a step works with: the run, its recorder (to commit resource ids the moment they are
known), the resolved profile and the adapters behind the ``ports`` interfaces."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Profile
from ..core.tags import TAG_KIND, TAG_MANAGED, TAG_PROFILE, TAG_RUN_ID
from ..db.models import Run
from ..db.recorder import RunRecorder
from ..errors import (
    InvalidResourceStateError,
)
from ..ports import (
    Ec2,
    InstanceConnector,
    InstanceHost,
    SshTarget,
    Syncer,
    TransferNote,
)
from .keeper import IdleKeeper
from .userdata import HostKeyPair


@dataclass
class StepContext:
    run: Run
    recorder: RunRecorder
    profile: Profile
    ec2: Ec2
    connector: InstanceConnector
    syncer: Syncer
    run_dir: Path
    key_path: Path
    public_key: str
    # The run's host key pair, handed to the instance in its user data (run/userdata.py).
    host_key: HostKeyPair | None = field(default=None, repr=False)
    progress: Callable[[str], None] = lambda _line: None
    on_state: Callable[[str], None] = lambda _state: None
    on_transfer: Callable[[TransferNote], None] = lambda _note: None
    host: InstanceHost | None = field(default=None, repr=False)  # the open session
    keeper: IdleKeeper | None = field(default=None, repr=False)  # re-arms the instance
    # After a failure: keep the instance (and the volume attached) for debugging, instead of
    # releasing them; the dead-man's switch still ends it after instance_idle_minutes.
    keep_instance: bool = False
    # Where SSH comes from (a CIDR: allow_ssh_from, or this host's address; None: unknown).
    client_cidr: Callable[[], str | None] = lambda: None
    # What EC2 showed of the run once a failure released what it could (engine.after_failure);
    # None: not looked, or EC2 could not be asked.
    left_seen: tuple[str, ...] | None = None

    @property
    def known_hosts(self) -> Path:
        return self.run_dir / "known_hosts"

    def ssh_target(self) -> SshTarget:
        if not self.run.ssh_address:
            raise InvalidResourceStateError(
                "the run has no SSH address recorded",
                run_id=self.run.id,
                resources=self.resources(),
            )
        return SshTarget(
            host=self.run.ssh_address,
            user=self.profile.ssh_user,
            key_path=self.key_path,
            known_hosts_path=self.known_hosts,
        )

    def tags(self) -> dict[str, str]:
        return {
            **self.profile.tags,
            TAG_MANAGED: "true",
            TAG_RUN_ID: self.run.id,
            TAG_PROFILE: self.run.profile,
            TAG_KIND: self.run.kind,
        }

    def close_host(self) -> None:
        """End the session to the instance, and stop keeping it alive from here."""
        if self.keeper is not None:
            self.keeper.stop()
        if self.host is not None:
            self.host.close()
            self.host = None

    def resources(self) -> dict[str, str]:
        ids = {"instance": self.run.instance_id, "volume": self.run.volume_id}
        return {k: v for k, v in ids.items() if v}
