"""The launch's ClientToken, and what it launches, are committed before RunInstances is sent:
a process that dies during the call leaves in the database the token that finds the instance
again. Checked from inside the call, through another connection to the same database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ec2backup.commands.backup import start_backup
from ec2backup.core.tags import TAG_EXPIRES_AT, TAG_RUN_ID
from ec2backup.errors import CapacityError, CloudError
from ec2backup.ports import Instance, LaunchSpec
from tests.fakes import FakeEc2
from tests.run.cloudsteps import Bench, make_bench, recorded


@dataclass
class WitnessEc2(FakeEc2):
    """Reads the run's row through its own engine whenever RunInstances is called."""

    url: str = ""
    no_capacity: set[str] = field(default_factory=set)
    seen: list[tuple[LaunchSpec, dict[str, Any]]] = field(default_factory=list)

    def run_instance(self, spec: LaunchSpec) -> Instance:
        self.seen.append((spec, recorded(self.url, spec.tags[TAG_RUN_ID])))
        if spec.instance_type in self.no_capacity:
            raise CapacityError(f"no {spec.instance_type} in {spec.availability_zone}")
        return super().run_instance(spec)


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    made = make_bench(tmp_path)
    witness = WitnessEc2(az=made.ec2.az, volumes=made.ec2.volumes, url=made.url)
    made.ec2 = witness

    def stop_after_the_launch(name: str) -> None:
        if name == "attach_volume":  # a definite error: the run stops, resumable
            raise CloudError("stop here")

    witness.before = stop_after_the_launch
    source = tmp_path / "src"
    source.mkdir()
    (tmp_path / "config.toml").write_text(
        f'[profiles.p]\nregion = "us-east-1"\navailability_zone = "{made.ec2.az}"\n'
        f'volume_id = "{made.volume_id}"\ninstance_type = "t3.micro"\n'
        'fallback_instance_types = ["t3.small"]\n'
        f'sources = [{{ path = "{source}", dest = "src" }}]\n'
    )
    yield made
    made.store.close()


def launches(bench: Bench) -> list[tuple[LaunchSpec, dict[str, Any]]]:
    with pytest.raises(CloudError, match="stop here"):
        start_backup(bench.app, "p")
    assert isinstance(bench.ec2, WitnessEc2)
    return bench.ec2.seen


def assert_committed_before_the_call(spec: LaunchSpec, row: dict[str, Any]) -> None:
    assert row["state"] == "launching"
    assert row["launch_token"] == spec.client_token
    # The same token must always send the same parameters: they are committed with it.
    assert row["config"]["instance_type"] == spec.instance_type
    assert row["config"]["image_id"] == spec.image_id
    assert row["config"]["expires_at"] == spec.tags[TAG_EXPIRES_AT]


def test_the_token_is_committed_before_run_instances(bench: Bench) -> None:
    ((spec, row),) = launches(bench)
    assert spec.client_token
    assert_committed_before_the_call(spec, row)


def test_each_fallback_launch_commits_its_own_token_first(bench: Bench) -> None:
    assert isinstance(bench.ec2, WitnessEc2)
    bench.ec2.no_capacity = {"t3.micro"}
    (first, first_row), (second, second_row) = launches(bench)
    assert (first.instance_type, second.instance_type) == ("t3.micro", "t3.small")
    assert first.client_token != second.client_token
    assert_committed_before_the_call(first, first_row)
    assert_committed_before_the_call(second, second_row)
    assert second_row["launch_attempt"] == first_row["launch_attempt"] + 1
