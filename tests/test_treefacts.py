"""treefacts: hard-link groups, holes and recent changes of a real tree, locally and run as the
instance runs it (``python3 -c SOURCE ROOT`` with the paths on stdin)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ec2backup import treefacts

ODD = os.fsdecode(b"caf\xc3\xa9 and \xff\xfe")  # UTF-8 and bytes that are not


def sparse(path: Path, size: int, data_at: tuple[int, ...] = (0,)) -> None:
    with path.open("wb") as f:
        f.truncate(size)
        for offset in data_at:
            f.seek(offset)
            f.write(os.urandom(4096))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "sub dir").mkdir(parents=True)
    (root / "a").write_text("linked\n")
    os.link(root / "a", root / "sub dir" / "b")
    os.link(root / "a", root / ODD)
    (root / "single").write_text("alone\n")
    sparse(root / "holes", 64 * 2**20, (0, 32 * 2**20))
    (root / "dense").write_bytes(os.urandom(100_000))
    (root / "link").symlink_to("a")
    return root


def test_walk_finds_hard_link_groups_and_holes(tree: Path) -> None:
    found = treefacts.walk(tree)
    assert found["groups"] == [sorted(["a", "sub dir/b", ODD])]
    ((path, (size, data)),) = found["holes"].items()
    assert path == "holes" and size == 64 * 2**20
    assert 8192 <= data <= 64 * 1024  # two 4 KiB extents, whatever the block size rounds


def test_lookup_tells_inodes_and_data_of_the_asked_paths(tree: Path) -> None:
    facts = treefacts.lookup(tree, ["a", ODD, "holes", "dense", "link", "sub dir", "nope"])
    assert set(facts) == {"a", ODD, "holes", "dense"}  # regular files that exist
    assert facts["a"][0] == facts[ODD][0] != facts["dense"][0]
    assert facts["dense"][1] == 100_000  # no holes: its size
    assert facts["holes"][1] < 2**20


def next_tick(tree: Path) -> int:
    """A moment after every inode change in ``tree``, as the file system's clock tells it
    (which ticks coarsely): a probe beside the tree is touched until its ctime has moved on."""
    latest = max(p.lstat().st_ctime_ns for p in [tree, *tree.rglob("*")])
    probe = tree.parent / "probe"
    deadline = time.monotonic() + 10
    while True:
        probe.write_text("tick")
        now = probe.stat().st_ctime_ns
        if now > latest:
            return now
        assert time.monotonic() < deadline, "the file system's clock did not move"


def test_changed_since_lists_files_changed_after_a_moment(tree: Path) -> None:
    moment = next_tick(tree)
    assert treefacts.changed_since(tree, moment, 10) == ([], 0)
    (tree / "dense").write_bytes(b"new")
    (tree / "sub dir" / "new").write_text("new\n")
    os.chmod(tree / "single", 0o600)
    found, count = treefacts.changed_since(tree, moment, 10)
    assert sorted(found) == ["dense", "single", "sub dir/new"] and count == 3
    assert treefacts.changed_since(tree, moment, 1)[1] == 3  # counted beyond the limit


def test_the_instance_script_answers_in_json_for_odd_names(tree: Path) -> None:
    python3 = shutil.which("python3", path="/usr/bin:/bin") or shutil.which("python3")
    assert python3 is not None
    done = subprocess.run(
        [python3, "-c", (Path(treefacts.__file__)).read_text(), str(tree)],
        input=json.dumps(["holes", ODD, "single"]),
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.isascii()  # JSON with ensure_ascii: safe over a UTF-8 channel
    found = json.loads(done.stdout)
    assert found["groups"] == treefacts.walk(tree)["groups"]
    assert set(found["facts"]) == {"holes", ODD, "single"}
    assert found["facts"][ODD][0] == treefacts.lookup(tree, ["a"])["a"][0]
