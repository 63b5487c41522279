"""What the server's hook modules share: one ``CloudState`` (the lock, the live machines and
devices, the delayed state changes), the records it keeps, and the hook signature.

Every part (``instances``, ``volumes``, ``reconcile``...) gets the same ``CloudState`` and reads
and changes it under ``CloudState.lock``; each part's own bookkeeping (ClientTokens, fault
counters) stays in that part. This module imports no other part, so any part can import it.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.models.instances import StateReason
from moto.ec2.responses import EC2Response

from .host import AddressPool, Machine
from .layout import Layout
from .settings import CloudSettings

log = logging.getLogger("ec2backup.sandbox")

# (moto response, moto's own handler) -> result
Original = Callable[[], ActionResult]
Hook = Callable[[EC2Response, Original], ActionResult]


@dataclass(frozen=True)
class Device:
    instance_id: str
    loop: str  # /dev/loopK holding the volume's image


@dataclass(frozen=True)
class PendingDetach:
    backend: Any
    instance_id: str
    device: str
    due: float = 0.0  # time.monotonic() before which it does not complete
    force: bool = False


@dataclass(frozen=True)
class PendingAttach:
    backend: Any
    instance_id: str
    due: float


@dataclass(frozen=True)
class PendingSnapshot:
    snapshot: Any
    started: float  # time.monotonic()
    due: float


@dataclass(frozen=True)
class Scheduled:
    """Something due to happen to an instance at ``due`` (time.monotonic())."""

    backend: Any
    instance: Any
    due: float


@dataclass(frozen=True)
class CloudFinal(Scheduled):
    keys: tuple[str, ...]


@dataclass(frozen=True)
class PowerOff(Scheduled):
    final: str  # "terminated" or "stopped"
    reason: StateReason | None  # None: user initiated (moto's reason)


class CloudState:
    def __init__(self, layout: Layout, region: str) -> None:
        self.layout = layout
        self.region = region
        # One lock for the hooks and the reconcile step: the moto server is threaded.
        self.lock = threading.RLock()
        # The settings in force; replaced by ``Faults.refresh_settings`` when the file changes.
        self.settings = CloudSettings()
        self.addresses = AddressPool()
        self.machines: dict[str, Machine] = {}  # live instances by id
        self.booted: dict[str, Scheduled] = {}  # their moto instance and backend (due unused)
        self.devices: dict[str, Device] = {}  # attached volumes by id
        self.pending_detaches: dict[str, PendingDetach] = {}  # volume id -> detach to finish
        # Delayed state changes and timers, by instance id (attaches by volume id).
        self.pending_boots: dict[str, Scheduled] = {}
        self.pending_attaches: dict[str, PendingAttach] = {}
        self.power_offs: dict[str, PowerOff] = {}
        # cloud-init's final stage running in an instance, by instance id, and the commands
        # of its timers that run (reaped by the reconcile step).
        self.final_stages: dict[str, subprocess.Popen[bytes]] = {}
        self.jobs: list[subprocess.Popen[bytes]] = []
        self.ssh_admitted: dict[str, bool] = {}  # whether the client may reach port 22 (by id)
        # Instances whose cloud-init has not finished (ssh_delay): keys to install, and when.
        self.pending_cloud_final: dict[str, CloudFinal] = {}
        self.pending_snapshots: dict[str, PendingSnapshot] = {}  # by snapshot id
        self.ssh_watch: dict[str, float] = {}  # since when cut_ssh_on's condition holds
        self.ssh_cut: set[str] = set()  # instances cut by cut_ssh_after (once each)
        # A volume made from a snapshot -> the volume that snapshot was taken of: the
        # snapshots' lineage (EBS direct APIs), kept when the snapshot is deleted.
        self.volume_origins: dict[str, str] = {}

    def record_change(self, kind: str, resource_id: str, due: float) -> None:
        """Append a state change just applied to ``D/state-changes.jsonl`` (what the detection
        benchmark measures from): ``at`` is now, ``due`` when its delay ended (``due`` is a
        time.monotonic(), turned into wall-clock time here), both ISO in UTC."""
        now = time.monotonic()
        at = datetime.now(UTC)
        due_at = datetime.fromtimestamp(at.timestamp() - max(0.0, now - due), UTC)
        line = json.dumps(
            {"kind": kind, "id": resource_id, "at": at.isoformat(), "due": due_at.isoformat()}
        )
        try:
            with open(self.layout.state_changes, "a") as f:
                f.write(line + "\n")
        except OSError as e:
            log.warning("cannot record a state change: %s", e)
