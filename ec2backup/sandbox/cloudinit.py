"""What cloud-init does with an instance's user data on Ubuntu 24.04, stage by stage, as far as
the local cloud models it. Nothing is read from the user data and then acted on by the server:
the instance's own commands run, in the stage cloud-init runs them in, with the tools that
stage has.

* Network stage (cloud-init-network.service, before sshd, before sysinit.target and so before
  D-Bus): ``ssh_keys`` become the host keys (else an ed25519 key is generated, as
  ``ssh_genkeytypes`` would); ``ssh_authorized_keys`` go to the default user; ``bootcmd``
  runs, as root. D-Bus and logind are not up: ``shutdown +N`` there arms nothing, and
  ``systemctl``/``systemd-run`` fail ("Failed to connect to bus").
* sshd starts; D-Bus and logind are up from here (``STATE/bus``).
* Final stage (cloud-final.service): ``runcmd``, a shell-script user data (scripts-user),
  ``power_state`` (``shutdown -P +DELAY``), as root with systemd up; then the host keys are
  printed to the console (``console.boot_log``), tens of seconds after ``running`` on AWS.

The tools an instance has for its service manager are the stand-ins of ``standin.py``,
installed as wrappers in its own ``/usr/local/sbin`` (first on root's and sudo's PATH).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# cloud-init's ssh_keys names: <type>_private / <type>_public.
HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")
STANDIN_PROGRAMS = ("systemd-run", "systemctl", "shutdown", "poweroff", "halt")
# Root's PATH in cloud-init's stages and in services (and sudo's secure_path on Debian).
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STANDIN_DIR = "/usr/local/sbin"


@dataclass(frozen=True)
class HostKey:
    type: str  # ed25519, ecdsa, rsa
    private: str
    public: str


@dataclass(frozen=True)
class UserData:
    """The parts of a user data the local cloud acts on."""

    authorized_keys: list[str] = field(default_factory=list)
    host_keys: list[HostKey] = field(default_factory=list)
    bootcmd: list[str] = field(default_factory=list)  # shell lines of the network stage
    final: list[str] = field(default_factory=list)  # shell lines of the final stage
    script: str | None = None  # a shell-script user data (run in the final stage)


def parse(text: str) -> UserData:
    """Read a ``#cloud-config`` or ``#!`` user data; anything else does nothing, as on Ubuntu
    (other formats are not modelled)."""
    if text.startswith("#!"):
        return UserData(script=text)
    if not text.startswith("#cloud-config"):
        return UserData()
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError:
        return UserData()  # cloud-init logs the error and ignores the part
    if not isinstance(data, dict):
        return UserData()
    keys = data.get("ssh_authorized_keys")
    authorized = [str(k).strip() for k in keys if str(k).strip()] if isinstance(keys, list) else []
    return UserData(
        authorized_keys=authorized,
        host_keys=_host_keys(data.get("ssh_keys")),
        bootcmd=_commands(data.get("bootcmd")),
        final=[*_commands(data.get("runcmd")), *_power_state(data.get("power_state"))],
    )


def _host_keys(value: Any) -> list[HostKey]:
    if not isinstance(value, dict):
        return []
    found = []
    for key_type in HOST_KEY_TYPES:
        private, public = value.get(f"{key_type}_private"), value.get(f"{key_type}_public")
        if isinstance(private, str) and isinstance(public, str):
            found.append(HostKey(key_type, private.strip() + "\n", public.strip()))
    return found


def _commands(items: Any) -> list[str]:
    """cloud-init's rule for bootcmd and runcmd: a list is one command (its words quoted), a
    string is a line of shell."""
    if not isinstance(items, list):
        return []
    lines = []
    for item in items:
        if isinstance(item, list):
            lines.append(shlex.join(str(word) for word in item))
        elif isinstance(item, str):
            lines.append(item)
    return lines


def _power_state(value: Any) -> list[str]:
    # cc_power_state_change: once the final stage is done, `shutdown -P +DELAY MESSAGE`.
    if not isinstance(value, dict):
        return []
    mode = str(value.get("mode", "")).lower()
    flag = {"poweroff": "-P", "halt": "-H", "reboot": "-r"}.get(mode)
    if flag is None:
        return []
    delay = str(value.get("delay", "now"))
    when = delay if delay == "now" or delay.startswith("+") else f"+{delay}"
    message = str(value.get("message", "cloud-init power_state"))
    return [shlex.join(["shutdown", flag, when, message])]


# --- the instance's files -----------------------------------------------------------------------


def write_standins(bin_dir: Path, state_dir: Path) -> None:
    """The wrappers that stand for the instance's service-manager tools: each runs
    ``standin.py`` with the instance's state directory."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    program = Path(__file__).with_name("standin.py")
    q = shlex.quote
    for name in STANDIN_PROGRAMS:
        wrapper = bin_dir / name
        wrapper.write_text(
            "#!/bin/sh\n"
            f"exec {q(sys.executable)} -I -S {q(str(program))} --state {q(str(state_dir))} "
            f'{q(name)} "$@"\n'
        )
        wrapper.chmod(0o755)


def stage_script(lines: list[str]) -> str:
    """A stage's commands as cloud-init runs them: one shell script, every line run whatever
    the previous one did (cloud-init logs a failure and goes on)."""
    return "\n".join([f"export PATH={ROOT_PATH}", *lines, ""])
