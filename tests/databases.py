"""Database fixtures: the store, lease and migration tests run on SQLite and on PostgreSQL.

``postgres_server`` (session): a private, throwaway PostgreSQL cluster: ``initdb`` in a temp
dir (as the ``postgres`` user when run as root), ``pg_ctl start`` on a free port of 127.0.0.1
(and a unix socket in that dir), password authentication over TCP. Stopped and removed at the
end of the session however the tests went. The binaries come from ``EC2BACKUP_PG_BINDIR``,
``initdb`` on PATH, or Debian's ``/usr/lib/postgresql/<version>/bin``. Missing binaries skip
the PostgreSQL tests with the reason, unless ``EC2BACKUP_REQUIRE_POSTGRES=1`` (``.ci/run``),
which makes them fail instead. ``EC2BACKUP_TEST_POSTGRES_URL`` (a superuser's URL) uses an
existing server instead of starting one.

``db_url`` (per test, params ``sqlite`` / ``postgresql``): a URL to an empty database: a
SQLite file under ``tmp_path/sub/``, or a fresh database on the session's server, dropped
after the test.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRE_ENV = "EC2BACKUP_REQUIRE_POSTGRES"
URL_ENV = "EC2BACKUP_TEST_POSTGRES_URL"
BINDIR_ENV = "EC2BACKUP_PG_BINDIR"
START_SECONDS = 60.0


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    admin_db: str = "postgres"

    def url(self, database: str | None = None, *, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return (
            f"postgresql+psycopg://{self.user}:{secret}@{self.host}:{self.port}/"
            f"{database or self.admin_db}"
        )

    def admin(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE)."""
        import psycopg

        with psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=self.admin_db,
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self) -> str:
        name = f"ec2backup_test_{secrets.token_hex(6)}"
        self.admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def find_bindir() -> Path | None:
    given = os.environ.get(BINDIR_ENV)
    if given:
        return Path(given)
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def _skip_or_fail(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1, so this is a failure, not a skip)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_user() -> str | None:
    """initdb and postgres refuse to run as root: use the Debian package's ``postgres``."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None
    return "postgres"


def _run(cmd: list[str], user: str | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, user=user, cwd=cwd, capture_output=True, text=True, timeout=START_SECONDS, check=False
    )


def _wait_accepting(server: PostgresServer) -> None:
    import psycopg

    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            psycopg.connect(
                host=server.host,
                port=server.port,
                user=server.user,
                password=server.password,
                dbname=server.admin_db,
                connect_timeout=2,
            ).close()
            return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not accept connections: {exc}") from exc
        time.sleep(0.05)


def _stop(bindir: Path, data: Path, user: str | None, cwd: Path) -> None:
    stopped = _run(
        [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], user, cwd
    )
    if stopped.returncode == 0:
        return
    # pg_ctl could not stop it (or it never started): end the postmaster ourselves, if any.
    pidfile = data / "postmaster.pid"
    if pidfile.exists():
        with contextlib.suppress(ValueError, IndexError, ProcessLookupError):
            os.kill(int(pidfile.read_text().split()[0]), 9)


def start_postgres(bindir: Path, workdir: Path) -> PostgresServer:
    """initdb + pg_ctl start in ``workdir`` (which the caller removes). Raises on failure,
    after stopping whatever it started."""
    user = _server_user()
    if os.geteuid() == 0 and user is None:
        raise PermissionError("running as root and there is no `postgres` user to run initdb")
    password = secrets.token_urlsafe(16)
    pwfile = workdir / "pwfile"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    if user:
        entry = pwd.getpwnam(user)
        for path in (workdir, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    data = workdir / "data"
    init = _run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ],
        user,
        workdir,
    )
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
    last = ""
    for _attempt in range(3):  # a free port can be taken between choosing and binding it
        port = free_port()
        options = " ".join(
            [
                f"-c port={port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={workdir}",
                # a throwaway cluster: durability is not wanted, speed is
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=100",
            ]
        )
        started = _run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(workdir / "postgres.log"),
                "-o",
                options,
                "-w",
                "-t",
                str(int(START_SECONDS)),
                "start",
            ],
            user,
            workdir,
        )
        if started.returncode == 0:
            server = PostgresServer("127.0.0.1", port, "postgres", password)
            try:
                _wait_accepting(server)
            except BaseException:
                _stop(bindir, data, user, workdir)
                raise
            return server
        _stop(bindir, data, user, workdir)
        log = workdir / "postgres.log"
        last = log.read_text(errors="replace")[-2000:] if log.exists() else started.stderr
    raise RuntimeError(f"pg_ctl start failed three times; last log:\n{last}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    given = os.environ.get(URL_ENV)
    if given:
        from sqlalchemy.engine import make_url

        url = make_url(given)
        yield PostgresServer(
            url.host or "127.0.0.1",
            url.port or 5432,
            url.username or "postgres",
            url.password or "",  # type: ignore[arg-type]
            url.database or "postgres",
        )
        return
    bindir = find_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        _skip_or_fail(
            "PostgreSQL server binaries not found (apt-get install postgresql, or set "
            f"{BINDIR_ENV} or {URL_ENV})"
        )
        return
    workdir = Path(tempfile.mkdtemp(prefix="ec2backup-pg-"))
    try:
        try:
            server = start_postgres(bindir, workdir)
        except (RuntimeError, PermissionError) as exc:
            _skip_or_fail(f"could not start a throwaway PostgreSQL: {exc}")
            return
        try:
            yield server
        finally:
            _stop(bindir, workdir / "data", _server_user(), workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sub' / 'ec2backup.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database on each backend."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)
