"""The command line as a user meets it: exit codes, one-line errors, stdout vs stderr, and a
fast `--help`."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "EC2BACKUP_CONFIG": str(tmp_path / "config.toml"),
        "EC2BACKUP_DB": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "EC2BACKUP_DATA_DIR": str(tmp_path / "data"),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        # Nothing in these tests may reach AWS: an endpoint that refuses at once.
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    return subprocess.run(
        [sys.executable, "-m", "ec2backup", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_imports_no_cloud_ssh_or_database_library() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['ec2backup', '--help']\n"
        "from ec2backup.cli.main import run_cli\n"
        "run_cli()\n"
        "heavy = [m for m in ('boto3', 'botocore', 'asyncssh', 'moto', 'sqlalchemy', 'alembic',"
        " 'ec2backup.sandbox.api', 'ec2backup.sandbox.host') if m in sys.modules]\n"
        "print(heavy, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stderr.strip().splitlines()[-1] == "[]"
    for command in ("init", "run", "resume", "runs", "show", "sandbox"):
        assert command in result.stdout


def test_runs_on_an_empty_database(tmp_path: Path) -> None:
    result = cli(tmp_path, "runs", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == []


def test_the_process_ends_with_its_database_closed_and_its_output_flushed(
    tmp_path: Path,
) -> None:
    """main() ends the process with os._exit: the store must be closed before (closing the
    last SQLite connection checkpoints the WAL and removes it), and the output complete."""
    result = cli(tmp_path, "runs", "--json")
    assert result.returncode == 0 and json.loads(result.stdout) == []
    assert (tmp_path / "db.sqlite").exists()
    assert not (tmp_path / "db.sqlite-wal").exists()
    bad = cli(tmp_path, "show", "nope")
    assert bad.returncode == 2 and bad.stderr.startswith("ec2backup: error: no run 'nope'")
    assert not (tmp_path / "db.sqlite-wal").exists()


def test_logs_off_a_terminal_are_plain_unwrapped_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import logging

    from ec2backup.cli.context import setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(debug=False, quiet=False)  # pytest's stderr is not a terminal
        long_tail = "x" * 150
        logging.getLogger("ec2backup.run.engine").info("run r1: launching %s", long_tail)
        logging.getLogger("ec2backup.run.engine").debug("not shown without --debug")
        assert capsys.readouterr().err == f"INFO     run r1: launching {long_tail}\n"
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def test_the_garbage_collector_is_off_while_a_command_starts_then_on_again() -> None:
    from ec2backup.cli.main import pause_gc

    frozen_before = gc.get_freeze_count()
    try:
        timer = pause_gc(0.2)
        assert not gc.isenabled()
        timer.join(timeout=10)
        assert gc.isenabled()
        assert gc.get_freeze_count() > frozen_before  # the start-up objects: out of its passes
    finally:
        gc.unfreeze()
        gc.enable()


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("run", "--profile", "p"), 2, "file not found"),
        (("show", "nope"), 2, "no run 'nope'"),
        (("resume", "nope"), 2, "no run 'nope'"),
        (
            (
                "init",
                "--profile",
                "p",
                "--az",
                "us-east-1a",
                "--size",
                "1",
                "--source",
                "/nonexistent",
            ),
            2,
            "source directory /nonexistent does not exist",
        ),
        (
            ("init", "--profile", "p", "--az", "moon-1a", "--size", "1", "--source", "/tmp"),
            2,
            "--az moon-1a is not an availability zone",
        ),
        (
            ("init", "--profile", "p", "--az", "us-east-1", "--size", "1", "--source", "/tmp"),
            2,
            "--az us-east-1 is a region, not an availability zone; give one of its zones",
        ),
        (
            ("init", "--profile", "p", "--az", "us-east-1a", "--size", "0", "--source", "/tmp"),
            2,
            "--size 0 is out of range",
        ),
    ],
)
def test_bad_input_is_one_line_with_the_fix_and_a_nonzero_exit(
    tmp_path: Path, args: tuple[str, ...], code: int, words: str
) -> None:
    result = cli(tmp_path, *args)
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ec2backup: error: ") and words in lines[0]
    assert not (tmp_path / "config.toml").exists()  # init wrote nothing


def test_debug_shows_the_traceback_and_keeps_the_line_and_the_exit_code(tmp_path: Path) -> None:
    result = cli(tmp_path, "--debug", "show", "nope")
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "UnknownRunError" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ec2backup: error: no run 'nope'")


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_every_option_has_help_and_no_flag_shows_a_type() -> None:
    import typer.main

    from ec2backup.cli.app import app

    root = typer.main.get_command(app)
    missing = [
        f"{' '.join(path) or 'ec2backup'} {param.opts[0] if param.opts else param.name}"
        for path, command in _commands(root)
        for param in command.params
        if not (getattr(param, "help", None) or "").strip()
    ]
    assert missing == []
    from typer.testing import CliRunner

    runner = CliRunner()
    for path, _command in _commands(root):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output, (path, result.output)
        assert "--help" in result.output


def test_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    result = cli(tmp_path, "--version")
    assert result.returncode == 0 and result.stdout == f"ec2backup {version('ec2backup')}\n"


def test_a_corrupt_database_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "db.sqlite").write_bytes(b"\x00garbage" * 512)
    result = cli(tmp_path, "runs")
    assert result.returncode == 4
    assert len(result.stderr.strip().splitlines()) == 1
    assert "not a valid ec2backup database" in result.stderr
    assert (tmp_path / "db.sqlite").read_bytes() == b"\x00garbage" * 512  # left as it was
