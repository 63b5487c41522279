"""RsyncSyncer: the command it builds, how it reads rsync, and real transfers over sshd."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from ec2backup.adapters import rsync as sync
from ec2backup.adapters.hostkeys import known_hosts_lines
from ec2backup.adapters.keys import generate_run_key
from ec2backup.adapters.rsync import (
    RsyncSyncer,
    build_rsync_command,
    exit_to_result,
    split_stream,
)
from ec2backup.errors import SyncError, ToolMissingError
from ec2backup.ports import SshTarget, SyncStats

# tests/ is on sys.path without a package, or the repository root with one.
try:
    from sshd import SshServer, sshd_unavailable_reason
except ImportError:  # pragma: no cover
    from tests.sshd import SshServer, sshd_unavailable_reason

needs_sshd = pytest.mark.skipif(
    sshd_unavailable_reason() is not None, reason=sshd_unavailable_reason() or ""
)

SSH_E = (
    "ssh -o IdentitiesOnly=yes -o 'IdentityFile=\"/keys/run 1/id_ed25519\"' "
    "-o 'UserKnownHostsFile=\"/keys/run 1/known_hosts\"' -o GlobalKnownHostsFile=/dev/null "
    "-o StrictHostKeyChecking=yes -o BatchMode=yes "
    "-o Ciphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com "
    "-o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=4 -p 2222"
)
TARGET = SshTarget(
    host="203.0.113.9",
    user="ubuntu",
    key_path=Path("/keys/run 1/id_ed25519"),
    known_hosts_path=Path("/keys/run 1/known_hosts"),
    port=2222,
)


# --- the command -------------------------------------------------------------------------


def test_build_rsync_command_exact_arguments() -> None:
    argv = build_rsync_command(
        Path("/data/photos"),
        TARGET,
        "/mnt/ec2backup/photos",
        excludes=["*.tmp", "cache/"],
        extra_args=["--compress-choice=zstd"],
        remote_sudo=True,
    )
    assert argv == [
        "rsync",
        "-a",
        "--delete",
        "--inplace",
        "--stats",
        "--info=progress2",
        "--exclude=*.tmp",
        "--exclude=cache/",
        "--compress-choice=zstd",
        "--rsync-path=sudo -n rsync",
        "-e",
        SSH_E,
        "/data/photos/",
        "ubuntu@203.0.113.9:/mnt/ec2backup/photos/",
    ]


def test_build_rsync_command_minimal_and_relative_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = build_rsync_command(Path("-odd name"), TARGET, "/mnt/b/")
    # No sudo, no excludes; a relative source is made absolute so it never reads as an option.
    assert argv == [
        "rsync",
        "-a",
        "--delete",
        "--inplace",
        "--stats",
        "--info=progress2",
        "-e",
        SSH_E,
        f"{tmp_path}/-odd name/",
        "ubuntu@203.0.113.9:/mnt/b/",
    ]
    assert "StrictHostKeyChecking=no" not in " ".join(argv)


def test_a_backup_writes_in_place_and_a_restore_does_not() -> None:
    push = build_rsync_command(Path("/src"), TARGET, "/mnt/ec2backup/src")
    pull = build_rsync_command(Path("/restored"), TARGET, "/mnt/ec2backup/src", pull=True)
    assert "--inplace" in push and "--delete" in push
    # A local file is replaced only once its new copy is whole; nothing local is deleted.
    assert "--inplace" not in pull and "--delete" not in pull


def test_build_rsync_command_ipv6_and_default_port() -> None:
    target = SshTarget("2001:db8::5", "root", Path("/k"), Path("/kh"))
    argv = build_rsync_command(Path("/src"), target, "/dst")
    assert argv[-1] == "root@[2001:db8::5]:/dst/"
    assert argv[-3].endswith(" -p 22")


# --- reading rsync's output ----------------------------------------------------------------


def test_split_stream_splits_on_carriage_returns_across_chunks() -> None:
    chunks = [b"\r   10  1%  1kB/s", b"\r   20  2%  2kB/s\r", b"   30 100%\n\nNumber of", b": 4\n"]
    assert list(split_stream(iter(chunks))) == [
        "   10  1%  1kB/s",
        "   20  2%  2kB/s",
        "   30 100%",
        "Number of: 4",
    ]


def test_split_stream_does_not_hoard_an_endless_line() -> None:
    chunks = iter([b"x" * 600_000, b"x" * 600_000, b"y\n"])
    pieces = list(split_stream(chunks))
    assert "".join(pieces) == "x" * 1_200_000 + "y"
    assert max(len(p) for p in pieces) <= 1_300_000


STATS = {"files_transferred": 3, "bytes_sent": 4096, "total_size": 10_000}


def test_exit_0_is_success() -> None:
    assert exit_to_result(0, STATS, []) == SyncStats(3, 4096, 10_000, exit_code=0)


def test_exit_24_is_success_with_the_code_kept() -> None:
    tail = ["file has vanished: /data/tmp/x"]
    assert exit_to_result(24, STATS, tail) == SyncStats(3, 4096, 10_000, exit_code=24)


def test_exit_23_is_a_failure() -> None:
    tail = [
        'rsync: [sender] send_files failed to open "/data/secret": Permission denied (13)',
        "rsync error: some files/attrs were not transferred (see previous errors) (code 23)",
        "",
    ]
    with pytest.raises(SyncError) as info:
        exit_to_result(23, STATS, tail, host="203.0.113.9")
    assert info.value.rsync_exit == 23
    assert "exit code 23" in info.value.message
    assert "some files/attrs were not transferred" in info.value.message
    assert info.value.resources == {"host": "203.0.113.9"}
    assert info.value.run_id is None  # the caller adds it


@pytest.mark.parametrize("code", [1, 5, 12, 30, 255])
def test_other_exits_are_failures(code: int) -> None:
    with pytest.raises(SyncError) as info:
        exit_to_result(code, {}, ["rsync: connection unexpectedly closed"])
    assert info.value.rsync_exit == code


def test_death_by_signal_is_a_failure() -> None:
    with pytest.raises(SyncError) as info:
        exit_to_result(-9, STATS, [])
    assert "signal 9" in info.value.message


# --- tool checks ----------------------------------------------------------------------------


def _fake_tools(directory: Path, rsync_version: str | None, ssh: bool = True) -> None:
    directory.mkdir(exist_ok=True)
    if rsync_version is not None:
        script = directory / "rsync"
        # printf is a shell builtin: PATH holds nothing but these fakes.
        script.write_text(f"#!/bin/sh\nprintf '%s\\n' '{rsync_version}'\n")
        script.chmod(0o755)
    if ssh:
        script = directory / "ssh"
        script.write_text("#!/bin/sh\nexit 0\n")
        script.chmod(0o755)


OPENRSYNC = "openrsync: protocol version 29\nrsync version 2.6.9 compatible"
RSYNC_327 = "rsync  version 3.2.7  protocol version 31\nCopyright (C) 1996-2022 by Andrew Tridgell"


def test_check_available_rejects_openrsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_tools(tmp_path / "bin", OPENRSYNC)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(ToolMissingError) as info:
        RsyncSyncer().check_available()
    assert "openrsync" in info.value.message
    assert info.value.hint is not None and "rsync 3" in info.value.hint


def test_check_available_rejects_old_rsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_tools(tmp_path / "bin", "rsync  version 3.0.9  protocol version 30")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(ToolMissingError) as info:
        RsyncSyncer().check_available()
    assert "3.0" in info.value.message


def test_check_available_accepts_rsync_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_tools(tmp_path / "bin", RSYNC_327)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    RsyncSyncer().check_available()


def test_check_available_missing_rsync_or_ssh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_tools(tmp_path / "no-rsync", None)
    monkeypatch.setenv("PATH", str(tmp_path / "no-rsync"))
    with pytest.raises(ToolMissingError) as info:
        RsyncSyncer().check_available()
    assert info.value.hint is not None and "apt install rsync" in info.value.hint

    _fake_tools(tmp_path / "no-ssh", RSYNC_327, ssh=False)
    monkeypatch.setenv("PATH", str(tmp_path / "no-ssh"))
    with pytest.raises(ToolMissingError) as info:
        RsyncSyncer().check_available()
    assert info.value.hint is not None and "openssh-client" in info.value.hint


def test_the_real_tools_here_pass() -> None:
    RsyncSyncer().check_available()


def test_missing_source_fails_before_running_rsync(tmp_path: Path) -> None:
    # rsync_program does not exist: reaching Popen would give a different error.
    syncer = RsyncSyncer(rsync_program=str(tmp_path / "no-such-rsync"))
    with pytest.raises(SyncError) as info:
        syncer.sync(tmp_path / "missing", TARGET, "/mnt/x")
    assert "does not exist" in info.value.message
    assert info.value.rsync_exit is None


# --- real transfers -------------------------------------------------------------------------


@pytest.fixture
def run_key(tmp_path: Path) -> tuple[Path, str]:
    return generate_run_key(tmp_path / "run key")  # a space, to test -e quoting


@pytest.fixture
def server(run_key: tuple[Path, str]) -> Iterator[SshServer]:
    with SshServer(authorized_keys=[run_key[1]]) as srv:
        yield srv


@pytest.fixture
def target(server: SshServer, run_key: tuple[Path, str], tmp_path: Path) -> SshTarget:
    known_hosts = tmp_path / "run key" / "known_hosts"
    known_hosts.write_text(server.known_hosts_line())
    return SshTarget(server.host, "root", run_key[0], known_hosts, server.port)


def make_tree(root: Path) -> None:
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "c" / "deep.txt").write_text("deep\n")
    (root / "file with spaces.txt").write_text("spaces are fine\n")
    (root / "top.bin").write_bytes(os.urandom(200_000))
    (root / "a" / "notes.md").write_text("# notes\n" * 100)
    (root / "empty dir").mkdir()
    (root / "link").symlink_to("a/b/c/deep.txt")
    (root / "cache").mkdir()
    (root / "cache" / "junk.dat").write_bytes(b"j" * 5000)
    (root / "scratch.tmp").write_text("temporary\n")


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything rsync -a should reproduce: kinds, contents, link targets, modes."""
    result: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            result[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            result[rel] = ("dir", stat.S_IMODE(st.st_mode))
        else:
            result[rel] = ("file", path.read_bytes(), stat.S_IMODE(st.st_mode), int(st.st_mtime))
    return result


def tree_totals(root: Path) -> tuple[int, int]:
    """(regular files, total size as rsync counts it: file sizes plus symlink lengths)."""
    files = size = 0
    for path in root.rglob("*"):
        st = path.lstat()
        if stat.S_ISREG(st.st_mode):
            files += 1
            size += st.st_size
        elif stat.S_ISLNK(st.st_mode):
            size += len(os.readlink(path))
    return files, size


@needs_sshd
def test_mirrors_a_tree_and_reports_stats(target: SshTarget, tmp_path: Path) -> None:
    src, dst = tmp_path / "src dir", tmp_path / "dest dir"
    make_tree(src)
    progress: list[str] = []

    stats = RsyncSyncer().sync(src, target, str(dst), on_progress=progress.append)

    assert snapshot(dst) == snapshot(src)
    files, size = tree_totals(src)
    assert stats.exit_code == 0
    assert stats.files_transferred == files == 6
    assert stats.total_size == size
    assert stats.bytes_sent >= 200_000  # the random file cannot be compressed away
    assert stats.bytes_sent < size + 50_000
    assert progress, "no progress line was reported"
    assert all("%" in line and "\r" not in line for line in progress)
    assert "to-chk=0/" in progress[-1]


@needs_sshd
def test_second_run_transfers_only_the_change_and_mirrors_deletions(
    target: SshTarget, tmp_path: Path
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    syncer = RsyncSyncer()
    syncer.sync(src, target, str(dst))

    unchanged = syncer.sync(src, target, str(dst))
    assert unchanged.files_transferred == 0

    (src / "a" / "notes.md").write_text("# changed\n")
    os.utime(src / "a" / "notes.md", (1_700_000_000, 1_700_000_000))
    (src / "scratch.tmp").unlink()
    (src / "a" / "b" / "c" / "deep.txt").unlink()
    (src / "link").unlink()
    (src / "a" / "b" / "c").rmdir()
    (dst / "only-remote.txt").write_text("stale\n")

    stats = syncer.sync(src, target, str(dst))
    assert stats.files_transferred == 1
    assert stats.total_size == tree_totals(src)[1]
    assert snapshot(dst) == snapshot(src)
    assert not (dst / "only-remote.txt").exists()


@needs_sshd
def test_a_changed_file_is_written_in_place(target: SshTarget, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "disk.img").write_bytes(os.urandom(4 * 2**20))
    syncer = RsyncSyncer()
    syncer.sync(src, target, str(dst))
    inode = (dst / "disk.img").stat().st_ino

    with (src / "disk.img").open("r+b") as f:
        f.seek(2 * 2**20)
        f.write(os.urandom(4096))
    stats = syncer.sync(src, target, str(dst))

    # The same file, updated where it changed: no new copy was written and renamed over it.
    assert (dst / "disk.img").stat().st_ino == inode
    assert (dst / "disk.img").read_bytes() == (src / "disk.img").read_bytes()
    assert stats.files_transferred == 1 and stats.bytes_sent < 2**20


@needs_sshd
def test_excludes_are_honoured(target: SshTarget, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    stats = RsyncSyncer().sync(src, target, str(dst), excludes=["*.tmp", "/cache/"])
    assert not (dst / "scratch.tmp").exists()
    assert not (dst / "cache").exists()
    assert (dst / "top.bin").exists()
    assert stats.files_transferred == 4


@needs_sshd
def test_host_key_mismatch_fails_and_transfers_nothing(target: SshTarget, tmp_path: Path) -> None:
    keytype, blob = asyncssh.generate_private_key("ssh-ed25519").export_public_key().split()[:2]
    target.known_hosts_path.write_text(
        known_hosts_lines(target.host, target.port, [(keytype.decode(), blob.decode())])
    )
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    with pytest.raises(SyncError) as info:
        RsyncSyncer().sync(src, target, str(dst))
    # rsync reports ssh's death as 255 or, depending on timing, 12 (protocol stream).
    assert info.value.rsync_exit in (12, 255)
    assert "host key" in info.value.message
    assert not dst.exists()


@needs_sshd
def test_unknown_host_is_not_accepted(target: SshTarget, tmp_path: Path) -> None:
    target.known_hosts_path.write_text("")  # nothing pinned: ssh must not trust on first use
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    with pytest.raises(SyncError) as info:
        RsyncSyncer().sync(src, target, str(dst))
    assert info.value.rsync_exit in (12, 255)
    assert not dst.exists()
    assert target.known_hosts_path.read_text() == ""


@needs_sshd
def test_pull_restores_the_remote_tree_without_deleting_local_files(
    target: SshTarget, tmp_path: Path
) -> None:
    src, remote, restored = tmp_path / "src", tmp_path / "remote", tmp_path / "restored"
    make_tree(src)
    RsyncSyncer().sync(src, target, str(remote))
    restored.mkdir()
    (restored / "mine.txt").write_text("keep me\n")

    stats = RsyncSyncer().sync(restored, target, str(remote), pull=True)

    assert stats.files_transferred == tree_totals(src)[0]
    assert (restored / "mine.txt").read_text() == "keep me\n"  # a restore never deletes
    (restored / "mine.txt").unlink()
    assert snapshot(restored) == snapshot(src)


@needs_sshd
def test_compare_reports_each_difference_by_checksum_and_changes_nothing(
    target: SshTarget, tmp_path: Path
) -> None:
    src, remote = tmp_path / "src", tmp_path / "remote"
    make_tree(src)
    RsyncSyncer().sync(src, target, str(remote))
    assert RsyncSyncer().compare(src, target, str(remote)) == []

    # Same size and time, other content: only a checksum sees it.
    notes = src / "a" / "notes.md"
    st = notes.stat()
    notes.write_text("# NOTES\n" * 100)
    os.utime(notes, ns=(st.st_atime_ns, st.st_mtime_ns))
    (src / "new.txt").write_text("new\n")
    (src / "scratch.tmp").unlink()
    before = snapshot(remote)

    differences = RsyncSyncer().compare(src, target, str(remote))

    assert sorted(d.split(maxsplit=1)[1] for d in differences) == [
        "a/notes.md",
        "new.txt",
        "scratch.tmp",
    ]
    assert any(d.startswith("*deleting") and d.endswith("scratch.tmp") for d in differences)
    assert snapshot(remote) == before  # a dry run


def test_the_reader_pauses_after_progress_updates_only(monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)  # a read that would wait fails the test at once
    pauses: list[float] = []

    def sleep(seconds: float) -> None:  # the writer goes on while the reader pauses
        pauses.append(seconds)
        os.write(write_end, b"Number of files: 3\n")
        os.close(write_end)

    monkeypatch.setattr(sync.time, "sleep", sleep)
    os.write(write_end, b"\r          1,024  50%    1.00MB/s    0:00:01 (xfr#1, to-chk=1/3)")
    with os.fdopen(read_end, "rb") as stream:
        data = b"".join(sync._chunks(stream, pause_after_progress=0.01))
    assert data.endswith(b"to-chk=1/3)Number of files: 3\n")
    assert pauses == [0.01]  # after the update; not after the statistics, not at the end
