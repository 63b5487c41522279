"""The store on SQLite and on PostgreSQL (``db_url``: tests/databases.py)."""

import os
import subprocess
import sys
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from ec2backup.core.states import RunKind, build_machine
from ec2backup.core.times import utcnow
from ec2backup.db.models import Base, Run
from ec2backup.db.recorder import RunRecorder
from ec2backup.db.sqlite_runs import SCHEMA_HEAD
from ec2backup.db.store import Store, current_revision, migrations_dir, open_store
from ec2backup.errors import StoreError, UnknownRunError
from tests.databases import PostgresServer

ROOT = Path(__file__).resolve().parents[2]


def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sub' / 'ec2backup.db'}"


def new_run(run_id: str, **kw: object) -> Run:
    fields: dict[str, object] = {"kind": "backup", "profile": "p", "state": "created", "host": "h"}
    return Run(id=run_id, config={}, warnings=[], **{**fields, **kw})


def test_schema_head_constant_matches_the_migrations() -> None:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD


@pytest.fixture
def store(db_url: str) -> Store:
    s = open_store(db_url)
    yield s  # type: ignore[misc]
    s.close()


def test_opening_creates_the_file_owner_only_and_upgrades_to_head(tmp_path: Path) -> None:
    store = open_store(url(tmp_path))
    db = tmp_path / "sub" / "ec2backup.db"
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    assert current_revision(store.engine) == SCHEMA_HEAD
    assert {"runs", "run_events", "alembic_version"} <= set(inspect(store.engine).get_table_names())


def test_opening_upgrades_to_head_and_reopening_is_the_fast_path(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(db_url)
    assert current_revision(store.engine) == SCHEMA_HEAD
    assert {"runs", "run_events", "leases", "alembic_version"} <= set(
        inspect(store.engine).get_table_names()
    )
    store.close()
    import alembic.command

    def no_migration(*args: object, **kwargs: object) -> None:
        raise AssertionError("an up-to-date database was migrated again")

    monkeypatch.setattr(alembic.command, "upgrade", no_migration)
    open_store(db_url).close()


def test_migrations_produce_exactly_the_models(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_hosts_opening_a_new_database_at_once_migrate_it_once(db_url: str) -> None:
    """Several processes open (and so migrate) one fresh database at the same instant."""
    if db_url.startswith("sqlite"):
        Path(db_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    script = (
        "import sys, time\n"
        "from ec2backup.db.store import open_store\n"
        "start = float(sys.argv[2])\n"
        "while time.time() < start: pass\n"
        "open_store(sys.argv[1]).close()\n"
        "print('ok')\n"
    )
    start = str(time.time() + 1.5)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, db_url, start],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert [out.strip() for out, _ in results] == ["ok"] * 3, [err for _, err in results]
    store = open_store(db_url)
    assert current_revision(store.engine) == SCHEMA_HEAD
    store.close()


def test_timestamps_round_trip_as_aware_utc_to_the_microsecond(store: Store) -> None:
    at = datetime(2026, 11, 28, 23, 59, 58, 123456, tzinfo=UTC)
    with store.session() as session:
        session.add(new_run("r1", created_at=at, updated_at=at))
        session.commit()
    with store.session() as session:
        run = store.get_run(session, "r1")
        assert run.created_at == at and run.created_at.tzinfo is not None
        # stored as naive UTC on every backend
        stored = session.execute(text("SELECT created_at FROM runs WHERE id = 'r1'")).scalar()
    assert str(stored).startswith("2026-11-28 23:59:58.123456")


def test_a_transition_and_its_event_are_committed_together(store: Store) -> None:
    with store.session() as session:
        run = new_run("r1")
        session.add(run)
        session.commit()
        build_machine(run, RunKind.BACKUP, RunRecorder(session, run))
        run.begin_launch(detail="token r1-1")
    # A fresh connection sees the new state and its event.
    with store.session() as other:
        seen = store.get_run(other, "r1")
        assert seen.state == "launching"
        assert [(e.from_state, e.to_state, e.detail) for e in seen.events] == [
            ("created", "launching", "token r1-1")
        ]
        assert seen.events[0].at.tzinfo is not None


def test_failed_run_gets_finished_at_and_resume_clears_it(store: Store) -> None:
    with store.session() as session:
        run = new_run("r1", state="syncing")
        session.add(run)
        session.commit()
        build_machine(run, RunKind.BACKUP, RunRecorder(session, run))
        run.fail(detail="x")
        assert run.finished_at is not None and run.failed_from == "syncing"
        run.resume()
        assert run.finished_at is None and run.state == "syncing"


def test_list_runs_newest_first_and_by_profile(store: Store) -> None:
    with store.session() as session:
        t = utcnow()
        for i in range(3):
            session.add(new_run(f"r{i}", created_at=t + timedelta(seconds=i)))
        session.add(
            Run(
                id="other",
                kind="backup",
                profile="q",
                state="done",
                host="h",
                config={},
                warnings=[],
            )
        )
        session.commit()
        assert [r.id for r in store.list_runs(session, profile="p")] == ["r2", "r1", "r0"]
        assert [r.id for r in store.list_runs(session, profile="p", limit=1)] == ["r2"]
        with pytest.raises(UnknownRunError, match="no run 'nope'"):
            store.get_run(session, "nope")


def test_list_runs_by_host_and_profile(store: Store) -> None:
    t = utcnow()
    with store.session() as session:
        for i, (host, profile) in enumerate(
            [("web1", "p"), ("web2", "p"), ("web1", "q"), ("web1", "p")]
        ):
            session.add(
                new_run(f"r{i}", host=host, profile=profile, created_at=t + timedelta(seconds=i))
            )
        session.commit()
        assert [r.id for r in store.list_runs(session)] == ["r3", "r2", "r1", "r0"]
        assert [r.id for r in store.list_runs(session, host="web1")] == ["r3", "r2", "r0"]
        assert [r.id for r in store.list_runs(session, host="web1", profile="p")] == ["r3", "r0"]
        assert [r.id for r in store.list_runs(session, host="web1", limit=1)] == ["r3"]
        assert store.list_runs(session, host="nowhere") == []


def test_a_newer_schema_is_refused_and_left_alone(db_url: str) -> None:
    store = open_store(db_url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_future'")
    store.close()
    with pytest.raises(StoreError, match="newer than this ec2backup") as info:
        open_store(db_url)
    assert "\n" not in info.value.one_line()
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [
            ("9999_future",)
        ]
    engine.dispose()


def test_a_corrupt_file_is_a_store_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(StoreError, match="not a valid ec2backup database"):
        open_store(f"sqlite:///{bad}")


def test_a_database_of_something_else_is_a_store_error(db_url: str) -> None:
    """The PostgreSQL form of a "corrupt file": tables that ec2backup's migrations did not make."""
    if db_url.startswith("sqlite"):
        Path(db_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE runs (id INTEGER PRIMARY KEY, owner TEXT)")
    engine.dispose()
    with pytest.raises(StoreError, match="not a valid ec2backup database") as info:
        open_store(db_url)
    assert "\n" not in info.value.one_line()


def test_an_unreachable_server_is_one_line_naming_the_host_not_the_password() -> None:
    from tests.databases import free_port

    port = free_port()  # nothing listens there
    with pytest.raises(StoreError) as info:
        open_store(f"postgresql+psycopg://backup:s3cret-pw@127.0.0.1:{port}/fleet")
    line = info.value.one_line()
    assert f"127.0.0.1:{port}" in line and "fleet" in line and "backup" in line
    assert "s3cret-pw" not in line and "\n" not in line
    assert "refused" in line.lower()


def test_bad_credentials_are_one_line_without_the_password(
    postgres_server: PostgresServer,
) -> None:
    bad = postgres_server.url(password="wrong-s3cret")
    with pytest.raises(StoreError) as info:
        open_store(bad)
    line = info.value.one_line()
    assert f"{postgres_server.host}:{postgres_server.port}" in line
    assert "password authentication failed" in line
    assert "wrong-s3cret" not in line and postgres_server.password not in line
    assert "\n" not in line


def test_a_role_without_rights_gets_a_permission_error(postgres_server: PostgresServer) -> None:
    database = postgres_server.create_database()
    role = f"nogrants_{database}"[:60]
    try:
        open_store(postgres_server.url(database)).close()  # migrated by the owner
        postgres_server.admin(f"CREATE ROLE \"{role}\" LOGIN PASSWORD 'pw'")
        url = postgres_server.url(database).replace(
            f"{postgres_server.user}:{postgres_server.password}@", f"{role}:pw@"
        )
        with pytest.raises(StoreError, match="permission denied") as info:
            open_store(url)  # it cannot even read alembic_version
        line = info.value.one_line()
        assert "docs/fleet.md" in line and "\n" not in line
    finally:
        postgres_server.drop_database(database)
        postgres_server.admin(f'DROP ROLE IF EXISTS "{role}"')


def test_migration_downgrade_and_upgrade_round_trip(db_url: str) -> None:
    from alembic import command

    if db_url.startswith("sqlite"):
        Path(db_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(db_url)
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        command.downgrade(config, "base")
        assert set(inspect(conn).get_table_names()) == {"alembic_version"}
        command.upgrade(config, "head")
        assert {"runs", "run_events"} <= set(inspect(conn).get_table_names())
        indexes = {i["name"] for i in inspect(conn).get_indexes("runs")}
        assert "ix_runs_host_created_at" in indexes
    engine.dispose()


def test_the_wheel_ships_the_migrations(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("ec2backup-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ec2backup/_migrations/env.py" in names
    assert "ec2backup/_migrations/versions/0001_initial.py" in names


def ec2backup(
    db_option: list[str], env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ec2backup", *db_option, *args],
        env={**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_reads_every_hosts_runs_and_filters_by_host_and_profile(
    db_url: str, tmp_path: Path
) -> None:
    import json

    store = open_store(db_url)
    t = utcnow()
    with store.session() as session:
        for i, (host, profile) in enumerate([("web1", "p"), ("web2", "p"), ("web1", "q")]):
            session.add(
                new_run(f"r{i}", host=host, profile=profile, created_at=t + timedelta(seconds=i))
            )
        session.commit()
    store.close()
    env = {"EC2BACKUP_CONFIG": str(tmp_path / "none.toml")}
    # through the environment (keeps a password out of the process list) ...
    everything = ec2backup([], {**env, "EC2BACKUP_DB": db_url}, "runs", "--json")
    assert everything.returncode == 0, everything.stderr
    listed = json.loads(everything.stdout)
    assert [(r["id"], r["host"]) for r in listed] == [
        ("r2", "web1"),
        ("r1", "web2"),
        ("r0", "web1"),
    ]
    assert {
        "id",
        "kind",
        "profile",
        "state",
        "started_at",
        "finished_at",
        "instance_id",
        "volume_id",
        "snapshot_id",
        "error",
        "host",
    } <= set(listed[0])
    # ... and through --db
    narrowed = ec2backup(["--db", db_url], env, "runs", "--json", "--host", "web1", "-p", "p")
    assert narrowed.returncode == 0, narrowed.stderr
    assert [r["id"] for r in json.loads(narrowed.stdout)] == ["r0"]
    table = ec2backup(["--db", db_url], env, "runs", "--host", "web2")
    assert table.returncode == 0 and "web2" in table.stdout and "r1" in table.stdout
    shown = ec2backup(["--db", db_url], env, "show", "r1", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["host"] == "web2"


def test_the_cli_reports_an_unreachable_server_on_one_line(tmp_path: Path) -> None:
    from tests.databases import free_port

    url = f"postgresql+psycopg://backup:s3cret-pw@127.0.0.1:{free_port()}/fleet"
    result = ec2backup([], {"EC2BACKUP_DB": url, "EC2BACKUP_CONFIG": str(tmp_path / "c")}, "runs")
    assert result.returncode == 4
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("ec2backup: error: cannot use the database server 127.0.0.1:")
    assert "s3cret-pw" not in line


def _fleet_sql() -> tuple[str, str]:
    """The SQL block of docs/fleet.md: (before ``\\c ec2backup``, after it)."""
    doc = (ROOT / "docs" / "fleet.md").read_text()
    block = doc.split("```sql\n", 1)[1].split("```", 1)[0]
    server_part, database_part = block.split("\\c ec2backup\n")
    return server_part, database_part


def test_the_fleet_grants_in_the_docs_are_enough(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from ec2backup.db import leases

    server_part, database_part = _fleet_sql()
    srv = postgres_server

    def run_sql(sql: str, dbname: str) -> None:
        with psycopg.connect(
            host=srv.host,
            port=srv.port,
            user=srv.user,
            password=srv.password,
            dbname=dbname,
            autocommit=True,
        ) as conn:
            sql = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
            for statement in sql.replace("'...'", "'pw-of-the-role'").split(";"):
                if statement.strip():
                    conn.execute(statement)  # type: ignore[call-overload]

    def role_url(role: str) -> str:  # no password in the URL: it comes from the passfile
        return f"postgresql+psycopg://{role}@{srv.host}:{srv.port}/ec2backup"

    passfile = tmp_path / "pgpass"
    passfile.write_text(f"{srv.host}:{srv.port}:ec2backup:*:pw-of-the-role\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    try:
        run_sql(server_part, srv.admin_db)
        run_sql(database_part, "ec2backup")
        open_store(role_url("ec2backup_owner")).close()  # creates the schema

        store = open_store(role_url("ec2backup"))  # up to date: the fast path
        with store.session() as session:
            run = new_run("r1", host="web1")
            session.add(run)
            session.commit()
            build_machine(run, RunKind.BACKUP, RunRecorder(session, run))
            run.begin_launch(detail="x")  # an event: the sequence of run_events.id
        with leases.held(store, "r1", ["run:r1", "volume:vol-1"]):  # INSERT, UPDATE
            assert set(leases.live_leases(store)) == {"r1"}
        assert leases.live_leases(store) == {}  # DELETE
        with store.session() as session:
            assert [r.id for r in store.list_runs(session, host="web1")] == ["r1"]
        store.close()

        # An out-of-date schema: the day-to-day role may not migrate it, the owner may.
        owner = create_engine(role_url("ec2backup_owner"))
        with owner.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE runs DROP COLUMN snapshot_stats")
            conn.exec_driver_sql("DROP INDEX ix_runs_host_created_at")
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0002_leases'")
        owner.dispose()
        with pytest.raises(StoreError, match="permission denied") as info:
            open_store(role_url("ec2backup"))
        assert "docs/fleet.md" in info.value.one_line()
        open_store(role_url("ec2backup_owner")).close()
        open_store(role_url("ec2backup")).close()
    finally:
        srv.admin('DROP DATABASE IF EXISTS "ec2backup" WITH (FORCE)')
        srv.admin("DROP ROLE IF EXISTS ec2backup")
        srv.admin("DROP ROLE IF EXISTS ec2backup_owner")
