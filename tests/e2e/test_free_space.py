"""The free-space check before rsync counts what is already on the volume: a backup needs room
only for what it adds. Made concrete on the local cloud by a volume almost full of other data
(a file outside the backup's destinations, allocated directly in the volume's image), so that
a second backup fits only because most of its data is there already, and a third one does not
fit at all."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Cli, assert_clean_after, ec2_client, mounted_read_only, tree_digest

pytestmark = pytest.mark.e2e

MiB = 2**20


@contextmanager
def mounted_read_write(image: Path) -> Iterator[Path]:
    """The image of a volume that is attached to nothing, mounted here; always unmounted."""
    target = Path(tempfile.mkdtemp(prefix="ec2backup-fill-"))
    subprocess.run(["mount", "-o", "loop", str(image), str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)
        target.rmdir()


def leave_free(image: Path, free: int) -> None:
    """Fill the volume's filesystem outside the backup's destinations until ``free`` bytes
    are left for an ordinary user (df's "avail", which ec2backup reads). Allocated, not
    written: instant, and the image stays sparse."""
    with mounted_read_write(image) as mnt:
        stat = os.statvfs(mnt)
        avail = stat.f_bavail * stat.f_frsize
        assert avail > free
        fd = os.open(mnt / "other-data", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, avail - free)
        finally:
            os.close(fd)
        stat = os.statvfs(mnt)
        assert abs(stat.f_bavail * stat.f_frsize - free) < MiB


def test_a_backup_needs_room_only_for_what_it_adds(cli: Cli, sandbox: Any, tmp_path: Path) -> None:
    ec2 = ec2_client(sandbox)
    source = tmp_path / "files"
    source.mkdir()
    (source / "old.bin").write_bytes(os.urandom(8 * MiB))
    volume_id = cli(
        "init", "--profile", "f", "--az", "us-east-1a", "--size", "1", "--source", str(source)
    ).stdout.strip()
    cli("run", "--profile", "f")
    image = sandbox.volume_image(volume_id)
    leave_free(image, 6 * MiB)

    # 11 MiB of sources, 8 of them on the volume already: 3 more fit in the 6 free.
    (source / "new.bin").write_bytes(os.urandom(3 * MiB))
    second = cli("run", "--profile", "f", check=False)
    assert second.returncode == 0, second.stderr
    assert cli.json("show", second.stdout.strip())["state"] == "done"
    with mounted_read_only(image) as mnt:
        assert tree_digest(mnt / "files") == tree_digest(source)
        kept = tree_digest(mnt / "files")

    # 10 MiB more, with 3 MiB left: refused before rsync, one line, the volume as it was.
    (source / "too-much.bin").write_bytes(os.urandom(10 * MiB))
    third = cli("run", "--profile", "f", check=False)
    assert third.returncode == 2, third.stderr
    last = third.stderr.strip().splitlines()[-1]
    assert "need about" in last and "free" in last and volume_id in last, third.stderr
    assert "Traceback" not in third.stderr
    (refused,) = [r for r in cli.json("runs") if r["state"] != "done"]
    shown = cli.json("show", refused["id"])
    assert shown["state"] == "aborted" and shown["snapshot_id"] is None
    assert_clean_after(ec2, refused["id"], volume_id)
    with mounted_read_only(image) as mnt:
        assert tree_digest(mnt / "files") == kept
