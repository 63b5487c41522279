"""What cloud-init does on an Ubuntu instance, as far as ec2backup can see it: the keys it
installs from the user data, and the boot log it prints to the console."""

from __future__ import annotations

import re
import shlex
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from .host import fingerprint

CLOUD_INIT_VERSION = "24.3.1-0ubuntu0~24.04.2"


def authorized_keys(user_data: str) -> list[str]:
    """The top-level ``ssh_authorized_keys`` of a ``#cloud-config`` user data; other keys
    and other user-data formats are ignored."""
    if not user_data.startswith("#cloud-config"):
        return []
    try:
        data: Any = yaml.safe_load(user_data)
    except yaml.YAMLError:
        return []
    keys = data.get("ssh_authorized_keys") if isinstance(data, dict) else None
    if not isinstance(keys, list):
        return []
    return [str(k).strip() for k in keys if str(k).strip()]


def shutdown_minutes(user_data: str, now: datetime | None = None) -> float | None:
    """Minutes after boot at which the user data powers the instance off, or None.

    Understands what an instance's own dead-man's switch looks like: ``shutdown`` commands
    (``shutdown -P +720 "msg"``, ``shutdown -h now``, ``shutdown 23:30``, plain ``shutdown`` =
    +1 as with systemd, ``poweroff``/``halt`` = now) as items of cloud-config ``bootcmd`` and
    ``runcmd`` (lists or strings) or as lines of a shell-script user data, and cloud-config
    ``power_state`` (mode poweroff/halt, ``delay``). Reboots and ``shutdown -c`` are not a
    power-off. The earliest power-off wins. ``hh:mm`` is taken in UTC, the instance's clock.
    """
    commands: list[list[str]] = []
    if user_data.startswith("#cloud-config"):
        try:
            data: Any = yaml.safe_load(user_data)
        except yaml.YAMLError:
            return None
        if not isinstance(data, dict):
            return None
        for key in ("bootcmd", "runcmd"):
            items = data.get(key)
            if isinstance(items, list):
                commands.extend(c for item in items if (c := _command(item)))
        power = data.get("power_state")
        if isinstance(power, dict) and str(power.get("mode", "")).lower() in ("poweroff", "halt"):
            delay = str(power.get("delay", "now"))
            commands.append(["shutdown", "-P", delay if delay.startswith("+") else f"+{delay}"])
    elif user_data.startswith("#!"):
        for line in user_data.splitlines()[1:]:
            for part in re.split(r"&&|\|\||;", line.split("#", 1)[0]):
                if command := _command(part):
                    commands.append(command)
    found = [m for c in commands if (m := _power_off_minutes(c, now)) is not None]
    return min(found) if found else None


def _command(item: Any) -> list[str]:
    if isinstance(item, list):
        return [str(word) for word in item]
    if isinstance(item, str):
        try:
            return shlex.split(item)
        except ValueError:
            return item.split()
    return []


def _power_off_minutes(command: list[str], now: datetime | None) -> float | None:
    words = list(command)
    while words and words[0] in ("sudo", "-n", "exec", "nohup", "systemctl"):
        words.pop(0)
    if not words:
        return None
    name = words[0].rsplit("/", 1)[-1]
    args = words[1:]
    if name in ("poweroff", "halt"):
        return None if "--help" in args else 0.0
    if name != "shutdown":
        return None
    options = [a for a in args if a.startswith("-")]
    if any(o in ("-r", "--reboot", "-c", "-k", "--help") for o in options):
        return None
    positional = [a for a in args if not a.startswith("-")]
    when = positional[0] if positional else "+1"
    if when == "now":
        return 0.0
    if re.fullmatch(r"\+?\d+", when):
        return float(when.lstrip("+"))
    clock = re.fullmatch(r"(\d{1,2}):(\d{2})", when)
    if clock:
        current = now or datetime.now(UTC)
        target = current.replace(hour=int(clock[1]), minute=int(clock[2]), second=0, microsecond=0)
        if target <= current:
            target += timedelta(days=1)
        return (target - current).total_seconds() / 60
    return None


def boot_log(
    private_ip: str | None,
    launch_time: datetime | None,
    host_keys: list[str],
    cloud_final_done: bool = True,
) -> str:
    """An Ubuntu 24.04 boot log with cloud-init's host key block, as GetConsoleOutput shows;
    before cloud-final has finished, the log up to cloud-init's first stage only."""
    ip = private_ip or "172.31.0.10"
    host = "ip-" + ip.replace(".", "-")
    start = launch_time or datetime.now()
    stamp = (start + timedelta(seconds=8)).strftime("%b %d %H:%M:%S")
    finished = (start + timedelta(seconds=11)).strftime("%a, %d %b %Y %H:%M:%S +0000")
    prints = [f"256 {fingerprint(k)} root@{host} (ED25519)" for k in host_keys]
    lines = [
        "[    0.000000] Linux version 6.8.0-1018-aws (buildd@lcy02-amd64-055) "
        "(x86_64-linux-gnu-gcc-13 (Ubuntu 13.2.0-23ubuntu4) 13.2.0, GNU ld (GNU Binutils for "
        "Ubuntu) 2.42) #19-Ubuntu SMP Mon Oct 14 09:37:23 UTC 2024 (Ubuntu 6.8.0-1018.19-aws "
        "6.8.12)",
        "[    0.000000] Command line: BOOT_IMAGE=/vmlinuz-6.8.0-1018-aws root=PARTUUID="
        "3c1f2a0e-01 ro console=tty1 console=ttyS0 nvme_core.io_timeout=4294967295 panic=-1",
        "[    0.523101] nvme nvme0: pci function 0000:00:04.0",
        "[    0.531877] nvme nvme0: 2/0/0 default/read/poll queues",
        "[    0.534411]  nvme0n1: p1 p14 p15 p16",
        "[    1.802334] EXT4-fs (nvme0n1p1): mounted filesystem with ordered data mode.",
        f"[    4.215000] cloud-init[512]: Cloud-init v. {CLOUD_INIT_VERSION} running 'init' "
        f"at {finished}. Up 4.20 seconds.",
        f"[    4.221000] cloud-init[512]: ci-info: | ens5 | True | {ip} | 255.255.240.0 | global |",
        "[    5.730000] cloud-init[512]: Generating public/private ed25519 key pair.",
    ]
    if not cloud_final_done:
        return "\n".join([*lines, ""])
    lines += [
        f"<14>{stamp} cloud-init: #############################################################",
        f"<14>{stamp} cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----",
        *(f"<14>{stamp} cloud-init: {p}" for p in prints),
        f"<14>{stamp} cloud-init: -----END SSH HOST KEY FINGERPRINTS-----",
        f"<14>{stamp} cloud-init: #############################################################",
        "-----BEGIN SSH HOST KEY KEYS-----",
        *(" ".join(k.split()[:2]) + f" root@{host}" for k in host_keys),
        "-----END SSH HOST KEY KEYS-----",
        f"[   10.912000] cloud-init[705]: Cloud-init v. {CLOUD_INIT_VERSION} finished at "
        f"{finished}. Datasource DataSourceEc2Local.  Up 10.90 seconds",
        "",
    ]
    return "\n".join(lines)
