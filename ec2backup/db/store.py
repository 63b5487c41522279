"""Opening the database (upgrading it to the newest schema) and reading runs."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.orm import Session, sessionmaker

from ..errors import StoreError, UnknownRunError
from ..paths import DB_ENV as DB_ENV
from ..paths import default_db_url as default_db_url
from .models import Run
from .sqlite_runs import SCHEMA_HEAD as SCHEMA_HEAD

# Held (per transaction) while PostgreSQL is migrated, so hosts of a fleet that start a new
# ec2backup at the same moment upgrade the shared database once, one after the other.
_MIGRATION_LOCK = 0x6563_3262_6B75_70  # "ec2bkup"
_CONNECT_TIMEOUT_SECONDS = 10


def migrations_dir() -> Path:
    """The Alembic scripts: inside the installed wheel, or at the top of a source checkout."""
    package = Path(__file__).parent.parent  # ec2backup/
    packaged = package / "_migrations"
    return packaged if packaged.is_dir() else package.parent / "migrations"


def safe_url(url: str) -> str:
    """The URL as it may be shown: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: nothing to mask that we could find
        return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)


def _prepare_sqlite_file(url: str) -> None:
    # The database holds the resolved configuration and resource ids: owner-only.
    database = make_url(url).database
    if not database or database == ":memory:":
        return
    path = Path(database).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session:
            try:
                yield session
            except OperationalError as exc:
                session.rollback()
                raise _store_error(exc, self.engine.url.render_as_string()) from exc
            except ProgrammingError as exc:
                if getattr(exc.orig, "sqlstate", None) != "42501":  # permission denied
                    raise
                session.rollback()
                raise _store_error(exc, self.engine.url.render_as_string()) from exc

    def get_run(self, session: Session, run_id: str) -> Run:
        run = session.get(Run, run_id)
        if run is None:
            raise UnknownRunError(
                f"no run {run_id!r} in this database",
                hint="list runs with `ec2backup runs` (or pass the right --db)",
            )
        return run

    def list_runs(
        self,
        session: Session,
        *,
        profile: str | None = None,
        host: str | None = None,
        limit: int | None = None,
    ) -> list[Run]:
        query = select(Run).order_by(Run.created_at.desc(), Run.id.desc())
        if profile:
            query = query.where(Run.profile == profile)
        if host:
            query = query.where(Run.host == host)
        if limit:
            query = query.limit(limit)
        return list(session.scalars(query))

    def close(self) -> None:
        self.engine.dispose()


# SQLSTATEs meaning "these tables are not what ec2backup's migrations made".
_NOT_OURS = {"42P07", "42P01", "42703", "42804", "42P16"}


def _server_error(exc: Exception, url: str) -> StoreError | None:
    """A one-line error for a database server (PostgreSQL), or None when not one of those."""
    orig = getattr(exc, "orig", exc)
    if type(orig).__module__.split(".")[0] != "psycopg":
        return None
    parsed = make_url(url)
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is None:  # failed before a session existed: connecting, resolving, logging in
        reason = re.sub(r"^connection failed: (connection to server at .*? failed: )?", "", first)
        reason = re.sub(r"^FATAL:\s+", "", reason)
        return StoreError(
            f"cannot use the database server {where} (database {parsed.database}, "
            f"user {parsed.username}): {reason}",
            hint="check the host, port, user and password of --db / EC2BACKUP_DB, and that "
            "the server accepts connections from this host (see docs/fleet.md)",
        )
    if sqlstate == "42501":
        return StoreError(
            f"database {safe_url(url)}: permission denied ({first})",
            hint="the role needs the GRANTs listed in docs/fleet.md",
        )
    if sqlstate in _NOT_OURS:
        return StoreError(
            f"database {safe_url(url)} is not a valid ec2backup database ({first})",
            hint="point --db at an empty database or one ec2backup created",
        )
    return StoreError(f"database {safe_url(url)}: {first}")


def _disk_full(url: str, message: str) -> bool:
    """SQLite says "disk I/O error" when its journal cannot grow on a full disk."""
    if "disk I/O error" not in message or not url.startswith("sqlite"):
        return False
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:":
        return False
    try:
        return shutil.disk_usage(Path(database).expanduser().parent).free < 1 << 20
    except OSError:
        return False


def _store_error(exc: Exception, url: str) -> StoreError:
    server = _server_error(exc, url)
    if server is not None:
        return server
    url = safe_url(url)
    message = str(getattr(exc, "orig", exc))
    if "locked" in message:
        return StoreError(
            f"database {url} is locked by another process",
            hint="wait for the other ec2backup to finish, or pass another --db",
        )
    if "disk is full" in message or "No space left" in message or _disk_full(url, message):
        return StoreError(
            f"database {url}: the disk is full", hint="free some disk space, then resume the run"
        )
    if "not a database" in message or "malformed" in message or "already exists" in message:
        return StoreError(
            f"database {url} is not a valid ec2backup database ({message})",
            hint="move the file aside and try again, or pass another --db",
        )
    return StoreError(f"database {url}: {message}")


def open_store(url: str | None = None) -> Store:
    """Open (creating it if needed) and upgrade the database to the newest schema."""
    url = url or default_db_url()
    try:
        if url.startswith("sqlite"):
            _prepare_sqlite_file(url)
        engine = _create_engine(url)
        _upgrade(engine, url)
    except StoreError:
        raise
    except (DatabaseError, sqlite3.DatabaseError) as exc:
        raise _store_error(exc, url) from exc
    except OSError as exc:
        raise StoreError(
            f"database {safe_url(url)}: {exc.strerror}", hint="pass a writable --db"
        ) from exc
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise StoreError(
            f"database URL {safe_url(url)} cannot be used: {exc}",
            hint="use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB "
            "(pip install 'ec2backup[postgres]'; see docs/fleet.md)",
        ) from exc
    return Store(engine)


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        # A run holds its connection for hours; a server restart must not fail the next commit.
        kwargs["pool_pre_ping"] = True
        if "connect_timeout" not in parsed.query:
            kwargs["connect_args"] = {"connect_timeout": _CONNECT_TIMEOUT_SECONDS}
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return _revision(conn)


def _revision(conn: Connection) -> str | None:
    if not conn.dialect.has_table(conn, "alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


@contextmanager
def _sqlite_migration_lock(engine: Engine) -> Iterator[None]:
    """Processes opening one new SQLite file at once migrate it one after the other. (pysqlite
    starts no transaction for DDL, so SQLite's own locks do not serialise the migration.) An
    flock on the file itself: independent of SQLite's fcntl locks."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    import fcntl

    with open(Path(database).expanduser(), "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _upgrade(engine: Engine, url: str) -> None:
    if current_revision(engine) == SCHEMA_HEAD:  # the fast path: one query, no Alembic
        return
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    script = ScriptDirectory.from_config(config)
    known = {s.revision for s in script.walk_revisions()}
    with _sqlite_migration_lock(engine), engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Another host may be migrating right now: wait for it (the lock ends with this
            # transaction).
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        # Looked at again under the lock: another process may have just done it.
        revision = _revision(connection)
        if revision == SCHEMA_HEAD:
            return
        if revision is not None and revision not in known:
            raise StoreError(
                f"database {safe_url(url)} has schema {revision}, newer than this ec2backup knows",
                hint="upgrade ec2backup, or pass another --db",
            )
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
