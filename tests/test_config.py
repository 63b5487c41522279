from pathlib import Path

import pytest

from ec2backup.config import DEFAULT_AMI, Profile, Source, load_profile, write_profile
from ec2backup.errors import ConfigError

GOOD = """
# my backups
[profiles.laptop]
region = "eu-west-1"
availability_zone = "eu-west-1b"
volume_id = "vol-0123456789abcdef0"
sources = [{ path = "/home/me/docs", dest = "docs" }]
excludes = ["*.tmp"]
tags = { owner = "me" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_loads_a_profile_with_defaults(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, GOOD), "laptop")
    assert profile.region == "eu-west-1"
    assert profile.sources == (Source(path=Path("/home/me/docs"), dest="docs"),)
    assert profile.ami == DEFAULT_AMI and profile.ssh_user == "ubuntu" and profile.snapshot


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (GOOD.replace('"eu-west-1b"', '"us-east-1a"'), "availability_zone", "not in region"),
        (GOOD.replace('"vol-0123456789abcdef0"', '"volume-1"'), "volume_id", "not a volume id"),
        (GOOD.replace('"/home/me/docs"', '"docs"'), "sources[0].path", "absolute"),
        (GOOD.replace('dest = "docs"', 'dest = "../up"'), "sources[0].dest", "'..'"),
        (GOOD.replace('region = "eu-west-1"', 'regoin = "eu-west-1"'), "regoin", "not a known"),
        (GOOD.replace('region = "eu-west-1"\n', ""), "region", "required"),
        (GOOD + 'snapshot = "maybe"\n', "snapshot", "bool"),
        (GOOD.replace('owner = "me"', '"ec2backup:x" = "y"'), "tags", "reserved"),
        (GOOD + 'ami = "ubuntu"\n', "ami", "AMI id"),
        (GOOD.replace('dest = "docs"', 'dest = "./"'), "sources[0].dest", "not the mount point"),
        (GOOD + "max_delete_percent = 101\n", "max_delete_percent", "less than or equal to 100"),
        (GOOD + "max_delete_percent = -1\n", "max_delete_percent", "greater than or equal"),
    ],
)
def test_bad_values_name_file_profile_and_field(
    tmp_path: Path, text: str, field: str, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_profile(path, "laptop")
    message = info.value.one_line()
    assert str(path) in message and "'laptop'" in message and f"'{field}'" in message
    assert words in message
    assert "\n" not in message


def test_zone_outside_the_region_says_which_zones_fit(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('"eu-west-1b"', '"us-east-1a"'))
    with pytest.raises(ConfigError) as info:
        load_profile(path, "laptop")
    message = info.value.one_line()
    assert "availability zone us-east-1a is not in region eu-west-1" in message
    assert "set availability_zone to a zone of eu-west-1 (e.g. eu-west-1a)" in message
    assert "or set region to us-east-1" in message


def test_unknown_profile_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown profile 'work' \(known: laptop\)"):
        load_profile(write(tmp_path, GOOD), "work")


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found") as info:
        load_profile(tmp_path / "none.toml", "x")
    assert "ec2backup init" in info.value.one_line()
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_profile(write(tmp_path, "[profiles.x\n"), "x")
    with pytest.raises(ConfigError, match=r"no \[profiles.NAME\] table"):
        load_profile(write(tmp_path, "a = 1\n"), "x")


def test_write_profile_keeps_comments_and_other_profiles(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    new = Profile(
        name="server",
        region="us-east-1",
        availability_zone="us-east-1a",
        volume_id="vol-00000000000000001",
        sources=(Source(path=Path("/srv"), dest="srv"),),
        snapshot=False,
    )
    write_profile(path, new)
    text = path.read_text()
    assert "# my backups" in text
    assert load_profile(path, "laptop").volume_id == "vol-0123456789abcdef0"
    again = load_profile(path, "server")
    assert again == new
    assert "instance_type" not in text  # defaults are not written out


TWO = GOOD.replace(
    'sources = [{ path = "/home/me/docs", dest = "docs" }]',
    'sources = [{ path = "/home/a/docs", dest = "A" }, { path = "/home/b/docs", dest = "B" }]',
)


@pytest.mark.parametrize(
    ("a", "b", "words"),
    [
        ("docs", "docs", "sources /home/a/docs and /home/b/docs both copy to 'docs'"),
        ("docs", "docs/", "sources /home/a/docs and /home/b/docs both copy to 'docs'"),
        ("x/./docs", "x//docs", "both copy to 'x/docs'"),
        (
            "home",
            "home/docs",
            "source /home/b/docs copies to 'home/docs', inside 'home' where /home/a/docs is copied",
        ),
        (
            "home/docs",
            "home",
            "source /home/a/docs copies to 'home/docs', inside 'home' where /home/b/docs is copied",
        ),
    ],
)
def test_destinations_that_collide_or_nest_are_refused_naming_both_sources(
    tmp_path: Path, a: str, b: str, words: str
) -> None:
    path = write(
        tmp_path, TWO.replace('dest = "A"', f'dest = "{a}"').replace('dest = "B"', f'dest = "{b}"')
    )
    with pytest.raises(ConfigError) as info:
        load_profile(path, "laptop")
    message = info.value.one_line()
    assert words in message, message
    assert "field 'sources[1].dest'" in message and "dest of its own" in message


@pytest.mark.parametrize(("a", "b"), [("docs", "docs2"), ("home/a", "home/b"), ("a", "b/a")])
def test_neighbouring_destinations_are_fine(tmp_path: Path, a: str, b: str) -> None:
    path = write(
        tmp_path, TWO.replace('dest = "A"', f'dest = "{a}"').replace('dest = "B"', f'dest = "{b}"')
    )
    assert [s.dest for s in load_profile(path, "laptop").sources] == [a, b]


def test_max_delete_percent_defaults_to_half() -> None:
    assert (
        Profile(name="p", region="us-east-1", availability_zone="us-east-1a").max_delete_percent
        == 50
    )
