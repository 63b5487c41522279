"""Fixtures of the end-to-end tests: the real `ec2backup` command against the local cloud."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Cli


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for every command of the session: the trimmed EC2 model is made once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def cli(sandbox: Any, tmp_path: Path, model_cache: Path) -> Cli:
    return Cli(
        env={
            **sandbox.env,
            "EC2BACKUP_CONFIG": str(tmp_path / "config.toml"),
            "EC2BACKUP_DB": f"sqlite:///{tmp_path / 'ec2backup.db'}",
            "EC2BACKUP_DATA_DIR": str(tmp_path / "data"),
            "EC2BACKUP_CACHE_DIR": str(model_cache),
        },
        cwd=tmp_path,
    )
