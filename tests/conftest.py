"""Shared fixtures.

``sandbox``: one local cloud (``ec2backup.sandbox.Sandbox``) for the whole test session,
started on first use and stopped at the end however the tests went. Tests pass
``sandbox.env`` to boto3 / the ec2backup CLI, or use ``sandbox_env``, which puts it in
``os.environ`` for one test. Skipped with the reason when not root or when sshd, rsync,
losetup... are missing.

``sandbox_faults``: that same sandbox, for a test that changes its fault and timing settings
(``sandbox_faults.configure_faults(throttle_rate=0.2, boot_delay=1, ...)``); they are reset to
the defaults after the test, however it went.

``iam_sandbox``: a second local cloud, started on first use, that enforces IAM: ``env`` holds
an administrator's key; ``iam_sandbox.create_iam_user(name, policy)`` makes a user holding only
that policy and returns its keys.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ec2backup.sandbox import Sandbox


def sandbox_skip_reason() -> str | None:
    from ec2backup.sandbox import missing_tools

    if os.geteuid() != 0:
        return "the local cloud needs root (sshd, loop devices, mount namespaces)"
    missing = missing_tools()
    if missing:
        return f"the local cloud needs {', '.join(missing)}: run `make system-deps` as root"
    return None


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    reason = sandbox_skip_reason()
    if reason and os.environ.get("EC2BACKUP_REQUIRE_E2E") == "1":
        pytest.fail(f"EC2BACKUP_REQUIRE_E2E=1 but {reason}")  # CI must not skip these
    if reason:
        pytest.skip(reason)
    from ec2backup.sandbox import Sandbox

    started = Sandbox.start(tmp_path_factory.mktemp("sandbox"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def sandbox_env(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The sandbox's AWS_* variables, set in os.environ for this test only."""
    for key, value in sandbox.env.items():
        monkeypatch.setenv(key, value)
    return sandbox.env


@pytest.fixture
def sandbox_faults(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The session sandbox; its fault and timing settings are reset after the test."""
    sandbox.reset_faults()
    try:
        yield sandbox
    finally:
        sandbox.reset_faults()


@pytest.fixture(scope="session")
def iam_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    reason = sandbox_skip_reason()
    if reason and os.environ.get("EC2BACKUP_REQUIRE_E2E") == "1":
        pytest.fail(f"EC2BACKUP_REQUIRE_E2E=1 but {reason}")
    if reason:
        pytest.skip(reason)
    from ec2backup.sandbox import Sandbox

    started = Sandbox.start(tmp_path_factory.mktemp("iam-sandbox"), iam=True)
    try:
        yield started
    finally:
        started.stop()


# The SQLite/PostgreSQL fixtures (``db_url``, ``postgres_server``): see tests/databases.py.
from tests.databases import db_url, postgres_server  # noqa: E402, F401
