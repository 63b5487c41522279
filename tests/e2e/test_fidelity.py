"""A faithful copy, end to end on the local cloud: a tree holding every kind of thing a copy
must keep (tests/treecheck.py) is backed up, then checked on the volume's image mounted
read-only and after a restore, each kind by its own test; verify says the volume matches;
then verify names each metadata difference made on purpose.

The CLI runs with this "laptop's" own users (its /etc/passwd and /etc/group bind-mounted in a
mount namespace of its own): ``ubuntu`` is uid 2000 here and 1000 on the instance, and 1000 is
``alice`` here, as two machines' users differ. Without ``--numeric-ids`` rsync would match
owners by name between them.

To see a kind fail without its rsync option, back up with the option turned off:
``FIDELITY_RSYNC_ARGS="--no-H" pytest tests/e2e/test_fidelity.py`` (the profile's rsync_args,
which come after ec2backup's own options; ``--no-A``, ``--no-X``, ``--no-S``,
``--no-numeric-ids``, ``--modify-window=0``, ``--no-D``, ``--no-p``...).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Cli, mounted_read_only, superblock
from tests.treecheck import (
    Entry,
    Kind,
    compare,
    make_tree_of_every_kind,
    needed_tools,
    read_tree,
    touch_nanoseconds,
)

pytestmark = pytest.mark.e2e

# (uid, gid) named "ubuntu" on this laptop (the instance's ubuntu is 1000), and 1000, which is
# "alice" here and "ubuntu" there.
LAPTOP_UBUNTU = (2000, 2000)
LAPTOP_ALICE = (1000, 1000)
KINDS = [
    "contents",
    "hard links",
    "ACLs (access and default)",
    "extended attributes (user.*, trusted.*, security.capability)",
    "sparse files",
    "ids with no name on either side",
    "numeric owners and groups",
    "setuid, setgid and sticky modes",
    "nanosecond times of files, directories and symlinks",
    "device nodes",
    "FIFOs",
    "every file name",
    "empty directories",
    "symlinks",
]
EXTRA_ARGS = shlex.split(os.environ.get("FIDELITY_RSYNC_ARGS", ""))


def _laptop_users(directory: Path) -> tuple[Path, Path]:
    """This machine's passwd and group, with alice as 1000 and ubuntu as 2000."""
    out = []
    for name, entries in (
        ("passwd", ["alice:x:1000:1000::/home/alice:/bin/sh", "ubuntu:x:2000:2000::/:/bin/sh"]),
        ("group", ["alice:x:1000:", "ubuntu:x:2000:"]),
    ):
        kept = [
            line
            for line in Path(f"/etc/{name}").read_text().splitlines()
            if line.split(":")[0] not in ("alice", "ubuntu")
            and line.split(":")[2] not in ("1000", "2000")
        ]
        path = directory / name
        path.write_text("\n".join([*kept, *entries]) + "\n")
        out.append(path)
    return out[0], out[1]


@dataclass
class Backup:
    cli: Cli
    root: Path
    source: Path
    kinds: list[Kind]
    expected: dict[bytes, Entry]  # the source as the last backup saw it
    volume_id: str
    run_id: str

    def kind(self, name: str) -> Kind:
        (found,) = [k for k in self.kinds if k.name == name]
        return found


@pytest.fixture(scope="module")
def backup(sandbox: Any, tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Backup:
    missing = needed_tools()
    if missing:
        message = f"the fidelity test needs {', '.join(missing)} (Debian: acl, libcap2-bin)"
        if os.environ.get("EC2BACKUP_REQUIRE_E2E") == "1":
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("fidelity")
    passwd, group = _laptop_users(root)
    cli = Cli(
        env={
            **sandbox.env,
            "EC2BACKUP_CONFIG": str(root / "config.toml"),
            "EC2BACKUP_DB": f"sqlite:///{root / 'ec2backup.db'}",
            "EC2BACKUP_DATA_DIR": str(root / "data"),
            "EC2BACKUP_CACHE_DIR": str(model_cache),
        },
        cwd=root,
        wrap=[
            "unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/group && shift 2 && '
            'exec "$@"',
            "sh", str(passwd), str(group),
        ],
    )  # fmt: skip
    source = root / "home"
    kinds = make_tree_of_every_kind(source, renamed_owners=[LAPTOP_UBUNTU, LAPTOP_ALICE])
    assert sorted(k.name for k in kinds) == sorted(KINDS)
    # 2 GiB, so that a copy without holes would still fit and fail only its own test.
    volume_id = cli(
        "init", "--profile", "f", "--az", "us-east-1a", "--size", "2", "--source", str(source)
    ).stdout.strip()
    if EXTRA_ARGS:
        with (root / "config.toml").open("a") as f:
            f.write(f"rsync_args = {json.dumps(EXTRA_ARGS)}\n")
    cli("run", "--profile", "f")
    # Then times moved by nanoseconds only: a second backup must bring them over too.
    touch_nanoseconds(source, kinds)
    run_id = cli("run", "--profile", "f").stdout.strip()
    return Backup(cli, root, source, kinds, read_tree(source), volume_id, run_id)


@pytest.fixture(scope="module")
def on_volume(backup: Backup, sandbox: Any) -> dict[bytes, Entry]:
    with mounted_read_only(sandbox.volume_image(backup.volume_id)) as mnt:
        return read_tree(mnt / "home")


@pytest.fixture(scope="module")
def restored(backup: Backup) -> dict[bytes, Entry]:
    target = backup.root / "restored"
    backup.cli("restore", "--run", backup.run_id, "--to", str(target))
    try:
        return read_tree(target / "home")
    finally:
        shutil.rmtree(target)  # 1 GiB apparent, if its holes were lost


@pytest.mark.parametrize("name", KINDS)
def test_kept_on_the_volume(backup: Backup, on_volume: dict[bytes, Entry], name: str) -> None:
    kind = backup.kind(name)
    assert compare(backup.expected, on_volume, aspects=kind.aspects, paths=kind.paths) == []


@pytest.mark.parametrize("name", KINDS)
def test_kept_by_a_restore(backup: Backup, restored: dict[bytes, Entry], name: str) -> None:
    kind = backup.kind(name)
    assert compare(backup.expected, restored, aspects=kind.aspects, paths=kind.paths) == []


def test_nothing_else_differs_either(
    backup: Backup, on_volume: dict[bytes, Entry], restored: dict[bytes, Entry]
) -> None:
    """Every path, every aspect: no kind of difference is missing from the list above."""
    assert compare(backup.expected, on_volume) == []
    assert compare(backup.expected, restored) == []


def test_verify_finds_that_the_volume_matches(backup: Backup, sandbox: Any) -> None:
    image = sandbox.volume_image(backup.volume_id)
    sealed = superblock(image)
    result = backup.cli("verify", "--profile", "f", "--json", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["differences"] == []
    assert superblock(image) == sealed  # read-only


# --- verify ------------------------------------------------------------------------------------


@pytest.fixture
def verified_tree(backup: Backup) -> Iterator[tuple[Path, str]]:
    """A second profile on the same volume, backed up without holes (as an older ec2backup
    did): its own small tree, which the test then changes."""
    source = backup.root / "to-verify"
    source.mkdir()
    for name in ("acl", "xattr", "mode", "owner", "linked", "twin"):
        (source / name).write_text("twin\n" if name in ("linked", "twin") else f"{name}\n")
        os.utime(source / name, ns=(1_600_000_000_000_000_000,) * 2)
    os.link(source / "linked", source / "partner")
    with (source / "sparse.img").open("wb") as f:
        f.truncate(64 * 2**20)
        f.write(os.urandom(4096))
    with (backup.root / "config.toml").open("a") as f:
        f.write(
            f'\n[profiles.v]\nregion = "us-east-1"\navailability_zone = "us-east-1a"\n'
            f'volume_id = "{backup.volume_id}"\n'
            f'sources = [{{ path = "{source}", dest = "verify" }}]\n'
            'rsync_args = ["--no-sparse"]\nsnapshot = false\n'
        )
    backup.cli("run", "--profile", "v")
    yield source, "v"
    shutil.rmtree(source)


def test_verify_names_each_metadata_difference(
    backup: Backup, verified_tree: tuple[Path, str]
) -> None:
    source, profile = verified_tree
    times = {p: p.lstat().st_mtime_ns for p in [source, *source.iterdir()]}
    subprocess.run(["setfacl", "-m", "u:4242:r", str(source / "acl")], check=True)
    os.setxattr(source / "xattr", "user.added", b"after the backup")
    os.chmod(source / "mode", 0o600)
    os.chown(source / "owner", 4242, 4343)
    (source / "partner").unlink()  # one inode with "linked" on the volume, now a copy here
    shutil.copy2(source / "linked", source / "partner")
    (source / "twin").unlink()  # a separate file on the volume, now a link to "linked" here
    os.link(source / "linked", source / "twin")
    for path, ns in times.items():  # the changes are in the metadata, not in the times
        os.utime(path, ns=(ns, ns), follow_symlinks=False)

    result = backup.cli("verify", "--profile", profile, "--json", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    found = dict(line.split(": ", 1) for line in json.loads(result.stdout)["differences"])
    assert found.pop("verify/acl") == "ACL differs"
    assert found.pop("verify/xattr") == "extended attributes differ"
    assert found.pop("verify/mode") == "permissions differ"
    assert found.pop("verify/owner") == "owner differs, group differs"
    assert found.pop("verify/twin") == (
        "hard link split (one file in the source, separate on the volume)"
    )
    assert found.pop("verify/partner") == (
        "hard link joined (one file with linked on the volume, separate in the source)"
    )
    assert found.pop("verify/sparse.img").startswith("holes not kept (")
    assert found == {}
    # The table says the same, and `show` keeps it.
    table = backup.cli("verify", "--profile", profile, check=False)
    assert table.returncode == 1 and "verify/acl: ACL differs" in table.stdout
    (run,) = [r for r in backup.cli.json("runs") if r["kind"] == "verify"][:1]
    shown = backup.cli.json("show", run["id"])["warnings"]
    assert "differs: verify/mode: permissions differ" in shown
