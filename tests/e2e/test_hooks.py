"""Hooks and monitoring on the local cloud: ``on_success`` / ``on_failure`` with the run's
outcome in their environment, bounded in time and never failing a backup, and the metrics
file in node_exporter's textfile format after every backup run."""

from __future__ import annotations

import os
import re
import signal
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Cli

pytestmark = pytest.mark.e2e


def _env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _metrics(path: Path) -> dict[str, float]:
    """``name{labels}`` -> value, from a textfile (comments checked to be HELP/TYPE)."""
    samples = {}
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) ec2backup_\w+ ", line), line
            continue
        key, value = line.rsplit(" ", 1)
        samples[key] = float(value)
    return samples


def _configure(tmp_path: Path, **fields: str) -> None:
    config = tmp_path / "config.toml"
    lines = "".join(f"{key} = {value}\n" for key, value in fields.items())
    text = re.sub(
        r"\n(on_success|on_failure|metrics_file|hook_timeout_seconds) = .*", "", config.read_text()
    )
    config.write_text(text.replace("[profiles.h]\n", f"[profiles.h]\n{lines}"))


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_hooks_get_the_outcome_and_the_metrics_file_follows_every_backup(
    cli: Cli, sandbox: Any, tmp_path: Path
) -> None:
    source = tmp_path / "home"
    source.mkdir()
    (source / "notes.txt").write_text("remember the milk\n")
    cli("init", "--profile", "h", "--az", "us-east-1a", "--size", "1", "--source", str(source))
    metrics = tmp_path / "node_exporter" / "ec2backup.prom"
    success, failure = tmp_path / "success.env", tmp_path / "failure.env"
    _configure(
        tmp_path,
        on_success=f"'env > {success}'",
        on_failure=f"'env > {failure}'",
        metrics_file=f'"{metrics}"',
    )

    run_id = cli("run", "--profile", "h").stdout.strip()
    shown = cli.json("show", run_id)
    seen = _env_file(success)
    assert (
        seen.items()
        >= {
            "EC2BACKUP_RUN_ID": run_id,
            "EC2BACKUP_PROFILE": "h",
            "EC2BACKUP_KIND": "backup",
            "EC2BACKUP_STATE": "done",
            "EC2BACKUP_ERROR": "",
            "EC2BACKUP_BYTES_SENT": str(shown["stats"]["bytes_sent"]),
            "EC2BACKUP_FILES_TRANSFERRED": "1",
            "EC2BACKUP_SNAPSHOT_ID": shown["snapshot_id"],
            "EC2BACKUP_VOLUME_ID": shown["volume_id"],
        }.items()
    )
    assert not failure.exists()
    samples = _metrics(metrics)
    assert oct(metrics.stat().st_mode & 0o777) == "0o644"
    at = datetime.fromisoformat(shown["finished_at"]).timestamp()
    assert samples['ec2backup_last_success_timestamp_seconds{profile="h"}'] == pytest.approx(at)
    assert samples['ec2backup_last_run_success{profile="h"}'] == 1
    assert samples['ec2backup_last_run_state{profile="h",state="done"}'] == 1
    assert samples['ec2backup_last_run_bytes_sent{profile="h"}'] == shown["stats"]["bytes_sent"]
    assert samples['ec2backup_last_run_duration_seconds{profile="h"}'] > 0

    # Interrupted (Ctrl-C): the run fails, on_failure hears it; the last success stays.
    interrupted = Cli(
        env={**cli.env, "EC2BACKUP_CRASH_AT": "before:sync", "EC2BACKUP_CRASH_SIGNAL": "INT"},
        cwd=cli.cwd,
    )("run", "--profile", "h", check=False)
    assert interrupted.returncode == 130
    seen = _env_file(failure)
    assert seen["EC2BACKUP_STATE"] == "failed" and seen["EC2BACKUP_KIND"] == "backup"
    assert "interrupted by Ctrl-C" in seen["EC2BACKUP_ERROR"]
    failed_run = seen["EC2BACKUP_RUN_ID"]
    samples = _metrics(metrics)
    assert samples['ec2backup_last_run_success{profile="h"}'] == 0
    assert samples['ec2backup_last_run_state{profile="h",state="failed"}'] == 1
    assert samples['ec2backup_last_success_timestamp_seconds{profile="h"}'] == pytest.approx(at)
    cli("resume", failed_run, "--clean")

    # Refused before it began (a source gone): a failure to monitoring too, with no run id.
    failure.unlink()
    (source / "notes.txt").unlink()
    source.rmdir()
    refused = cli("run", "--profile", "h", check=False)
    assert refused.returncode == 2
    seen = _env_file(failure)
    assert (seen["EC2BACKUP_STATE"], seen["EC2BACKUP_RUN_ID"]) == ("refused", "")
    assert "does not exist" in seen["EC2BACKUP_ERROR"]
    samples = _metrics(metrics)
    assert samples['ec2backup_last_run_state{profile="h",state="refused"}'] == 1
    assert samples['ec2backup_last_success_timestamp_seconds{profile="h"}'] == pytest.approx(at)


def test_a_failing_or_slow_hook_is_a_warning_never_a_failed_backup(
    cli: Cli, sandbox: Any, tmp_path: Path
) -> None:
    source = tmp_path / "home"
    source.mkdir()
    (source / "a.txt").write_text("a\n")
    cli("init", "--profile", "h", "--az", "us-east-1a", "--size", "1", "--source", str(source))
    _configure(tmp_path, on_success="'echo the hook speaks; exit 3'")
    result = cli("run", "--profile", "h")
    run_id = result.stdout.strip()  # stdout is ec2backup's result alone
    assert "the hook speaks" in result.stderr and "on_success hook exited 3" in result.stderr
    shown = cli.json("show", run_id)
    assert shown["state"] == "done" and "on_success hook exited 3" in shown["warnings"]

    marker = f"ec2backup-hook-{uuid.uuid4().hex}"
    _configure(
        tmp_path,
        on_success=f"'sleep 300 & sleep 301; : {marker}'",
        hook_timeout_seconds="1",
    )
    slow = cli("run", "--profile", "h")
    shown = cli.json("show", slow.stdout.strip())
    assert shown["state"] == "done"
    assert any("ran longer than hook_timeout_seconds (1 s)" in w for w in shown["warnings"])
    left = _processes_with(marker)
    for pid in left:  # never leave one behind, even when the assertion fails
        os.kill(pid, signal.SIGKILL)
    assert left == [], "the hook's process group was not ended"
