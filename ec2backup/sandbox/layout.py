"""Where a sandbox keeps its files inside its directory D. Shared by the server process and by
``Sandbox.stop``, which must find everything again after the server died."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..paths import write_atomically

# A file in the console override directory with this name applies to the next instance launched.
NEXT_INSTANCE = "next"
# The address lookup on the server (what checkip.amazonaws.com is on AWS): the client's address.
CHECKIP_PATH = "/_sandbox/checkip"


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def server_pid(self) -> Path:
        return self.root / "server.pid"

    @property
    def server_log(self) -> Path:
        return self.root / "server.log"

    @property
    def state(self) -> Path:
        """Written by the server once it answers; removed when it stops."""
        return self.root / "state.json"

    @property
    def settings(self) -> Path:
        """The fault and timing settings (``settings.CloudSettings``); re-read by the server."""
        return self.root / "settings.json"

    @property
    def resources(self) -> Path:
        """The volumes, snapshots and security groups the next server in D re-creates, with
        their ids (``resources.py``); kept up to date while the server runs."""
        return self.root / "resources.json"

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def instances(self) -> Path:
        return self.root / "instances"

    @property
    def console_overrides(self) -> Path:
        """``<instance-id>`` (or ``next``) here: that console shows an impostor host key."""
        return self.root / "console-overrides"

    @property
    def state_changes(self) -> Path:
        """One JSON line per delayed state change the server applied (``CloudState.record_change``):
        ``{"kind": "boot|ssh|attach|detach|terminate|stop|snapshot", "id", "at", "due"}``,
        wall-clock ISO times in UTC; ``due`` is when the delay ended, ``at`` when it was
        applied."""
        return self.root / "state-changes.jsonl"

    def volume_image(self, volume_id: str) -> Path:
        return self.volumes / f"{volume_id}.img"

    def snapshot_image(self, snapshot_id: str) -> Path:
        return self.snapshots / f"{snapshot_id}.img"

    def instance_dir(self, instance_id: str) -> Path:
        return self.instances / instance_id

    def make_dirs(self) -> None:
        for d in (self.volumes, self.snapshots, self.instances, self.console_overrides):
            d.mkdir(parents=True, exist_ok=True)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically, so a reader never sees half a file."""
    write_atomically(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), 0o600)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
