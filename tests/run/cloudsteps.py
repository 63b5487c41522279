"""A run standing at one of its steps, on a real SQLite database and ``FakeEc2``, for testing
the steps that talk only to the cloud (volume, instance, snapshot) one at a time. Nothing here
reaches an instance: a step that tries SSH fails the test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ec2backup.adapters.keys import generate_host_key, generate_run_key
from ec2backup.commands.app import Adapters, App
from ec2backup.commands.runner import _create_run, new_run_id
from ec2backup.config import Profile
from ec2backup.core.states import TEMPORARY_VOLUME_KINDS, RunKind, RunState
from ec2backup.db.recorder import RunRecorder
from ec2backup.db.store import Store, open_store
from ec2backup.run import engine
from ec2backup.run.context import StepContext
from ec2backup.run.userdata import HostKeyPair
from tests.fakes import FakeEc2

AZ = "us-east-1a"


class NoInstanceSide:
    """Stands for the SSH connector and rsync: the cloud steps must not use them."""

    def connect(self, *args: object, **kwargs: object) -> Any:
        raise AssertionError("a cloud step tried to reach the instance")

    def check_available(self) -> None:
        pass

    def sync(self, *args: object, **kwargs: object) -> Any:
        raise AssertionError("a cloud step tried to run rsync")

    compare = sync


@dataclass
class Bench:
    tmp: Path
    url: str
    store: Store
    ec2: FakeEc2
    volume_id: str  # the backup volume
    snapshot_id: str  # a completed snapshot of it

    @property
    def app(self) -> App:
        nothing = NoInstanceSide()
        return App(
            store=self.store,
            config_path=self.tmp / "config.toml",
            data_dir=self.tmp / "data",
            adapters=Adapters(
                ec2=lambda _region, _run_id: self.ec2,
                connector=lambda: nothing,
                syncer=lambda: nothing,
            ),
        )

    def profile(self, kind: RunKind) -> Profile:
        if kind in TEMPORARY_VOLUME_KINDS - {RunKind.RESTORE}:
            return Profile(name="p", region="us-east-1", availability_zone=AZ, storage="snapshots")
        return Profile(
            name="p",
            region="us-east-1",
            availability_zone=AZ,
            # init makes the volume; the others use the profile's
            volume_id=None if kind == RunKind.INIT else self.volume_id,
        )

    def new_run(self, kind: RunKind, state: RunState) -> str:
        """A run of ``kind`` recorded in ``state``, as if the process had committed it."""
        extra: dict[str, Any] = {"image_id": "ami-0123456789abcdef0"}
        if kind == RunKind.INIT:
            extra |= {"size_gib": 1, "config_path": str(self.tmp / "config.toml")}
        if kind == RunKind.RESTORE:
            extra |= {
                "to": str(self.tmp / "restored"),
                "path": "",
                "live": False,
                "snapshot_id": self.snapshot_id,
                "size_gib": 1,
            }
        if kind == RunKind.SNAPSHOT_BACKUP:
            extra |= {"size_gib": 1, "base_snapshot_id": self.snapshot_id}
        if kind == RunKind.SNAPSHOT_INIT:
            extra |= {"size_gib": 1, "config_path": str(self.tmp / "config.toml")}
        run_id = new_run_id()
        _create_run(self.app, run_id, kind, self.profile(kind), extra)
        with self.store.session() as session:
            run = self.store.get_run(session, run_id)
            run.state = state
            made_volume = state not in (RunState.CREATED, RunState.CREATING_VOLUME)
            if (kind == RunKind.INIT or kind in TEMPORARY_VOLUME_KINDS) and made_volume:
                run.volume_id = self.volume_id  # any volume of the zone will do
            session.commit()
        return run_id

    @contextmanager
    def context(self, run_id: str) -> Iterator[StepContext]:
        """What ``commands.runner`` gives a process that drives the run: its own session, the
        run bound to its machine. Whatever is not committed when the block ends is lost, as
        when the process dies."""
        with self.store.session() as session:
            run = self.store.get_run(session, run_id)
            profile = Profile.model_validate(run.config["profile"])
            run_dir = self.app.run_dir(run_id)
            key_path, public_key = generate_run_key(run_dir)
            host_key = HostKeyPair(*generate_host_key(run_dir))
            nothing = NoInstanceSide()
            ctx = StepContext(
                run=run,
                recorder=RunRecorder(session, run),
                profile=profile,
                ec2=self.ec2,
                connector=nothing,
                syncer=nothing,
                run_dir=run_dir,
                key_path=key_path,
                public_key=public_key,
                host_key=host_key,
            )
            engine.bind(run, ctx)
            yield ctx


def make_bench(tmp: Path) -> Bench:
    url = f"sqlite:///{tmp / 'ec2backup.db'}"
    ec2 = FakeEc2(az=AZ)
    volume = ec2.add_volume()
    snapshot = ec2.create_snapshot(volume.id, "an earlier backup", {})
    ec2.calls.clear()
    return Bench(tmp, url, open_store(url), ec2, volume.id, snapshot.id)


def recorded(url: str, run_id: str) -> dict[str, Any]:
    """The run's row as another process would read it now: through its own engine."""
    other = open_store(url)
    try:
        with other.session() as session:
            run = other.get_run(session, run_id)
            return {
                "state": run.state,
                "instance_id": run.instance_id,
                "volume_id": run.volume_id,
                "snapshot_id": run.snapshot_id,
                "launch_token": run.launch_token,
                "launch_attempt": run.launch_attempt,
                "config": dict(run.config),
            }
    finally:
        other.close()
