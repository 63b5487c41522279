"""9. Snapshot growth: what each backup adds to the snapshot chain, as changed 512 KiB blocks
between consecutive snapshot images of the local cloud, for three kinds of change between two
runs. Measured for ec2backup as it runs (changed files written in place) and, for comparison,
with rsync's default restored (``rsync_args = ["--no-inplace"]``: a new copy of each changed
file, renamed over the old one).

The blocks are counted here, from the images themselves (a block counts when its bytes differ
from the previous snapshot's and are not all zero, as EBS stores it); the figure
``ec2backup show`` reports for the same run, from the EBS direct APIs, is shown next to it.
What a snapshot adds is what EBS bills each month (about $0.05 per GB-month).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from .common import Figure, Section, cli_env, fmt
from .sshhost import unavailable

BLOCK = 512 * 1024
MIB = 2**20
BIG_FILE_MIB = 200
# (name, what changes before the run, target in MiB for the in-place runs)
TARGETS = {
    "nothing": 4.0,
    "1 MiB rewritten inside a 200 MiB file": 5.0,
    "20 new 64 KiB files": 5.25,
}


def changed_blocks(earlier: Path, later: Path) -> int:
    """Blocks of ``later`` that differ from ``earlier``'s and are not all zero."""
    count = 0
    with earlier.open("rb") as a, later.open("rb") as b:
        while True:
            one, two = a.read(BLOCK), b.read(BLOCK)
            if not one and not two:
                return count
            if one != two and two.count(0) != len(two):
                count += 1


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ec2backup", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"ec2backup {' '.join(args)} exited {done.returncode}: {done.stderr[-3000:]}"
        )
    return done.stdout.strip()


def _make_source(root: Path) -> None:
    root.mkdir(parents=True)
    with (root / "vm.img").open("wb") as f:
        for _ in range(BIG_FILE_MIB):
            f.write(os.urandom(MIB))
    docs = root / "docs"
    docs.mkdir()
    for i in range(30):
        (docs / f"note-{i:02d}.txt").write_bytes(os.urandom(8192))


def _rewrite_one_mib(root: Path) -> None:
    with (root / "vm.img").open("r+b") as f:
        f.seek(BIG_FILE_MIB // 2 * MIB + 12345)  # inside, not aligned to anything
        f.write(os.urandom(MIB))


def _add_files(root: Path) -> None:
    new = root / "new"
    new.mkdir()
    for i in range(20):
        (new / f"file-{i:02d}.bin").write_bytes(os.urandom(64 * 1024))


CHANGES: list[tuple[str, Callable[[Path], None]]] = [
    ("nothing", lambda _root: None),
    ("1 MiB rewritten inside a 200 MiB file", _rewrite_one_mib),
    ("20 new 64 KiB files", _add_files),
]


def _series(
    sandbox: object, root: Path, env: dict[str, str], profile: str, rsync_args: list[str]
) -> list[tuple[str, int, int | None]]:
    """(change, blocks counted from the images, bytes `show` reports) for each change."""
    source = root / profile
    _make_source(source)
    _cli(env, "init", "--profile", profile, "--az", "us-east-1a", "--size", "1",
         "--source", str(source))  # fmt: skip
    if rsync_args:
        config = Path(env["EC2BACKUP_CONFIG"])
        config.write_text(config.read_text() + f"rsync_args = {json.dumps(rsync_args)}\n")
    previous = json.loads(_cli(env, "show", _cli(env, "run", "--profile", profile), "--json"))
    results = []
    for name, change in CHANGES:
        change(source)
        shown = json.loads(_cli(env, "show", _cli(env, "run", "--profile", profile), "--json"))
        images = [
            sandbox.snapshot_image(s["snapshot_id"])  # type: ignore[attr-defined]
            for s in (previous, shown)
        ]
        results.append((name, changed_blocks(*images), shown["stats"]["snapshot_added_bytes"]))
        previous = shown
    return results


def run(quick: bool = False) -> Section:
    section = Section(
        key="growth", title="9. Snapshot growth", command="python -m benchmarks growth"
    )
    reason = unavailable() or (None if os.geteuid() == 0 else "the local cloud needs root")
    if reason:
        section.notes.append(f"Not run: {reason}.")
        return section
    from ec2backup.sandbox import Sandbox

    with tempfile.TemporaryDirectory(prefix="ec2backup-bench-growth-") as tmp:
        root = Path(tmp)
        sandbox = Sandbox.start(root / "cloud")
        try:
            env = cli_env(root, sandbox.env)
            in_place = _series(sandbox, root, env, "inplace", [])
            env["EC2BACKUP_CONFIG"] = str(root / "copy.toml")
            copies = [] if quick else _series(sandbox, root, env, "copy", ["--no-inplace"])
        finally:
            sandbox.stop()

    rows = [
        "| change between two runs | added, written in place (ec2backup) | "
        "as `show` reports it (EBS direct APIs) | added, a new copy (`--no-inplace`) |",
        "|---|---|---|---|",
    ]
    for i, (name, blocks, reported) in enumerate(in_place):
        added = blocks * BLOCK / MIB
        section.figures.append(
            Figure(f"added to the snapshot chain: {name}", added, "MiB", TARGETS[name])
        )
        shown = "-" if reported is None else f"{fmt(reported / MIB)} MiB"
        copy = f"{fmt(copies[i][1] * BLOCK / MIB)} MiB" if copies else "not run (--quick)"
        rows.append(f"| {name} | {fmt(added)} MiB ({blocks} blocks) | {shown} | {copy} |")
    section.tables.append("\n".join(rows))
    agree = all(r is not None and r == b * BLOCK for _, b, r in in_place)
    section.notes.append(
        f"Source: a {BIG_FILE_MIB} MiB file of random bytes (a disk image, a mailbox, a "
        "database file) and 30 small files, on a 1 GiB volume (ext4). Each row is one "
        "`ec2backup run` after that change, compared with the snapshot of the run before it. "
        "A block counts when its 512 KiB differ from the previous snapshot's and are not all "
        "zero. What is added besides the data: ext4's journal and metadata (inodes, bitmaps, "
        "directories, the superblock written at mount and unmount). The 1 MiB rewrite is not "
        "aligned to a block: it touches 3 blocks of the file."
    )
    section.notes.append(
        "`show`'s figure (ListChangedBlocks against the previous snapshot, from the local "
        "cloud's EBS direct APIs) "
        + ("equals the count from the images for every run." if agree else "differs from it.")
    )
    return section
