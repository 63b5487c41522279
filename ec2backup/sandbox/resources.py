"""What outlives the sandbox's server: volumes, snapshots and security groups, as on AWS an
account keeps them when nobody is looking. moto keeps its state in memory only, so the server
records them in ``D/resources.json`` (at every reconcile step, when they changed, and when it
stops) and the next server started in D re-creates them in moto with the same ids, before it
answers. Their data is in the images in D, which stay.

Only what has an image is kept: volumes made by CreateVolume (not instances' root volumes) and
snapshots of them, with their tier. Instances are not kept: stopping the sandbox terminates
them, so a volume attached at that moment comes back ``available``; a snapshot still pending
comes back ``completed`` (its image was copied when it was taken), and a tier change under way
is not resumed. Runs in the server process only.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.ec2.models.elastic_block_store import Snapshot, Volume

from .layout import Layout, read_json, write_json

log = logging.getLogger("ec2backup.sandbox")


def _backend(region: str) -> Any:
    return ec2_backends[DEFAULT_ACCOUNT_ID][region]


def _tags(backend: Any, resource_id: str) -> dict[str, str]:
    return dict(backend.tags.get(resource_id, {}))


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def record(layout: Layout, region: str) -> dict[str, Any]:
    """The resources of the account in ``region`` worth keeping, as JSON-able data."""
    backend = _backend(region)
    volumes = [
        {
            "id": v.id,
            "size": int(v.size),
            "zone": v.zone.name,
            "volume_type": v.volume_type,
            "iops": v.iops,
            "throughput": v.throughput,
            "encrypted": bool(v.encrypted),
            "snapshot_id": v.snapshot_id,
            "create_time": _time(v.create_time),
            "tags": _tags(backend, v.id),
        }
        for v in list(backend.volumes.values())
        if layout.volume_image(v.id).exists()
    ]
    snapshots = [
        {
            "id": s.id,
            "volume_id": s.volume.id,
            "volume_size": int(s.volume.size),
            "zone": s.volume.zone.name,
            "description": s.description,
            "encrypted": bool(s.encrypted),
            "start_time": _time(s.start_time),
            "tags": _tags(backend, s.id),
            # The archive tier (tiers.py) is the snapshot's own state, kept with it.
            "storage_tier": s.storage_tier,
            "archival_complete_time": _time(s.archival_complete_time),
            "restore_expiry_time": _time(s.restore_expiry_time),
        }
        for s in list(backend.snapshots.values())
        if layout.snapshot_image(s.id).exists()
    ]
    groups = [
        {
            "id": g.id,
            "name": g.name,
            "description": g.description,
            "tags": _tags(backend, g.id),
            "ingress": [
                {
                    "protocol": r.ip_protocol,
                    "from_port": r.from_port,
                    "to_port": r.to_port,
                    "ip_range": dict(r.ip_range),
                }
                for r in g.ingress_rules
                if r.ip_range  # CIDR rules: what ec2backup makes
            ],
        }
        for vpc_groups in list(backend.groups.values())
        for g in list(vpc_groups.values())
        if g.name != "default"  # every VPC has its own, made by moto
    ]
    return {"volumes": volumes, "snapshots": snapshots, "security_groups": groups}


class Recorder:
    """Keeps ``D/resources.json`` up to date; ``save`` writes only what changed."""

    def __init__(self, layout: Layout, region: str, lock: threading.RLock | threading.Lock):
        self.layout, self.region, self.lock = layout, region, lock
        self._last = ""

    def save(self) -> None:
        with self.lock:
            data = record(self.layout, self.region)
        text = json.dumps(data, sort_keys=True)
        if text != self._last:
            write_json(self.layout.resources, data)
            self._last = text


def restore(layout: Layout, region: str) -> dict[str, int]:
    """Re-create in moto what ``D/resources.json`` holds (whose images are still in D), with
    the same ids; return how many of each kind."""
    data = read_json(layout.resources) or {}
    backend = _backend(region)
    groups = [_restore_group(backend, g) for g in data.get("security_groups", [])]
    volumes = [
        _restore_volume(backend, v)
        for v in data.get("volumes", [])
        if layout.volume_image(v["id"]).exists()
    ]
    snapshots = [
        _restore_snapshot(backend, s)
        for s in data.get("snapshots", [])
        if layout.snapshot_image(s["id"]).exists()
    ]
    counts = {"volumes": len(volumes), "snapshots": len(snapshots), "security_groups": len(groups)}
    if any(counts.values()):
        log.info("kept from the last server: %s", counts)
    return counts


def _restore_group(backend: Any, g: dict[str, Any]) -> str:
    group = backend.create_security_group(g["name"], g["description"], tags=g["tags"] or None)
    vpc_groups = backend.groups[group.vpc_id]
    vpc_groups.pop(group.id)
    backend.tags.pop(group.id, None)
    group.id = group.group_id = g["id"]
    group.arn = group.arn.rsplit("/", 1)[0] + f"/{g['id']}"
    vpc_groups[group.id] = group
    if g["tags"]:
        backend.create_tags([group.id], g["tags"])
    for rule in g["ingress"]:
        backend.authorize_security_group_ingress(
            group.id,
            rule["protocol"],
            str(rule["from_port"]),
            str(rule["to_port"]),
            [rule["ip_range"]],
            vpc_id=group.vpc_id,
        )
    return str(group.id)


def _restore_volume(backend: Any, v: dict[str, Any]) -> str:
    volume = backend.create_volume(
        size=v["size"],
        zone_name=v["zone"],
        encrypted=v["encrypted"],
        volume_type=v["volume_type"],
        iops=v["iops"],
        throughput=v["throughput"],
    )
    backend.volumes.pop(volume.id)
    volume.id = v["id"]
    volume.snapshot_id = v["snapshot_id"]
    if v["create_time"]:
        volume.create_time = datetime.fromisoformat(v["create_time"])
    backend.volumes[volume.id] = volume
    if v["tags"]:
        backend.create_tags([volume.id], v["tags"])
    return str(volume.id)


def _restore_snapshot(backend: Any, s: dict[str, Any]) -> str:
    # Its volume as it was when the snapshot was taken: the live one, or (deleted since) a
    # stand-in that only answers for its id, size and zone.
    source = backend.volumes.get(s["volume_id"]) or Volume(  # type: ignore[abstract]
        backend,
        s["volume_id"],
        s["volume_size"],
        backend.get_zone_by_name(s["zone"]),
        encrypted=s["encrypted"],
    )
    snapshot = Snapshot(backend, s["id"], source, s["description"], encrypted=s["encrypted"])
    if s["start_time"]:
        snapshot.start_time = datetime.fromisoformat(s["start_time"])
    snapshot.storage_tier = s.get("storage_tier") or "standard"
    for field in ("archival_complete_time", "restore_expiry_time"):
        if s.get(field):
            setattr(snapshot, field, datetime.fromisoformat(s[field]))
    backend.snapshots[snapshot.id] = snapshot
    if s["tags"]:
        backend.create_tags([snapshot.id], s["tags"])
    return str(snapshot.id)
