"""This host's public address as AWS sees it: what an instance's security group must admit
for SSH. Asked of ``https://checkip.amazonaws.com`` (``EC2BACKUP_CHECKIP_URL`` names another
service answering the same way: one address in plain text; the local cloud sets it to a path
on its own server)."""

from __future__ import annotations

import ipaddress
import os

CHECKIP_URL = "https://checkip.amazonaws.com"
CHECKIP_ENV = "EC2BACKUP_CHECKIP_URL"
TIMEOUT_SECONDS = 5


def checkip_url() -> str:
    return os.environ.get(CHECKIP_ENV) or CHECKIP_URL


def public_address() -> str:
    """The address (raises OSError when the service cannot be reached, ValueError when its
    answer is not an address)."""
    import urllib.request

    with urllib.request.urlopen(checkip_url(), timeout=TIMEOUT_SECONDS) as response:
        text = response.read(256).decode("ascii", errors="replace").strip()
    return str(ipaddress.ip_address(text))


def ssh_cidr(allow_ssh_from: str | None) -> str:
    """Where the instances may be reached from: the given network, else this host's public
    address (one /32). Raises ValueError for a bad ``allow_ssh_from`` and OSError when the
    address cannot be found."""
    if allow_ssh_from:
        return str(ipaddress.ip_network(allow_ssh_from.strip(), strict=False))
    return str(ipaddress.ip_network(public_address()))
