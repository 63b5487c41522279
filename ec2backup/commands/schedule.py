"""``ec2backup schedule``: the text of a systemd timer or a crontab line. Prints; installs nothing.

The scheduled command is ``flock -n LOCK ec2backup --config CONFIG --quiet run --profile P``:
``flock -n`` makes an overlapping start give up at once instead of queueing (the run also holds
a database lease on the volume, so two runs can never drive it together). Absolute paths are
used throughout, because cron and systemd start with a minimal environment.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserInputError

__all__ = [
    "LOCK_CONFLICT_EXIT",
    "Job",
    "cron_entry",
    "parse_at",
    "systemd_units",
    "unit_name",
]

DEFAULT_AT = "03:00"
RANDOMIZED_DELAY = "10min"
# flock's exit code when the lock is held (-E); the service counts it as success.
LOCK_CONFLICT_EXIT = 75

# The AWS settings a scheduled run takes from this shell's environment.
AWS_SETTINGS = (
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)

_AT = re.compile(r"^(\d{1,2}):(\d{2})$")
_UNIT_SAFE = re.compile(r"[A-Za-z0-9_.-]")
_SYSTEMD_PLAIN = re.compile(r"^[A-Za-z0-9_@+=:,./-]+$")


@dataclass(frozen=True)
class Job:
    """What is scheduled, with every path absolute."""

    profile: str
    command: Sequence[str]  # ec2backup and its arguments
    lock_path: Path
    flock: str = "/usr/bin/flock"
    mkdir: str = "/bin/mkdir"
    environment: Mapping[str, str] = field(default_factory=dict)


def parse_at(value: str) -> tuple[int, int]:
    match = _AT.match(value.strip())
    if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise UserInputError(f"--at {value!r} is not a time", hint="give HH:MM, e.g. --at 03:30")
    return int(match.group(1)), int(match.group(2))


def check_name(profile: str) -> None:
    if not profile or any(ord(c) < 32 or ord(c) == 127 for c in profile):
        raise UserInputError(
            f"profile name {profile!r} cannot be scheduled (control characters)",
            hint="rename the profile",
        )


def unit_name(profile: str) -> str:
    """``ec2backup-<profile>``, escaped the way ``systemd-escape`` escapes a string."""
    escaped = "".join(
        c if _UNIT_SAFE.match(c) else "".join(f"\\x{b:02x}" for b in c.encode()) for c in profile
    )
    return f"ec2backup-{escaped}"


def lock_file_name(profile: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", profile)
    if safe != profile:
        safe += "-" + hashlib.sha256(profile.encode()).hexdigest()[:8]
    return f"{safe}.lock"


def _systemd_arg(arg: str) -> str:
    if not _SYSTEMD_PLAIN.match(arg):
        arg = '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    # % starts a specifier and $ a variable in ExecStart=, even inside quotes.
    return arg.replace("%", "%%").replace("$", "$$")


def _systemd_line(args: Sequence[str]) -> str:
    return " ".join(_systemd_arg(a) for a in args)


def _systemd_value(value: str) -> str:
    return value.replace("%", "%%")


def _systemd_env(key: str, value: str) -> str:
    # Environment= resolves % specifiers but not $ variables.
    assignment = f"{key}={value}"
    if not _SYSTEMD_PLAIN.match(assignment):
        assignment = '"' + assignment.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return _systemd_value(assignment)


def check_calendar(expression: str) -> None:
    """Refuse an expression systemd would not accept: checked with ``systemd-analyze
    calendar`` where it is installed, else only for line breaks."""
    if not expression.strip() or any(ord(c) < 32 for c in expression):
        raise UserInputError(
            f"--on-calendar {expression!r} is not a calendar expression",
            hint="e.g. --on-calendar daily, or '*-*-* 03:00:00' (see man systemd.time)",
        )
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    try:
        done = subprocess.run(
            [analyze, "calendar", expression],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["rejected"])[-1]
        raise UserInputError(
            f"--on-calendar {expression!r}: systemd-analyze says: {reason}",
            hint="see man systemd.time, e.g. daily, Mon..Fri 02:00, '*-*-* 03:00:00'",
        )


def systemd_units(job: Job, on_calendar: str) -> dict[str, str]:
    """{file name: content} for a user service and its timer."""
    check_name(job.profile)
    if not on_calendar.strip() or any(ord(c) < 32 for c in on_calendar):
        raise UserInputError(
            f"--on-calendar {on_calendar!r} is not a calendar expression",
            hint="e.g. --on-calendar daily, or '*-*-* 03:00:00' (see man systemd.time)",
        )
    name = unit_name(job.profile)
    environment = "".join(
        f"Environment={_systemd_env(k, v)}\n" for k, v in sorted(job.environment.items())
    )
    exec_start = _systemd_line(
        [job.flock, "-n", "-E", str(LOCK_CONFLICT_EXIT), str(job.lock_path), *job.command]
    )
    description = _systemd_value(f"ec2backup run of profile {job.profile}")
    service = (
        "[Unit]\n"
        f"Description={description}\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"{environment}"
        f"ExecStartPre={_systemd_line([job.mkdir, '-p', str(job.lock_path.parent)])}\n"
        f"ExecStart={exec_start}\n"
        "# Another run holds the lock: not a failure, that run does the backup.\n"
        f"SuccessExitStatus={LOCK_CONFLICT_EXIT}\n"
    )
    timer = (
        "[Unit]\n"
        f"Description={_systemd_value(f'ec2backup schedule of profile {job.profile}')}\n"
        "\n"
        "[Timer]\n"
        f"OnCalendar={_systemd_value(on_calendar.strip())}\n"
        "# Run at the next boot if the machine was off at the scheduled time.\n"
        "Persistent=true\n"
        "# Spread the start, so many machines do not hit AWS at the same second.\n"
        f"RandomizedDelaySec={RANDOMIZED_DELAY}\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return {f"{name}.service": service, f"{name}.timer": timer}


def systemd_text(job: Job, on_calendar: str) -> str:
    units = systemd_units(job, on_calendar)
    parts = [f"# ~/.config/systemd/user/{name}\n{content}" for name, content in units.items()]
    timer = next(n for n in units if n.endswith(".timer"))
    install = (
        "# Install (as the user who runs the backups):\n"
        "#   mkdir -p ~/.config/systemd/user   # then save the two files above there\n"
        "#   systemctl --user daemon-reload\n"
        f"#   systemctl --user enable --now {shlex.quote(timer)}\n"
        '#   loginctl enable-linger "$USER"    # to run while you are logged out\n'
        f"#   systemctl --user list-timers {shlex.quote(timer)}   # next start\n"
    )
    return "\n".join([*parts, install])


def cron_entry(job: Job, hour: int, minute: int) -> str:
    """One crontab line (with a comment line above it)."""
    check_name(job.profile)
    env = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(job.environment.items()))
    command = " ".join(shlex.quote(a) for a in [job.flock, "-n", str(job.lock_path), *job.command])
    mkdir = " ".join(shlex.quote(a) for a in [job.mkdir, "-p", str(job.lock_path.parent)])
    line = f"{mkdir} && {env + ' ' if env else ''}{command}"
    # cron turns an unescaped % into a newline.
    line = line.replace("%", "\\%")
    comment = f"# ec2backup: profile {job.profile}, daily at {hour:02d}:{minute:02d}"
    return f"{comment} (add with `crontab -e`)\n{minute} {hour} * * * {line}\n"


# --- building the job from the CLI's settings ---------------------------------------------


def ec2backup_command() -> list[str]:
    """How to start this same ec2backup from cron or systemd, as an absolute command."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "ec2backup" and argv0.exists():
        return [str(argv0.resolve())]
    found = shutil.which("ec2backup")
    if found:
        return [str(Path(found).resolve())]
    return [sys.executable, "-m", "ec2backup"]


def _has_password(url: str) -> bool:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).password is not None
    except Exception:  # not a URL sqlalchemy can parse: the run itself will say so
        return False


def build_job(
    profile: str,
    *,
    config_path: Path,
    db_url: str | None,
    data_dir: Path,
    exe: Sequence[str] | None = None,
) -> Job:
    command = [*(exe or ec2backup_command()), "--config", str(config_path.absolute())]
    if db_url:
        if _has_password(db_url):
            # It would be written into a unit file or crontab and show in `ps` via sh -c.
            raise UserInputError(
                "the --db URL carries a password, which the schedule would expose",
                hint="use a URL without the password and put it in ~/.pgpass (docs/fleet.md)",
            )
        command += ["--db", db_url]
    command += ["--quiet", "run", "--profile", profile]
    environment = {}
    if os.environ.get("EC2BACKUP_DATA_DIR"):
        environment["EC2BACKUP_DATA_DIR"] = str(data_dir.absolute())
    # Which credentials and region the job uses, as in this shell (cron and systemd start
    # with almost no environment); never the keys themselves, which would land in a file.
    for name in AWS_SETTINGS:
        value = os.environ.get(name)
        if value:
            path = name.endswith("_FILE")
            environment[name] = str(Path(value).expanduser().absolute()) if path else value
    return Job(
        profile=profile,
        command=command,
        lock_path=data_dir.absolute() / "locks" / lock_file_name(profile),
        flock=shutil.which("flock") or "/usr/bin/flock",
        mkdir=shutil.which("mkdir") or "/bin/mkdir",
        environment=environment,
    )


def schedule(
    profile_name: str,
    *,
    config_path: Path,
    db_url: str | None,
    data_dir: Path,
    systemd: bool,
    cron: bool,
    at: str | None = None,
    on_calendar: str | None = None,
    exe: Sequence[str] | None = None,
) -> str:
    """``ec2backup schedule``: check the flags and the profile, return the text to print."""
    from ..config import load_profile

    if systemd == cron:
        raise UserInputError("give exactly one of --systemd or --cron")
    if at is not None and on_calendar is not None:
        raise UserInputError("give --at or --on-calendar, not both")
    if cron and on_calendar is not None:
        raise UserInputError(
            "--on-calendar is a systemd calendar expression",
            hint="with --cron give --at HH:MM (or edit the crontab line's times)",
        )
    hour, minute = parse_at(at or DEFAULT_AT)
    if on_calendar is not None:
        check_calendar(on_calendar)
    profile = load_profile(config_path, profile_name)  # a typo fails now, not at 3 a.m.
    job = build_job(
        profile.name, config_path=config_path, db_url=db_url, data_dir=data_dir, exe=exe
    )
    if cron:
        return cron_entry(job, hour, minute)
    return systemd_text(job, on_calendar or f"*-*-* {hour:02d}:{minute:02d}:00")
