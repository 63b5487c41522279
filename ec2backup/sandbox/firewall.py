"""Security groups for the instances' SSH, as a client at ``client_address`` sees them.

Every instance listens on its own 127.0.X.Y:22 of the host's loopback, and every client of the
sandbox connects from 127.0.0.1, so the sandbox cannot tell clients apart by address: with the
``client_address`` setting, it treats every client as coming from that address. An instance
whose security groups admit no TCP port 22 (or all traffic) from it drops the SYNs sent to its
port 22, as a security group does: the client sees its connection time out, never a refusal.
Connections already open stay open (EC2 tracks them).

The drop is a socket filter (classic BPF, ``SO_ATTACH_FILTER``) on the sshd's listening socket,
which the kernel applies to each SYN before the handshake: no firewall tool, nothing outside
that one socket. The server reaches the sshd's socket with ``pidfd_getfd`` (Linux 5.6+).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import socket
from typing import Any

from .host import Machine

SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27
_SYS_PIDFD_GETFD = 438  # the same number on every architecture (a syscall after 5.1)
_BPF_RET_K = 0x06  # BPF_RET | BPF_K: accept this many bytes of the packet; 0 drops it


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def admits_ssh(groups: Any, address: str) -> bool:
    """Whether any inbound rule of moto's security groups ``groups`` admits TCP 22 from
    ``address`` (a CIDR range holding it; tcp with 22 in its ports, or all traffic)."""
    client = ipaddress.ip_address(address)
    for group in groups:
        for rule in getattr(group, "ingress_rules", ()):
            cidr = rule.ip_range.get("CidrIp")
            if not cidr or client not in ipaddress.ip_network(cidr, strict=False):
                continue
            if rule.ip_protocol == "-1":
                return True
            ports = rule.from_port is not None and rule.to_port is not None
            if rule.ip_protocol == "tcp" and ports and rule.from_port <= 22 <= rule.to_port:
                return True
    return False


def _listening_socket(machine: Machine) -> socket.socket | None:
    """A duplicate of the sshd's listening socket on the instance's address:22."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(machine.sshd_pid)
    try:
        for entry in os.listdir(f"/proc/{machine.sshd_pid}/fd"):
            try:
                if not os.readlink(f"/proc/{machine.sshd_pid}/fd/{entry}").startswith("socket:"):
                    continue
            except OSError:
                continue
            fd = libc.syscall(_SYS_PIDFD_GETFD, pidfd, int(entry), 0)
            if fd < 0:
                raise OSError(ctypes.get_errno(), "pidfd_getfd failed")
            sock = socket.socket(fileno=fd)
            try:
                listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                if listening and sock.getsockname() == (machine.address, 22):
                    return sock
            except OSError:
                pass
            sock.close()
    finally:
        os.close(pidfd)
    return None


def set_ssh_admitted(machine: Machine, admitted: bool) -> None:
    """Let SYNs to the instance's port 22 through, or drop them all."""
    sock = _listening_socket(machine)
    if sock is None:
        raise OSError(f"no listening socket of {machine.instance_id}'s sshd on port 22")
    try:
        if admitted:
            with contextlib.suppress(OSError):  # no filter attached: already admitted
                sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
            return
        program = (_SockFilter * 1)(_SockFilter(_BPF_RET_K, 0, 0, 0))
        fprog = _SockFprog(1, program)
        libc = ctypes.CDLL(None, use_errno=True)
        done = libc.setsockopt(
            sock.fileno(),
            socket.SOL_SOCKET,
            SO_ATTACH_FILTER,
            ctypes.byref(fprog),
            ctypes.sizeof(fprog),
        )
        if done != 0:
            raise OSError(ctypes.get_errno(), "SO_ATTACH_FILTER failed")
    finally:
        sock.close()  # the duplicate only: the sshd keeps its socket (and the filter)
