"""The volume hooks: an image per volume, a loop device and a Nitro device link per attachment,
and the EC2 semantics moto lacks (ClientToken on CreateVolume, AttachVolume's checks, a
DetachVolume that waits while the filesystem is mounted and refuses a root volume of an
instance that is not stopped, ``OperationNotPermitted``). ``reconcile`` finishes the attaches
and detaches that are delayed."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError, VolumeInUseError
from moto.ec2.responses import EC2Response

from .consistency import Consistency
from .host import HostError, attach_loop, copy_sparse, detach_loop, make_sparse, nitro_device_name
from .state import CloudState, Device, Original, PendingAttach, PendingDetach
from .tokens import ClientTokens

log = logging.getLogger("ec2backup.sandbox")


class Volumes:
    def __init__(self, state: CloudState, tokens: ClientTokens, consistency: Consistency) -> None:
        self.state = state
        self.tokens = tokens
        self.consistency = consistency

    def create_volume(self, response: EC2Response, original: Original) -> ActionResult:
        backend = response.ec2_backend
        known = self.tokens.check(response, "CreateVolume")
        if known is not None:
            return ActionResult(backend.get_volume(known))
        snapshot_id = response._get_param("SnapshotId")
        if snapshot_id and snapshot_id in self.state.pending_snapshots:
            raise EC2ClientError("IncorrectState", "Snapshot is in invalid state - pending")
        result = original()
        volume: Any = result.result
        self.tokens.remember(response, "CreateVolume", volume.id)
        self.consistency.note([volume.id])
        image = self.state.layout.volume_image(volume.id)
        snapshot_image = self.state.layout.snapshot_image(volume.snapshot_id or "none")
        if volume.snapshot_id and snapshot_image.exists():
            copy_sparse(snapshot_image, image)  # a volume restored from a snapshot
        if volume.snapshot_id:
            origin = backend.snapshots.get(volume.snapshot_id)
            if origin is not None:
                self.state.volume_origins[volume.id] = origin.volume.id
        make_sparse(image, int(volume.size))
        return result

    def delete_volume(self, response: EC2Response, original: Original) -> ActionResult:
        result = original()
        self.state.layout.volume_image(response._get_param("VolumeId")).unlink(missing_ok=True)
        return result

    def attach_volume(self, response: EC2Response, original: Original) -> ActionResult:
        backend = response.ec2_backend
        volume_id = response._get_param("VolumeId")
        instance_id = response._get_param("InstanceId")
        volume = backend.get_volume(volume_id)
        instance = backend.get_instance(instance_id)
        # Checks real EC2 makes and moto does not.
        if volume.attachment is not None:
            raise VolumeInUseError(volume_id, volume.attachment.instance.id)
        if instance.state != "running":
            raise EC2ClientError("IncorrectState", f"Instance '{instance_id}' is not 'running'.")
        if volume.zone is not None and volume.zone.name != instance.placement.zone:
            raise EC2ClientError(
                "InvalidVolume.ZoneMismatch",
                f"The volume '{volume_id}' is not in the same availability zone as instance"
                f" '{instance_id}'",
            )
        result = original()
        delay = self.state.settings.delay("attach_delay")
        if delay > 0:
            set_attachment_status(backend, volume_id, instance_id, "attaching")  # see reconcile()
            self.state.pending_attaches[volume_id] = PendingAttach(
                backend, instance_id, time.monotonic() + delay
            )
            return result
        self.connect_device(backend, volume_id, instance_id)
        return result

    def connect_device(self, backend: Any, volume_id: str, instance_id: str) -> None:
        """Make the volume a block device inside the instance (its Nitro name)."""
        volume = backend.get_volume(volume_id)
        machine = self.state.machines.get(instance_id)
        if machine is None or not machine.alive():
            return
        image = self.state.layout.volume_image(volume_id)
        if not image.exists():  # e.g. a root volume moto made by itself
            make_sparse(image, int(volume.size))
        loop = attach_loop(image)
        try:
            machine.link_device(loop, nitro_device_name(volume_id))
        except HostError:
            detach_loop(loop)
            backend.detach_volume(volume_id, instance_id, volume.attachment.device)
            raise
        self.state.devices[volume_id] = Device(instance_id, loop)
        log.info("attached %s to %s as %s", volume_id, instance_id, loop)

    def detach_volume(self, response: EC2Response, original: Original) -> ActionResult:
        backend = response.ec2_backend
        volume_id = response._get_param("VolumeId")
        attachment = backend.get_volume(volume_id).attachment
        # InstanceId is optional in EC2 (moto requires it): default to the attachment's.
        instance_id = response._get_param("InstanceId") or (
            attachment.instance.id if attachment is not None else None
        )
        if attachment is None or instance_id != attachment.instance.id:
            return original()  # moto answers the error cases itself
        instance = attachment.instance
        if attachment.device == instance.root_device_name and instance.state != "stopped":
            # As on AWS: a root volume leaves only a stopped instance (Force or not).
            raise EC2ClientError(
                "OperationNotPermitted",
                f"Unable to detach root volume '{volume_id}' from instance '{instance_id}'",
            )
        answer = ActionResult(
            {
                "VolumeId": volume_id,
                "InstanceId": instance_id,
                "Device": attachment.device,
                "State": "detaching",
                "AttachTime": attachment.attach_time,
            }
        )
        force = bool(response._get_bool_param("Force", False))
        # A detach while attaching: never attached.
        self.state.pending_attaches.pop(volume_id, None)
        device = self.state.devices.get(volume_id)
        machine = self.state.machines.get(instance_id)
        mounted = bool(device and machine and machine.has_mounted(device.loop))
        delay = self.state.settings.delay("detach_delay")
        if (mounted and not force) or delay > 0:
            # As on AWS: the detach takes a while, and waits while the filesystem is mounted;
            # reconcile() ends it.
            attachment.status = "detaching"
            earlier = self.state.pending_detaches.get(volume_id)
            self.state.pending_detaches[volume_id] = PendingDetach(
                backend,
                instance_id,
                attachment.device,
                earlier.due if earlier else time.monotonic() + delay,
                force or bool(earlier and earlier.force),
            )
            if mounted and not force:
                log.info("detach of %s waits: still mounted in %s", volume_id, instance_id)
            return answer
        self.state.pending_detaches.pop(volume_id, None)
        backend.detach_volume(volume_id, instance_id, attachment.device)
        self.release_device(volume_id)
        return answer

    def complete_detach(self, volume_id: str, pending: PendingDetach) -> None:
        self.state.pending_detaches.pop(volume_id, None)
        volume = pending.backend.get_volume(volume_id)
        attachment = volume.attachment
        if attachment is not None and attachment.instance.id == pending.instance_id:
            pending.backend.detach_volume(volume_id, pending.instance_id, pending.device)
            self.state.record_change("detach", volume_id, pending.due)
        self.release_device(volume_id)
        log.info("detach of %s completed", volume_id)

    def release_device(self, volume_id: str) -> None:
        device = self.state.devices.pop(volume_id, None)
        if device is None:
            return
        machine = self.state.machines.get(device.instance_id)
        if machine is not None:
            try:
                machine.unlink_device(nitro_device_name(volume_id))
            except HostError as e:
                log.warning("%s", e)
        detach_loop(device.loop)
        log.info("released %s (%s)", volume_id, device.loop)

    def end_pending_attaches(self, instance_id: str) -> None:
        """The instance's machine stops before its attaches completed: they show as attached
        and never become a device."""
        for volume_id, attach in list(self.state.pending_attaches.items()):
            if attach.instance_id == instance_id:
                del self.state.pending_attaches[volume_id]
                set_attachment_status(attach.backend, volume_id, instance_id, "attached")

    def machine_gone(self, instance_id: str) -> None:
        """The instance's machine was killed: finish the detaches that waited for it and
        release its loop devices."""
        for volume_id, pending in list(self.state.pending_detaches.items()):
            if pending.instance_id == instance_id:
                self.complete_detach(volume_id, pending)
        for volume_id, device in list(self.state.devices.items()):
            if device.instance_id == instance_id:
                self.release_device(volume_id)


def set_attachment_status(backend: Any, volume_id: str, instance_id: str, status: str) -> None:
    with contextlib.suppress(EC2ClientError):  # gone meanwhile
        attachment = backend.get_volume(volume_id).attachment
        if attachment is not None and attachment.instance.id == instance_id:
            attachment.status = status
