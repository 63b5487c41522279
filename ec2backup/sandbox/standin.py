"""The local cloud's stand-ins for an instance's ``systemd-run``, ``systemctl``, ``shutdown``,
``poweroff`` and ``halt``: the sandbox's instances have no systemd, so these small programs do
what ec2backup's dead-man's switch relies on, with the limits Ubuntu 24.04 has.

They run *inside* the instance (wrappers in its ``/usr/local/sbin``, first on root's and sudo's
PATH) and keep the instance's service manager state in a directory the server reads:

    STATE/bus                 exists once D-Bus and logind are up (after cloud-init's network
                              stage): before that, every tool fails as on Ubuntu ("Failed to
                              connect to bus"), so a ``shutdown +N`` in ``bootcmd`` arms nothing
    STATE/timers/NAME.json    a transient timer (``systemd-run --on-active``, a scheduled
                              ``shutdown``): the server runs its command in the instance once
                              due; ``systemctl stop NAME.timer`` removes it
    STATE/requests/poweroff   ``systemctl poweroff`` was asked for: the server powers off

Time spans are recorded as systemd reads them (seconds); the server decides how long a second
lasts (its ``minute_seconds`` setting). Run with ``python -I -S``: the standard library only,
nothing of ec2backup (the instance sees this file, not the package).

    python -I -S standin.py --state STATE PROGRAM [ARGS...]
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

# secrets, subprocess, datetime and typing are imported where they are used (or not at all):
# every call of a stand-in is a process of its own, and re-arming the idle timer runs two.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import datetime

NO_BUS = "Failed to connect to bus: No such file or directory"
# logind keeps one scheduled shutdown; a new `shutdown` replaces it, `shutdown -c` cancels it.
SCHEDULED_SHUTDOWN = "logind-scheduled-shutdown"
POWEROFF = ["systemctl", "poweroff"]

_UNITS = {
    "us": 1e-6,
    "usec": 1e-6,
    "ms": 1e-3,
    "msec": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
    "w": 604800.0,
    "week": 604800.0,
    "weeks": 604800.0,
}
_SPAN_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")


class Refused(Exception):
    """What the real tool would print on stderr, and its exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def parse_timespan(text: str) -> float:
    """Seconds in a systemd time span: ``90``, ``90s``, ``5min``, ``1h 30min``, ``2m``."""
    rest = text.strip().lower()
    if not rest:
        raise Refused(f"Failed to parse timespan: {text}")
    total = 0.0
    while rest:
        match = _SPAN_PART.match(rest)
        if match is None or match.group(2) not in ("", *_UNITS):
            raise Refused(f"Failed to parse timespan: {text}")
        total += float(match.group(1)) * _UNITS.get(match.group(2) or "s", 1.0)
        rest = rest[match.end() :].strip()
    return total


class Manager:
    """The instance's service manager, as far as the stand-ins model it."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.timers = state / "timers"
        self.requests = state / "requests"

    def require_bus(self) -> None:
        if not (self.state / "bus").exists():
            raise Refused(NO_BUS)

    def timer_path(self, name: str) -> Path:
        return self.timers / f"{name}.json"

    def add_timer(self, name: str, seconds: float, command: list[str]) -> None:
        self.timers.mkdir(parents=True, exist_ok=True)
        record = {
            "unit": f"{name}.timer",
            "seconds": seconds,
            "armed_at": time.time(),
            "command": command,
        }
        tmp = self.timers / f".{name}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(record))
        tmp.replace(self.timer_path(name))

    def stop_timer(self, name: str) -> bool:
        try:
            self.timer_path(name).unlink()
        except FileNotFoundError:
            return False
        return True

    def list_timers(self) -> list[dict[str, object]]:
        found = []
        for path in sorted(self.timers.glob("*.json")):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return found

    def request_poweroff(self) -> None:
        self.requests.mkdir(parents=True, exist_ok=True)
        (self.requests / "poweroff").write_text(f"{time.time()}\n")


def _unit_name(value: str) -> str:
    for suffix in (".timer", ".service"):
        value = value.removesuffix(suffix)
    if not re.fullmatch(r"[A-Za-z0-9:_.\\-]+", value):
        raise Refused(f"Invalid unit name: {value}")
    return value


def systemd_run(manager: Manager, args: list[str]) -> int:
    manager.require_bus()
    unit, on_active, quiet = None, None, False
    i = 0
    while i < len(args) and args[i].startswith("-"):
        arg = args[i]
        name, _, value = arg.partition("=")
        takes_value = name in ("--unit", "-u", "--on-active", "--description", "-p", "--property")
        takes_value = takes_value or name in ("--timer-property", "--on-boot", "--on-calendar")
        if takes_value and not value:
            i += 1
            if i >= len(args):
                raise Refused(f"option '{name}' requires an argument")
            value = args[i]
        if name in ("--unit", "-u"):
            unit = _unit_name(value)
        elif name == "--on-active":
            on_active = parse_timespan(value)
        elif name in ("--on-boot", "--on-calendar"):
            raise Refused(f"{name} is not modelled by the local cloud's systemd-run")
        elif name in ("--quiet", "-q"):
            quiet = True
        elif name == "--":
            i += 1
            break
        i += 1
    command = args[i:]
    if not command:
        raise Refused("Command line to execute required.")
    if unit is None:
        import secrets

    name = unit or f"run-r{secrets.token_hex(16)}"
    if on_active is None:
        import subprocess

        # A transient service: started now, in the background, as systemd would.
        subprocess.Popen(command, start_new_session=True, stdin=subprocess.DEVNULL)
        if not quiet:
            print(f"Running as unit: {name}.service", file=sys.stderr)
        return 0
    if manager.timer_path(name).exists():
        raise Refused(
            f"Failed to start transient timer unit: Unit {name}.timer was already loaded or "
            "has a fragment file."
        )
    manager.add_timer(name, on_active, command)
    if not quiet:
        print(f"Running timer as unit: {name}.timer", file=sys.stderr)
        print(f"Will run service as unit: {name}.service", file=sys.stderr)
    return 0


def systemctl(manager: Manager, args: list[str]) -> int:
    manager.require_bus()
    words = [a for a in args if not a.startswith("-")]
    if not words:
        raise Refused("systemctl without a verb is not modelled by the local cloud")
    verb, units = words[0], words[1:]
    if verb in ("poweroff", "halt"):
        manager.request_poweroff()
        return 0
    if verb == "stop":
        status = 0
        for unit in units:
            name = _unit_name(unit)
            if unit.endswith(".service") and not manager.timer_path(name).exists():
                continue  # a timer's service that never ran: nothing to stop
            if not manager.stop_timer(name):
                print(f"Failed to stop {unit}: Unit {unit} not loaded.", file=sys.stderr)
                status = 5
        return status
    if verb == "is-active":
        active = all(manager.timer_path(_unit_name(u)).exists() for u in units)
        print("\n".join("active" if active else "inactive" for _ in units))
        return 0 if active else 3
    if verb == "list-timers":
        for timer in manager.list_timers():
            print(f"{timer['unit']} {timer['seconds']}s {' '.join(timer['command'])}")  # type: ignore[arg-type]
        return 0
    if verb in ("reset-failed", "daemon-reload"):
        return 0
    raise Refused(f"systemctl {verb} is not modelled by the local cloud")


def shutdown(manager: Manager, args: list[str], now: datetime | None = None) -> int:
    manager.require_bus()
    options = [a for a in args if a.startswith("-")]
    positional = [a for a in args if not a.startswith("-")]
    if any(o in ("-c", "--cancel") for o in options):
        manager.stop_timer(SCHEDULED_SHUTDOWN)
        return 0
    if any(o in ("-r", "--reboot") for o in options):
        raise Refused("a reboot is not modelled by the local cloud")
    if any(o in ("-k",) for o in options):
        return 0  # only the wall message
    when = positional[0] if positional else "+1"
    if when == "now":
        manager.request_poweroff()
        return 0
    from datetime import UTC, datetime, timedelta

    current = now or datetime.now(UTC)
    if re.fullmatch(r"\+?\d+", when):
        seconds = float(when.lstrip("+")) * 60
    elif clock := re.fullmatch(r"(\d{1,2}):(\d{2})", when):
        target = current.replace(hour=int(clock[1]), minute=int(clock[2]), second=0, microsecond=0)
        if target <= current:
            target += timedelta(days=1)
        seconds = (target - current).total_seconds()
    else:
        raise Refused(f"Failed to parse time specification: {when}")
    manager.stop_timer(SCHEDULED_SHUTDOWN)
    manager.add_timer(SCHEDULED_SHUTDOWN, seconds, POWEROFF)
    at = (current + timedelta(seconds=seconds)).strftime("%a %Y-%m-%d %H:%M:%S UTC")
    print(f"Shutdown scheduled for {at}, use 'shutdown -c' to cancel.", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] != "--state":
        print("usage: standin.py --state DIR PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    manager = Manager(Path(argv[1]))
    program, args = Path(argv[2]).name, argv[3:]
    try:
        if program == "systemd-run":
            return systemd_run(manager, args)
        if program == "systemctl":
            return systemctl(manager, args)
        if program == "shutdown":
            return shutdown(manager, args)
        if program in ("poweroff", "halt"):
            return systemctl(manager, [program])
        raise Refused(f"{program} is not modelled by the local cloud")
    except Refused as refused:
        print(str(refused), file=sys.stderr)
        return refused.status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
