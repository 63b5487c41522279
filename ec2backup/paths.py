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
