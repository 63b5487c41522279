"""The sqlite3 reader behind `ec2backup runs` gives exactly what the store gives, and steps
aside (None) wherever it cannot be sure."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ec2backup.commands.app import App
from ec2backup.commands.history import list_runs
from ec2backup.db.models import Run
from ec2backup.db.sqlite_runs import SCHEMA_HEAD, list_runs_sqlite, sqlite_file
from ec2backup.db.store import Store, open_store
from ec2backup.fastpaths import ENV


@pytest.fixture(autouse=True)
def trick_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """These test the trick itself, also when the suite runs with every trick off."""
    monkeypatch.delenv(ENV, raising=False)


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[tuple[str, Store]]:
    url = f"sqlite:///{tmp_path / 'ec2backup.db'}"
    store = open_store(url)
    start = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    with store.session() as session:
        for i in range(12):
            session.add(
                Run(
                    id=f"r{i:02d}",
                    kind=("backup", "init", "restore", "verify")[i % 4],
                    profile=("p", "q")[i % 2],
                    host=("web1", "web2", "web3")[i % 3],
                    state=("done", "failed", "syncing", "aborted")[i % 4],
                    # Two runs share a start: the id breaks the tie, in both readers.
                    created_at=start + timedelta(minutes=i // 2 * 2),
                    finished_at=None if i % 4 == 2 else start + timedelta(minutes=i, seconds=7),
                    instance_id=f"i-{i:017x}" if i % 3 else None,
                    volume_id="vol-0123456789abcdef0",
                    snapshot_id="snap-0123456789abcdef0" if i % 4 == 0 else None,
                    error="AWS said no; grant ec2:RunInstances" if i % 4 == 1 else None,
                    config={},
                    warnings=[],
                )
            )
        session.commit()
    try:
        yield url, store
    finally:
        store.close()


@pytest.mark.parametrize(
    "narrow",
    [
        {},
        {"limit": 5},
        {"profile": "q"},
        {"host": "web2"},
        {"profile": "p", "host": "web1", "limit": 2},
        {"profile": "nobody"},
    ],
)
def test_same_rows_as_the_store(
    filled: tuple[str, Store], tmp_path: Path, narrow: dict[str, object]
) -> None:
    url, store = filled
    expected = list_runs(App(store=store, config_path=tmp_path / "none.toml"), **narrow)  # type: ignore[arg-type]
    got = list_runs_sqlite(url, **narrow)  # type: ignore[arg-type]
    assert got == expected
    assert got is not None and [list(r) for r in got] == [list(r) for r in expected]


def test_steps_aside_where_it_cannot_be_sure(filled: tuple[str, Store], tmp_path: Path) -> None:
    url, _ = filled
    assert list_runs_sqlite(f"sqlite:///{tmp_path / 'missing.db'}") is None
    assert not (tmp_path / "missing.db").exists()  # and creates nothing
    assert list_runs_sqlite("sqlite://") is None  # in memory
    assert list_runs_sqlite(url + "?mode=ro") is None
    assert list_runs_sqlite("sqlite+pysqlite:///" + url.removeprefix("sqlite:///")) is None
    assert list_runs_sqlite("postgresql+psycopg://u@127.0.0.1/db") is None
    path = sqlite_file(url)
    assert path is not None
    conn = sqlite3.connect(path)
    conn.execute("UPDATE alembic_version SET version_num = '0002_older'")
    conn.commit()
    conn.close()
    assert list_runs_sqlite(url) is None  # the store upgrades it first
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    assert list_runs_sqlite(f"sqlite:///{garbage}") is None  # the store reports it


def test_relative_absolute_and_home_paths() -> None:
    assert sqlite_file("sqlite:///rel.db") == Path("rel.db")
    assert sqlite_file("sqlite:////abs/x.db") == Path("/abs/x.db")
    assert sqlite_file("sqlite:///~/x.db") is None  # the store's business


def _cli(tmp_path: Path, *args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EC2BACKUP_DB": f"sqlite:///{tmp_path / 'ec2backup.db'}"}
    env["EC2BACKUP_CONFIG"] = str(tmp_path / "none.toml")
    argv = [sys.executable, "-c", code] if code else [sys.executable, "-m", "ec2backup"]
    return subprocess.run(
        [*argv, *args], env=env, capture_output=True, text=True, timeout=60, check=True
    )


def test_runs_reads_an_up_to_date_database_without_sqlalchemy(
    filled: tuple[str, Store], tmp_path: Path
) -> None:
    probe = (
        "import json, sys\n"
        "sys.argv = ['ec2backup', *sys.argv[1:]]\n"
        "from ec2backup.cli.main import run_cli\n"
        "code = run_cli()\n"
        "print(json.dumps(['sqlalchemy' in sys.modules, code]), file=sys.stderr)\n"
    )
    table = _cli(tmp_path, "runs", code=probe)
    assert json.loads(table.stderr.strip().splitlines()[-1]) == [False, 0]
    assert "r11" in table.stdout and "r00" in table.stdout
    as_json = json.loads(_cli(tmp_path, "runs", "--json", "-p", "q").stdout)
    assert [r["id"] for r in as_json] == ["r11", "r09", "r07", "r05", "r03", "r01"]


def test_runs_on_an_older_schema_upgrades_it_through_the_store(tmp_path: Path) -> None:
    open_store(f"sqlite:///{tmp_path / 'ec2backup.db'}").close()
    conn = sqlite3.connect(tmp_path / "ec2backup.db")
    conn.execute("ALTER TABLE runs DROP COLUMN snapshot_stats")  # what 0004 added
    conn.execute("DROP INDEX ix_runs_host_created_at")  # what 0003 added
    conn.execute("UPDATE alembic_version SET version_num = '0002_leases'")
    conn.commit()
    conn.close()
    assert json.loads(_cli(tmp_path, "runs", "--json").stdout) == []
    conn = sqlite3.connect(tmp_path / "ec2backup.db")
    assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(SCHEMA_HEAD,)]
    conn.close()
