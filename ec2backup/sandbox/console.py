"""The boot log an Ubuntu instance prints to its console, as GetConsoleOutput shows it: with
cloud-init's host key block once its final stage is over (``services.boot_finished``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from .host import fingerprint

CLOUD_INIT_VERSION = "24.3.1-0ubuntu0~24.04.2"


def boot_log(private_ip: str | None, launch_time: datetime | None, host_keys: list[str]) -> str:
    """An Ubuntu 24.04 boot log; ``host_keys`` (none while cloud-init's final stage runs) are
    printed as cloud-init's keys-to-console does, through ``logger`` (``<14>... ec2:``)."""
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
    ]
    if host_keys:
        lines += [
            f"<14>{stamp} ec2: #############################################################",
            f"<14>{stamp} ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----",
            *(f"<14>{stamp} ec2: {p}" for p in prints),
            f"<14>{stamp} ec2: -----END SSH HOST KEY FINGERPRINTS-----",
            f"<14>{stamp} ec2: #############################################################",
            "-----BEGIN SSH HOST KEY KEYS-----",
            *(" ".join(k.split()[:2]) + f" root@{host}" for k in host_keys),
            "-----END SSH HOST KEY KEYS-----",
            f"[   10.912000] cloud-init[705]: Cloud-init v. {CLOUD_INIT_VERSION} finished at "
            f"{finished}. Datasource DataSourceEc2Local.  Up 10.90 seconds",
        ]
    return "\n".join([*lines, ""])
