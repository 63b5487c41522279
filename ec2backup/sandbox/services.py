"""The server's side of an instance's service manager (the stand-ins of ``standin.py`` keep its
state in ``Machine.state_dir``): the final stage of cloud-init, the transient timers the
instance's own commands armed, and the power-off they may ask for.

A timer's span is counted in the sandbox's minutes: ``minute_seconds`` real seconds per minute
of the instance (read when the timer is checked). When one is due, its command runs inside the
instance, as systemd would run the timer's service; what it does (``systemctl poweroff``) is
seen here as a request, and the reconcile step powers the instance off.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

from .cloudinit import ROOT_PATH, UserData, stage_script
from .host import Machine

log = logging.getLogger("ec2backup.sandbox")

BUS = "bus"  # exists once D-Bus and logind are up
FINAL_DONE = "final-done"  # cloud-final finished: the console shows the host keys


def bus_up(machine: Machine) -> None:
    machine.state_dir.mkdir(parents=True, exist_ok=True)
    (machine.state_dir / BUS).touch()


def start_final_stage(machine: Machine, user_data: UserData) -> subprocess.Popen[bytes] | None:
    """Run the final stage (runcmd, a shell-script user data, power_state) inside the
    instance; None when there is nothing to run (the stage is over at once)."""
    lines = list(user_data.final)
    if user_data.script is not None:
        script = machine.directory / "scripts-user"
        script.write_text(user_data.script)
        script.chmod(0o755)
        lines.insert(0, str(script))
    if not lines:
        final_done(machine)
        return None
    final = machine.directory / "final.sh"
    final.write_text(stage_script(lines))
    return machine.run_inside(["sh", str(final)], ROOT_PATH)


def final_done(machine: Machine) -> None:
    (machine.state_dir / FINAL_DONE).write_text(f"{time.time()}\n")


def boot_finished(directory: Path) -> bool:
    """Whether cloud-init's final stage is over in the instance kept in ``directory``."""
    return (directory / "systemd" / FINAL_DONE).exists()


def due_timers(machine: Machine, minute_seconds: float, now: float) -> list[dict[str, Any]]:
    """The timers whose span has passed, removed from the instance's state as systemd removes
    a transient timer once it has elapsed."""
    due = []
    for path in sorted((machine.state_dir / "timers").glob("*.json")):
        try:
            timer = json.loads(path.read_text())
            ends = float(timer["armed_at"]) + float(timer["seconds"]) * minute_seconds / 60.0
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if now < ends:
            continue
        path.unlink(missing_ok=True)
        due.append(timer)
    return due


def fire(machine: Machine, timer: dict[str, Any]) -> subprocess.Popen[bytes]:
    log.info("%s: timer %s elapsed: %s", machine.instance_id, timer["unit"], timer["command"])
    return machine.run_inside([str(word) for word in timer["command"]], ROOT_PATH)


def take_poweroff_request(machine: Machine) -> bool:
    """Whether something in the instance asked for a power-off (consumed)."""
    request = machine.state_dir / "requests" / "poweroff"
    if not request.exists():
        return False
    request.unlink(missing_ok=True)
    return True
