"""End to end, a fleet: two `ec2backup run` processes (two "hosts": each its own data directory)
back up the same volume through one PostgreSQL server at the same moment. Exactly one
proceeds; the other is refused (exit 8) naming the holder, and leaves no run behind."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.databases import PostgresServer
from tests.e2e.helpers import Cli, make_sample_tree

pytestmark = pytest.mark.e2e


@pytest.fixture
def fleet_db(postgres_server: PostgresServer) -> Iterator[str]:
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


def host_env(sandbox: Any, tmp_path: Path, db: str, host: str) -> dict[str, str]:
    return {
        **sandbox.env,
        "EC2BACKUP_CONFIG": str(tmp_path / "config.toml"),
        "EC2BACKUP_DB": db,
        "EC2BACKUP_DATA_DIR": str(tmp_path / host / "data"),
    }


def test_two_hosts_backing_up_one_volume_through_postgresql_exactly_one_proceeds(
    sandbox: Any, tmp_path: Path, fleet_db: str
) -> None:
    source = tmp_path / "home"
    source.mkdir()
    make_sample_tree(source)
    first = Cli(env=host_env(sandbox, tmp_path, fleet_db, "a"), cwd=tmp_path)
    volume_id = first(
        "init", "--profile", "e2e", "--az", "us-east-1a", "--size", "1", "--source", str(source)
    ).stdout.strip()

    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ec2backup", "run", "--profile", "e2e"],
            env={**os.environ, **host_env(sandbox, tmp_path, fleet_db, host)},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for host in ("a", "b")
    ]
    results = [(p, *p.communicate(timeout=600)) for p in procs]
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 8], [(p.returncode, err[-2000:]) for p, _, err in results]
    ((_, won_out, _),) = [r for r in results if r[0].returncode == 0]
    ((_, _, lost_err),) = [r for r in results if r[0].returncode == 8]
    winner = won_out.strip()
    assert f"volume {volume_id} is in use by run {winner}" in lost_err
    assert len(lost_err.strip().splitlines()) == 1

    backups = [r for r in first.json("runs") if r["kind"] == "backup"]
    assert [(r["id"], r["state"]) for r in backups] == [(winner, "done")]
    # the fleet's history is visible from any host
    second = Cli(env=host_env(sandbox, tmp_path, fleet_db, "b"), cwd=tmp_path)
    assert [r["id"] for r in second.json("runs")] == [r["id"] for r in first.json("runs")]
