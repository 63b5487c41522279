"""1. Orchestration overhead: ``ec2backup run`` of a small tree on the local cloud (no injected
delays) against raw ``rsync -a`` of the same tree over a real sshd, alternated in pairs;
overhead = run wall time - raw rsync wall time, median over the pairs.

The local cloud's instances are sshd processes on 127.0.X.Y; the baseline's sshd is the same
binary (``tests/sshd.py``) on 127.0.0.1. The run's own timeline (``ec2backup show --json``)
says where the overhead goes.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from .common import Figure, Section, Timing, cli_env, make_tree
from .sshhost import ssh_host, unavailable

TARGET = 1.0


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ec2backup", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"ec2backup {' '.join(args)} exited {done.returncode}: {done.stderr[-3000:]}"
        )
    return done.stdout.strip()


def _imports(env: dict[str, str], n: int = 10) -> tuple[int, list[tuple[str, int]]]:
    """(total microseconds of top-level imports, the n slowest (name, cumulative us) at the
    top level or one below) of one ``ec2backup run`` under ``python -X importtime``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ec2backup", "run", "--profile", "bench"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    total, rows = 0, []
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        if len(m.group(2)) <= 1:
            total += int(m.group(1))
        if len(m.group(2)) <= 3:
            rows.append((m.group(3), int(m.group(1))))
    return total, sorted(rows, key=lambda r: -r[1])[:n]


def run(quick: bool = False) -> Section:
    # Even, so each side runs first in half the pairs (which goes first matters on this VM).
    pairs = 6 if quick else 12
    section = Section(
        key="overhead", title="1. Orchestration overhead", command="python -m benchmarks overhead"
    )
    reason = unavailable()
    if reason:
        section.notes.append(f"Not run: {reason}.")
        return section
    from ec2backup.sandbox import Sandbox

    with tempfile.TemporaryDirectory(prefix="ec2backup-bench-overhead-") as tmp:
        root = Path(tmp)
        src = root / "src"
        written = make_tree(src, 50, 2 << 20, per_dir=10)
        sandbox = Sandbox.start(root / "cloud")
        try:
            env = cli_env(root, sandbox.env)
            start = time.perf_counter()
            _cli(env, "init", "--profile", "bench", "--az", f"{sandbox.region}a", "--size", "1",
                 "--source", str(src))  # fmt: skip
            init_s = time.perf_counter() - start
            _cli(env, "run", "--profile", "bench")  # warm-up: first sync fills the volume
            with ssh_host() as host:
                dst = root / "raw-dst"

                def raw() -> None:
                    subprocess.run(
                        ["rsync", "-a", "--delete", "-e", host.raw_ssh(), f"{src}/",
                         host.remote(dst)],
                        check=True, stdout=subprocess.DEVNULL,
                    )  # fmt: skip

                raw()  # the same state as the run: destination already in step
                runs, raws, run_ids, starts = [], [], [], []
                for i in range(pairs):
                    # Touch one file so each run has something to send, like a real backup.
                    (src / "d00000" / "f0000000.bin").write_bytes(os.urandom(4096))
                    for which in ("run", "raw") if i % 2 == 0 else ("raw", "run"):
                        t0 = time.perf_counter()
                        if which == "run":
                            starts.append(datetime.now(UTC))
                            run_ids.append(_cli(env, "run", "--profile", "bench"))
                            runs.append(time.perf_counter() - t0)
                        else:
                            raw()
                            raws.append(time.perf_counter() - t0)
            per_state: dict[str, list[float]] = defaultdict(list)
            outside: list[float] = []
            before: list[float] = []  # process start -> the run's first event
            for run_id, wall, began in zip(run_ids, runs, starts, strict=True):
                shown = json.loads(_cli(env, "show", run_id, "--json"))
                ats = [datetime.fromisoformat(e["at"]) for e in shown["events"]]
                outside.append(wall - (ats[-1] - ats[0]).total_seconds())
                before.append((ats[0] - began).total_seconds())
                for event in shown["events"]:
                    if event["seconds_in_state"] is not None:
                        per_state[event["to"]].append(event["seconds_in_state"])
            # One more run under -X importtime: what its imports cost (not in the figures).
            imports = _imports(env)
        finally:
            sandbox.stop()
    diffs = [a - b for a, b in zip(runs, raws, strict=True)]
    overhead = statistics.median(diffs)
    section.figures.append(
        Figure(
            "overhead: `ec2backup run` - raw `rsync -a`",
            overhead,
            "s",
            TARGET,
            detail=f"median of {pairs} alternated pairs; "
            + ", ".join(f"{d:.2f}" for d in sorted(diffs)),
        )
    )
    section.figures.append(Figure("`ec2backup run` wall time", Timing(runs).median, "s"))
    section.figures.append(Figure("raw `rsync -a` wall time", Timing(raws).median, "s"))
    section.figures.append(Figure("`ec2backup init` wall time (once)", init_s, "s"))
    rows = ["Where a run's time goes (median seconds in each state, from `ec2backup show`):", "",
            "| state | median s |", "|---|---|"]  # fmt: skip
    rows.append(
        "| (outside the timeline: interpreter, imports, config and volume checks before the "
        f"run is recorded, exit) | {statistics.median(outside):.3f} |"
    )
    rows.append(
        "| of which: process start -> the run's first event (`created`) | "
        f"{statistics.median(before):.3f} |"
    )
    rows.append(
        "| of which: the last event (`done`) -> process exit | "
        f"{statistics.median(o - b for o, b in zip(outside, before, strict=True)):.3f} |"
    )
    for state, values in sorted(per_state.items(), key=lambda kv: -statistics.median(kv[1])):
        rows.append(f"| {state} | {statistics.median(values):.3f} |")
    section.tables.append("\n".join(rows))
    total_us, tops = imports
    section.notes.append(
        f"Imports of one `ec2backup run` (`python -X importtime`, one extra run): "
        f"{total_us / 1e6:.2f} s in all (top-level modules, cumulative); slowest: "
        + ", ".join(f"`{name}` {us / 1000:.0f} ms" for name, us in tops)
        + ". Part of them happen lazily inside the timeline (e.g. in `created`)."
    )
    section.notes.append(
        f"Tree: 50 files, {written / 2**20:.1f} MiB "
        "of random bytes; one 4 KiB file rewritten before each pair. Each `ec2backup run` is a "
        "fresh process (interpreter, imports, database) that launches an instance, waits for "
        "its sshd, reads host keys from the console, attaches, mounts, rsyncs, unmounts, "
        "detaches, terminates and snapshots; the baseline is one rsync over ssh to a "
        "running sshd. The local cloud has no injected delays, so the overhead is ec2backup's "
        "own work plus the local cloud's (moto calls, sshd start, loop devices, mkfs-free mount). "
        "The baseline's sshd is the same binary as the instances', started by `tests/sshd.py` "
        "with `SetEnv SHLVL=1` so that bash does not source the host root's ~/.bashrc (on this "
        "VM it runs `pyenv init`, 0.1 s per SSH command; the instances' user has no dotfiles). "
        "ec2backup's modules are byte-compiled first, as in an installed wheel."
    )
    return section
