"""Writing in place through hard links: the names on the volume whose inode is no longer one
file at the source are removed before rsync ``--inplace`` runs, so no file ends up with another
one's data (rsync's own manual calls the alternative a "tug of war")."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from ec2backup.adapters.keys import generate_run_key
from ec2backup.adapters.rsync import RsyncSyncer
from ec2backup.config import Source
from ec2backup.ports import SshTarget
from ec2backup.run.steps.transfer import names_to_unlink

try:
    from sshd import SshServer, sshd_unavailable_reason
except ImportError:  # pragma: no cover
    from tests.sshd import SshServer, sshd_unavailable_reason

MP = "/mnt/ec2backup"


def _files(root: Path, **contents: bytes) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        (root / name).write_bytes(data)


def test_names_of_one_file_at_the_source_stay(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _files(src, a=b"same")
    os.link(src / "a", src / "b")
    group = (f"{MP}/home/a", f"{MP}/home/b")
    assert names_to_unlink(MP, [Source(path=src, dest="home")], [group]) == []


def test_a_broken_link_is_unlinked_on_the_volume(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _files(src, a=b"new a", b=b"old b", c=b"x")
    os.link(src / "c", src / "d")
    sources = [Source(path=src, dest="home")]
    # On the volume a, b, c and d were one file; at the source c and d still are.
    group = tuple(f"{MP}/home/{n}" for n in "abcd")
    assert names_to_unlink(MP, sources, [group]) == [f"{MP}/home/a", f"{MP}/home/b"]


def test_names_whose_source_is_gone_or_not_a_file_are_left_to_rsync(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _files(src, a=b"a")
    (src / "b").symlink_to("a")
    group = (f"{MP}/home/a", f"{MP}/home/b", f"{MP}/home/gone", "/elsewhere/x")
    assert names_to_unlink(MP, [Source(path=src, dest="home")], [group]) == []


def test_each_source_maps_its_own_destination(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    _files(one, f=b"1")
    _files(two, f=b"2")
    sources = [Source(path=one, dest="one"), Source(path=two, dest="one-more")]
    group = (f"{MP}/one/f", f"{MP}/one-more/f")
    assert names_to_unlink(MP, sources, [group]) == [f"{MP}/one/f"]


# --- with rsync over a real sshd ---------------------------------------------------------

needs_sshd = pytest.mark.skipif(
    sshd_unavailable_reason() is not None, reason=sshd_unavailable_reason() or ""
)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[SshTarget]:
    key, public = generate_run_key(tmp_path / "key")
    with SshServer(authorized_keys=[public]) as server:
        known_hosts = tmp_path / "key" / "known_hosts"
        known_hosts.write_text(server.known_hosts_line())
        yield SshTarget(server.host, "root", key, known_hosts, server.port)


def _groups(root: Path) -> list[tuple[str, ...]]:
    """What the instance's ``find -links +1`` lists, for a local directory."""
    by_inode: dict[int, list[str]] = defaultdict(list)
    for path in root.rglob("*"):
        st = path.lstat()
        if path.is_file() and not path.is_symlink() and st.st_nlink > 1:
            by_inode[st.st_ino].append(str(path))
    return [tuple(sorted(g)) for g in by_inode.values() if len(g) > 1]


def _broken_link_at_the_source(target: SshTarget, tmp_path: Path) -> tuple[Path, Path]:
    """a and b were one file when backed up with -H; then a was replaced by a new file with
    other contents (as an editor saves), and b kept the old inode."""
    src, volume = tmp_path / "src", tmp_path / "volume"
    _files(src, a=os.urandom(300_000))
    os.link(src / "a", src / "b")
    (volume / "home").mkdir(parents=True)  # prepare_sync makes the destination
    RsyncSyncer().sync(src, target, str(volume / "home"), extra_args=["-H"])
    assert (volume / "home" / "a").stat().st_nlink == 2
    replacement = src / "a.new"
    data = bytearray((src / "a").read_bytes())
    data[1000:6000] = os.urandom(5000)
    replacement.write_bytes(bytes(data))
    # Seconds later (rsync's quick check compares whole seconds), as a later save is.
    later = (src / "b").stat().st_mtime + 60
    os.utime(replacement, (later, later))
    os.replace(replacement, src / "a")
    return src, volume


@needs_sshd
def test_in_place_after_unlinking_the_stale_names_restores_both_files(
    target: SshTarget, tmp_path: Path
) -> None:
    src, volume = _broken_link_at_the_source(target, tmp_path)
    sources = [Source(path=src, dest="home")]
    stale = names_to_unlink(str(volume), sources, _groups(volume))
    assert stale == [str(volume / "home" / "b")]
    for name in stale:
        os.unlink(name)

    RsyncSyncer().sync(src, target, str(volume / "home"), extra_args=["-H"])

    for name in ("a", "b"):
        assert (volume / "home" / name).read_bytes() == (src / name).read_bytes(), name
    assert (volume / "home" / "a").stat().st_nlink == 1


@needs_sshd
def test_without_unlinking_writing_in_place_leaves_a_file_wrong(
    target: SshTarget, tmp_path: Path
) -> None:
    # What the unlinking prevents: rsync writes each name in turn into the one inode.
    src, volume = _broken_link_at_the_source(target, tmp_path)
    RsyncSyncer().sync(src, target, str(volume / "home"), extra_args=["-H"])
    same = [(volume / "home" / n).read_bytes() == (src / n).read_bytes() for n in ("a", "b")]
    assert same.count(False) == 1
