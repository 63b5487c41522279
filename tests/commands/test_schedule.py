"""`schedule`: the exact text printed, quoting of awkward names, flag errors, and that the
printed cron command really refuses to overlap (flock -n) while another run holds the lock."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ec2backup.commands.schedule import (
    AWS_SETTINGS,
    LOCK_CONFLICT_EXIT,
    Job,
    build_job,
    cron_entry,
    lock_file_name,
    parse_at,
    schedule,
    systemd_units,
    unit_name,
)
from ec2backup.errors import ConfigError, UserInputError

EXE = ["/opt/ec2backup/bin/ec2backup"]


def job(profile: str = "laptop", **kw: object) -> Job:
    return Job(
        profile=profile,
        command=[*EXE, "--config", "/home/me/c.toml", "--quiet", "run", "--profile", profile],
        lock_path=Path("/home/me/.local/share/ec2backup/locks") / lock_file_name(profile),
        **kw,  # type: ignore[arg-type]
    )


def test_cron_line() -> None:
    assert cron_entry(job(), 3, 5) == (
        "# ec2backup: profile laptop, daily at 03:05 (add with `crontab -e`)\n"
        "5 3 * * * /bin/mkdir -p /home/me/.local/share/ec2backup/locks && /usr/bin/flock -n "
        "/home/me/.local/share/ec2backup/locks/laptop.lock /opt/ec2backup/bin/ec2backup "
        "--config /home/me/c.toml --quiet run --profile laptop\n"
    )


def test_cron_quotes_and_escapes_percent() -> None:
    text = cron_entry(job("my 100%"), 0, 0)
    line = text.splitlines()[1]
    assert "--profile 'my 100\\%'" in line
    assert "%" not in line.replace("\\%", "")  # every % escaped: cron would cut the line there
    assert lock_file_name("my 100%").startswith("my_100_-") and "/" not in lock_file_name("a/b")


def test_cron_carries_the_data_dir() -> None:
    line = cron_entry(job(environment={"EC2BACKUP_DATA_DIR": "/srv/eb"}), 1, 0)
    assert " && EC2BACKUP_DATA_DIR=/srv/eb /usr/bin/flock -n " in line


def test_systemd_units() -> None:
    units = systemd_units(job(), "*-*-* 03:05:00")
    assert list(units) == ["ec2backup-laptop.service", "ec2backup-laptop.timer"]
    service, timer = units.values()
    assert "Type=oneshot\n" in service
    assert (
        "ExecStart=/usr/bin/flock -n -E 75 /home/me/.local/share/ec2backup/locks/laptop.lock "
        "/opt/ec2backup/bin/ec2backup --config /home/me/c.toml --quiet run --profile laptop\n"
    ) in service
    assert "ExecStartPre=/bin/mkdir -p /home/me/.local/share/ec2backup/locks\n" in service
    assert f"SuccessExitStatus={LOCK_CONFLICT_EXIT}\n" in service
    assert "After=network-online.target" in service
    assert "OnCalendar=*-*-* 03:05:00\n" in timer
    assert "Persistent=true\n" in timer
    assert "RandomizedDelaySec=" in timer
    assert "WantedBy=timers.target" in timer


def test_systemd_escapes_names_percent_and_dollar() -> None:
    units = systemd_units(job('a b%$"'), "daily")
    name = unit_name('a b%$"')
    assert name == "ec2backup-a\\x20b\\x25\\x24\\x22"
    service = units[f"{name}.service"]
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith('--profile "a b%%$$\\""')
    assert 'Description=ec2backup run of profile a b%%$"' in service


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_accepts_the_units(tmp_path: Path) -> None:
    flock, mkdir = shutil.which("flock"), shutil.which("mkdir")
    assert flock and mkdir
    units = systemd_units(job(flock=flock, mkdir=mkdir), "Mon..Fri 02:30")
    for name, content in units.items():
        (tmp_path / name).write_text(content)
    # The command must exist for verify: point it at this Python.
    service = tmp_path / "ec2backup-laptop.service"
    service.write_text(service.read_text().replace(EXE[0], sys.executable))
    result = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            "--man=no",
            str(service),
            str(tmp_path / "ec2backup-laptop.timer"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [
        line
        for line in result.stderr.splitlines()
        if str(tmp_path) in line or "ec2backup-laptop" in line
    ]
    assert problems == [], result.stderr


@pytest.mark.parametrize(
    ("value", "expected"), [("03:00", (3, 0)), ("3:07", (3, 7)), ("23:59", (23, 59))]
)
def test_parse_at(value: str, expected: tuple[int, int]) -> None:
    assert parse_at(value) == expected


@pytest.mark.parametrize("value", ["24:00", "12:60", "3pm", "", "12"])
def test_parse_at_refuses(value: str) -> None:
    with pytest.raises(UserInputError, match="is not a time"):
        parse_at(value)


# --- the service function -------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text('[profiles.lap]\nregion = "us-east-1"\navailability_zone = "us-east-1a"\n')
    return path


def text(config: Path, **kw: object) -> str:
    settings: dict[str, object] = {"systemd": False, "cron": False, **kw}
    return schedule(
        "lap",
        config_path=config,
        db_url=None,
        data_dir=config.parent / "data",
        exe=EXE,
        **settings,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ({}, "exactly one of --systemd or --cron"),
        ({"systemd": True, "cron": True}, "exactly one of --systemd or --cron"),
        ({"systemd": True, "at": "01:00", "on_calendar": "daily"}, "not both"),
        ({"cron": True, "on_calendar": "daily"}, "--on-calendar is a systemd"),
        ({"cron": True, "at": "25:00"}, "is not a time"),
        ({"systemd": True, "on_calendar": "daily\nExecStart=/bin/evil"}, "not a calendar"),
    ],
)
def test_flag_errors(config: Path, flags: dict[str, object], words: str) -> None:
    with pytest.raises(UserInputError, match=words):
        text(config, **flags)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_a_calendar_systemd_rejects_is_refused(config: Path) -> None:
    with pytest.raises(UserInputError, match="systemd-analyze says"):
        text(config, systemd=True, on_calendar="Mon..Fri 25:00")


def test_unknown_profile_is_refused(config: Path) -> None:
    with pytest.raises(ConfigError, match="unknown profile"):
        schedule("nope", config_path=config, db_url=None, data_dir=config, cron=True, systemd=False)


def test_defaults_and_choices(config: Path) -> None:
    assert "OnCalendar=*-*-* 03:00:00" in text(config, systemd=True)
    assert "OnCalendar=Mon..Fri 02:00" in text(config, systemd=True, on_calendar="Mon..Fri 02:00")
    assert "OnCalendar=*-*-* 04:30:00" in text(config, systemd=True, at="4:30")
    assert text(config, cron=True, at="4:30").splitlines()[1].startswith("30 4 * * * ")
    systemd = text(config, systemd=True)
    assert "systemctl --user enable --now ec2backup-lap.timer" in systemd


def test_build_job_uses_absolute_paths(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in AWS_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(config.parent)
    monkeypatch.setenv("EC2BACKUP_DATA_DIR", "data")
    built = build_job(
        "lap", config_path=Path("config.toml"), db_url="sqlite:///x.db", data_dir=Path("data")
    )
    assert Path(built.command[0]).is_absolute()
    assert built.command[-6:] == ["--db", "sqlite:///x.db", "--quiet", "run", "--profile", "lap"]
    assert str(config) in built.command
    assert built.lock_path == config.parent / "data" / "locks" / "lap.lock"
    assert built.environment == {"EC2BACKUP_DATA_DIR": str(config.parent / "data")}
    assert Path(built.flock).is_absolute()


def test_the_job_runs_with_this_shells_aws_profile_and_region_never_its_keys(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in AWS_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("EC2BACKUP_DATA_DIR", raising=False)
    monkeypatch.setenv("AWS_PROFILE", "backups")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-write-me")
    built = build_job("lap", config_path=config, db_url=None, data_dir=config.parent)
    assert built.environment == {"AWS_PROFILE": "backups", "AWS_REGION": "eu-west-1"}
    systemd, cron = text(config, systemd=True), text(config, cron=True)
    assert "Environment=AWS_PROFILE=backups\nEnvironment=AWS_REGION=eu-west-1\n" in systemd
    assert "AWS_PROFILE=backups AWS_REGION=eu-west-1 " in cron
    for printed in (systemd, cron):
        assert "AKIAEXAMPLE" not in printed and "do-not-write-me" not in printed


# --- the printed cron command really does not overlap ---------------------------------------


@pytest.mark.skipif(shutil.which("flock") is None, reason="needs flock(1)")
def test_cron_command_gives_up_while_another_run_holds_the_lock(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    fake = tmp_path / "ec2backup"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {marker}\n')
    fake.chmod(0o755)
    flock, mkdir = shutil.which("flock"), shutil.which("mkdir")
    assert flock and mkdir
    lock = tmp_path / "locks" / "lap.lock"
    scheduled = Job(
        profile="lap",
        command=[str(fake), "--quiet", "run", "--profile", "lap"],
        lock_path=lock,
        flock=flock,
        mkdir=mkdir,
    )
    command = cron_entry(scheduled, 3, 0).splitlines()[1].split(" ", 5)[5]

    lock.parent.mkdir()
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a run in progress
        busy = subprocess.run(["/bin/sh", "-c", command], capture_output=True, timeout=30)
    free = subprocess.run(["/bin/sh", "-c", command], capture_output=True, timeout=30)

    assert busy.returncode == 1 and free.returncode == 0, (busy, free)
    assert marker.read_text() == "--quiet run --profile lap\n"  # ran once: the free time


# --- the command line -------------------------------------------------------------------------


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "EC2BACKUP_CONFIG": str(tmp_path / "config.toml"),
        "EC2BACKUP_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("EC2BACKUP_DB", None)
    return subprocess.run(
        [sys.executable, "-m", "ec2backup", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_prints_a_crontab_line(config: Path) -> None:
    result = cli(config.parent, "schedule", "--profile", "lap", "--cron", "--at", "02:15")
    assert result.returncode == 0, result.stderr
    comment, line = result.stdout.splitlines()
    assert comment.startswith("# ec2backup: profile lap")
    assert line.startswith("15 2 * * * ") and line.endswith("--quiet run --profile lap")
    assert f"--config {config}" in line
    assert not (config.parent / "data").exists()  # printed only: nothing was created


def test_cli_prints_systemd_units(config: Path) -> None:
    result = cli(config.parent, "schedule", "-p", "lap", "--systemd", "--on-calendar", "weekly")
    assert result.returncode == 0, result.stderr
    assert "OnCalendar=weekly" in result.stdout and "Persistent=true" in result.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("schedule", "-p", "lap"), "give exactly one of --systemd or --cron"),
        (("schedule", "-p", "lap", "--cron", "--at", "7"), "--at '7' is not a time"),
        (("schedule", "-p", "nope", "--cron"), "unknown profile 'nope'"),
    ],
)
def test_cli_errors_are_one_line(config: Path, args: tuple[str, ...], words: str) -> None:
    result = cli(config.parent, *args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ec2backup: error: ") and words in lines[0]


def test_a_database_url_with_a_password_is_refused(tmp_path: Path) -> None:
    from ec2backup.commands.schedule import build_job
    from ec2backup.errors import UserInputError

    with pytest.raises(UserInputError, match="carries a password"):
        build_job(
            "p",
            config_path=tmp_path / "c.toml",
            db_url="postgresql+psycopg://backup:s3cret@db.example/ec2backup",
            data_dir=tmp_path,
        )
    job = build_job(
        "p",
        config_path=tmp_path / "c.toml",
        db_url="postgresql+psycopg://backup@db.example/ec2backup",
        data_dir=tmp_path,
    )
    assert "postgresql+psycopg://backup@db.example/ec2backup" in job.command
