"""Growing the volume on the local cloud: ``ec2backup grow`` (ModifyVolume), the filesystem
grown at the next run, and ``auto_grow_max_gib`` growing it when the sources no longer fit.
Sizes are checked independently of ec2backup: EC2's answer, and the ext4 superblock of the
volume's image."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Cli, ec2_client, mounted_read_only, tree_digest

pytestmark = pytest.mark.e2e
GIB = 2**30


def filesystem_bytes(image: Path) -> int:
    """Block count times block size, from the superblock (dumpe2fs -h)."""
    out = subprocess.run(
        ["dumpe2fs", "-h", str(image)], capture_output=True, text=True, check=True
    ).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return int(fields["Block count"]) * int(fields["Block size"])


def ec2_size(ec2: Any, volume_id: str) -> int:
    (volume,) = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    return int(volume["Size"])


def test_grow_then_a_run_gives_the_volume_and_its_filesystem_the_new_size(
    cli: Cli, sandbox: Any, tmp_path: Path
) -> None:
    source = tmp_path / "home"
    source.mkdir()
    (source / "letter.txt").write_text("Dear grandma,\n")
    (source / "photo.bin").write_bytes(os.urandom(200_000))
    ec2 = ec2_client(sandbox)
    volume_id = cli(
        "init", "--profile", "g", "--az", "us-east-1a", "--size", "1", "--source", str(source)
    ).stdout.strip()
    image = sandbox.volume_image(volume_id)
    assert filesystem_bytes(image) == 1 * GIB

    grown = cli("grow", "--profile", "g", "--size", "2")
    assert grown.stdout == f"{volume_id} 2 GiB\n"
    assert "the filesystem grows to match at the next `ec2backup run --profile g`" in grown.stderr
    assert ec2_size(ec2, volume_id) == 2  # the modification reached optimizing: new size
    assert filesystem_bytes(image) == 1 * GIB  # nothing mounted it yet
    again = cli("grow", "--profile", "g", "--size", "2")  # safe to repeat: nothing asked twice
    assert again.returncode == 0
    (modification,) = ec2.describe_volumes_modifications(VolumeIds=[volume_id])[
        "VolumesModifications"
    ]
    assert (modification["OriginalSize"], modification["TargetSize"]) == (1, 2)

    run_id = cli("run", "--profile", "g").stdout.strip()
    shown = cli.json("show", run_id)
    assert shown["state"] == "done"
    (synced,) = [e for e in shown["events"] if e["to"] == "synced"]
    assert synced["detail"].startswith("filesystem grown from 1.00 GiB to 2.00 GiB")
    assert ec2_size(ec2, volume_id) == 2
    assert filesystem_bytes(image) == 2 * GIB
    with mounted_read_only(image) as mnt:
        assert tree_digest(mnt / "home") == tree_digest(source)

    # The next run finds nothing to grow; shrinking is refused, the volume left as it is.
    second = cli("run", "--profile", "g").stdout.strip()
    (synced,) = [e for e in cli.json("show", second)["events"] if e["to"] == "synced"]
    assert "grown" not in synced["detail"]
    shrink = cli("grow", "--profile", "g", "--size", "1", check=False)
    assert shrink.returncode == 2 and "EBS volumes cannot shrink" in shrink.stderr
    assert ec2_size(ec2, volume_id) == 2 and filesystem_bytes(image) == 2 * GIB


def test_a_run_whose_sources_no_longer_fit_grows_the_volume_up_to_auto_grow_max_gib(
    cli: Cli, sandbox: Any, tmp_path: Path
) -> None:
    source = tmp_path / "home"
    source.mkdir()
    (source / "small.txt").write_text("fits\n")
    ec2 = ec2_client(sandbox)
    volume_id = cli(
        "init", "--profile", "a", "--az", "us-east-1a", "--size", "1", "--source", str(source)
    ).stdout.strip()
    config = tmp_path / "config.toml"
    config.write_text(
        config.read_text().replace(
            "[profiles.a]\n", '[profiles.a]\nauto_grow_max_gib = 3\nrsync_args = ["--sparse"]\n'
        )
    )
    # 1 GiB of data (zeros written, not holes: a file's holes take no room on the volume, so
    # the space check counts only its data): more than a 1 GiB volume holds. --sparse turns
    # the zeros into holes on the volume, so its image stays small.
    chunk = b"\0" * (64 * 2**20)
    with (source / "big.bin").open("wb") as f:
        for _ in range(GIB // len(chunk)):
            f.write(chunk)
        f.write(b"the end\n")

    run_id = cli("run", "--profile", "a").stdout.strip()
    shown = cli.json("show", run_id)
    assert shown["state"] == "done", shown["error"]
    assert f"volume {volume_id} grown from 1 to 2 GiB (auto_grow_max_gib 3)" in shown["warnings"]
    assert ec2_size(ec2, volume_id) == 2
    image = sandbox.volume_image(volume_id)
    assert filesystem_bytes(image) == 2 * GIB
    with mounted_read_only(image) as mnt:
        copied = mnt / "home" / "big.bin"
        assert copied.stat().st_size == GIB + 8
        with copied.open("rb") as f:
            f.seek(GIB)
            assert f.read() == b"the end\n"
