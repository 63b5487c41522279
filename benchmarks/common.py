"""What every benchmark shares: timing with repetition, the machine description, the result
record and its Markdown rendering.

A benchmark returns a ``Section``: figures (each with its target and whether it is met), the
command that reproduces it, and notes. A missed target is reported, never raised: benchmarks
are not tests.
"""

from __future__ import annotations

import compileall
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@dataclass
class Figure:
    name: str
    value: float | None  # None: not measured
    unit: str
    target: float | None = None  # None: reported only
    better: str = "lower"  # "lower" or "higher" is better
    detail: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None or self.target is None:
            return None
        return self.value <= self.target if self.better == "lower" else self.value >= self.target

    def verdict(self) -> str:
        met = self.met
        if self.value is None:
            return "not run"
        if met is None:
            return "reported"
        if met:
            return "met"
        assert self.target is not None and self.value is not None
        over = self.value - self.target if self.better == "lower" else self.target - self.value
        rel = f", {over / self.target:+.0%}" if self.target else ""
        return f"**missed** by {fmt(abs(over))} {self.unit}{rel}"


@dataclass
class Section:
    key: str  # the benchmark's name on the command line
    title: str
    command: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # extra Markdown blocks
    seconds: float = 0.0

    def markdown(self, machine_line: str) -> str:
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        out = [f"### {self.title}", ""]
        out.append(f"Reproduce: `{self.command}` (measured {when} on {machine_line}; ")
        out[-1] += f"took {self.seconds:.0f} s)."
        out.append("")
        if self.figures:
            out += ["| figure | measured | target | verdict |", "|---|---|---|---|"]
            for f in self.figures:
                value = "-" if f.value is None else f"{fmt(f.value)} {f.unit}"
                rel = "<=" if f.better == "lower" else ">="
                target = "-" if f.target is None else f"{rel} {fmt(f.target)} {f.unit}"
                name = f.name + (f" ({f.detail})" if f.detail else "")
                out.append(f"| {name} | {value} | {target} | {f.verdict()} |")
            out.append("")
        for table in self.tables:
            out += [table.rstrip(), ""]
        for note in self.notes:
            out += [note.rstrip(), ""]
        return "\n".join(out).rstrip() + "\n"


def fmt(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


@dataclass
class Timing:
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples)

    @property
    def stdev(self) -> float:
        return statistics.stdev(self.samples) if len(self.samples) > 1 else 0.0

    @property
    def min(self) -> float:
        return min(self.samples)

    def summary(self) -> str:
        return (
            f"median {self.median:.3f} s, mean {self.mean:.3f} ± {self.stdev:.3f} s, "
            f"min {self.min:.3f} s, n={len(self.samples)}"
        )


def repeat(fn: Callable[[], object], runs: int, warmup: int = 1) -> Timing:
    """hyperfine-like: ``warmup`` untimed calls, then ``runs`` timed ones (wall clock)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return Timing(samples)


def run_quiet(argv: Sequence[str], env: dict[str, str] | None = None, **kw: object) -> None:
    """Run a command, discarding its output; raise with its stderr if it fails."""
    done = subprocess.run(
        list(argv), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw
    )  # type: ignore[call-overload]
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode(errors='replace')}"
        )


# --- the machine --------------------------------------------------------------------------


def _first_line(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "unavailable"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_has_aes() -> bool:
    try:
        return bool(re.search(r"^flags\s*:.*\baes\b", Path("/proc/cpuinfo").read_text(), re.M))
    except OSError:
        return False


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return 0.0


def machine() -> dict[str, str]:
    ssh = shutil.which("ssh") or "ssh"
    return {
        "CPU": f"{cpu_model()} ({'AES-NI' if cpu_has_aes() else 'no AES-NI'})",
        "cores": str(os.cpu_count()),
        "memory": f"{memory_gib():.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_version()} ({interpreter_path()})",
        "pure-Python speed": f"{python_loop_ms():.0f} ms for sum(i*i for i in range(10**6)), "
        "best of 5",
        "rsync": _first_line(["rsync", "--version"]),
        "OpenSSH": _first_line([ssh, "-V"]),
        "filesystem of /tmp": _fs_type(Path("/tmp")),
    }


def interpreter_path() -> str:
    """The interpreter behind the virtualenv: builds differ a lot in speed (on the benchmark
    VM, pyenv's default build without PGO/LTO runs Python code ~1.6x slower than Debian's)."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def python_loop_ms() -> float:
    """A fixed pure-Python loop: how fast this interpreter on this machine runs Python code,
    to compare figures taken on different interpreters or days."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        sum(i * i for i in range(10**6))
        best = min(best, time.perf_counter() - start)
    return best * 1000


def machine_line() -> str:
    m = machine()
    return f"{m['cores']} x {cpu_model()}, {m['memory']}"


def _fs_type(path: Path) -> str:
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mnt, fstype = parts[1], parts[2]
            if str(path.resolve()).startswith(mnt) and len(mnt) > len(best):
                best, kind = mnt, fstype
    except OSError:
        pass
    return kind


def machine_markdown() -> str:
    rows = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in machine().items()]
    return "\n".join(rows) + "\n"


# --- trees --------------------------------------------------------------------------------


def make_tree(root: Path, files: int, total_bytes: int, *, per_dir: int = 100) -> int:
    """``files`` files of fresh random bytes (incompressible, also across files, so a
    compressor's window finds nothing either) totalling about ``total_bytes``, ``per_dir``
    to a directory. Returns the bytes written."""
    root.mkdir(parents=True, exist_ok=True)
    size = max(total_bytes // files, 0)
    written = 0
    for i in range(files):
        d = root / f"d{i // per_dir:05d}"
        if i % per_dir == 0:
            d.mkdir(exist_ok=True)
        data = os.urandom(size) if size else b""
        (d / f"f{i:07d}.bin").write_bytes(data)
        written += len(data)
    return written


def pending_writeback_bytes() -> int:
    """Dirty and under-write-back page cache, from /proc/meminfo (0 where there is none)."""
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return 0
    fields = dict(re.findall(r"^(Dirty|Writeback):\s+(\d+) kB", text, re.M))
    return sum(int(v) for v in fields.values()) * 1024


def settle(limit_bytes: int = 16 << 20, timeout: float = 60.0) -> float:
    """Flush the page cache and wait (polling, up to ``timeout``) until what the previous
    benchmark wrote is on disk: its write-back would otherwise compete with the next one's
    timings. Returns the seconds it took."""
    start = time.monotonic()
    os.sync()
    while pending_writeback_bytes() > limit_bytes and time.monotonic() - start < timeout:
        time.sleep(0.1)
    return time.monotonic() - start


def byte_compile_package() -> None:
    """Write ec2backup's bytecode, as pip does when it installs the wheel. A development
    checkout run with PYTHONDONTWRITEBYTECODE=1 (as this VM's shell sets it) otherwise
    compiles ec2backup's modules from source in every process: ~50 ms of each ``run`` that an
    installed ec2backup never pays."""
    compileall.compile_dir(ROOT / "ec2backup", quiet=1)


def cli_env(
    root: Path, cloud_env: dict[str, str], base: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of an ec2backup command on a local cloud: its config, database and data
    directory under ``root``."""
    return {
        **(os.environ if base is None else base),
        **cloud_env,
        "EC2BACKUP_CONFIG": str(root / "config.toml"),
        "EC2BACKUP_DB": f"sqlite:///{root / 'ec2backup.db'}",
        "EC2BACKUP_DATA_DIR": str(root / "data"),
    }
