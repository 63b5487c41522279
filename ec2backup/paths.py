"""Environment variable names and where ec2backup keeps its files by default. Imports nothing of
the project (and platformdirs only when a default is asked for)."""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_ENV = "EC2BACKUP_CONFIG"
DATA_ENV = "EC2BACKUP_DATA_DIR"
DB_ENV = "EC2BACKUP_DB"


def default_config_path() -> Path:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    from platformdirs import user_config_path

    return user_config_path("ec2backup") / "config.toml"


def default_data_dir() -> Path:
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    from platformdirs import user_data_path

    return user_data_path("ec2backup")


def default_db_url() -> str:
    env = os.environ.get(DB_ENV)
    if env:
        return env
    from platformdirs import user_data_path

    return f"sqlite:///{user_data_path('ec2backup') / 'ec2backup.db'}"


def write_atomically(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old file or the whole new one,
    never half of it, and a failed write (a full disk) leaves the old file and no temporary.
    The new file has ``mode`` from the moment it exists (``0o600``: nobody else ever sees a
    private key); with ``mode`` None it keeps the mode of the file it replaces (a config the
    user made private stays private), else 0o644."""
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        # The umask can only narrow the mode; fchmod makes it exact (ssh wants exactly 0600).
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
