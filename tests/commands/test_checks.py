"""The checks before anything is created: the volume, with the same rule the steps apply."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from ec2backup.commands.checks import check_volume, plan_launch
from ec2backup.config import Profile
from ec2backup.errors import ConfigError, UserInputError
from ec2backup.ports import Attachment
from ec2backup.run.steps.volume import volume_problem
from tests.fakes import FakeEc2


def profile(volume_id: str) -> Profile:
    return Profile(
        name="p", region="us-east-1", availability_zone="us-east-1a", volume_id=volume_id
    )


def test_a_usable_volume_passes() -> None:
    ec2 = FakeEc2()
    volume = ec2.add_volume()
    assert check_volume(profile(volume.id), ec2, "c.toml") == volume


def test_a_volume_in_another_zone_names_the_field_and_the_zone() -> None:
    ec2 = FakeEc2()
    volume = ec2.add_volume(az="us-east-1b")
    with pytest.raises(ConfigError) as err:
        check_volume(profile(volume.id), ec2, "c.toml")
    assert err.value.field == "availability_zone"
    assert err.value.hint == 'set availability_zone = "us-east-1b"'


def test_an_attached_volume_names_the_instance() -> None:
    ec2 = FakeEc2()
    volume = ec2.add_volume(
        state="in-use", attachments=(Attachment("i-0abc", "/dev/sdf", "attached"),)
    )
    with pytest.raises(UserInputError, match="attached to instance i-0abc"):
        check_volume(profile(volume.id), ec2, "c.toml")


def test_a_volume_that_is_not_ready_is_refused_before_a_run() -> None:
    ec2 = FakeEc2()
    volume = ec2.add_volume(state="creating")
    with pytest.raises(UserInputError, match="is creating"):
        check_volume(profile(volume.id), ec2, "c.toml")


def test_the_rule_lets_the_runs_own_instance_hold_the_volume() -> None:
    ec2 = FakeEc2()
    volume = ec2.add_volume(
        state="in-use", attachments=(Attachment("i-ours", "/dev/sdf", "attached"),)
    )
    assert volume_problem(volume, "us-east-1a", "i-ours") is None
    problem = volume_problem(volume, "us-east-1a", None)
    assert problem is not None and problem.other_instance == "i-ours"
    assert volume_problem(replace(volume, state="error"), "us-east-1a", "i-ours") is not None


VOLUME = "vol-0123456789abcdef0"


class OfferingsEc2(FakeEc2):
    """Records what each DescribeInstanceTypeOfferings was asked for."""

    def __init__(self, offered: set[str]) -> None:
        super().__init__()
        self.offered, self.asked = offered, list[tuple[str, ...]]()

    def offered_instance_types(self, availability_zone: str, only: Sequence[str] = ()) -> set[str]:
        self.asked.append(tuple(only))
        return self.offered & set(only) if only else set(self.offered)


def test_the_launch_check_asks_only_for_the_profiles_types() -> None:
    ec2 = OfferingsEc2({"t3.micro", "t3.small", "m5.large"})
    run_profile = Profile(
        name="p",
        region="us-east-1",
        availability_zone="us-east-1a",
        volume_id=VOLUME,
        fallback_instance_types=("t3.small",),
    )
    plan = plan_launch(run_profile, ec2, "c.toml")
    assert plan.instance_types == ("t3.micro", "t3.small")
    assert ec2.asked == [("t3.micro", "t3.small")]  # one filtered call, not the whole zone


def test_a_type_not_offered_lists_the_zones_types_as_suggestions() -> None:
    ec2 = OfferingsEc2({"t2.nano", "m5.large"})
    with pytest.raises(
        ConfigError, match=r"t3\.micro is not offered in us-east-1a; offered there: t2\.nano"
    ):
        plan_launch(profile(VOLUME), ec2, "c.toml")
    assert ec2.asked == [("t3.micro",), ()]  # the whole zone only for the suggestions
