"""The dead-man's switch of a run's instance: systemd timers on the instance that power it off
(and so, launched with shutdown behaviour ``terminate``, end it) unless the controller keeps
re-arming one of them. Pure: the command lines only; the user data (``run/userdata.py``) arms
them at boot, ``InstanceHost.arm_idle_timer`` (``adapters/host.py``) re-arms over SSH.

Two transient timers, started with ``systemd-run`` as root once systemd and D-Bus are up
(cloud-init's final stage, or an SSH session; never ``bootcmd``, which runs before D-Bus, where
``shutdown +N`` arms nothing on Ubuntu 24.04):

* ``ec2backup-idle.timer``: ``instance_idle_minutes`` after it was last armed. Re-arming stops
  it and starts it again, so it fires only once the controller has been silent that long.
* ``ec2backup-lifetime.timer``: ``instance_lifetime_minutes`` after boot; never re-armed (a
  hard ceiling, for a controller that is alive but stuck).
"""

from __future__ import annotations

import shlex

IDLE_UNIT = "ec2backup-idle"
CEILING_UNIT = "ec2backup-lifetime"
# Re-arm this many times per idle bound: a controller that misses a few still keeps its instance.
REARMS_PER_IDLE = 10
MIN_REARM_SECONDS = 5.0


def timer_command(unit: str, seconds: int) -> list[str]:
    """``systemd-run`` arming ``unit`` to power the instance off ``seconds`` from now. Accuracy
    one second (systemd's default of one minute would add up to a minute to the bound)."""
    return [
        "systemd-run",
        "--quiet",
        "--collect",
        f"--unit={unit}",
        f"--on-active={seconds}s",
        "--timer-property=AccuracySec=1s",
        "systemctl",
        "poweroff",
    ]


def arm_idle_script(seconds: int) -> str:
    """A shell script (run as root) that (re)arms the idle timer: stop the one running, start
    a new one. systemd unloads a stopped transient unit asynchronously, so a start that finds
    the name still taken is tried again a few times. Exit 0 once armed."""
    start = shlex.join(timer_command(IDLE_UNIT, seconds))
    return (
        f"systemctl stop {IDLE_UNIT}.timer 2>/dev/null; "
        f"for _ in 1 2 3 4 5; do {start} && exit 0; sleep 0.2; done; exit 1"
    )


def rearm_interval(idle_minutes: int) -> float:
    """Seconds between re-arms while the controller works."""
    return max(MIN_REARM_SECONDS, idle_minutes * 60 / REARMS_PER_IDLE)
