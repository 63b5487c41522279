"""What the local cloud can be told to get wrong, and how slowly: its fault and timing settings.

Kept in ``D/settings.json``: ``Sandbox.start`` writes it before the server starts, and
``Sandbox.configure_faults`` rewrites it (atomically) while the server runs. The server looks
at the file before every EC2 call and on every reconcile step, so a change applies to the next
call. Imports nothing but the standard library (the CLI's ``--help`` reads the field docs).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .layout import read_json, write_json

# ``timing="aws"``: the typical delays of AWS (docs/performance.md's critical-path table) for
# each delay left at 0, times ``timing_scale``. Boot: RunInstances -> running; ssh: running ->
# cloud-final done (host keys printed, the authorized key installed); snapshot: pending ->
# completed for a small incremental snapshot.
AWS_DELAYS = {
    "boot_delay": 12.0,
    "ssh_delay": 20.0,
    "attach_delay": 5.0,
    "detach_delay": 8.0,
    "terminate_delay": 45.0,
    "snapshot_delay": 600.0,
}
TIMINGS = ("instant", "aws")


@dataclass(frozen=True)
class CloudSettings:
    # --- EC2 API faults (every EC2 action, or only those in fault_actions) -------------------
    throttle_rate: float = 0.0
    """Share of EC2 calls answered 503 ``RequestLimitExceeded`` (the call does nothing)."""
    error_rate: float = 0.0
    """Share of EC2 calls answered 500 ``InternalError`` or 503 ``Unavailable`` (does nothing)."""
    lost_response_rate: float = 0.0
    """Share of EC2 calls that *do* their work and then answer 500 ``InternalError``, as when a
    response is lost: a retry must not do the work twice (ClientToken)."""
    latency: float = 0.0
    """Seconds added to every EC2 call (before it runs)."""
    fault_seed: int = 0
    """Seeds the faults. The n-th call of an action after a (re)configuration always gets the
    same outcome for the same seed, whatever other actions run in between."""
    fault_actions: tuple[str, ...] = ()
    """EC2 action names (``DescribeInstances``) the faults and latency apply to; empty: all."""

    # --- state changes that take time on AWS (seconds) ---------------------------------------
    timing: str = "instant"
    """``instant`` (every delay as set, 0 by default) or ``aws``: each delay left at 0 takes
    AWS's typical value (``AWS_DELAYS``) times ``timing_scale``."""
    timing_scale: float = 1.0
    """Multiplies the ``aws`` delays (0.1: ten times faster, in the same order)."""
    boot_delay: float = 0.0
    """pending -> running; the instance's sshd starts only once it is running."""
    ssh_delay: float = 0.0
    """running -> cloud-final done: until then the console shows no host keys and logins as
    ``ubuntu`` are refused (its authorized key is not installed yet)."""
    attach_delay: float = 0.0
    """attachment attaching -> attached; the device appears in the instance when attached."""
    detach_delay: float = 0.0
    """attachment detaching -> volume available (and never while the filesystem is mounted,
    unless forced)."""
    terminate_delay: float = 0.0
    """shutting-down -> terminated (also stopping -> stopped after a shutdown from inside)."""
    consistency_lag: float = 0.0
    """For this long after a create, calls naming the new instance, volume, security group or
    snapshot by id answer NotFound, and tag-filtered Describe calls leave it out."""
    snapshot_delay: float = 0.0
    """A new snapshot stays ``pending`` (its progress rising) this long before ``completed``; a
    volume cannot be created from it meanwhile (``IncorrectState``), as on AWS."""
    tier_delay: float = 0.0
    """How long a snapshot's archival (ModifySnapshotTier) and a restore from the archive
    (RestoreSnapshotTier) take; AWS: hours, up to 72 for a restore."""

    # --- dead-man's switch -------------------------------------------------------------------
    minute_seconds: float = 60.0
    """How long one minute of an instance's timers (``systemd-run --on-active=1min``, a
    scheduled ``shutdown +1``) lasts in the sandbox, in seconds. Read when a timer is checked."""

    # --- the client -----------------------------------------------------------------------------
    client_address: str = ""
    """The address the sandbox sees every client coming from (``203.0.113.7``): instances then
    admit SSH only if one of their security groups' rules admits it (SYNs are dropped
    otherwise), and the address lookup (``/_sandbox/checkip`` on the server, which
    ``EC2BACKUP_CHECKIP_URL`` names) answers it. Empty: no filtering; the lookup answers the
    caller's own address (127.0.0.1)."""

    # --- SSH faults ----------------------------------------------------------------------------
    cut_ssh_after: float | None = None
    """Cut every SSH connection of an instance once, this many seconds after the condition of
    ``cut_ssh_on`` became true (None: never cut by itself; ``Sandbox.cut_ssh`` cuts at once)."""
    cut_ssh_on: str = ""
    """Process name (``rsync``) that must be running in the instance for the clock of
    ``cut_ssh_after`` to run; empty: any open SSH connection."""

    # --- capacity and quotas -----------------------------------------------------------------
    no_capacity: tuple[str, ...] = ()
    """Instance types (``t3.micro``, or ``t3.micro@us-east-1a`` for one zone) for which
    RunInstances fails with 500 ``InsufficientInstanceCapacity``, as on AWS."""
    instance_limit: int | None = None
    """RunInstances fails with ``InstanceLimitExceeded`` if it would make more than this many
    live (pending, running, stopping, shutting-down) instances."""

    def __post_init__(self) -> None:
        for name in ("throttle_rate", "error_rate", "lost_response_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value}")
        if self.throttle_rate + self.error_rate > 1.0:
            raise ValueError("throttle_rate + error_rate must not exceed 1")
        if self.timing not in TIMINGS:
            raise ValueError(f"timing must be one of {', '.join(TIMINGS)}, not {self.timing!r}")
        if not (self.timing_scale > 0 and math.isfinite(self.timing_scale)):
            raise ValueError(f"timing_scale must be > 0, not {self.timing_scale}")
        for name in (
            "latency",
            "boot_delay",
            "ssh_delay",
            "attach_delay",
            "detach_delay",
            "terminate_delay",
            "snapshot_delay",
            "consistency_lag",
            "tier_delay",
        ):
            value = getattr(self, name)
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a number of seconds >= 0, not {value}")
        if not (self.minute_seconds > 0 and math.isfinite(self.minute_seconds)):
            raise ValueError(f"minute_seconds must be > 0, not {self.minute_seconds}")
        if self.client_address:
            import ipaddress

            try:
                ipaddress.IPv4Address(self.client_address)
            except ValueError:
                raise ValueError(
                    f"client_address must be an IPv4 address, not {self.client_address!r}"
                ) from None
        if self.cut_ssh_after is not None and self.cut_ssh_after < 0:
            raise ValueError(f"cut_ssh_after must be >= 0, not {self.cut_ssh_after}")
        if self.instance_limit is not None and self.instance_limit < 0:
            raise ValueError(f"instance_limit must be >= 0, not {self.instance_limit}")
        # Lists from JSON or from callers become tuples, so settings compare and hash as values.
        object.__setattr__(self, "fault_actions", tuple(self.fault_actions))
        object.__setattr__(self, "no_capacity", tuple(self.no_capacity))

    def delay(self, name: str) -> float:
        """The delay in force for ``name`` (``boot_delay``...): as set, else AWS's under
        ``timing="aws"``."""
        value = float(getattr(self, name))
        if value > 0 or self.timing != "aws":
            return value
        return AWS_DELAYS.get(name, 0.0) * self.timing_scale

    def replace(self, **changes: Any) -> CloudSettings:
        """A copy with ``changes``; unknown names raise TypeError."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["fault_actions"] = list(self.fault_actions)
        data["no_capacity"] = list(self.no_capacity)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CloudSettings:
        known = set(setting_names())
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> CloudSettings:
        data = read_json(path)
        return cls() if data is None else cls.from_json(data)

    def no_capacity_for(self, instance_type: str, zone: str) -> bool:
        return instance_type in self.no_capacity or f"{instance_type}@{zone}" in self.no_capacity

    def faults_apply_to(self, action: str) -> bool:
        return not self.fault_actions or action in self.fault_actions


def setting_names() -> list[str]:
    return [f.name for f in dataclasses.fields(CloudSettings)]
