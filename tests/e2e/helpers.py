"""Running the real `ec2backup` command against the local cloud, and looking at the results
independently of it (boto3 directly, the volume's image mounted read-only)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3


@dataclass
class Cli:
    env: Mapping[str, str]
    cwd: Path
    wrap: Sequence[str] = ()  # a command that runs the CLI, e.g. in its own namespaces

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.wrap, sys.executable, "-m", "ec2backup", *args],
            env={**os.environ, **self.env},
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"ec2backup {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> content hash, symlink target or 'dir', with the file mode."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel == "lost+found" or rel.startswith("lost+found/"):
            continue
        mode = oct(path.lstat().st_mode & 0o7777)
        if path.is_symlink():
            out[rel] = f"link:{os.readlink(path)}"
        elif path.is_dir():
            out[rel] = f"dir:{mode}"
        else:
            out[rel] = f"{hashlib.sha256(path.read_bytes()).hexdigest()}:{mode}"
    return out


@contextmanager
def mounted_read_only(image: Path) -> Iterator[Path]:
    """Mount a volume's image read-only (no journal replay) and always unmount it."""
    target = Path(tempfile.mkdtemp(prefix="ec2backup-verify-"))
    subprocess.run(["mount", "-o", "ro,loop,noload", str(image), str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)
        target.rmdir()


def superblock(image: Path) -> bytes:
    """A volume image's ext4 superblock: a read-write mount changes it (mount count and time,
    state), a read-only one with noload does not."""
    with image.open("rb") as f:
        f.seek(1024)
        return f.read(1024)


def make_sample_tree(root: Path) -> None:
    (root / "docs" / "deep" / "er").mkdir(parents=True)
    (root / "docs" / "notes.txt").write_text("remember the milk\n")
    (root / "docs" / "deep" / "er" / "file with spaces.md").write_text("# spaces\n")
    (root / "photos").mkdir()
    (root / "photos" / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (root / "photos" / "small.bin").write_bytes(os.urandom(10_000))
    (root / "link-to-notes").symlink_to("docs/notes.txt")
    (root / "private.key").write_text("secret\n")
    (root / "private.key").chmod(0o600)
    (root / "empty-dir").mkdir()


def ec2_client(sandbox: Any) -> Any:
    env = sandbox.env
    return boto3.client(
        "ec2",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def run_instances(ec2: Any, run_id: str) -> list[dict[str, Any]]:
    pages = ec2.describe_instances(Filters=[{"Name": "tag:ec2backup:run-id", "Values": [run_id]}])
    return [i for r in pages["Reservations"] for i in r["Instances"]]


def assert_clean_after(ec2: Any, run_id: str, volume_id: str) -> None:
    instances = run_instances(ec2, run_id)
    assert instances, "the run's instance should still be visible, terminated"
    assert {i["State"]["Name"] for i in instances} == {"terminated"}
    (volume,) = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    assert volume["State"] == "available" and volume["Attachments"] == []


EBS_BLOCK = 512 * 1024


def changed_blocks(earlier: Path, later: Path) -> int:
    """512 KiB blocks of ``later`` whose bytes differ from ``earlier``'s and are not all zero:
    what an EBS snapshot of ``later`` adds after one of ``earlier``, counted independently of
    the local cloud, by reading both images whole."""
    count = 0
    with earlier.open("rb") as a, later.open("rb") as b:
        while True:
            one, two = a.read(EBS_BLOCK), b.read(EBS_BLOCK)
            if not one and not two:
                return count
            if one != two and two.count(0) != len(two):
                count += 1
