"""The user data a run's instance boots with (cloud-config, read by cloud-init on Ubuntu):

* ``ssh_authorized_keys``: the run's client key for the AMI's default user (``ubuntu``), with
  ``restrict``: it runs commands and nothing else (no port, agent or X11 forwarding, no pty,
  no ~/.ssh/rc), so a copy of it cannot turn the instance into a way into the VPC.
* ``ssh_keys``: the run's host key pair, made by ec2backup and pinned before the first
  connection. cloud-init deletes the image's host keys and installs only these
  (``ssh_deletekeys``; no ``ssh_genkeytypes`` run when keys are given), so the instance can
  only present the pinned key.
* ``runcmd`` (cloud-final: systemd and D-Bus are up): the dead-man's switch
  (``core/deadman.py``): the idle timer, then the lifetime ceiling.

The user data is readable by anyone on the instance (IMDS) and by principals allowed
``ec2:DescribeInstanceAttribute``: the host key is per run and dies with the instance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..core.deadman import CEILING_UNIT, arm_idle_script, timer_command


@dataclass(frozen=True)
class HostKeyPair:
    private: str  # OpenSSH PEM
    public: str  # "ssh-ed25519 AAAA... comment"


def _q(value: str) -> str:
    # A JSON string is a YAML double-quoted scalar.
    return json.dumps(value)


def user_data(
    public_key: str, host_key: HostKeyPair, idle_minutes: int, lifetime_minutes: int
) -> str:
    private = "".join(f"    {line}\n" for line in host_key.private.strip().splitlines())
    ceiling = timer_command(CEILING_UNIT, lifetime_minutes * 60)
    return (
        "#cloud-config\n"
        f"ssh_authorized_keys:\n  - {_q('restrict ' + public_key)}\n"
        "ssh_deletekeys: true\n"
        "ssh_keys:\n"
        f"  ed25519_private: |\n{private}"
        f"  ed25519_public: {_q(host_key.public)}\n"
        "runcmd:\n"
        f"  - [sh, -c, {_q(arm_idle_script(idle_minutes * 60))}]\n"
        f"  - [{', '.join(_q(word) for word in ceiling)}]\n"
    )
