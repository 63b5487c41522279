"""SshInstanceHost against a real sshd in its own namespaces, logged in as ``ubuntu`` with
passwordless sudo as on Ubuntu's AMIs, over real loop devices holding real ext4."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ec2backup.adapters.host import SshInstanceConnector, SshInstanceHost, privileged_command
from ec2backup.adapters.keys import generate_run_key
from ec2backup.errors import (
    DeviceNotFoundError,
    HostKeyError,
    InvalidResourceStateError,
    RemoteCommandError,
)
from ec2backup.ports import DeviceContents, SshTarget, Unmounted

# tests/ is on sys.path without a package, or the repository root with one.
try:
    from sshd import SshServer, sshd_unavailable_reason
except ImportError:  # pragma: no cover
    from tests.sshd import SshServer, sshd_unavailable_reason

_reason = sshd_unavailable_reason(instance=True) or (
    None if shutil.which("losetup") and shutil.which("mkfs.ext4") else "needs losetup, mkfs.ext4"
)
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")

MP = "/mnt/ec2backup"
VOLUME_ID = "vol-0123456789abcdef0"
NITRO_NAME = "nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0"


def test_privileged_scripts_run_under_sudo_for_a_non_root_user_only() -> None:
    script = "mkdir -p '/mnt/a b' && echo \"$HOME\" > /mnt/x"
    wrapped = privileged_command(script, "ubuntu")
    assert wrapped == ("sudo -n sh -c 'mkdir -p '\"'\"'/mnt/a b'\"'\"' && echo \"$HOME\" > /mnt/x'")
    # What sh -c receives is exactly the original script.
    assert shlex.split(wrapped) == ["sudo", "-n", "sh", "-c", script]
    assert privileged_command(script, "root") == script


@pytest.fixture
def run_key(tmp_path: Path) -> tuple[Path, str]:
    return generate_run_key(tmp_path / "run key")


@pytest.fixture
def instance(run_key: tuple[Path, str]) -> Iterator[SshServer]:
    with SshServer(authorized_keys=[run_key[1]], instance=True) as server:
        yield server


def connect(server: SshServer, run_key: tuple[Path, str], user: str) -> SshInstanceHost:
    target = SshTarget(
        server.host, user, run_key[0], run_key[0].parent / "known_hosts", server.port
    )
    connector = SshInstanceConnector()
    connector.pin_host_keys(target, [server.host_key])
    return connector.connect(target, time.monotonic() + 20)


def test_only_the_pinned_host_key_is_accepted(
    instance: SshServer, run_key: tuple[Path, str]
) -> None:
    from tests.fakes import another_host_key

    target = SshTarget(instance.host, "ubuntu", run_key[0], run_key[0].parent / "kh", instance.port)
    connector = SshInstanceConnector()
    with pytest.raises(ValueError, match="no host keys to pin"):
        connector.pin_host_keys(target, [])
    connector.pin_host_keys(target, [another_host_key()])
    assert (target.known_hosts_path.stat().st_mode & 0o777) == 0o600
    with pytest.raises(HostKeyError):
        connector.connect(target, time.monotonic() + 5)
    connector.pin_host_keys(target, [instance.host_key])  # replaces the other key
    with connector.connect(target, time.monotonic() + 20) as host:
        assert host.is_directory("/")


@pytest.fixture
def host(instance: SshServer, run_key: tuple[Path, str]) -> Iterator[SshInstanceHost]:
    with connect(instance, run_key, "ubuntu") as connected:
        yield connected


@dataclass
class Loop:
    image: Path
    device: str

    def superblock(self) -> bytes:
        with self.image.open("rb") as f:
            f.seek(1024)
            return f.read(1024)


@pytest.fixture
def loop(instance: SshServer, tmp_path: Path) -> Iterator[Loop]:
    """A 64 MiB loop device, unmounted (inside the instance) and released however the test
    ends."""
    image = tmp_path / "volume.img"
    with image.open("wb") as f:
        f.truncate(64 * 2**20)
    device = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        yield Loop(image, device)
    finally:
        try:
            if instance.sshd_pid is not None:
                instance.inside(
                    "sh", "-c", f"findmnt -n -o TARGET -S {device} | xargs -r -n1 umount"
                )
        finally:
            subprocess.run(["losetup", "-d", device], check=True)


@pytest.fixture
def volume(instance: SshServer, loop: Loop) -> Loop:
    """The loop device, linked under its Nitro name as an attached EBS volume is."""
    (instance.by_id / NITRO_NAME).symlink_to(loop.device)
    return loop


def sent_commands(host: SshInstanceHost, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The commands ``host`` sends from now on, one per round trip."""
    shell = host._shell
    sent: list[str] = []
    real = shell.run

    def run(command: str, **kw: object) -> object:
        sent.append(command)
        return real(command, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(shell, "run", run)
    return sent


def wait_until(check: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# --- the login ---------------------------------------------------------------------------


def test_the_login_is_not_root_and_privileged_operations_still_work(
    host: SshInstanceHost, volume: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert host._shell.run("id -un").stdout == "ubuntu\n"
    assert host.rsync_needs_sudo
    # Without sudo the login user cannot even read the device...
    assert host._shell.run(f"blkid -p {volume.device}", check=False).exit_status != 0
    # ...so the host runs its privileged scripts as root, under sudo -n.
    sent = sent_commands(host, monkeypatch)
    host.make_filesystem(volume.device, "ec2backup")
    assert host.device_contents(volume.device) == DeviceContents(filesystem="ext4")
    assert all(command.startswith("sudo -n sh -c ") for command in sent)


def test_a_root_login_runs_the_same_scripts_without_sudo(
    instance: SshServer,
    run_key: tuple[Path, str],
    volume: Loop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with connect(instance, run_key, "root") as host:
        assert not host.rsync_needs_sudo
        sent = sent_commands(host, monkeypatch)
        host.make_filesystem(volume.device, "ec2backup")
        host.mount(volume.device, MP, read_only=False)
        assert host.unmount(MP) is Unmounted.DONE
        assert sent and not any("sudo" in command for command in sent)


# --- devices -----------------------------------------------------------------------------


def test_find_device_resolves_the_nitro_name_in_one_round_trip(
    host: SshInstanceHost, volume: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = sent_commands(host, monkeypatch)
    assert host.find_device(VOLUME_ID, "/dev/sdf", timeout=5) == volume.device
    assert len(sent) == 1


def test_find_device_waits_for_the_volume_to_appear(
    instance: SshServer, host: SshInstanceHost, loop: Loop
) -> None:
    found: dict[str, object] = {}

    def look() -> None:
        try:
            found["device"] = host.find_device(VOLUME_ID, "/dev/sdf", timeout=30)
        except Exception as exc:  # reported below
            found["error"] = exc

    looking = threading.Thread(target=look)
    looking.start()
    try:
        # The probe on the instance has failed at least once when it sleeps between looks.
        wait_until(
            lambda: instance.inside("pgrep", "-x", "sleep", check=False).returncode == 0,
            "the instance to wait for the device",
        )
        (instance.by_id / NITRO_NAME).symlink_to(loop.device)
    finally:
        looking.join(60)
    assert found == {"device": loop.device}


def test_find_device_gives_up_after_its_timeout(host: SshInstanceHost) -> None:
    started = time.monotonic()
    with pytest.raises(DeviceNotFoundError, match=f"volume {VOLUME_ID} did not appear") as info:
        host.find_device(VOLUME_ID, "/dev/sdf", timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 10
    assert "/dev/xvdf" in info.value.message and NITRO_NAME in info.value.message


def test_device_contents_reads_filesystems_and_partition_tables(
    instance: SshServer, host: SshInstanceHost, loop: Loop
) -> None:
    assert host.device_contents(loop.device) == DeviceContents()
    assert host.device_contents(loop.device).empty
    host.make_filesystem(loop.device, "ec2backup")
    assert host.device_contents(loop.device) == DeviceContents(filesystem="ext4")
    label = instance.inside("blkid", "-p", "-o", "value", "-s", "LABEL", loop.device).stdout
    assert label.strip() == "ec2backup"

    # A DOS partition table, one partition: nothing to format over.
    mbr = bytearray(512)
    mbr[446:462] = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") * 2
    mbr[510:512] = b"\x55\xaa"
    subprocess.run(["wipefs", "-a", "-q", loop.device], check=True)
    with open(loop.device, "r+b") as f:
        f.write(mbr)
    contents = host.device_contents(loop.device)
    assert contents == DeviceContents(partition_table="dos") and not contents.empty
    assert str(contents) == "partition table (dos)"


def test_device_contents_never_trusts_the_blkid_cache(
    instance: SshServer, host: SshInstanceHost, loop: Loop
) -> None:
    # A fresh cache entry (trusted by blkid for 2 s without a probe) that says ext4 for a
    # device that holds nothing: what a cache can say about whatever last had that name.
    devno = os.stat(loop.device).st_rdev
    (instance.blkid_dir / "blkid.tab").write_text(
        f'<device DEVNO="0x{devno:04x}" TIME="{int(time.time())}.0" UUID="1111" '
        f'TYPE="ext4">{loop.device}</device>\n'
    )
    assert host.device_contents(loop.device) == DeviceContents()


@pytest.mark.parametrize("device", ["/dev/null", "/dev/loop-that-is-not-there"])
def test_device_contents_of_no_readable_block_device_is_an_error_not_empty(
    host: SshInstanceHost, device: str
) -> None:
    with pytest.raises(RemoteCommandError, match=f"could not tell what {device} holds"):
        host.device_contents(device)


# --- mounts ------------------------------------------------------------------------------


def test_mount_read_write_then_unmount_and_confirm(
    instance: SshServer, host: SshInstanceHost, loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    host.make_filesystem(loop.device, "ec2backup")
    assert host.mounted_device(MP) is None
    sent = sent_commands(host, monkeypatch)
    host.mount(loop.device, MP, read_only=False)
    assert len(sent) == 1  # mkdir and mount together
    assert host.mounted_device(MP) == loop.device
    instance.inside("touch", f"{MP}/written")
    options = instance.inside("findmnt", "-n", "-o", "OPTIONS", "--mountpoint", MP).stdout
    assert "rw" in options.split(",")
    del sent[:]
    assert host.unmount(MP) is Unmounted.DONE
    assert len(sent) == 1  # check, unmount and confirm in one
    assert instance.inside("findmnt", "--mountpoint", MP, check=False).returncode != 0
    assert host.unmount(MP) is Unmounted.NOT_MOUNTED
    assert host.mounted_device(MP) is None


def test_mounted_device_resolves_a_mount_made_through_a_link(
    instance: SshServer, host: SshInstanceHost, volume: Loop
) -> None:
    host.make_filesystem(volume.device, "ec2backup")
    host.mount(f"/dev/disk/by-id/{NITRO_NAME}", MP, read_only=False)
    assert host.mounted_device(MP) == volume.device


def test_mount_refuses_a_device_without_a_filesystem(host: SshInstanceHost, loop: Loop) -> None:
    with pytest.raises(RemoteCommandError, match=f"could not mount {loop.device} on {MP}"):
        host.mount(loop.device, MP, read_only=False)
    assert host.mounted_device(MP) is None


def test_a_read_only_mount_writes_nothing_to_the_device(
    instance: SshServer, host: SshInstanceHost, loop: Loop
) -> None:
    host.make_filesystem(loop.device, "ec2backup")
    before = loop.superblock()
    host.mount(loop.device, MP, read_only=True)
    options = instance.inside("findmnt", "-n", "-o", "OPTIONS", "--mountpoint", MP).stdout
    assert {"ro", "norecovery"} <= set(options.strip().split(","))  # noload: no journal replay
    assert instance.inside("touch", f"{MP}/x", check=False).returncode != 0
    assert host.unmount(MP) is Unmounted.DONE
    assert loop.superblock() == before
    # What the check above would see of a read-write mount: its mount count and time.
    host.mount(loop.device, MP, read_only=False)
    assert host.unmount(MP) is Unmounted.DONE
    assert loop.superblock() != before


# --- rsync left behind, busy mounts ------------------------------------------------------


def fake_rsync(tmp_path: Path, program: str) -> str:
    """A copy of ``program`` named rsync: what pgrep and pkill see as an rsync."""
    path = tmp_path / "bin" / "rsync"
    path.parent.mkdir(exist_ok=True)
    shutil.copy(shutil.which(program) or program, path)
    return str(path)


def hold_open(instance: SshServer, program: str) -> subprocess.Popen[str]:
    """``program`` running with its working directory on the mount, until its stdin closes."""
    holder = instance.spawn_inside("sh", "-c", f"cd {MP} && echo ready && exec {program}")
    assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
    return holder


def test_unmount_reports_busy_and_ending_the_rsync_frees_it(
    instance: SshServer, host: SshInstanceHost, loop: Loop, tmp_path: Path
) -> None:
    host.make_filesystem(loop.device, "ec2backup")
    host.mount(loop.device, MP, read_only=False)
    holder = hold_open(instance, fake_rsync(tmp_path, "cat"))
    try:
        assert host.unmount(MP) is Unmounted.BUSY
        assert host.mounted_device(MP) == loop.device  # nothing changed
        host.end_rsync(timeout=10)
        assert holder.wait(10) != 0  # killed
        assert host.unmount(MP) is Unmounted.DONE
    finally:
        assert holder.stdin is not None
        holder.stdin.close()


def test_end_rsync_fails_when_an_rsync_stays(
    instance: SshServer, host: SshInstanceHost, tmp_path: Path
) -> None:
    # An "rsync" no kill can end: a zombie, its parent (exec'd into sleep) never reaping it.
    # pgrep still lists it, as it would a process stuck in the kernel.
    rsync = fake_rsync(tmp_path, "true")
    holder = instance.spawn_inside("sh", "-c", f"echo $$; {rsync} & exec sleep 600")
    assert holder.stdout is not None
    pid = holder.stdout.readline().strip()
    try:
        wait_until(
            lambda: instance.inside("pgrep", "-x", "rsync", check=False).returncode == 0,
            "the rsync that stays",
        )
        with pytest.raises(RemoteCommandError, match="an earlier rsync on the instance did not"):
            host.end_rsync(timeout=0.5)
    finally:
        instance.inside("kill", pid, check=False)  # its zombie goes with it
    holder.wait(10)
    wait_until(
        lambda: instance.inside("pgrep", "-x", "rsync", check=False).returncode != 0,
        "the zombie reaped",
    )
    host.end_rsync(timeout=10)  # none left now


# --- preparing a copy --------------------------------------------------------------------


def test_prepare_sync_refuses_a_mount_point_that_is_not_a_mount(
    instance: SshServer, host: SshInstanceHost
) -> None:
    with pytest.raises(InvalidResourceStateError, match=f"{MP} is not mounted"):
        host.prepare_sync(MP, ["home"], rsync_timeout=5)
    # Nothing made: a copy there would land on the instance's root disk.
    assert instance.inside("test", "-e", MP, check=False).returncode != 0


def test_prepare_sync_measures_makes_the_destinations_and_ends_a_leftover_rsync(
    instance: SshServer,
    host: SshInstanceHost,
    loop: Loop,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host.make_filesystem(loop.device, "ec2backup")
    host.mount(loop.device, MP, read_only=False)
    instance.inside("sh", "-c", f"mkdir {MP}/home && head -c 12345 /dev/zero > {MP}/home/f")
    blocks, size = instance.inside("stat", "-f", "-c", "%a %S", MP).stdout.split()
    holder = hold_open(instance, fake_rsync(tmp_path, "cat"))
    try:
        sent = sent_commands(host, monkeypatch)
        space = host.prepare_sync(MP, ["home", "new dir"], rsync_timeout=10)
        assert len(sent) == 1
        assert holder.wait(10) != 0  # the leftover rsync was ended
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
    # The file and the directory holding it, by the blocks they use; nothing in the new one.
    assert 12345 < space.used <= 12345 + 3 * 4096
    assert space.files == {"home": 1, "new dir": 0}
    assert space.free == int(blocks) * int(size)  # measured before the new directory
    assert host.is_directory(f"{MP}/new dir") and host.is_directory(f"{MP}/home")


def test_tree_facts_reads_the_copy_as_root_in_one_round_trip(
    instance: SshServer, host: SshInstanceHost, loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    host.make_filesystem(loop.device, "ec2backup")
    host.mount(loop.device, MP, read_only=False)
    instance.inside(
        "sh",
        "-c",
        f"mkdir -p {MP}/home/private && cd {MP}/home && echo a > private/a && "
        "ln private/a private/b && echo c > c && truncate -s 32M sparse && "
        "printf data | dd of=sparse conv=notrunc status=none && chmod 700 private",
    )
    sent = sent_commands(host, monkeypatch)
    facts = host.tree_facts(f"{MP}/home", ["sparse", "private/a", "c", "nope"])
    assert len(sent) == 1
    assert facts.groups == (("private/a", "private/b"),)  # read as root through mode 700
    assert set(facts.facts) == {"sparse", "private/a", "c"}
    assert facts.facts["sparse"][1] <= 64 * 1024 and facts.facts["c"][1] == 2
    assert facts.holes == {"sparse": (32 * 2**20, facts.facts["sparse"][1])}


def test_tree_facts_without_python3_on_the_instance_says_so(
    instance: SshServer, host: SshInstanceHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An AMI without python3: the probe in front of the script fails (here it looks for a
    python3 that no image has)."""
    real = host._run

    def without_python(script: str, **kw: object) -> object:
        return real(script.replace("command -v python3", "command -v no-such-python3"), **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(host, "_run", without_python)
    with pytest.raises(RemoteCommandError, match="python3, which the instance does not have"):
        host.tree_facts(MP, [])


def test_prepare_sync_measures_the_device_and_its_filesystem(
    host: SshInstanceHost, loop: Loop
) -> None:
    host.make_filesystem(loop.device, "ec2backup")
    host.mount(loop.device, MP, read_only=False)
    space = host.prepare_sync(MP, ["home"], rsync_timeout=5)
    assert space.device_bytes == 64 * 2**20 and space.room_to_grow < 2**20
    # Past 2**31 too: mawk, the awk of Debian and Ubuntu, prints large sums as 3e+09.
    instance_du = host._shell.run("echo 3000000000 | awk '{t += $1} END {printf \"%.0f\\n\", t}'")
    assert instance_du.stdout.strip() == "3000000000"


def test_grow_filesystem_grows_a_mounted_filesystem_to_its_device(
    instance: SshServer, host: SshInstanceHost, loop: Loop
) -> None:
    host.make_filesystem(loop.device, "ec2backup")
    host.mount(loop.device, MP, read_only=False)
    instance.inside("sh", "-c", f"echo kept > {MP}/before")
    with loop.image.open("r+b") as f:  # the volume grown by EC2 ...
        f.truncate(96 * 2**20)
    subprocess.run(["losetup", "-c", loop.device], check=True)  # ... and seen by the kernel
    grown = host.prepare_sync(MP, ["home"], rsync_timeout=5)
    assert grown.room_to_grow >= 32 * 2**20 - 2**20
    try:
        host.grow_filesystem(MP)
    except RemoteCommandError as exc:
        if "Permission denied to resize filesystem" in exc.message:
            # A container without CAP_SYS_RESOURCE (EC2 instances have it): the local cloud's
            # instances grow it with the filesystem unmounted for a moment instead.
            pytest.skip("this machine's kernel refuses to grow a mounted ext4 (CAP_SYS_RESOURCE)")
        raise
    after = host.prepare_sync(MP, ["home"], rsync_timeout=5)
    assert after.filesystem_bytes == after.device_bytes == 96 * 2**20
    assert after.free > grown.free + 30 * 2**20
    assert instance.inside("cat", f"{MP}/before").stdout == "kept\n"
    host.grow_filesystem(MP)  # already its device's size: nothing to do, no error


def test_prepare_sync_lists_the_hard_linked_files_and_remove_files_removes_names(
    instance: SshServer, host: SshInstanceHost, loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    host.make_filesystem(loop.device, "ec2backup")
    host.mount(loop.device, MP, read_only=False)
    instance.inside(
        "sh",
        "-c",
        f"mkdir -p '{MP}/home/sub dir' {MP}/other && echo a > {MP}/home/a && "
        f"ln {MP}/home/a '{MP}/home/sub dir/a 2' && echo b > {MP}/home/b && "
        f"echo c > {MP}/other/c && ln {MP}/other/c {MP}/home/c",
    )
    sent = sent_commands(host, monkeypatch)
    space = host.prepare_sync(MP, ["home"], rsync_timeout=5)
    assert len(sent) == 1
    # Only names inside the destinations, and only inodes with two of them or more there.
    assert space.hard_links == ((f"{MP}/home/a", f"{MP}/home/sub dir/a 2"),)

    host.remove_files([f"{MP}/home/sub dir/a 2", f"{MP}/home/gone"])
    assert instance.inside("test", "-e", f"{MP}/home/sub dir/a 2", check=False).returncode == 1
    assert instance.inside("cat", f"{MP}/home/a").stdout == "a\n"


def test_is_directory_looks_as_root(instance: SshServer, host: SshInstanceHost) -> None:
    instance.inside("sh", "-c", "mkdir -p /mnt/private/inside && chmod 700 /mnt/private")
    assert host._shell.run("test -d /mnt/private/inside", check=False).exit_status != 0
    assert host.is_directory("/mnt/private/inside")
    assert not host.is_directory("/mnt/private/nothing")


def test_arm_idle_timer_rearms_one_timer_through_the_instances_systemd(
    instance: SshServer, host: SshInstanceHost, tmp_path: Path
) -> None:
    """The script runs as root (sudo) and drives the instance's own systemd-run and systemctl:
    here the local cloud's stand-ins, bound over the instance's /usr/local/sbin."""
    import json

    from ec2backup.sandbox.cloudinit import write_standins

    bin_dir, state = tmp_path / "sbin", tmp_path / "systemd"
    write_standins(bin_dir, state)
    instance.inside(
        "sh", "-c", f"mkdir -p /usr/local/sbin && mount --bind {bin_dir} /usr/local/sbin"
    )
    with pytest.raises(RemoteCommandError, match="could not arm the instance's idle timer"):
        host.arm_idle_timer(60)  # before D-Bus is up, as in cloud-init's bootcmd
    (state / "bus").touch()
    host.arm_idle_timer(60)
    (first,) = [json.loads(p.read_text()) for p in (state / "timers").glob("*.json")]
    assert first["unit"] == "ec2backup-idle.timer" and first["seconds"] == 60
    assert first["command"] == ["systemctl", "poweroff"]
    host.arm_idle_timer(90)
    (second,) = [json.loads(p.read_text()) for p in (state / "timers").glob("*.json")]
    assert second["seconds"] == 90 and second["armed_at"] >= first["armed_at"]
