"""Restore's last step deletes its temporary volume; a volume already deleted (the step resumed
after a crash, or reap got there first) is success, on the fakes and through the real adapter
(in-process moto answers as EC2 does: InvalidVolume.NotFound)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from ec2backup.adapters.aws.client import Boto3Ec2
from ec2backup.core.states import DELETE_VOLUME, RunKind
from ec2backup.core.tags import TAG_MANAGED, TAG_ROLE, TAG_RUN_ID
from ec2backup.run.engine import run_step
from tests.run.cloudsteps import AZ, Bench, make_bench


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    made = make_bench(tmp_path)
    yield made
    made.store.close()


def restore_at_its_last_step(bench: Bench) -> str:
    return bench.new_run(RunKind.RESTORE, DELETE_VOLUME.active)


def record_volume(bench: Bench, run_id: str, volume_id: str) -> None:
    with bench.store.session() as session:
        bench.store.get_run(session, run_id).volume_id = volume_id
        session.commit()


def temporary_volume(bench: Bench, run_id: str) -> str:
    """The run's temporary volume, tagged as restore tags it, recorded on the run."""
    tags = {TAG_MANAGED: "true", TAG_ROLE: "restore", TAG_RUN_ID: run_id}
    volume_id = bench.ec2.add_volume(tags=tags).id
    record_volume(bench, run_id, volume_id)
    return volume_id


def test_a_volume_already_gone_is_success_and_not_deleted_again(bench: Bench) -> None:
    run_id = restore_at_its_last_step(bench)
    volume_id = temporary_volume(bench, run_id)
    del bench.ec2.volumes[volume_id]  # deleted before the crash, or by reap meanwhile
    with bench.context(run_id) as ctx:
        assert run_step(ctx, DELETE_VOLUME) == f"temporary volume {volume_id} deleted"
    assert "delete_volume" not in bench.ec2.calls


def test_a_volume_being_deleted_is_success_and_not_deleted_again(bench: Bench) -> None:
    run_id = restore_at_its_last_step(bench)
    volume_id = temporary_volume(bench, run_id)
    bench.ec2.volumes[volume_id] = replace(bench.ec2.volumes[volume_id], state="deleting")
    with bench.context(run_id) as ctx:
        assert run_step(ctx, DELETE_VOLUME) == f"temporary volume {volume_id} deleted"
    assert "delete_volume" not in bench.ec2.calls


# --- through the real adapter --------------------------------------------------------------


@pytest.fixture
def moto_ec2(monkeypatch: pytest.MonkeyPatch) -> Iterator[Boto3Ec2]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        session = boto3.session.Session(region_name="us-east-1")
        yield Boto3Ec2("us-east-1", session=session, poll_interval=0.001)


def test_the_adapter_deletes_a_deleted_or_unknown_volume_as_success(moto_ec2: Boto3Ec2) -> None:
    volume = moto_ec2.create_volume(AZ, 1, {TAG_MANAGED: "true"}, client_token="t-1")
    moto_ec2.delete_volume(volume.id)
    assert moto_ec2.get_volume(volume.id) is None
    moto_ec2.delete_volume(volume.id)  # again: already gone
    moto_ec2.delete_volume("vol-0123456789abcdef0")  # never existed


def test_the_step_through_the_adapter_when_reap_deleted_the_volume_first(
    bench: Bench, moto_ec2: Boto3Ec2, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step sees the volume available, and it is gone by the time DeleteVolume arrives."""
    run_id = restore_at_its_last_step(bench)
    tags = {TAG_MANAGED: "true", TAG_ROLE: "restore", TAG_RUN_ID: run_id}
    volume = moto_ec2.create_volume(AZ, 1, tags, client_token=f"{run_id}-restore")
    record_volume(bench, run_id, volume.id)
    real_wait = moto_ec2.wait_volume_available

    def deleted_meanwhile(volume_id: str, timeout: float) -> Any:
        found = real_wait(volume_id, timeout)
        boto3.client("ec2", region_name="us-east-1").delete_volume(VolumeId=volume_id)
        return found

    monkeypatch.setattr(moto_ec2, "wait_volume_available", deleted_meanwhile)
    bench.ec2 = moto_ec2  # type: ignore[assignment]
    with bench.context(run_id) as ctx:
        assert run_step(ctx, DELETE_VOLUME) == f"temporary volume {volume.id} deleted"
    assert moto_ec2.get_volume(volume.id) is None
