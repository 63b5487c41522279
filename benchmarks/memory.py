"""7. Memory: the peak RSS of the ec2backup Python process while ``RsyncSyncer.sync`` mirrors a
200,000-file tree over a real sshd, with the progress sink consuming every progress line.

The sync runs in a fresh child process that first imports what ``ec2backup run`` imports
(boto3, asyncssh, SQLAlchemy, the service layer), so the figure is the process a user runs,
not a bare interpreter. Its peak is ``VmHWM`` from ``/proc/self/status`` (``ru_maxrss``
would include the forking parent's size); rsync and ssh are sampled separately (their
file lists are rsync's memory, not ours).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import ROOT, Figure, Section, make_tree
from .sshhost import ssh_host, unavailable

TARGET_MB = 150
FILES = 200_000

CHILD = r"""
import json, resource, sys, time
from pathlib import Path

def rss_mb():
    # VmHWM: this process's resident high-water mark since its exec. ru_maxrss is not used:
    # Linux carries it over from the forking parent (the benchmark runner), inflating it.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

base = rss_mb()
import ec2backup.adapters.rsync
sync_only = rss_mb()
if sys.argv[1] == "full":
    import ec2backup.adapters.aws.session, ec2backup.adapters.ssh  # noqa
    import ec2backup.commands.runner, ec2backup.db.store  # noqa
    import ec2backup.db.models, ec2backup.run.steps, ec2backup.run.engine  # noqa
loaded = rss_mb()
try:
    from ec2backup.cli.progress import make_progress
    sink = make_progress(False)
    on_progress = sink.on_progress
except ImportError:
    sink, on_progress = None, (lambda line: None)
from ec2backup.ports import SshTarget
from ec2backup.adapters.rsync import RsyncSyncer
t = json.loads(sys.argv[2])
target = SshTarget(host=t["host"], user=t["user"], key_path=Path(t["key"]),
                   known_hosts_path=Path(t["known"]), port=t["port"])
import os, threading
peaks = {"local rsync": 0, "remote rsync": 0, "ssh": 0}
stop = threading.Event()
def sample():
    # VmHWM: each process's own resident high-water mark (reset at exec, unlike ru_maxrss).
    me = str(os.getpid())
    while not stop.is_set():
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                status = open(f"/proc/{pid}/status").read()
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            name = status.split("\n", 1)[0].split()[-1]
            hwm = next((int(l.split()[1]) for l in status.splitlines() if l.startswith("VmHWM")), 0)
            ours = any(sys.argv[4].encode() in c for c in cmd)
            if name == "rsync" and b"--server" in cmd and ours:
                key = "remote rsync"
            elif name in ("rsync", "ssh") and f"PPid:\t{me}\n" in status:
                key = "local rsync" if name == "rsync" else "ssh"
            elif name in ("rsync", "ssh"):
                ppid = next(l.split()[1] for l in status.splitlines() if l.startswith("PPid"))
                try:
                    parent = open(f"/proc/{ppid}/status").read()
                except OSError:
                    continue
                if f"PPid:\t{me}\n" not in parent:
                    continue
                key = "local rsync" if name == "rsync" else "ssh"
            else:
                continue
            peaks[key] = max(peaks[key], hwm / 1024)
        stop.wait(0.05)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
lines = [0]
def count(line):
    lines[0] += 1
    on_progress(line)
start = time.perf_counter()
stats = RsyncSyncer().sync(Path(sys.argv[3]), target, sys.argv[4], on_progress=count)
elapsed = time.perf_counter() - start
stop.set(); sampler.join()
if sink is not None:
    sink.close()
print(json.dumps({"interpreter": base, "after_import_sync": sync_only, "after_imports": loaded,
                  "peak_self": rss_mb(), "peaks": peaks,
                  "files": stats.files_transferred, "seconds": elapsed,
                  "progress_lines": lines[0]}))
"""


def _child(mode: str, host_json: str, src: Path, dst: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, host_json, str(src), str(dst)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child exited {done.returncode}: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _free(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def run(quick: bool = False) -> Section:
    files = 50_000 if quick else FILES
    section = Section(key="memory", title="7. Memory", command="python -m benchmarks memory")
    reason = unavailable()
    if reason:
        section.notes.append(f"Not run: {reason}.")
        return section
    # On tmpfs when there is room: this measures memory, and 600,000 small files on a slow
    # disk would take minutes to create and delete.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and _free("/dev/shm") > files * 4096 * 4 else None
    with (
        tempfile.TemporaryDirectory(prefix="ec2backup-bench-mem-", dir=shm) as tmp,
        ssh_host() as host,
    ):
        src = Path(tmp) / "src"
        start = time.perf_counter()
        make_tree(src, files, files * 100, per_dir=200)
        made = time.perf_counter() - start
        where = "tmpfs" if shm else "the default temporary directory"
        t = host.target
        host_json = json.dumps(
            {"host": t.host, "user": t.user, "key": str(t.key_path),
             "known": str(t.known_hosts_path), "port": t.port}
        )  # fmt: skip
        full = _child("full", host_json, src, Path(tmp) / "dst-full")
        bare = _child("bare", host_json, src, Path(tmp) / "dst-bare")
        # rm -rf is several times faster than shutil.rmtree on 3 x 200,000 files.
        subprocess.run(["rm", "-rf", str(src), str(Path(tmp) / "dst-full"),
                        str(Path(tmp) / "dst-bare")], check=False)  # fmt: skip
    section.figures += [
        Figure(
            f"peak RSS of the ec2backup process, sync of {files:,} files",
            full["peak_self"],
            "MB",
            TARGET_MB,
            detail="run's modules imported (boto3, asyncssh, SQLAlchemy)",
        ),
        Figure(
            "of which: before the sync started",
            full["after_imports"],
            "MB",
            None,
        ),
        Figure(
            f"peak RSS, sync module only, same {files:,} files",
            bare["peak_self"],
            "MB",
            None,
            detail=f"{bare['after_import_sync']:.0f} MB before the sync",
        ),
    ]
    for name, mb in full["peaks"].items():
        section.figures.append(
            Figure(f"peak RSS of {name} (VmHWM, sampled every 50 ms), separate", mb, "MB")
        )
    growth = full["peak_self"] - full["after_imports"]
    section.notes.append(
        f"The sync itself grew the process by {growth:.1f} MB over {files:,} files "
        f"({growth * 2**20 / files:.0f} B per file; it streams rsync's output and keeps no "
        f"per-file state). It took {full['seconds']:.1f} s and delivered "
        f"{int(full['progress_lines']):,} progress lines to the sink. The tree "
        f"({files:,} files of 100 B, 200 to a directory, in {where}) took {made:.0f} s to create. "
        "rsync runs with incremental recursion (its default), so it holds the file list of "
        "the directories in flight rather than of the whole tree, on both sides."
    )
    return section
