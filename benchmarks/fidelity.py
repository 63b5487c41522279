"""10. Fidelity: what a faithful copy costs, and the measurements behind rsync's options.

* ``-H`` (hard links): rsync's peak memory on both sides and the time of a first copy of the
  200,000-file tree of benchmark 7, with plain ``-a`` and with every option ec2backup passes
  (``FIDELITY``); then 200,000 names that are 100,000 files linked twice, the worst case for
  ``-H``, with ``-a``, ``-a -H`` and ``FIDELITY``.
* ``-S`` (holes) next to ``--inplace``: a 256 MiB file holding 12 KiB of data and a 16 MiB one
  with a hole every other 64 KiB, copied onto a real ext4 file system (a loop device, as a
  volume is) with ``-a``, ``-S``, ``--inplace`` and ``-S --inplace``: the blocks the copy
  takes, the time, and the same after an update that writes into a hole and zeroes a data
  block (which only hole punching, rsync 3.1.3+, gives back).
* The time of a full copy with ``FIDELITY`` against plain ``-a`` (alternated rounds), and
  what the run adds around the copy on the 200,000-file tree: the dry run of the deletion
  guard, the walk for files changed during the copy, and verify's walk for holes and links.

Everything runs over a real sshd on loopback (``tests/sshd.py``), logged in as root as on the
instance (rsync's server runs under sudo there).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ec2backup.adapters.rsync import FIDELITY, RsyncSyncer
from ec2backup.treefacts import changed_since, walk

from .common import Figure, Section, Timing, make_tree
from .sshhost import Host, ssh_host, unavailable

FILES = 200_000
GIB = 2**30
# Large enough that a copy without holes is plainly seen (and timed), small enough to keep the
# benchmark to a few minutes: rsync's handling of holes does not depend on the size.
SPARSE = 256 * 2**20
PLAIN_SETS: dict[str, tuple[str, ...]] = {"`-a`": (), "`-a` + ec2backup's options": FIDELITY}
OPTION_SETS: dict[str, tuple[str, ...]] = {
    "`-a`": (),
    "`-a -H`": ("-H",),
    "`-a` + ec2backup's options": FIDELITY,
}


def _hwm_mb(pid: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cmdline(pid: str) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


class PeakSampler:
    """The VmHWM of the rsync processes whose command line names ``marker`` (the local one,
    the remote server), sampled every 20 ms until stopped."""

    def __init__(self, marker: str) -> None:
        self.marker = marker.encode()
        self.peaks = {"local": 0.0, "remote": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                cmd = _cmdline(pid)
                if not cmd or not cmd[0].endswith(b"rsync"):
                    continue
                if not any(self.marker in part for part in cmd):
                    continue
                side = "remote" if b"--server" in cmd else "local"
                self.peaks[side] = max(self.peaks[side], _hwm_mb(pid))
            self._stop.wait(0.02)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _rsync(host: Host, src: Path, dst: Path, options: Sequence[str], *extra: str) -> str:
    done = subprocess.run(
        ["rsync", "-a", *options, "--stats", *extra, "-e", host.raw_ssh(), f"{src}/",
         host.remote(dst)],
        capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"},
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"rsync exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def _copy(
    host: Host, src: Path, dst: Path, options: Sequence[str]
) -> tuple[float, dict[str, float]]:
    subprocess.run(["rm", "-rf", str(dst)], check=True)
    with PeakSampler(str(dst)) as sampler:
        start = time.perf_counter()
        _rsync(host, src, dst, options)
        seconds = time.perf_counter() - start
    return seconds, sampler.peaks


def _free(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@contextmanager
def ext4(size: int) -> Iterator[Path]:
    """A fresh ext4 file system on a loop device, mounted; gone afterwards."""
    with tempfile.TemporaryDirectory(prefix="ec2backup-bench-ext4-") as tmp:
        image, mnt = Path(tmp) / "volume.img", Path(tmp) / "mnt"
        with image.open("wb") as f:
            f.truncate(size)
        subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
        mnt.mkdir()
        subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
        try:
            yield mnt
        finally:
            subprocess.run(["umount", str(mnt)], check=True)


def _allocated(path: Path) -> int:
    return sum(p.lstat().st_blocks * 512 for p in [path, *path.rglob("*")] if p.is_file())


def _sparse_tree(root: Path) -> None:
    root.mkdir(parents=True)
    with (root / "disk.img").open("wb") as f:
        f.truncate(SPARSE)
        for offset in (0, SPARSE // 2, SPARSE - 4096):
            f.seek(offset)
            f.write(os.urandom(4096))
    with (root / "striped.db").open("wb") as f:
        f.truncate(16 << 20)
        for offset in range(0, 16 << 20, 128 << 10):
            f.seek(offset)
            f.write(os.urandom(64 << 10))


def _update_sparse(root: Path) -> None:
    """Data written into a hole of disk.img; the first data block of striped.db zeroed and
    punched out (as a database that frees pages does)."""
    with (root / "disk.img").open("r+b") as f:
        f.seek(SPARSE // 4)
        f.write(os.urandom(4096))
    with (root / "striped.db").open("r+b") as f:
        f.write(b"\0" * (64 << 10))
    subprocess.run(["fallocate", "--dig-holes", str(root / "striped.db")], check=True)
    for p in root.iterdir():
        os.utime(p, (1_700_000_000, 1_700_000_000))


def _sparse_matrix(host: Host, section: Section) -> None:
    configs = {
        "`-a`": (),
        "`-a -S`": ("-S",),
        "`-a --inplace`": ("--inplace",),
        "`-a -S --inplace`": ("-S", "--inplace"),
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="ec2backup-bench-sparse-") as tmp, ext4(GIB) as fs:
        src = Path(tmp) / "src"
        _sparse_tree(src)
        source_blocks = _allocated(src)
        for label, options in configs.items():
            dst = fs / "copy"
            subprocess.run(["rm", "-rf", str(dst)], check=True)
            start = time.perf_counter()
            _rsync(host, src, dst, options)
            first = time.perf_counter() - start
            os.sync()
            first_blocks = _allocated(dst)
            work = Path(tmp) / "work"
            subprocess.run(["rm", "-rf", str(work)], check=True)
            subprocess.run(["cp", "-a", "--sparse=always", str(src), str(work)], check=True)
            _update_sparse(work)
            start = time.perf_counter()
            _rsync(host, work, dst, options)
            second = time.perf_counter() - start
            os.sync()
            rows.append(
                f"| {label} | {first:.2f} | {first_blocks / 2**20:,.1f} | {second:.2f} | "
                f"{_allocated(dst) / 2**20:,.1f} | {_allocated(work) / 2**20:,.1f} |"
            )
            if label == "`-a -S --inplace`":
                section.figures.append(
                    Figure(
                        "`-S --inplace`: blocks of the copy after the update / the source's",
                        _allocated(dst) / max(1, _allocated(work)),
                        "x",
                        1.1,
                        detail=f"{_allocated(dst):,} B against {_allocated(work):,} B",
                    )
                )
            if label == "`-a -S`":
                section.figures.append(
                    Figure(
                        "`-S`: blocks of the first copy / the source's (256 MiB apparent)",
                        first_blocks / max(1, source_blocks),
                        "x",
                        1.1,
                        detail=f"{first_blocks:,} B against {source_blocks:,} B",
                    )
                )
    section.tables.append(
        "\n".join(
            [
                "Holes: a 256 MiB file with 12 KiB of data and a 16 MiB file with a hole every "
                "other 64 KiB, copied onto ext4 on a loop device; then updated (4 KiB written "
                "into a hole of the first, a data block of the second zeroed and punched out) "
                "and copied again onto the same copy:",
                "",
                "| options | first copy s | copy's blocks MiB | update s | blocks after MiB | "
                "source's blocks after MiB |",
                "|---|---|---|---|---|---|",
                *rows,
            ]
        )
    )


def _linked_tree(root: Path, files: int) -> None:
    """``files`` files of 100 B, each with a second name in a sibling directory."""
    make_tree(root / "a", files, files * 100, per_dir=200)
    for d in sorted((root / "a").iterdir()):
        twin = root / "b" / d.name
        twin.mkdir(parents=True)
        for f in d.iterdir():
            os.link(f, twin / f.name)


def run(quick: bool = False) -> Section:
    files = 50_000 if quick else FILES
    rounds = 1 if quick else 2
    section = Section(key="fidelity", title="10. Fidelity", command="python -m benchmarks fidelity")
    reason = unavailable()
    if reason:
        section.notes.append(f"Not run: {reason}.")
        return section
    version = subprocess.run(["rsync", "--version"], capture_output=True, text=True).stdout
    section.notes.append(
        f"rsync here (both sides): {version.splitlines()[0].strip()}. Its man page: "
        '"If combined with --inplace the file created may not end up with sparse blocks '
        "(depending on the filesystem type and kernel version), unless the --whole-file "
        "option is also in effect. Note that versions of rsync older than 3.1.3 (January "
        '2018) will reject the combination of --sparse and --inplace."'
    )
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and _free("/dev/shm") > files * 4096 * 6 else None
    with (
        tempfile.TemporaryDirectory(prefix="ec2backup-bench-fid-", dir=shm) as tmp,
        ssh_host() as host,
    ):
        src = Path(tmp) / "src"
        make_tree(src, files, files * 100, per_dir=200)
        results: dict[str, list[tuple[float, dict[str, float]]]] = {k: [] for k in PLAIN_SETS}
        for _ in range(rounds):
            for label, options in PLAIN_SETS.items():
                results[label].append(_copy(host, src, Path(tmp) / "dst", options))
        rows = []
        for label, samples in results.items():
            seconds = Timing([s for s, _ in samples]).median
            local = max(p["local"] for _, p in samples)
            remote = max(p["remote"] for _, p in samples)
            rows.append(f"| {label} | {seconds:.2f} | {local:.1f} | {remote:.1f} |")
            if label == "`-a` + ec2backup's options":
                section.figures.append(
                    Figure(
                        f"peak RSS of rsync, first copy of {files:,} files with ec2backup's "
                        "options (the larger side)",
                        max(local, remote),
                        "MB",
                        None,
                    )
                )
        base = Timing([s for s, _ in results["`-a`"]]).median
        full = Timing([s for s, _ in results["`-a` + ec2backup's options"]]).median
        section.figures.append(
            Figure(
                f"time of a first copy of {files:,} small files, ec2backup's options / `-a`",
                full / base,
                "x",
                None,
                detail=f"{full:.2f} s against {base:.2f} s, medians of {rounds}",
            )
        )

        # What a run adds around the copy, on the same tree (copied once more, in step).
        syncer = RsyncSyncer()
        dst = Path(tmp) / "dst"
        syncer.sync(src, host.target, str(dst))
        start = time.perf_counter()
        syncer.count_deletions(src, host.target, str(dst))
        guard = time.perf_counter() - start
        start = time.perf_counter()
        syncer.sync(src, host.target, str(dst))
        unchanged = time.perf_counter() - start
        start = time.perf_counter()
        changed_since(src, time.time_ns(), 1000)
        changed_walk = time.perf_counter() - start
        start = time.perf_counter()
        walk(src)
        facts_walk = time.perf_counter() - start
        section.figures += [
            Figure(
                f"the deletion guard's dry run ({files:,} files, nothing to delete)",
                guard,
                "s",
                None,
                detail=f"an incremental sync with nothing to copy: {unchanged:.2f} s",
            ),
            Figure(
                f"the walk for files changed during the copy ({files:,} files)",
                changed_walk,
                "s",
                None,
            ),
            Figure(
                f"verify's walk for holes and hard links, local side ({files:,} files)",
                facts_walk,
                "s",
                None,
            ),
        ]
        subprocess.run(["rm", "-rf", str(src), str(dst)], check=False)

        linked = Path(tmp) / "linked"
        _linked_tree(linked, files // 2)
        link_rows = []
        for label, options in OPTION_SETS.items():
            seconds, peaks = _copy(host, linked, Path(tmp) / "dst", options)
            link_rows.append(
                f"| {label} | {seconds:.2f} | {peaks['local']:.1f} | {peaks['remote']:.1f} |"
            )
        subprocess.run(["rm", "-rf", str(linked), str(Path(tmp) / "dst")], check=False)
        section.tables.append(
            "\n".join(
                [
                    f"First copy of {files:,} files of 100 B (200 to a directory, in "
                    f"{'tmpfs' if shm else 'the default temporary directory'}), median of "
                    f"{rounds}; rsync's peak RSS (VmHWM, sampled every 20 ms), each side:",
                    "",
                    "| options | seconds | local rsync MB | remote rsync MB |",
                    "|---|---|---|---|",
                    *rows,
                    "",
                    f"The same number of names as {files // 2:,} files with two names each "
                    "(every file a hard link), once:",
                    "",
                    "| options | seconds | local rsync MB | remote rsync MB |",
                    "|---|---|---|---|",
                    *link_rows,
                ]
            )
        )
        _sparse_matrix(host, section)
    section.notes.append(
        "ec2backup's options: `" + " ".join(FIDELITY) + "` (adapters/rsync.py `FIDELITY`). "
        "Why each is there and what the figures above say: docs/performance.md, "
        '"What fidelity costs".'
    )
    return section
