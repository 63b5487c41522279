"""The default user of an Ubuntu AMI, ``ubuntu``, inside an instance only: private copies of
the host's user database with it added, and its passwordless sudo."""

from __future__ import annotations

import os
from pathlib import Path

UBUNTU_UID = 1000
UBUNTU_GROUPS = ("adm", "sudo")  # as on Ubuntu cloud images (minus the desktop-ish ones)


def write_user_db(etc: Path) -> None:
    """Copies of /etc/passwd, group, shadow with user ``ubuntu`` (uid 1000) added, replacing
    whatever holds uid/gid 1000 on the host, and a sudoers.d giving it passwordless sudo."""
    etc.mkdir(parents=True, exist_ok=True)
    uid = str(UBUNTU_UID)

    dropped_users = {"ubuntu"}
    passwd = []
    for line in Path("/etc/passwd").read_text().splitlines():
        f = line.split(":")
        if len(f) >= 4 and (f[0] == "ubuntu" or f[2] == uid or f[3] == uid):
            dropped_users.add(f[0])
            continue
        passwd.append(line)
    passwd.append(f"ubuntu:x:{uid}:{uid}:Ubuntu:/home/ubuntu:/bin/bash")

    group = []
    for line in Path("/etc/group").read_text().splitlines():
        f = line.split(":")
        if len(f) < 4 or f[0] == "ubuntu" or f[2] == uid:
            continue
        members = [m for m in f[3].split(",") if m and m not in dropped_users]
        if f[0] in UBUNTU_GROUPS:
            members.append("ubuntu")
        group.append(":".join([*f[:3], ",".join(members)]))
    group.append(f"ubuntu:x:{uid}:")

    shadow = [
        line
        for line in Path("/etc/shadow").read_text().splitlines()
        if line.split(":")[0] not in dropped_users
    ]
    # "*": no password, but not locked ("!" would lock the account for sshd without PAM).
    shadow.append("ubuntu:*:20000:0:99999:7:::")

    (etc / "passwd").write_text("\n".join(passwd) + "\n")
    (etc / "group").write_text("\n".join(group) + "\n")
    (etc / "shadow").write_text("\n".join(shadow) + "\n")
    os.chmod(etc / "shadow", 0o640)

    sudoers = etc / "sudoers.d"
    sudoers.mkdir(mode=0o750, exist_ok=True)
    dropin = sudoers / "90-cloud-init-users"
    dropin.write_text("# User rules for ubuntu\nubuntu ALL=(ALL) NOPASSWD:ALL\n")
    os.chmod(dropin, 0o440)  # sudo ignores drop-ins that are writable or not root's
