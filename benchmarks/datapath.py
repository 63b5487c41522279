"""2. Data path: ec2backup's sync phase (``RsyncSyncer.sync``) against raw ``rsync -a`` over
the same sshd, on ~1 GiB in 10,000 files; then the bytes an incremental run sends after 1% of
the files changed; and the rsync/ssh options, chosen by measurement.

Everything runs on loopback to a real OpenSSH server (``tests/sshd.py``), so the "network" is
as fast as the CPU can encrypt: this measures rsync's and ssh's CPU cost, which is what the
cipher choice changes. The files are random bytes (incompressible, like photos and archives).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ec2backup.adapters.rsync import RsyncSyncer

from .common import Figure, Section, Timing, fmt, make_tree
from .sshhost import Host, ssh_host, unavailable

RATIO_TARGET = 1.05
INCREMENTAL_TARGET = 1.2
GCM = "aes128-gcm@openssh.com"
CHACHA = "chacha20-poly1305@openssh.com"


def _raw_rsync(host: Host, src: Path, dst: Path, *args: str, ssh_opts: tuple[str, ...] = ()) -> str:
    done = subprocess.run(
        [
            "rsync",
            "-a",
            "--stats",
            *args,
            "-e",
            host.raw_ssh(*ssh_opts),
            f"{src}/",
            host.remote(dst),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"rsync exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def _stat(stdout: str, name: str) -> int:
    m = re.search(rf"^{name}: ([0-9,]+)", stdout, re.M)
    return int(m.group(1).replace(",", "")) if m else 0


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _dst_parent(total: int) -> str | None:
    """/dev/shm (tmpfs) when it has room for the copy and some, else the default tmp dir."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return "/dev/shm" if st.f_bavail * st.f_frsize > 3 * total else None


def _fs(path: Path) -> str:
    from .common import _fs_type

    return _fs_type(path)


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def run(quick: bool = False) -> Section:
    files, total = (2_500, 256 << 20) if quick else (10_000, 1 << 30)
    # An even number of rounds, so each side runs first as often as last: on the benchmark VM
    # the first run of a round was often ~10-20% slower, which an odd count does not cancel.
    pairs, matrix_reps = (4, 1) if quick else (10, 2)
    section = Section(key="datapath", title="2. Data path", command="python -m benchmarks datapath")
    reason = unavailable()
    if reason:
        section.notes.append(f"Not run: {reason}.")
        return section
    syncer = RsyncSyncer()
    syncer.check_available()
    with (
        tempfile.TemporaryDirectory(prefix="ec2backup-bench-data-") as tmp,
        tempfile.TemporaryDirectory(prefix="ec2backup-bench-dst-", dir=_dst_parent(total)) as out,
        ssh_host() as host,
    ):
        src, dst = Path(tmp) / "src", Path(out) / "dst"
        written = make_tree(src, files, total)
        section.notes.append(
            f"Source: {files:,} files of random bytes in {src.parent} (page-cached); "
            f"destination: {dst.parent} ({_fs(dst.parent)}), so that the receiving disk's "
            "write-back does not drown the differences being measured."
        )
        progress_lines = [0]

        def on_progress(_line: str) -> None:
            progress_lines[0] += 1

        def sync_phase() -> None:
            syncer.sync(src, host.target, str(_fresh(dst)), on_progress=on_progress)

        def raw() -> None:
            _raw_rsync(host, src, _fresh(dst))

        def raw_gcm() -> None:
            _raw_rsync(host, src, _fresh(dst), ssh_opts=("-c", GCM))

        # -- full copy: sync phase vs raw rsync, alternating which goes first ----------------
        raw()  # warm-up: page cache, sshd, dentries
        ours: list[float] = []
        theirs: list[float] = []
        same: list[float] = []
        for i in range(pairs):
            order = [(sync_phase, ours), (raw, theirs), (raw_gcm, same)]
            for fn, samples in order if i % 2 == 0 else reversed(order):
                samples.append(_timed(fn))
        t_ours, t_raw, t_same = Timing(ours), Timing(theirs), Timing(same)
        section.figures.append(
            Figure(
                "sync phase / raw `rsync -a` with the same cipher (`-c aes128-gcm`)",
                t_ours.median / t_same.median,
                "x",
                RATIO_TARGET,
                detail="per-pair ratios in run order, ec2backup first in the 1st, 3rd, ...: "
                + ", ".join(f"{a / b:.2f}" for a, b in zip(ours, same, strict=True)),
            )
        )
        ratios = sorted(a / b for a, b in zip(ours, theirs, strict=True))
        ratio = t_ours.median / t_raw.median
        section.figures.append(
            Figure(
                f"sync phase / raw `rsync -a` (OpenSSH defaults), first run "
                f"({written / 2**30:.2f} GiB, {files:,} files)",
                ratio,
                "x",
                RATIO_TARGET,
                detail=f"medians of {pairs} alternated pairs; per-pair ratios "
                + ", ".join(f"{r:.2f}" for r in ratios),
            )
        )
        section.notes.append(
            f"Sync phase: {t_ours.summary()} ({written / t_ours.median / 2**20:.0f} MiB/s). "
            f"Raw `rsync -a` (OpenSSH defaults): {t_raw.summary()} "
            f"({written / t_raw.median / 2**20:.0f} MiB/s). The sync phase adds `--delete "
            "--stats --info=progress2` and its ssh options, and reads rsync's output; "
            f"it saw {progress_lines[0]:,} progress lines in its {pairs} runs."
        )

        # -- option matrix: raw rsync, first full copy, round robin -------------------------
        configs: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
            ("OpenSSH default cipher", (), ()),
            (f"`-c {GCM}`", ("-c", GCM), ()),
            (f"`-c {CHACHA}`", ("-c", CHACHA), ()),
            (
                f"`-c {GCM}` + `-z --compress-choice=zstd`",
                ("-c", GCM),
                ("-z", "--compress-choice=zstd"),
            ),
            (f"`-c {GCM}` + `--whole-file`", ("-c", GCM), ("--whole-file",)),
        ]
        results: dict[str, list[float]] = {c[0]: [] for c in configs}
        for _ in range(matrix_reps):
            for label, ssh_opts, args in configs:
                start = time.perf_counter()
                _raw_rsync(host, src, _fresh(dst), *args, ssh_opts=ssh_opts)
                results[label].append(time.perf_counter() - start)
        lines = [
            f"Options, measured on this machine (raw rsync, first full copy of the tree, "
            f"median of {matrix_reps}):",
            "",
            "| ssh cipher / rsync options | seconds | MiB/s |",
            "|---|---|---|",
        ]
        for label, samples in results.items():
            med = Timing(samples).median
            lines.append(f"| {label} | {med:.2f} | {written / med / 2**20:.0f} |")
        section.tables.append("\n".join(lines))

        # -- incremental: change 1% of the files ---------------------------------------------
        syncer.sync(src, host.target, str(_fresh(dst)))  # in step again
        rng = random.Random(7)
        all_files = sorted(p for p in src.rglob("*.bin"))
        changed = rng.sample(all_files, max(1, len(all_files) // 100))
        bytes_changed = 0
        for p in changed:
            size = p.stat().st_size
            p.write_bytes(os.urandom(size))
            bytes_changed += size
        stats = syncer.sync(src, host.target, str(dst))
        inc_ratio = stats.bytes_sent / bytes_changed
        section.figures.append(
            Figure(
                f"incremental bytes sent / bytes changed ({len(changed)} files rewritten)",
                inc_ratio,
                "x",
                INCREMENTAL_TARGET,
                detail=f"{stats.bytes_sent:,} B sent for {bytes_changed:,} B changed; "
                f"{stats.files_transferred} files transferred",
            )
        )
        # Small edits inside files: the delta algorithm at work, and the file list's fixed cost.
        edited = rng.sample([p for p in all_files if p not in set(changed)], len(changed))
        edit = 4096
        for p in edited:
            with p.open("r+b") as f:
                f.seek(p.stat().st_size // 2)
                f.write(os.urandom(edit))
        stats2 = syncer.sync(src, host.target, str(dst))
        section.figures.append(
            Figure(
                f"incremental bytes sent / bytes changed ({len(edited)} files with a 4 KiB edit)",
                stats2.bytes_sent / (edit * len(edited)),
                "x",
                None,
                detail=f"{stats2.bytes_sent:,} B sent for {edit * len(edited):,} B changed",
            )
        )
        # Nothing changed: the fixed cost of one incremental run (file list, metadata).
        stats3 = syncer.sync(src, host.target, str(dst))
        section.notes.append(
            f"An incremental run with nothing changed sent {stats3.bytes_sent:,} bytes "
            f"({stats3.bytes_sent / files:.1f} B per file in the tree: the file list). "
            "This fixed cost is why the ratio for small edits inside files is far above 1: "
            f"{len(edited)} x 4 KiB is small next to a {files:,}-entry file list."
        )
        section.notes.append(_choice_note(results, written))
    return section


def _choice_note(results: dict[str, list[float]], written: int) -> str:
    med = {k: Timing(v).median for k, v in results.items()}
    gcm = med[f"`-c {GCM}`"]
    chacha = med[f"`-c {CHACHA}`"]
    zstd = med[f"`-c {GCM}` + `-z --compress-choice=zstd`"]
    whole = med[f"`-c {GCM}` + `--whole-file`"]

    def cmp(a: float, b: float) -> str:
        return f"{abs(1 - a / b):.0%} {'faster' if a < b else 'slower'}"

    return (
        "**Option choice.** "
        f"Cipher: aes128-gcm took {fmt(gcm)} s, chacha20-poly1305 {fmt(chacha)} s "
        f"(aes128-gcm {cmp(gcm, chacha)}) on this CPU. ec2backup's "
        "`Ciphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com` "
        "puts AES-GCM first (AES-NI, which current EC2 instance types and most laptops have); "
        "chacha20 stays as the fallback. "
        f"Compression (zstd): {fmt(zstd)} s vs {fmt(gcm)} s without ({cmp(zstd, gcm)}), on "
        "incompressible data over loopback, where the link is never the bottleneck: no gain "
        "beyond noise, so it stays off by default. It pays off only on a slow "
        "uplink with compressible data: a per-profile choice (`--compress-choice=zstd -z` in "
        "the profile's rsync arguments). "
        f"`--whole-file` on the first run: {fmt(whole)} s vs {fmt(gcm)} s ({cmp(whole, gcm)}). "
        "Into an empty volume rsync has no basis files and sends whole files anyway, so the "
        "delta machinery is pure overhead there"
        + (
            ": worth passing `--whole-file` on a run whose destination is empty (the first "
            "backup after `init`), and only then, since on later runs it would resend every "
            "changed file in full (see the 4 KiB-edit figure). "
            if whole < 0.93 * gcm
            else "; the difference measured here is too small to justify a special case "
            "(on later runs it would resend every changed file in full). "
        )
        + "Differences under ~10% between single runs are within this machine's noise."
    )
