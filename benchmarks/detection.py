"""3. Detection latency: with the local cloud's state delays on (boot 3 s, attach 1 s, detach
1 s, terminate 2 s), the time between a state change in the cloud and ec2backup acting on it,
per wait; target <= 0.5 s median (botocore's default waiters: 7.5 s on average).

Method: ``ec2backup run`` (several runs, fresh processes) against a sandbox started with the
delays. The sandbox appends one line to ``D/state-changes.jsonl`` at the moment it applies
each delayed change (``sandbox.state.CloudState.record_change``): ``at`` (wall clock, UTC), and
``due``, when the delay ended. For each wait, the latency is the time of the run's first event
after the change (``run_events.at``, read with ``ec2backup show --json``; it must be the
wait's result state: ``instance_running``, ``attached``, ``detached``) minus ``at``. The
sandbox's own reconcile tick (``at`` - ``due``) comes before that and is reported apart.

ec2backup's terminate step does not wait for ``terminated`` (it returns once the instance is
``shutting-down``: billing stops there), so there is no terminate latency to measure; the
benchmark reports instead how long before the cloud's ``terminated`` the run moved on.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from .common import Figure, Section, cli_env, make_tree

TARGET = 0.5
DELAYS = {"boot": 3.0, "attach": 1.0, "detach": 1.0, "terminate": 2.0}
# The run's result state for each cloud change.
RESULT_STATE = {
    "boot": "instance_running",
    "attach": "attached",
    "detach": "detached",
    "terminate": "terminated",
}
WAITED = ("boot", "attach", "detach")  # terminate: not waited for (see the docstring)
CHANGES_FILE = "state-changes.jsonl"  # expected from the sandbox: {"kind", "id", "at"} lines


def missing(directory: Path | None = None) -> str | None:
    from ec2backup.sandbox import settings

    fields = {f.name for f in settings.dataclasses.fields(settings.CloudSettings)}
    if not {f"{k}_delay" for k in DELAYS} <= fields:
        return "needs state delays in the local cloud (CloudSettings.boot_delay, ...)"
    if directory is None or not (directory / CHANGES_FILE).exists():
        return (
            "needs the local cloud to record when it applies each delayed state change "
            f"(`{CHANGES_FILE}` in the sandbox directory: one JSON line per change, "
            '`{"kind": "boot|attach|detach|terminate", "id": "<instance or volume id>", '
            '"at": "<ISO time>"}`). The delays themselves exist (`Sandbox.start(dir, '
            "boot_delay=3, attach_delay=1, detach_delay=1, terminate_delay=2)`); without the "
            "record, the sandbox's own reconcile tick (0.2 s) cannot be told apart from "
            "ec2backup's polling"
        )
    return None


def _records_changes() -> bool:
    """Whether the sandbox code writes the change record (looked for in its source, so the
    check costs no sandbox start)."""
    from ec2backup import sandbox

    src = Path(sandbox.__file__).parent
    return any(CHANGES_FILE in p.read_text() for p in src.glob("*.py"))


def run(quick: bool = False) -> Section:
    section = Section(
        key="detection", title="3. Detection latency", command="python -m benchmarks detection"
    )
    reason = missing(None) if not _records_changes() else None
    if reason:
        section.notes.append(
            f"**Not run yet**: {reason}. The harness is in benchmarks/detection.py."
        )
        for kind in DELAYS:
            section.figures.append(Figure(f"{kind}: detection latency", None, "s", TARGET))
        return section
    from ec2backup.sandbox import Sandbox

    runs = 3 if quick else 8
    lat: dict[str, list[float]] = {k: [] for k in WAITED}
    tick: dict[str, list[float]] = {k: [] for k in DELAYS}
    ahead: list[float] = []  # terminate: the run's `terminated` event before the cloud's
    odd: list[str] = []
    wall: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ec2backup-bench-detect-") as tmp:
        root = Path(tmp)
        src = root / "src"
        make_tree(src, 20, 1 << 20)
        sandbox = Sandbox.start(
            root / "cloud",
            boot_delay=DELAYS["boot"],
            attach_delay=DELAYS["attach"],
            detach_delay=DELAYS["detach"],
            terminate_delay=DELAYS["terminate"],
        )
        try:
            env = cli_env(root, sandbox.env)

            def cli(*args: str) -> str:
                return subprocess.run(
                    [sys.executable, "-m", "ec2backup", *args],
                    env=env, capture_output=True, text=True, check=True,
                ).stdout.strip()  # fmt: skip

            cli("init", "--profile", "b", "--az", f"{sandbox.region}a", "--size", "1",
                "--source", str(src))  # fmt: skip
            shown_runs = []
            for _ in range(runs):
                (src / "d00000" / "f0000000.bin").write_bytes(os.urandom(4096))
                started = time.perf_counter()
                run_id = cli("run", "--profile", "b")
                wall.append(time.perf_counter() - started)
                shown_runs.append(json.loads(cli("show", run_id, "--json")))
            # The run returns before the cloud's `terminated`: poll until the last one's came.
            last_instance = shown_runs[-1]["instance_id"]
            deadline = time.monotonic() + DELAYS["terminate"] + 30.0
            while True:
                changes = [
                    json.loads(line)
                    for line in (sandbox.directory / CHANGES_FILE).read_text().splitlines()
                ]
                if (
                    any(c["kind"] == "terminate" and c["id"] == last_instance for c in changes)
                    or time.monotonic() > deadline
                ):
                    break
                time.sleep(0.1)
            for shown in shown_runs:
                run_id = shown["id"]
                events = [(datetime.fromisoformat(e["at"]), e["to"]) for e in shown["events"]]
                for kind, state in RESULT_STATE.items():
                    resource = shown["instance_id"] if kind in ("boot", "terminate") else (
                        shown["volume_id"])  # fmt: skip
                    result_at = next((at for at, to in events if to == state), None)
                    mine = [
                        (datetime.fromisoformat(c["at"]), datetime.fromisoformat(c["due"]))
                        for c in changes
                        if c["kind"] == kind and c["id"] == resource
                    ]
                    if result_at is None:
                        odd.append(f"{run_id}: no `{state}` event")
                        continue
                    if kind == "terminate":
                        # Applied after the run's `terminated` event, if the run moved on.
                        later = [m for m in mine if m[0] >= result_at]
                        if not later:
                            odd.append(f"{run_id}: no cloud `terminated` after the run's")
                            continue
                        applied, due = later[0]
                        ahead.append((applied - result_at).total_seconds())
                        tick[kind].append((applied - due).total_seconds())
                        continue
                    # The change this run waited for: the last one before its result event.
                    before = [m for m in mine if m[0] <= result_at]
                    if not before:
                        odd.append(f"{run_id} {kind}: no recorded change before `{state}`")
                        continue
                    applied, due = before[-1]
                    tick[kind].append((applied - due).total_seconds())
                    nxt = next(((at, to) for at, to in events if at >= applied), None)
                    if nxt is None or nxt[1] != state:
                        odd.append(
                            f"{run_id} {kind}: next event after the change is "
                            f"`{nxt[1] if nxt else None}`, not `{state}`"
                        )
                    lat[kind].append((result_at - applied).total_seconds())
        finally:
            sandbox.stop()
    for kind in WAITED:
        values = lat[kind]
        samples = ", ".join(f"{v:.3f}" for v in sorted(values))
        section.figures.append(
            Figure(
                f"{kind}: detection latency (delay {DELAYS[kind]:g} s; samples {samples})",
                statistics.median(values) if values else None,
                "s",
                TARGET,
                detail=f"n={len(values)}, max {max(values):.3f} s" if values else "n=0",
            )
        )
    section.figures.append(
        Figure(
            "terminate: not waited for (the run returns at `shutting-down`); its `terminated` "
            "event came this long before the cloud's `terminated`",
            statistics.median(ahead) if ahead else None,
            "s",
            detail=f"n={len(ahead)}",
        )
    )
    for kind in DELAYS:
        values = tick[kind]
        if values:
            section.figures.append(
                Figure(
                    f"{kind}: the local cloud's own lag (delay over -> change applied; "
                    "reconcile tick 0.2 s), not counted above",
                    statistics.median(values),
                    "s",
                    detail=f"n={len(values)}, max {max(values):.3f} s",
                )
            )
    if wall:
        section.figures.append(
            Figure(
                "`ec2backup run` wall time with these delays",
                statistics.median(wall),
                "s",
                detail=f"n={len(wall)}",
            )
        )
    section.notes.append(
        f"{runs} `ec2backup run`s (each a fresh process, 20 files / 1 MiB, one 4 KiB file "
        "rewritten before each) against one local cloud started with boot 3 s, attach 1 s, "
        "detach 1 s, terminate 2 s. Latency = the run's next event after the change "
        "(`run_events.at`, the wait's result state) - the time the cloud applied the change "
        f"(`{CHANGES_FILE}`, written at the moment of the change). ec2backup polls every "
        "0.25 s (`aws.Boto3Ec2.poll_interval`), so half a poll (0.125 s) plus one Describe "
        "call and the event's commit is what to expect on average; botocore's default "
        "waiters (15 s polls) would average 7.5 s."
    )
    if odd:
        section.notes.append("Unexpected: " + "; ".join(odd) + ".")
    return section
