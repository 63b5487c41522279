"""What the local cloud's instances do with their user data, without a sandbox: cloud-init's
stages as parsed, and the stand-ins for systemd's tools that the instances' commands run."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ec2backup.sandbox import cloudinit
from ec2backup.sandbox.standin import Manager, Refused, parse_timespan, shutdown


def standin(state: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a stand-in as the instance's wrapper runs it (python -I -S, the stdlib only)."""
    program = Path(cloudinit.__file__).with_name("standin.py")
    return subprocess.run(
        [sys.executable, "-I", "-S", str(program), "--state", str(state), *argv],
        capture_output=True,
        text=True,
    )


def timers(state: Path) -> dict[str, dict[str, object]]:
    return {p.stem: json.loads(p.read_text()) for p in (state / "timers").glob("*.json")}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("5min", 300), ("2m", 120), ("1h 30min", 5400), ("1200s", 1200)],
)
def test_timespans_read_as_systemd_reads_them(text: str, seconds: float) -> None:
    assert parse_timespan(text) == seconds


def test_a_bad_timespan_is_refused() -> None:
    with pytest.raises(Refused, match="Failed to parse timespan"):
        parse_timespan("soon")


def test_before_dbus_every_tool_fails_and_arms_nothing(tmp_path: Path) -> None:
    for argv in (
        ["shutdown", "-P", "+5", "bye"],
        ["systemd-run", "--on-active=5min", "systemctl", "poweroff"],
        ["systemctl", "poweroff"],
    ):
        done = standin(tmp_path, *argv)
        assert done.returncode == 1
        assert "Failed to connect to bus" in done.stderr
    assert not (tmp_path / "timers").exists() and not (tmp_path / "requests").exists()


def test_systemd_run_arms_a_named_timer_once_and_stop_disarms_it(tmp_path: Path) -> None:
    (tmp_path / "bus").touch()
    argv = ["systemd-run", "--quiet", "--unit=idle", "--on-active=60s", "systemctl", "poweroff"]
    assert standin(tmp_path, *argv).returncode == 0
    assert timers(tmp_path)["idle"]["seconds"] == 60
    again = standin(tmp_path, *argv)
    assert again.returncode == 1 and "already loaded" in again.stderr
    assert standin(tmp_path, "systemctl", "is-active", "idle.timer").returncode == 0
    assert standin(tmp_path, "systemctl", "stop", "idle.timer").returncode == 0
    assert timers(tmp_path) == {}
    assert standin(tmp_path, "systemctl", "stop", "idle.timer").returncode == 5
    assert standin(tmp_path, *argv).returncode == 0  # the name is free again


def test_shutdown_schedules_one_power_off_replaces_and_cancels(tmp_path: Path) -> None:
    manager = Manager(tmp_path)
    (tmp_path / "bus").touch()
    now = datetime(2026, 11, 28, 16, 0, tzinfo=UTC)
    shutdown(manager, ["-P", "+5"], now)
    shutdown(manager, ["-P", "16:30"], now)  # logind keeps one: the later call wins
    (only,) = timers(tmp_path).values()
    assert only["seconds"] == 30 * 60 and only["command"] == ["systemctl", "poweroff"]
    shutdown(manager, ["-P", "15:00"], now)  # tomorrow
    assert next(iter(timers(tmp_path).values()))["seconds"] == 23 * 3600
    shutdown(manager, ["-c"], now)
    assert timers(tmp_path) == {}
    shutdown(manager, ["-h", "now"], now)
    assert (tmp_path / "requests" / "poweroff").exists()


def test_user_data_stages() -> None:
    parsed = cloudinit.parse(
        "#cloud-config\n"
        "ssh_authorized_keys: [ssh-ed25519 AAAA user]\n"
        "ssh_keys:\n  ed25519_private: |\n    PRIVATE\n  ed25519_public: ssh-ed25519 BBBB host\n"
        "bootcmd:\n  - [echo, early one]\n  - echo $HOME\n"
        "runcmd:\n  - [systemd-run, --on-active=1min, systemctl, poweroff]\n"
        "power_state:\n  mode: poweroff\n  delay: 30\n"
    )
    assert parsed.authorized_keys == ["ssh-ed25519 AAAA user"]
    assert parsed.host_keys == [cloudinit.HostKey("ed25519", "PRIVATE\n", "ssh-ed25519 BBBB host")]
    assert parsed.bootcmd == ["echo 'early one'", "echo $HOME"]
    assert parsed.final == [
        "systemd-run --on-active=1min systemctl poweroff",
        "shutdown -P +30 'cloud-init power_state'",
    ]
    assert cloudinit.parse("#!/bin/sh\necho hi\n").script == "#!/bin/sh\necho hi\n"
    assert cloudinit.parse("not cloud-init") == cloudinit.UserData()
