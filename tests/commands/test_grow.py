"""`grow`: one ModifyVolume for the profile's volume, safe to repeat after an interruption,
never smaller, and a modification under way to another size refused; with fakes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ec2backup.commands.app import Adapters, App
from ec2backup.commands.grow import grow
from ec2backup.db.store import open_store
from ec2backup.errors import UserInputError
from ec2backup.ports import VolumeModification
from tests.fakes import FakeConnector, FakeEc2, FakeSyncer


@pytest.fixture
def ec2() -> FakeEc2:
    return FakeEc2()


@pytest.fixture
def volume_id(ec2: FakeEc2) -> str:
    return ec2.add_volume(size_gib=1).id


@pytest.fixture
def app(tmp_path: Path, ec2: FakeEc2, volume_id: str) -> Iterator[App]:
    path = tmp_path / "config.toml"
    path.write_text(
        '[profiles.p]\nregion = "us-east-1"\navailability_zone = "us-east-1a"\n'
        f'volume_id = "{volume_id}"\n'
    )
    app = App(
        store=open_store(f"sqlite:///{tmp_path / 'db.sqlite'}"),
        config_path=path,
        data_dir=tmp_path / "data",
        adapters=Adapters(
            ec2=lambda _r, _id: ec2,  # type: ignore[arg-type,return-value]
            connector=FakeConnector,
            syncer=FakeSyncer,
        ),
    )
    yield app
    app.store.close()


def test_grow_asks_once_and_waits_for_the_new_size(app: App, ec2: FakeEc2, volume_id: str) -> None:
    result = grow(app, "p", 2)
    assert ec2.calls.count("modify_volume_size") == 1
    assert ec2.volumes[volume_id].size_gib == 2
    assert result["requested"] and result["modification"] == "optimizing"
    assert (result["previous_size_gib"], result["size_gib"]) == (1, 2)
    # Repeated (say after Ctrl-C): the size is there, nothing is asked twice.
    again = grow(app, "p", 2)
    assert ec2.calls.count("modify_volume_size") == 1 and not again["requested"]


def test_an_interrupted_grow_resumes_the_modification_under_way(
    app: App, ec2: FakeEc2, volume_id: str
) -> None:
    # Interrupted after ModifyVolume answered: the volume is being modified to the size asked.
    ec2.modifications[volume_id] = VolumeModification(volume_id, "modifying", 1, 3)
    result = grow(app, "p", 3)
    assert "modify_volume_size" not in ec2.calls and "wait_volume_resized" in ec2.calls
    assert result["modification"] == "optimizing" and not result["requested"]


def test_a_modification_under_way_to_another_size_is_refused(
    app: App, ec2: FakeEc2, volume_id: str
) -> None:
    ec2.modifications[volume_id] = VolumeModification(volume_id, "optimizing", 1, 3)
    with pytest.raises(UserInputError, match="already being modified to 3 GiB"):
        grow(app, "p", 4)
    assert "modify_volume_size" not in ec2.calls


def test_shrinking_and_sizes_out_of_range_are_refused(
    app: App, ec2: FakeEc2, volume_id: str
) -> None:
    grow(app, "p", 2)
    ec2.modifications[volume_id] = VolumeModification(volume_id, "completed", 1, 2, progress=100)
    with pytest.raises(UserInputError, match="is 2 GiB: EBS volumes cannot shrink"):
        grow(app, "p", 1)
    for size in (0, 16385):
        with pytest.raises(UserInputError, match="out of range"):
            grow(app, "p", size)
    assert ec2.calls.count("modify_volume_size") == 1
    assert ec2.volumes[volume_id].size_gib == 2
