"""6. CLI responsiveness: ``ec2backup --help`` and ``ec2backup runs`` over 10,000 runs.

The database is filled through the ORM models (each run with the events of a finished backup),
then the real console script is timed as a subprocess, hyperfine-style (warm-up, then N runs,
median). Output goes to a pipe, as in a script; rich renders the table either way.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .common import VENV_BIN, Figure, Section, repeat

N_RUNS = 10_000
HELP_TARGET = 0.25
RUNS_TARGET = 0.4


def fill_db(url: str, n: int = N_RUNS) -> None:
    from sqlalchemy import insert

    from ec2backup.core.states import RunKind, path
    from ec2backup.db.models import Event, Run
    from ec2backup.db.store import open_store

    store = open_store(url)
    rng = random.Random(42)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    backup_states = path(RunKind.BACKUP)
    runs: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for i in range(n):
        at = start + timedelta(hours=i)
        rid = at.strftime("%Y%m%dT%H%M%SZ") + f"-{i:06x}"
        failed = rng.random() < 0.05
        runs.append(
            {
                "id": rid,
                "kind": "backup",
                "profile": rng.choice(["home", "photos", "work"]),
                "state": "failed" if failed else "done",
                "failed_from": "syncing" if failed else None,
                "host": "bench",
                "volume_id": "vol-0123456789abcdef0",
                "instance_id": f"i-{rng.getrandbits(68):017x}",
                "snapshot_id": None if failed else f"snap-{rng.getrandbits(68):017x}",
                "ssh_address": "203.0.113.9",
                "launch_token": f"{rid}-1",
                "launch_attempt": 1,
                "host_key_source": "console",
                "created_at": at,
                "updated_at": at + timedelta(minutes=3),
                "finished_at": at + timedelta(minutes=3),
                "error": "rsync failed with exit code 23: some error" if failed else None,
                "error_type": "SyncError" if failed else None,
                "warnings": [],
                "config": {"profile": {"name": "home", "sources": [{"path": "/home/me"}]}},
                "files_transferred": rng.randint(0, 1000),
                "bytes_sent": rng.randint(0, 10**9),
                "total_size": 10**10,
            }
        )
        prev = None
        for k, state in enumerate(backup_states):
            events.append(
                {
                    "run_id": rid,
                    "from_state": prev,
                    "to_state": str(state),
                    "at": at + timedelta(seconds=5 * k),
                    "detail": None,
                }
            )
            prev = str(state)
    with store.session() as session:
        session.execute(insert(Run), runs)
        session.execute(insert(Event), events)
        session.commit()
    store.close()


def _cli(*args: str) -> list[str]:
    script = VENV_BIN / "ec2backup"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "ec2backup", *args]


def _runner(argv: list[str], env: dict[str, str]) -> Callable[[], None]:
    def call() -> None:
        done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if done.returncode != 0:
            raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr.decode()}")

    return call


def top_imports(argv: list[str], env: dict[str, str], n: int = 8) -> list[tuple[str, int]]:
    """The slowest top-level imports (cumulative microseconds) of one invocation."""
    python_argv = [sys.executable, "-X", "importtime", "-m", "ec2backup", *argv[1:]]
    done = subprocess.run(python_argv, env=env, capture_output=True, text=True)
    rows = []
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(2)) <= 2:  # top level or one below
            rows.append((m.group(3), int(m.group(1))))
    return sorted(rows, key=lambda r: -r[1])[:n]


def run(quick: bool = False) -> Section:
    reps = 5 if quick else 20
    section = Section(
        key="cli",
        title="6. CLI responsiveness",
        command="python -m benchmarks cli",
    )
    with tempfile.TemporaryDirectory(prefix="ec2backup-bench-cli-") as tmp:
        db = Path(tmp) / "runs.db"
        url = f"sqlite:///{db}"
        fill_db(url)
        env = {
            **os.environ,
            "EC2BACKUP_DB": url,
            "EC2BACKUP_CONFIG": str(Path(tmp) / "config.toml"),
            "EC2BACKUP_DATA_DIR": str(Path(tmp) / "data"),
            "COLUMNS": "200",
        }
        cases = [
            ("`ec2backup --help`", _cli("--help"), HELP_TARGET),
            (f"`ec2backup runs` ({N_RUNS:,} runs, table)", _cli("runs"), RUNS_TARGET),
            (f"`ec2backup runs --json` ({N_RUNS:,} runs)", _cli("runs", "--json"), None),
            ("`ec2backup runs -n 20`", _cli("runs", "-n", "20"), None),
            ("`python -c pass` (interpreter floor)", [sys.executable, "-c", "pass"], None),
        ]
        for label, argv, target in cases:
            call = _runner(argv, env)
            # hyperfine-like, but a command slower than a second is not worth 20 runs.
            first = repeat(call, runs=1, warmup=1)
            n = reps if first.median < 1.0 else 3
            t = repeat(call, runs=n, warmup=0)
            section.figures.append(
                Figure(label, t.median, "s", target, detail=f"min {t.min:.3f}, n={n}")
            )
        section.tables.append(_breakdown(env))
        import_rows = []
        for label, argv, target in cases[:2]:
            if target is not None:
                tops = top_imports(argv, env)
                import_rows.append(
                    f"* {label}: " + ", ".join(f"`{name}` {us / 1000:.0f} ms" for name, us in tops)
                )
        section.notes.append(
            "Slowest imports (cumulative, `python -X importtime`, top level and one below):\n"
            + "\n".join(import_rows)
        )
        plan = _query_plan(db)
        section.notes.append(
            f"Query plan of the history query (`ORDER BY created_at DESC, id DESC`): `{plan}`."
        )
    return section


BREAKDOWN = r"""
import io, json, os, sys, time, contextlib
t0 = time.perf_counter()
import ec2backup.cli.app
t1 = time.perf_counter()
import typer._adapters  # typer imports it (and pydantic) when it runs a command
t2 = time.perf_counter()
from ec2backup.db.sqlite_runs import list_runs_sqlite
from ec2backup.paths import default_db_url
from ec2backup.cli.views import RUN_COLUMNS, TABLE_DEFAULT_LIMIT
url = default_db_url()
rows = list_runs_sqlite(url, limit=TABLE_DEFAULT_LIMIT + 1)[:TABLE_DEFAULT_LIMIT]
t3 = time.perf_counter()
from ec2backup.cli.render import emit_json, emit_table, short_time
with contextlib.redirect_stdout(io.StringIO()):
    emit_table([{**r, "started": short_time(r["started_at"])} for r in rows], RUN_COLUMNS)
t4 = time.perf_counter()
every = list_runs_sqlite(url)
t5 = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    emit_json(every)
t6 = time.perf_counter()
mods = sorted(m for m in ("boto3", "asyncssh", "sqlalchemy", "pydantic", "moto", "alembic")
              if m in sys.modules)
# What the store's path (any database but an up-to-date SQLite file) costs on top.
from ec2backup.cli.context import Invocation
from ec2backup.commands.history import list_runs
t7 = time.perf_counter()
app = Invocation().app()
list_runs(app, limit=TABLE_DEFAULT_LIMIT + 1)
t8 = time.perf_counter()
print(json.dumps({
    "import ec2backup.cli (typer, rich)": t1 - t0,
    "import typer._adapters (pydantic; typer's parameter coercion)": t2 - t1,
    f"sqlite3: query the newest {TABLE_DEFAULT_LIMIT + 1} runs": t3 - t2,
    f"render the rich table ({len(rows)} rows)": t4 - t3,
    f"(--json only) sqlite3: query all {len(every):,} runs": t5 - t4,
    f"(--json only) render JSON of {len(every):,} runs": t6 - t5,
    "(other databases) import ec2backup.commands.history (SQLAlchemy ORM, models)": t7 - t6,
    f"(other databases) open the store, query the newest {TABLE_DEFAULT_LIMIT + 1}": t8 - t7,
    "modules": mods}))
"""


def _breakdown(env: dict[str, str]) -> str:
    """Where the time of `ec2backup runs` goes, stage by stage, in one fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", BREAKDOWN], env=env, capture_output=True, text=True, check=True
    )
    data = json.loads(done.stdout.strip().splitlines()[-1])
    mods = data.pop("modules")
    lines = [
        "Where `ec2backup runs` spends its time (one fresh process, in-process timers; the "
        "stages the table command goes through, then what `--json` does instead):",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.3f} |" for k, v in data.items()]
    lines += ["", f"Heavy modules loaded before the store's path: {', '.join(mods) or 'none'}."]
    return "\n".join(lines)


def _query_plan(db: Path) -> str:
    import sqlite3

    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM runs ORDER BY created_at DESC, id DESC"
        ).fetchall()
        rows2 = conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM runs WHERE profile = 'home' "
            "ORDER BY created_at DESC, id DESC"
        ).fetchall()
    return "; ".join(r[-1] for r in rows) + " | with --profile: " + "; ".join(r[-1] for r in rows2)
