"""8. Speed tricks, with and without: each trick of ``ec2backup/fastpaths.py`` measured on
against off, side by side, and what all of them together buy.

The subject processes run on the interpreter named by ``EC2BACKUP_BENCH_PYTHON`` (a
virtualenv's ``python`` with ec2backup installed), by default this one. ``make bench`` points
it at a virtualenv of Debian's ``/usr/bin/python3`` (``.venv-system``), the interpreter CI and
a fresh Debian machine run ec2backup on: a build's speed changes what a trick is worth.

Each trick is turned off alone through the switch itself (``EC2BACKUP_NO_FASTPATHS=NAME``),
so the "off" side is exactly what ``EC2BACKUP_NO_FASTPATHS=1`` runs for that trick. Pairs
alternate (on then off, then off then on, ...), so drift and warm caches hit both sides;
saving = off - on per pair, median over the pairs, with the interval of ranks that holds the
true median with >= 95% confidence (a sign test: no assumption on the spread). Figures:

* wall: seconds from process start to its exit, as a user waits for it;
* CPU: user + system seconds of the ec2backup process itself (all its threads, read from
  ``/proc/PID/stat`` while it is a zombie; not its children rsync and ssh, 10 ms ticks), which
  other work on the machine disturbs far less than wall time;
* instructions: ``valgrind --tool=callgrind`` counts, where valgrind is installed, for the
  CPU-bound tricks a process can be cut down to (deterministic; one run a side).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ec2backup.fastpaths import (
    BOTOCORE_MODELS,
    FAST_EXIT,
    GC_PAUSE,
    NAMES,
    PROGRESS_BATCHES,
    SQLITE_RUNS,
    SSH_MULTIPLEX,
)

from .common import Figure, Section, cli_env, make_tree
from .sshhost import ssh_host, unavailable

SUBJECT_ENV = "EC2BACKUP_BENCH_PYTHON"
SWITCH = "EC2BACKUP_NO_FASTPATHS"
# A trick stays if it buys at least this much (or a gain a user sees on a large transfer).
WORTH = 0.050


def subject_python() -> Path:
    return Path(os.environ.get(SUBJECT_ENV) or sys.executable)


def _interpreter_of(python: Path) -> str:
    done = subprocess.run(
        [
            str(python),
            "-c",
            "import os, platform, sys; print(platform.python_version(), "
            "os.path.realpath(getattr(sys, '_base_executable', sys.executable)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


# --- one measured process -------------------------------------------------------------


@dataclass
class Proc:
    wall: float
    cpu: float  # the process's own user + system seconds, every thread, not its children
    stdout: str


def _own_cpu(pid: int) -> float:
    """utime + stime of a process that has exited and is not reaped yet."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(argv: Sequence[str], env: dict[str, str], timeout: float = 600.0) -> Proc:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        try:
            # Wait for the exit without reaping, so /proc still has the process's CPU times.
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            wall = time.perf_counter() - start
            cpu = _own_cpu(proc.pid)
        finally:
            proc.wait()
            watchdog.cancel()
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {proc.returncode}: "
                f"{err.read().decode(errors='replace')[-3000:]}"
            )
        return Proc(wall, cpu, out.read().decode(errors="replace"))


def callgrind_instructions(argv: Sequence[str], env: dict[str, str]) -> int | None:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    done = subprocess.run(
        [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        env={**env, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"callgrind of {' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}"
        )
    for line in done.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1].strip())
    return None


# --- pairs ----------------------------------------------------------------------------


def median_interval(values: Sequence[float]) -> tuple[float, float]:
    """The ranks around the median that hold the true median with >= 95% confidence."""
    ordered = sorted(values)
    n = len(ordered)
    k, below = 0, 0.0  # k: values left out on each side
    while True:
        below += math.comb(n, k) / 2**n
        if below > 0.025 or k + 1 > n // 2:
            break
        k += 1
    return ordered[k], ordered[n - 1 - k]


@dataclass
class Pairs:
    """Alternated measurements of one figure with the trick on and off."""

    on: list[float] = field(default_factory=list)
    off: list[float] = field(default_factory=list)
    on_first: list[bool] = field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)

    @property
    def savings(self) -> list[float]:
        return [b - a for a, b in zip(self.on, self.off, strict=True)]

    @property
    def saved(self) -> float:
        return statistics.median(self.savings)


def alternate(
    n: int, once: Callable[[bool], dict[str, float]], before: Callable[[], None] = lambda: None
) -> dict[str, Pairs]:
    """``n`` pairs of ``once(trick_on)``, on first in the even pairs; each call returns its
    figures by name (e.g. wall and CPU of the same process)."""
    result: dict[str, Pairs] = {}
    load_start = os.getloadavg()[0]
    for i in range(n):
        before()
        got: dict[bool, dict[str, float]] = {}
        for side in (True, False) if i % 2 == 0 else (False, True):
            got[side] = once(side)
        for name in got[True]:
            pairs = result.setdefault(name, Pairs())
            pairs.on.append(got[True][name])
            pairs.off.append(got[False][name])
            pairs.on_first.append(i % 2 == 0)
    for pairs in result.values():
        pairs.load = (load_start, os.getloadavg()[0])
    return result


@dataclass
class Row:
    trick: str
    what: str
    pairs: Pairs
    unit: str = "s"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:+.0f}"


def table(rows: Sequence[Row]) -> str:
    out = [
        "| trick | figure | pairs | median on | median off | saved (median of off - on) "
        "| 95% interval | per-pair savings, ms, run order | load 1-min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        p = row.pairs
        lo, hi = median_interval(p.savings)
        out.append(
            f"| `{row.trick}` | {row.what} | {len(p.on)} | {statistics.median(p.on):.3f} s "
            f"| {statistics.median(p.off):.3f} s | **{p.saved * 1000:.0f} ms** "
            f"| {lo * 1000:.0f} to {hi * 1000:.0f} ms | {', '.join(_ms(s) for s in p.savings)} "
            f"| {p.load[0]:.2f} -> {p.load[1]:.2f} |"
        )
    return "\n".join(out)


# --- the subjects ---------------------------------------------------------------------

# A fresh process doing what a run does first with boto3 (the trick's whole scope).
CLIENT_SETUP = """
import os
from ec2backup.adapters.aws.session import make_ec2
from ec2backup.config import DEFAULT_AMI
ec2 = make_ec2(os.environ["AWS_DEFAULT_REGION"])
ec2.resolve_image(DEFAULT_AMI)  # SSM GetParameter + DescribeImages, as a run starts
ec2.find_instances({"ec2backup:managed": "true"})  # the first paginator
"""

# The console script, with the CPU seconds spent in the cyclic garbage collector counted
# (gc.callbacks, the collecting thread's CPU time) and written to GC_PROBE_OUT at exit.
GC_PROBE = """
import gc, json, os, sys, time
spent, count, began = [0.0], [0], [0.0]
def count_collection(phase, info):
    if phase == "start":
        began[0] = time.thread_time()
    else:
        spent[0] += time.thread_time() - began[0]
        count[0] += 1
gc.callbacks.append(count_collection)
out = os.environ.pop("GC_PROBE_OUT")
def report():
    with open(out, "w") as f:
        json.dump({"gc_cpu": spent[0], "collections": count[0]}, f)
real_exit = os._exit
def exit_reporting(code):
    report()
    real_exit(code)
os._exit = exit_reporting
sys.argv = ["ec2backup", *sys.argv[1:]]
from ec2backup.cli.main import main
try:
    main()
finally:
    report()
"""

SYNC = """
import json, os, resource, shutil, sys, time
from pathlib import Path
from ec2backup.adapters.rsync import RsyncSyncer
from ec2backup.ports import SshTarget
host, port, user, key, known, src, dst_root, pairs = sys.argv[1:]
target = SshTarget(host=host, port=int(port), user=user, key_path=Path(key),
                   known_hosts_path=Path(known))
def cpu(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime
def once(on, name):
    if on:
        os.environ.pop("EC2BACKUP_NO_FASTPATHS", None)
    else:
        os.environ["EC2BACKUP_NO_FASTPATHS"] = "progress-batches"
    dst = os.path.join(dst_root, name)
    lines = [0]
    def count(_line):
        lines[0] += 1
    self0, children0 = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    RsyncSyncer().sync(Path(src), target, dst, on_progress=count)
    wall = time.perf_counter() - start
    own, children = cpu(resource.RUSAGE_SELF) - self0, cpu(resource.RUSAGE_CHILDREN) - children0
    shutil.rmtree(dst)
    return {"wall": wall, "cpu": own, "rsync_cpu": children, "lines": lines[0]}
once(True, "warm-up")
out = []
for i in range(int(pairs)):
    sides = (True, False) if i % 2 == 0 else (False, True)
    out.append({str(side): once(side, f"{i}-{side}") for side in sides})
print(json.dumps(out))
"""


def _in_process_pairs(
    results: list[dict[str, dict[str, float]]], load: tuple[float, float], names: Sequence[str]
) -> dict[str, Pairs]:
    out = {name: Pairs(load=load) for name in names}
    for i, pair in enumerate(results):
        for name in names:
            out[name].on.append(pair["True"][name])
            out[name].off.append(pair["False"][name])
            out[name].on_first.append(i % 2 == 0)
    return out


def _env_for(base: dict[str, str], off: str | None) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k != SWITCH}
    if off:
        env[SWITCH] = off
    return env


@dataclass
class Cloud:
    """A local cloud with one initialised profile, and the ec2backup that runs against it."""

    env: dict[str, str]
    cli: list[str]
    python: Path
    src: Path
    workdir: Path

    def touch(self) -> None:  # something to send before each pair, like a real backup
        (self.src / "d00000" / "f0000000.bin").write_bytes(os.urandom(4096))

    def run_pairs(self, off: str, n: int) -> dict[str, Pairs]:
        def once(on: bool) -> dict[str, float]:
            done = measure(
                [*self.cli, "run", "--profile", "bench"],
                _env_for(self.env, off=None if on else off),
            )
            return {"wall": done.wall, "cpu": done.cpu}

        return alternate(n, once, self.touch)

    def gc_pairs(self, n: int) -> dict[str, Pairs]:
        out = self.workdir / "gc.json"

        def once(on: bool) -> dict[str, float]:
            env = _env_for(self.env, off=None if on else GC_PAUSE)
            env["GC_PROBE_OUT"] = str(out)
            done = measure([str(self.python), "-c", GC_PROBE, "run", "--profile", "bench"], env)
            probe = json.loads(out.read_text())
            return {
                "wall": done.wall,
                "cpu": done.cpu,
                "gc": probe["gc_cpu"],
                "collections": probe["collections"],
            }

        return alternate(n, once, self.touch)


def _process_pairs(argv: Sequence[str], env: dict[str, str], off: str, n: int) -> dict[str, Pairs]:
    def once(on: bool) -> dict[str, float]:
        done = measure(argv, _env_for(env, None if on else off))
        return {"wall": done.wall, "cpu": done.cpu}

    return alternate(n, once)


def _callgrind_row(
    trick: str,
    what: str,
    argv: Sequence[str],
    env: dict[str, str],
    on_cpu: float,
    keep_off: str = "",
) -> str | None:
    """One callgrind run a side; ``keep_off`` is turned off on both sides."""
    on = callgrind_instructions(argv, _env_for(env, keep_off or None))
    off = callgrind_instructions(argv, _env_for(env, ",".join(filter(None, (keep_off, trick)))))
    if on is None or off is None:
        return None
    share = (off - on) / on
    return (
        f"| `{trick}` | {what} | {on:,} | {off:,} | {off - on:+,} ({share:+.0%}) "
        f"| {share * on_cpu * 1000:.0f} ms |"
    )


WHOLE_RUN = "`ec2backup run` (50 files, 2 MiB; local cloud)"


# --- the benchmark ----------------------------------------------------------------------


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    decisive: dict[str, tuple[str, Pairs]] = field(default_factory=dict)
    totals: list[Row] = field(default_factory=list)
    grind: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, trick: str, what: str, pairs: Pairs, *, decides: bool = False) -> None:
        self.rows.append(Row(trick, what, pairs))
        if decides:
            self.decisive[trick] = (what, pairs)


def _log(text: str) -> None:
    print(f"   {text}", file=sys.stderr, flush=True)


def _measure_runs_command(
    res: Results, cli: list[str], root: Path, base: dict[str, str], pairs: int, quick: bool
) -> None:
    from .cli_speed import N_RUNS, fill_db

    n_runs = 2_000 if quick else N_RUNS
    url = f"sqlite:///{root / 'runs.db'}"
    fill_db(url, n_runs)
    env = {
        **base,
        "EC2BACKUP_DB": url,
        "EC2BACKUP_CONFIG": str(root / "none.toml"),
        "EC2BACKUP_DATA_DIR": str(root / "runs-data"),
        "COLUMNS": "200",
    }
    argv = [*cli, "runs"]
    what = f"`ec2backup runs` ({n_runs:,} runs, table)"
    measure(argv, env)  # warm-up
    _log(f"{SQLITE_RUNS}: {pairs} pairs of `ec2backup runs`")
    got = _process_pairs(argv, env, SQLITE_RUNS, pairs)
    res.add(SQLITE_RUNS, f"{what}: CPU", got["cpu"], decides=True)
    res.add(SQLITE_RUNS, f"{what}: wall", got["wall"])
    if not quick:
        # gc-pause's 10 s timer would fire within a command slowed ~100x by valgrind.
        line = _callgrind_row(
            SQLITE_RUNS, what, argv, env, statistics.median(got["cpu"].on), keep_off=GC_PAUSE
        )
        res.grind += [line] if line else []
    got = _process_pairs(argv, env, "1", pairs)
    res.totals += [
        Row("all (=1)", f"{what}: wall", got["wall"]),
        Row("all (=1)", f"{what}: CPU", got["cpu"]),
    ]


def _measure_on_the_cloud(
    res: Results, cloud: Cloud, pairs: int, small_pairs: int, quick: bool
) -> None:
    setup = [str(cloud.python), "-c", CLIENT_SETUP]
    measure(setup, cloud.env)  # warm-up: writes the trimmed models to the cache
    _log(f"{BOTOCORE_MODELS}: {small_pairs} pairs of the client set-up")
    got = _process_pairs(setup, cloud.env, BOTOCORE_MODELS, small_pairs)
    what = "a process making the run's clients (EC2, SSM) and first three calls"
    res.add(BOTOCORE_MODELS, f"{what}: CPU", got["cpu"], decides=True)
    res.add(BOTOCORE_MODELS, f"{what}: wall", got["wall"])
    if not quick:
        line = _callgrind_row(
            BOTOCORE_MODELS, what, setup, cloud.env, statistics.median(got["cpu"].on)
        )
        res.grind += [line] if line else []
    _log(f"{FAST_EXIT}: {pairs} pairs of `ec2backup run`")
    got = cloud.run_pairs(FAST_EXIT, pairs)
    res.add(FAST_EXIT, f"{WHOLE_RUN}: CPU", got["cpu"], decides=True)
    res.add(FAST_EXIT, f"{WHOLE_RUN}: wall", got["wall"])
    _log(f"{SSH_MULTIPLEX}: {pairs} pairs of `ec2backup run`")
    got = cloud.run_pairs(SSH_MULTIPLEX, pairs)
    res.add(SSH_MULTIPLEX, f"{WHOLE_RUN}: wall", got["wall"], decides=True)
    res.add(SSH_MULTIPLEX, f"{WHOLE_RUN}: CPU", got["cpu"])
    _log(f"{GC_PAUSE}: {pairs} pairs of `ec2backup run`, collections counted")
    got = cloud.gc_pairs(pairs)
    res.add(GC_PAUSE, f"{WHOLE_RUN}: CPU in the garbage collector", got["gc"], decides=True)
    res.add(GC_PAUSE, f"{WHOLE_RUN}: CPU", got["cpu"])
    res.add(GC_PAUSE, f"{WHOLE_RUN}: wall", got["wall"])
    res.notes.append(
        f"Garbage collections in one `ec2backup run`: "
        f"{statistics.median(got['collections'].on):.0f} with `gc-pause` (all before it "
        "starts, in the console script's imports), "
        f"{statistics.median(got['collections'].off):.0f} without (median)."
    )
    _log(f"all tricks: {pairs} pairs of `ec2backup run`")
    got = cloud.run_pairs("1", pairs)
    res.totals += [
        Row("all (=1)", f"{WHOLE_RUN}: wall", got["wall"]),
        Row("all (=1)", f"{WHOLE_RUN}: CPU", got["cpu"]),
    ]


def _measure_sync(
    res: Results, python: Path, base: dict[str, str], sync_pairs: int, quick: bool
) -> None:
    files, size = (2_000, 64 << 20) if quick else (10_000, 320 << 20)
    with ssh_host() as host:
        t = host.target
        args = [t.host, str(t.port), t.user, str(t.key_path), str(t.known_hosts_path)]
        # Both ends in tmpfs: no disk write-back in the timings.
        shm = Path(tempfile.mkdtemp(prefix="ec2backup-bench-fast-", dir="/dev/shm"))
        try:
            tree, dst_root = shm / "src", shm / "dst"
            make_tree(tree, files, size)
            dst_root.mkdir()
            _log(f"{PROGRESS_BATCHES}: {sync_pairs} pairs of a sync")
            load0 = os.getloadavg()[0]
            out = measure(
                [str(python), "-c", SYNC, *args, str(tree), str(dst_root), str(sync_pairs)], base
            )
        finally:
            shutil.rmtree(shm, ignore_errors=True)
    got = _in_process_pairs(
        json.loads(out.stdout), (load0, os.getloadavg()[0]), ["wall", "cpu", "rsync_cpu", "lines"]
    )
    what = f"a first sync of {files:,} files, {size >> 20} MiB (tmpfs, loopback)"
    res.add(PROGRESS_BATCHES, f"{what}: wall", got["wall"], decides=True)
    res.add(PROGRESS_BATCHES, f"{what}: CPU of the reading process", got["cpu"])
    res.add(PROGRESS_BATCHES, f"{what}: CPU of local rsync and ssh", got["rsync_cpu"])
    wall = got["wall"]
    res.notes.append(
        f"The syncs delivered {statistics.median(got['lines'].on):,.0f} progress "
        f"updates each (median) with batched reads, "
        f"{statistics.median(got['lines'].off):,.0f} without. With batching the sync "
        f"took {statistics.median(wall.on):.2f} s (median), without "
        f"{statistics.median(wall.off):.2f} s: the trick saves "
        f"{wall.saved / statistics.median(wall.off):.1%} of a sync's time here, "
        "in proportion to the number of files."
    )


def run(quick: bool = False) -> Section:
    # Even counts: each side runs first in half the pairs.
    pairs = 4 if quick else 10
    small_pairs = 6 if quick else 20
    sync_pairs = 2 if quick else 8
    python = subject_python()
    section = Section(
        key="fastpaths",
        title="8. Speed tricks, with and without",
        command="python -m benchmarks fastpaths",
    )
    reason = unavailable()
    if reason:
        section.notes.append(f"Not run: {reason}.")
        return section
    from ec2backup.sandbox import Sandbox

    res = Results()
    console = python.parent / "ec2backup"
    cli = [str(console)] if console.exists() else [str(python), "-m", "ec2backup"]
    base = {k: v for k, v in os.environ.items() if k != SWITCH}
    with tempfile.TemporaryDirectory(prefix="ec2backup-bench-fast-") as tmp:
        root = Path(tmp)
        base["EC2BACKUP_CACHE_DIR"] = str(root / "cache")
        _measure_runs_command(res, cli, root, base, small_pairs, quick)
        src = root / "src"
        make_tree(src, 50, 2 << 20, per_dir=10)
        sandbox = Sandbox.start(root / "cloud")
        try:
            env = cli_env(root, sandbox.env, base)
            measure(
                [
                    *cli,
                    "init",
                    "--profile",
                    "bench",
                    "--az",
                    f"{sandbox.region}a",
                    "--size",
                    "1",
                    "--source",
                    str(src),
                ],
                env,
            )
            measure([*cli, "run", "--profile", "bench"], env)  # warm-up: fills the volume
            cloud = Cloud(env=env, cli=cli, python=python, src=src, workdir=root)
            _measure_on_the_cloud(res, cloud, pairs, small_pairs, quick)
        finally:
            sandbox.stop()
        _measure_sync(res, python, base, sync_pairs, quick)

    for trick in sorted(NAMES - set(res.decisive)):  # a trick added without its measurement
        section.figures.append(Figure(f"`{trick}` saves", None, "s", WORTH, better="higher"))
    for trick in sorted(res.decisive):
        what, got = res.decisive[trick]
        section.figures.append(
            Figure(
                f"`{trick}` saves: {what}",
                got.saved,
                "s",
                WORTH,
                better="higher",
                detail=f"median of {len(got.on)} pairs",
            )
        )
    section.tables.append(
        "Each trick on (all on) against that one off (`EC2BACKUP_NO_FASTPATHS=NAME`), "
        "alternated pairs; a positive saving is time the trick saves:\n\n" + table(res.rows)
    )
    section.tables.append(
        "Every trick on against `EC2BACKUP_NO_FASTPATHS=1` (all off):\n\n" + table(res.totals)
    )
    if res.grind:
        section.tables.append(
            "Instructions (`valgrind --tool=callgrind`, one run a side, PYTHONHASHSEED=0; the "
            "last column is the difference as a share of the median CPU time of the same "
            "process with the trick on):\n\n"
            "| trick | process | instructions on | off | difference | as CPU time |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(res.grind)
        )
    section.notes += res.notes
    section.notes.append(
        f"Subject interpreter: Python {_interpreter_of(python)} (`{python}`). "
        + textwrap.dedent(
            """\
            The `ec2backup run` pairs share one local cloud (no injected delays) and touch one
            4 KiB file before each pair. The sync pairs run in one
            process, the switch set or cleared before each sync, against `tests/sshd.py`'s
            sshd on loopback. CPU is the ec2backup process's own (not rsync's or ssh's)
            unless the row says otherwise.
            """
        ).replace("\n", " ")
    )
    return section
